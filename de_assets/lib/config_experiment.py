"""A/B tests of the pipeline's own configuration (R7), the Dagster-free part: the two arms'
alternation, what is measured from an arm's warehouse, the summaries, the identity check and the
readout. Running an arm (the real `daily_pipeline` in process) is passed in as ``run_arm``: the
Dagster side lives in `de_assets/config_experiment.py` and is handed to the asset by the code
location (`definitions.build_defs`), so nothing here imports Dagster or the code location.

Arms alternate (A B, B A, A B, ...) so drift in the machine's load does not favour one side.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from de_assets.lib import ops_store
from de_assets.lib.flags import parse_flags
from de_assets.lib.tables import ALL_TABLES, PARTITION_KPIS

# Fewer repetitions per arm measure, but name no winner: with one or two runs per side the spread of
# run-to-run noise is unknown, so "every run of one side beats every run of the other" means little.
MIN_REPETITIONS = 3
# metric -> True when lower is better
METRICS = {
    "wall_seconds": True,
    "ingest_seconds": True,
    "clean_seconds": True,
    "marts_seconds": True,
    "rows_per_second": False,
    "bytes_stored": True,
    "quarantine_rate": True,
}


@dataclass
class ArmResult:
    arm: str
    repetition: int
    metrics: dict[str, float]
    fingerprint: dict[str, tuple]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


# What two arms must serve alike: every data table, and the rows forget requests removed (held in the
# catalog database); not the pipeline's measurements of itself (`pipeline_health.*`).
COMPARED = tuple(t for t in ALL_TABLES if t.schema != "pipeline_health")
_IN_FILE = tuple(t for t in COMPARED if t not in ops_store.HELD)  # what a warehouse connection holds


def fingerprint(con, tables=_IN_FILE) -> dict[str, tuple]:
    """Row count and an order-independent hash of each of ``tables`` in ``con`` (default: those a
    warehouse connection holds; wall-clock and run columns aside).

    Doubles are rounded to 6 decimals first: a parallel sum may add in a different order from run to
    run, which changes the last bits, not the number.
    """
    out = {}
    for table in tables:
        hashed = ", ".join(f'round("{c.name}", 6)' if c.type == "DOUBLE" else f'"{c.name}"'
                           for c in table.columns if c.name not in ("ingested_at", "run_id"))
        [(rows, digest)] = con.execute(
            f"SELECT count(*), coalesce(sum(hash({hashed})::HUGEINT), 0) FROM {table.name}"
        ).fetchall()
        out[table.name] = (rows, int(digest))
    return out


def measure(database: Path, wall: float, ops) -> tuple[dict[str, float], dict[str, tuple]]:
    """What an arm's finished warehouse says: stage seconds and rows from its own
    `pipeline_health.partition_kpis` (held in its catalog database, SQLAlchemy engine ``ops``), bytes
    stored (DuckDB file + the lake's files), fingerprints."""
    with duckdb.connect() as kpis:
        ops_store.load(ops, kpis, PARTITION_KPIS)
        held = [t for t in COMPARED if t in ops_store.HELD]
        for table in held:
            ops_store.load(ops, kpis, table)
        prints = fingerprint(kpis, held)
        [(ingest, clean, marts, rows_in, quarantined)] = kpis.execute(
            f"""SELECT sum(seconds) FILTER (WHERE asset LIKE 'raw/%'),
                       sum(seconds) FILTER (WHERE asset LIKE 'clean/%'),
                       sum(seconds) FILTER (WHERE asset LIKE 'marts/%'),
                       sum(rows_in) FILTER (WHERE asset LIKE 'clean/%'),
                       sum(rows_quarantined) FILTER (WHERE asset LIKE 'clean/%')
                FROM {PARTITION_KPIS.name}"""
        ).fetchall()
    with duckdb.connect(str(database), read_only=True) as con:
        prints |= fingerprint(con)
    stored = database.stat().st_size + _dir_bytes(database.parent / "lake")
    return {
        "wall_seconds": wall,
        "ingest_seconds": ingest or 0.0,
        "clean_seconds": clean or 0.0,
        "marts_seconds": marts or 0.0,
        "rows_per_second": (rows_in or 0) / wall if wall else 0.0,
        "bytes_stored": float(stored),
        "quarantine_rate": (quarantined or 0) / rows_in if rows_in else 0.0,
    }, prints


# run_arm(arm, flags, repetition, workdir) -> ArmResult: one repetition of one arm in a fresh warehouse
ArmRunner = Callable[[str, dict, int, Path], ArmResult]


def run_experiment(flags_a: dict, flags_b: dict, repetitions: int, workdir: Path, run_arm: ArmRunner,
                   log=None) -> list[ArmResult]:
    """Alternate the arms over `repetitions` rounds; every arm's warehouse is removed after measuring.
    The flags are checked (lib/flags.py) before anything runs."""
    for flags in (flags_a, flags_b):
        parse_flags(flags)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for repetition in range(1, repetitions + 1):
            order = (("A", flags_a), ("B", flags_b)) if repetition % 2 else (("B", flags_b), ("A", flags_a))
            for arm, flags in order:
                result = run_arm(arm, flags, repetition, workdir)
                if log:
                    log.info(f"arm {arm} rep {repetition}: " + ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
                results.append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


@dataclass
class MetricSummary:
    metric: str
    median_a: float
    median_b: float
    min_a: float
    max_a: float
    min_b: float
    max_b: float
    change: float  # (B - A) / A
    winner: str  # "A", "B", "tie", or "none" (fewer than MIN_REPETITIONS per arm: no winner is named)


def summarize(results: list[ArmResult]) -> list[MetricSummary]:
    """Medians and spreads per arm; a side wins a metric only when the two ranges do not overlap
    (every repetition of the winner beats every repetition of the other), so run-to-run noise
    alone never declares a winner; with fewer than `MIN_REPETITIONS` per arm no side wins ("none")."""
    out = []
    repetitions = min(sum(r.arm == "A" for r in results), sum(r.arm == "B" for r in results))
    for metric, lower_is_better in METRICS.items():
        a = [r.metrics[metric] for r in results if r.arm == "A"]
        b = [r.metrics[metric] for r in results if r.arm == "B"]
        med_a, med_b = statistics.median(a), statistics.median(b)
        if max(b) < min(a):
            lower = "B"
        elif max(a) < min(b):
            lower = "A"
        else:
            lower = None
        winner = "tie" if lower is None else (lower if lower_is_better else ("A" if lower == "B" else "B"))
        if repetitions < MIN_REPETITIONS:
            winner = "none"
        out.append(MetricSummary(metric, med_a, med_b, min(a), max(a), min(b), max(b),
                                 (med_b - med_a) / med_a if med_a else 0.0, winner))
    return out


def identical_tables(results: list[ArmResult]) -> tuple[bool, list[str]]:
    """Whether every arm and repetition served the same tables; the names of those that differ."""
    reference = results[0].fingerprint
    differing = sorted({name for r in results for name, fp in r.fingerprint.items() if reference.get(name) != fp})
    return not differing, differing


def readout(flags_a: dict, flags_b: dict, summaries: list[MetricSummary], identical: bool, differing: list[str],
            repetitions: int, start: date, end: date) -> str:
    """Markdown: the plan, the identity check, the table and a plain-language verdict."""
    def fmt(metric: str, value: float) -> str:
        if metric == "bytes_stored":
            return f"{value / 1e6:,.2f} MB"
        if metric == "quarantine_rate":
            return f"{value:.4%}"
        return f"{value:,.3g}" if metric != "rows_per_second" else f"{value:,.0f}"

    lines = [
        f"**A** `{flags_a}` vs **B** `{flags_b}` on arrival days {start}..{end}, {repetitions} repetitions "
        "per arm, alternating order, isolated warehouses.",
        "",
        "Served tables identical in every run: **yes**" if identical
        else f"Served tables identical: **NO** ({', '.join(differing)}) -- B is not a safe replacement",
        "",
        "| metric | A median (min-max) | B median (min-max) | B vs A | winner |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.metric} | {fmt(s.metric, s.median_a)} ({fmt(s.metric, s.min_a)}-{fmt(s.metric, s.max_a)}) | "
            f"{fmt(s.metric, s.median_b)} ({fmt(s.metric, s.min_b)}-{fmt(s.metric, s.max_b)}) | {s.change:+.1%} | {s.winner} |"
        )
    wins = {s.metric: s for s in summaries if s.winner in ("A", "B")}
    verdict = []
    if any(s.winner == "none" for s in summaries):
        verdict.append(f"no winner named: {repetitions} repetition(s) per arm, at least {MIN_REPETITIONS} are "
                       "needed to tell a difference from run-to-run noise")
    for metric in ("wall_seconds", "bytes_stored") if not verdict else ():
        if metric in wins:
            s = wins[metric]
            verdict.append(f"{s.winner} wins on {metric} by {abs(s.change):.1%} (medians; ranges do not overlap)")
        else:
            verdict.append(f"no clear difference on {metric} (ranges overlap)")
    lines += ["", "**Verdict:** " + "; ".join(verdict) + "."]
    return "\n".join(lines)


def default_workdir(database: str, experiment_id: str) -> Path:
    base = database if database != ":memory:" else os.path.join(os.getcwd(), "data", "warehouse.duckdb")
    return Path(f"{base}.experiments") / experiment_id


def experiment_id(flags_a: dict, flags_b: dict) -> str:
    """The default id of an experiment: both arms' flags, e.g. `lake_compression=zstd-vs-lake_compression=snappy`."""
    return "-vs-".join(",".join(f"{k}={v}" for k, v in sorted(f.items())) or "defaults" for f in (flags_a, flags_b))
