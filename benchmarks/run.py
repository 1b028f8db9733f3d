"""Performance benchmark of the daily pipeline; regenerates docs/benchmarks.md.

    python benchmarks/run.py [--sizes 100000,1000000,5000000] [--reps 3] [--quick] [--skip-backfill]
                             [--out docs/benchmarks.md]

For each size (events per day), on generated data (fixed seed, cached under benchmarks/out/data/),
each repetition runs, in this order and each in a fresh subprocess:

  pipeline   one daily partition end to end through Dagster in process (daily_pipeline job),
             on a fresh DuckDB file
  reference  benchmarks/reference.sql: the same essential work in one hand-written DuckDB script
  pandas     benchmarks/pandas_baseline.py: the same work as a naive pandas script

then the 30-day backfill (one run over the range vs one run per partition) and the fixed per-run
overhead of an empty partition. Wall time and peak RSS (ru_maxrss of the child, from wait4) are
reported as medians with min-max; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DATA = OUT / "data"
WORK = OUT / "work"
LOGS = OUT / "logs"

DAY = date(2025, 3, 3)  # the measured partition (a Monday: full weekday volume)
BACKFILL_START = date(2025, 3, 3)
KEY = "bench"  # pseudonymization key used by all three implementations
IMPLS = ("pipeline", "reference", "pandas")
RUN_TIMEOUT_S = 3 * 3600  # safety net for pipeline/reference/backfill children

# goals (docs/benchmarks.md "Goals")
GOAL_SIZE = 1_000_000
GOAL_REF_RATIO = 1.5
GOAL_RSS_MIB = 1024
GOAL_PANDAS_SPEEDUP = 4.0
GOAL_BACKFILL_S = 90.0
GOAL_LONG_HISTORY_S = 60.0  # 557 sparse daily partitions in one range run
GOAL_BACKFILL = (30, 100_000)  # days, events/day
GOAL_RSS_FLAT = 1.25  # "RSS flat" from 1M to 5M events/day: at most this growth of the peak

# marts compared between the three implementations: table -> key columns
MARTS = {
    "daily_engagement": ["event_date"],
    "funnel_daily": ["event_date", "funnel", "step_order"],
    "revenue_daily": ["event_date"],
    "retention_cohorts": ["cohort_week", "activity_week"],
    "service_latency": ["event_date", "service"],
}


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    reps: int
    seed: int
    quick: bool
    skip_backfill: bool
    out: Path
    pandas_timeout: float
    pandas_max_events: int
    backfill_days: int
    backfill_events: int
    backfill_reps: int
    overhead_runs: int
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4])
    long_history_days: int = 557
    command: str = ""
    only: str | None = None


def parse_args(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="events per day, comma separated (default 100000,1000000,5000000; "
                        "--quick: 20000,50000)")
    parser.add_argument("--reps", type=int, help="repetitions per size (default 3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 rep, 5-day backfill at 10k/day")
    parser.add_argument("--skip-backfill", action="store_true", help="skip the backfill measurement")
    parser.add_argument("--out", default="docs/benchmarks.md", help="report to (re)write (default docs/benchmarks.md)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--pandas-timeout", type=float, default=900.0,
                        help="abort a pandas run after this many seconds (default 900)")
    parser.add_argument("--pandas-max-events", type=int, default=1_000_000,
                        help="skip pandas above this many events/day (default 1000000)")
    parser.add_argument("--backfill-days", type=int, help="default 30 (--quick: 5)")
    parser.add_argument("--backfill-events", type=int, help="events/day of the backfill (default 100000; --quick: 10000)")
    parser.add_argument("--backfill-reps", type=int, help="repetitions of each backfill mode (default 3; --quick: 1)")
    parser.add_argument("--overhead-runs", type=int, help="empty-partition runs per process (default 5; --quick: 3)")
    parser.add_argument("--concurrency", default="1,2,4",
                        help="the backfill as one `de-assets run` per day, this many at once (default 1,2,4; "
                             "empty: skip)")
    parser.add_argument("--long-history-days", type=int, default=557,
                        help="one range run over this many sparse days, ~29 events/day (default 557, "
                             "like a real 16k-event export; 0: skip)")
    parser.add_argument("--only", choices=["concurrent", "backfill", "long_history"],
                        help="measure only this section (with --backfill-days/--backfill-events/--backfill-reps/"
                             "--concurrency), replace it in benchmarks/out/results.json, noted as re-measured, and "
                             "rewrite the report")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite the report from benchmarks/out/results.json (the last run's figures)")
    a = parser.parse_args(argv)
    quick = a.quick
    sizes = a.sizes or ("20000,50000" if quick else "100000,1000000,5000000")
    out = Path(a.out)
    return Config(
        sizes=[int(s.replace("_", "")) for s in sizes.split(",") if s.strip()],
        reps=a.reps or (1 if quick else 3),
        seed=a.seed,
        quick=quick,
        skip_backfill=a.skip_backfill,
        out=out if out.is_absolute() else ROOT / out,
        pandas_timeout=a.pandas_timeout,
        pandas_max_events=a.pandas_max_events,
        backfill_days=a.backfill_days or (5 if quick else 30),
        backfill_events=a.backfill_events or (10_000 if quick else 100_000),
        backfill_reps=a.backfill_reps or (1 if quick else 3),
        overhead_runs=a.overhead_runs or (3 if quick else 5),
        concurrency=[int(n) for n in a.concurrency.split(",") if n.strip()],
        long_history_days=a.long_history_days,
        command="python benchmarks/run.py " + " ".join(argv),
        only=a.only,
    )


# ------------------------------------------------------------------------------------------------
# data: generated once per (events/day, days, start, seed), then reused
# ------------------------------------------------------------------------------------------------


def landing_data(events_per_day: int, days: int, start: date, seed: int) -> tuple[Path, dict]:
    """Landing root and facts ({day: {events_rows, requests_rows, files, bytes}}), cached."""
    folder = DATA / f"events{events_per_day}-days{days}-{start.isoformat()}-seed{seed}"
    marker = folder / "facts.json"
    if marker.exists():
        return folder / "landing", json.loads(marker.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted generation
    print(f"  generating {days} day(s) x {events_per_day:,} events/day (seed {seed}) ...", flush=True)
    began = time.perf_counter()
    # in a subprocess: generating 5M events makes a process GBs big, and every child forked from a
    # big parent would then report that size as its own ru_maxrss
    folder.mkdir(parents=True)
    summary_path = folder / "summary.json"
    subprocess.run(
        [sys.executable, "-c",
         "import json, sys; from datetime import date; from de_assets.generator import generate; "
         "s = generate(sys.argv[1], date.fromisoformat(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
         "seed=int(sys.argv[5])); json.dump(s, open(sys.argv[6], 'w'), default=str)",
         str(folder / "landing"), start.isoformat(), str(days), str(events_per_day), str(seed), str(summary_path)],
        check=True,
    )
    summary = json.loads(summary_path.read_text())
    facts: dict = {"generate_s": round(time.perf_counter() - began, 1), "days": {}}
    for day, per in summary["per_day"].items():
        files = [f for f in summary["files"] if f["day"] == day]
        facts["days"][day] = {
            "events_rows": sum(f["rows"] for f in files if f["source"] == "events"),
            "requests_rows": sum(f["rows"] for f in files if f["source"] == "requests"),
            "files": len(files),
            "bytes": sum(f["bytes"] for f in files),
        }
    marker.write_text(json.dumps(facts, indent=1))
    print(f"  generated in {facts['generate_s']} s", flush=True)
    return folder / "landing", facts


def fresh_db(name: str) -> Path:
    """The DuckDB file of one measurement, in an emptied folder of its own. The pipeline keeps its
    lake (`catalog.db` + `lake/`) beside the file and reads the raw layer from it, so measurements
    sharing a folder would share raw rows (seen: the 1M-event run also counted the users of the 100k
    run's files of the same day, and its marts differed from the reference's)."""
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder / "warehouse.duckdb"


def remove_db(db: Path) -> None:
    """A measurement's folder (`fresh_db`): the DuckDB file, its WAL and spill folder, and its lake."""
    shutil.rmtree(db.parent, ignore_errors=True)


def warm_page_cache(landing: Path) -> None:
    """Read every landed file once, so the first measured implementation does not pay for cold I/O."""
    for path in landing.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass


# ------------------------------------------------------------------------------------------------
# one measurement = one fresh subprocess
# ------------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    task: str
    ok: bool
    error: str | None = None
    wall_s: float | None = None  # measured work inside the child (after imports)
    import_s: float | None = None
    process_s: float | None = None  # whole child process, seen from here
    rss_kb: int | None = None  # peak RSS of the child (ru_maxrss from wait4)
    loadavg: float | None = None  # 1-minute load average when it started (noise indicator)
    code: str | None = None  # fingerprint of de_assets/**/*.py when it started (others edit it)
    details: dict = field(default_factory=dict)


def code_fingerprint() -> str:
    """Short sha256 of the pipeline's source (de_assets/**/*.py), to see whether it changed mid-run."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "de_assets").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def measure(task: str, args: dict, label: str, timeout: float = RUN_TIMEOUT_S) -> Measurement:
    for folder in (WORK, LOGS):
        folder.mkdir(parents=True, exist_ok=True)
    result_path = WORK / f"{label}.json"
    result_path.unlink(missing_ok=True)
    log_path = LOGS / f"{label}.log"
    cmd = [sys.executable, str(HERE / "child.py"), task, json.dumps(args), str(result_path)]
    # this checkout's pipeline (ROOT), not whichever `de_assets` the environment has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    load, code = os.getloadavg()[0], code_fingerprint()
    timed_out = threading.Event()
    with open(log_path, "w") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=WORK, env=env)

        def kill() -> None:
            timed_out.set()
            proc.kill()  # only the child started here

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - began
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    m = Measurement(task, ok=False, process_s=elapsed, rss_kb=usage.ru_maxrss, loadavg=load, code=code)
    if timed_out.is_set():
        m.error = f"aborted after {timeout:g} s (time limit)"
    elif proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        m.error = f"exit code {proc.returncode}: " + " | ".join(tail)[-400:]
    else:
        record = json.loads(result_path.read_text())
        m.wall_s, m.import_s = record.pop("wall_s"), record.pop("import_s")
        record.pop("maxrss_kb", None)
        m.rss_kb = record.pop("vmhwm_kb", None) or m.rss_kb  # VmHWM: not inflated by the parent
        m.details = record
        m.ok = bool(record.get("success", False)) and record.get("checks_passed", True)
        if not m.ok:
            m.error = f"run did not succeed (see {log_path.relative_to(ROOT)})"
    return m


# ------------------------------------------------------------------------------------------------
# correctness cross-check: the three implementations must serve the same numbers
# ------------------------------------------------------------------------------------------------


def compare_marts(expected_db: Path, actual_db: Path) -> list[str]:
    """Differences between the marts of two warehouses, over the columns of the actual one."""
    problems = []
    with duckdb.connect(str(expected_db), read_only=True) as exp, duckdb.connect(str(actual_db), read_only=True) as act:
        for table, keys in MARTS.items():
            theirs = act.execute(f"SELECT * FROM marts.{table} ORDER BY {', '.join(keys)}").df()
            ours = exp.execute(
                f"SELECT {', '.join(theirs.columns)} FROM marts.{table} ORDER BY {', '.join(keys)}"
            ).df()
            if len(ours) != len(theirs):
                problems.append(f"{table}: {len(ours)} vs {len(theirs)} rows")
                continue
            for column in theirs.columns:
                a, b = ours[column].reset_index(drop=True), theirs[column].reset_index(drop=True)
                if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
                    a, b = a.astype(float), b.astype(float)
                    same = ((a - b).abs() <= 1e-9 * b.abs().clip(lower=1)) | (a.isna() & b.isna())
                else:
                    same = (a.astype(str) == b.astype(str))
                if not same.all():
                    i = int((~same).values.argmax())
                    problems.append(f"{table}.{column}: {a[i]} vs {b[i]}")
    return problems


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------


def bench_sizes(cfg: Config, results: dict) -> None:
    pandas_gave_up_at = None
    for size in cfg.sizes:
        print(f"\n== {size:,} events/day", flush=True)
        landing, facts = landing_data(size, 1, DAY, cfg.seed)
        warm_page_cache(landing)
        entry = {"facts": facts["days"][DAY.isoformat()], "generate_s": facts["generate_s"],
                 "runs": {impl: [] for impl in IMPLS}, "mismatches": {}, "pandas_skipped": None}
        results["sizes"][str(size)] = entry
        if size > cfg.pandas_max_events:
            entry["pandas_skipped"] = (f"skipped above {cfg.pandas_max_events:,} events/day "
                                       "(--pandas-max-events), see the note after the last size")
        elif pandas_gave_up_at is not None:
            entry["pandas_skipped"] = f"not run: it hit the time limit at {pandas_gave_up_at:,} events/day"
        for rep in range(cfg.reps):
            dbs = {}
            for impl in IMPLS:
                if impl == "pandas" and entry["pandas_skipped"]:
                    continue
                db = fresh_db(f"{impl}-{size}")
                args = {"landing": str(landing), "day": DAY.isoformat(), "database": str(db), "key": KEY}
                timeout = cfg.pandas_timeout if impl == "pandas" else RUN_TIMEOUT_S
                m = measure(impl, args, f"{impl}-{size}-rep{rep + 1}", timeout)
                entry["runs"][impl].append(asdict(m))
                status = f"{m.wall_s:7.2f} s" if m.ok else f"FAILED: {m.error}"
                print(f"  rep {rep + 1}/{cfg.reps} {impl:<9} {status}  peak RSS {m.rss_kb / 1024:7.0f} MiB",
                      flush=True)
                if m.ok:
                    dbs[impl] = db
                elif impl == "pandas" and m.error and "time limit" in m.error:
                    entry["pandas_skipped"] = f"{m.error} (--pandas-timeout)"
                    pandas_gave_up_at = size
            if "pipeline" in dbs:
                for impl in ("reference", "pandas"):
                    if impl in dbs:
                        problems = compare_marts(dbs["pipeline"], dbs[impl])
                        if problems:
                            entry["mismatches"].setdefault(impl, problems)
                            print(f"  !! {impl} differs from the pipeline: {problems[:3]}", flush=True)
            for db in dbs.values():
                remove_db(db)


def bench_backfill(cfg: Config, results: dict) -> None:
    days, events = cfg.backfill_days, cfg.backfill_events
    print(f"\n== backfill: {days} days x {events:,} events/day", flush=True)
    landing, facts = landing_data(events, days, BACKFILL_START, cfg.seed)
    warm_page_cache(landing)
    end = BACKFILL_START + timedelta(days=days - 1)
    entry = {"days": days, "events_per_day": events, "start": BACKFILL_START.isoformat(), "end": end.isoformat(),
             "events_rows": sum(d["events_rows"] for d in facts["days"].values()), "single": [], "per_partition": [],
             "code": code_fingerprint()}
    results["backfill"] = entry
    for rep in range(cfg.backfill_reps):
        for mode, task in (("single", "backfill_single"), ("per_partition", "backfill_per_partition")):
            db = fresh_db(f"backfill-{mode}")
            args = {"landing": str(landing), "start": BACKFILL_START.isoformat(), "end": end.isoformat(),
                    "database": str(db), "key": KEY}
            m = measure(task, args, f"backfill-{mode}-rep{rep + 1}")
            entry[mode].append(asdict(m))
            status = f"{m.wall_s:7.1f} s" if m.ok else f"FAILED: {m.error}"
            print(f"  rep {rep + 1}/{cfg.backfill_reps} {mode:<14} {status}  peak RSS {m.rss_kb / 1024:7.0f} MiB",
                  flush=True)
            remove_db(db)


def bench_concurrent(cfg: Config, results: dict) -> None:
    """The backfill's days as one `de-assets run` process per day, N at a time (a fresh warehouse,
    lake and Dagster home per N), the way a daemon with `max_concurrent_runs: N` runs them."""
    from concurrent.futures import ThreadPoolExecutor

    days, events = cfg.backfill_days, cfg.backfill_events
    landing, facts = landing_data(events, days, BACKFILL_START, cfg.seed)
    warm_page_cache(landing)
    entry = {"days": days, "events_per_day": events, "runs": [], "code": code_fingerprint()}
    results["concurrent"] = entry
    print(f"\n== backfill as {days} runs, N at once: {cfg.concurrency}", flush=True)
    for n in cfg.concurrency:
        db = fresh_db(f"concurrent-{n}")
        folder = db.parent
        (folder / "home").mkdir()
        env = {**os.environ, "DE_ASSETS_DUCKDB": str(db), "DAGSTER_HOME": str(folder / "home"),
               "DE_ASSETS_LANDING": str(landing), "DE_ASSETS_REPORTS": str(folder / "reports"),
               "DE_ASSETS_PSEUDONYM_KEY": KEY,
               # this checkout's pipeline, not whichever `de_assets` the environment has installed
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

        def one(day: date) -> int:
            with open(LOGS / f"concurrent-{n}-{day}.log", "w") as log:
                return subprocess.run([sys.executable, "-m", "de_assets.cli", "run", "--start", day.isoformat()],
                                      env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=RUN_TIMEOUT_S).returncode

        LOGS.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0]
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            codes = list(pool.map(one, [BACKFILL_START + timedelta(days=i) for i in range(days)]))
        wall = time.perf_counter() - began
        with duckdb.connect(str(db), read_only=True) as con:
            rows, distinct = con.execute("SELECT count(*), count(DISTINCT message_id) FROM clean.events").fetchone()
        entry["runs"].append({"concurrent": n, "wall_s": wall, "failed_runs": sum(c != 0 for c in codes),
                              "clean_rows": rows, "clean_distinct_ids": distinct, "loadavg": load})
        print(f"  {n} at once: {wall:7.1f} s, {sum(c != 0 for c in codes)} failed run(s), clean.events {rows:,} rows "
              f"({distinct:,} distinct ids)", flush=True)
        shutil.rmtree(folder, ignore_errors=True)


LONG_HISTORY_START = date(2024, 1, 1)  # the default first partition (DE_ASSETS_START_DATE)
LONG_HISTORY_EVENTS = 29  # events/day: 557 days ~ 16k events, the size of the real export in issue 13


def bench_long_history(cfg: Config, results: dict) -> None:
    """Many sparse daily partitions in one range run: where per-partition overhead shows. Twice: on an
    ephemeral instance (in-memory event log, like every other pipeline measurement here) and on the
    instance `de-assets run` uses by default (SQLite files in a Dagster home), where each of Dagster's
    ~47k events of such a run is written to disk."""
    days = cfg.long_history_days
    landing, facts = landing_data(LONG_HISTORY_EVENTS, days, LONG_HISTORY_START, cfg.seed)
    end = LONG_HISTORY_START + timedelta(days=days - 1)
    home = WORK / "long-history-home"
    entry = {"days": days, "events_rows": sum(d["events_rows"] for d in facts["days"].values())}
    for key, label, extra in (("run", "in-memory event log", {}),
                              ("run_sqlite", "SQLite instance", {"dagster_home": str(home)})):
        print(f"\n== long history: {days} days x ~{LONG_HISTORY_EVENTS} events/day, one range run, {label}", flush=True)
        db = fresh_db("long-history")
        shutil.rmtree(home, ignore_errors=True)
        args = {"landing": str(landing), "start": LONG_HISTORY_START.isoformat(), "end": end.isoformat(),
                "database": str(db), "key": KEY, **extra}
        m = measure("backfill_single", args, f"long-history-{key}")
        entry[key] = asdict(m)
        status = f"{m.wall_s:7.1f} s" if m.ok else f"FAILED: {m.error}"
        print(f"  {status}  peak RSS {m.rss_kb / 1024:7.0f} MiB", flush=True)
    remove_db(db)
    shutil.rmtree(home, ignore_errors=True)
    results["long_history"] = entry


def long_history_section(results: dict) -> list[str]:
    h = results.get("long_history")
    if not h:
        return ["Skipped (--long-history-days 0).", ""]
    lines = [f"{h['days']} daily partitions ({LONG_HISTORY_START}..), {h['events_rows']:,} events in all, one range "
             "run through Dagster:", ""]
    for key, label in (("run", "ephemeral instance (in-memory event log, as every other pipeline figure here)"),
                       ("run_sqlite", "the default instance of `de-assets run` (SQLite files in the Dagster home)")):
        m = h.get(key)
        if m is None:
            lines.append(f"* {label}: not measured")
        elif not m["ok"]:
            lines.append(f"* {label}: failed ({m['error']})")
        else:
            lines.append(f"* {label}: **{m['wall_s']:.1f} s** wall ({m['process_s']:.1f} s process), peak RSS "
                         f"{m['rss_kb'] / 1024:,.0f} MiB")
    lines += ["", "The difference is Dagster writing its events to disk, each in its own transaction: for every "
              "day of the range, one per check evaluation, per materialization and per planned materialization "
              "(47,502 events for 557 days, counted in a scratch run).", ""]
    return lines + remeasured_note(h)


def remeasured_note(entry: dict) -> list[str]:
    """For a section measured again on its own (`--only`), after the rest of the page."""
    again = entry.get("remeasured")
    if not again:
        return []
    source = f"pipeline source `{entry['code']}`; " if entry.get("code") else ""
    return [f"Re-measured on its own after the rest of this page, with `{again['command']}` on {again['finished']} "
            f"({source}1-minute load average {again['load_start']:.2f} at start).", ""]


def concurrent_section(results: dict) -> list[str]:
    c = results.get("concurrent")
    if not c or not c["runs"]:
        return ["Skipped (--concurrency '').", ""]
    base = next((r["wall_s"] for r in c["runs"] if r["concurrent"] == 1), None)
    rows = [[r["concurrent"], f"{r['wall_s']:.1f}", f"{base / r['wall_s']:.2f}x" if base else "",
             r["failed_runs"], f"{r['clean_rows']:,}", f"{r['clean_distinct_ids']:,}"] for r in c["runs"]]
    note = remeasured_note(c)
    return [f"{c['days']} days x {c['events_per_day']:,} events/day as one `de-assets run` per day, N at a time "
            "(fresh warehouse, lake and Dagster home per N). Every step computes beside the DuckDB warehouse "
            "file and takes its lock (handed over within ~10 ms) only briefly, to pin its inputs and to "
            "commit; a cleaning whose inputs were committed meanwhile computes again in its turn "
            "(docs/lake.md, step 8). On 2 cores runs at once are bound by CPU.", "",
            *note,
            table(["runs at once", "wall s", "speedup", "failed runs", "clean.events rows", "distinct ids"], rows), ""]


def bench_overhead(cfg: Config, results: dict) -> None:
    print(f"\n== per-run overhead: empty partition, {cfg.overhead_runs} runs per process", flush=True)
    empty = DATA / "empty-landing"
    empty.mkdir(parents=True, exist_ok=True)
    runs = []
    for rep in range(cfg.reps):
        db = fresh_db("overhead")
        args = {"landing": str(empty), "day": DAY.isoformat(), "database": str(db), "key": KEY,
                "runs": cfg.overhead_runs}
        m = measure("overhead", args, f"overhead-rep{rep + 1}")
        runs.append(asdict(m))
        status = (", ".join(f"{s:.2f}" for s in m.details["run_seconds"]) + " s") if m.ok else f"FAILED: {m.error}"
        print(f"  rep {rep + 1}/{cfg.reps} {status}  (imports {m.import_s or 0:.1f} s)", flush=True)
        remove_db(db)
    results["overhead"] = runs


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "dagster": metadata.version("dagster"),
        "pandas": metadata.version("pandas"),
        "pandera": metadata.version("pandera"),
    }


def ok_runs(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["ok"]]


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
    return text


def mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def table(header: list[str], rows: list[list], numeric: bool = True) -> str:
    """Markdown table; with `numeric`, every column but the first is right-aligned."""
    align = ["---" if i == 0 or not numeric else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def impl_stats(entry: dict, impl: str) -> dict | None:
    runs = ok_runs(entry["runs"].get(impl, []))
    if not runs:
        return None
    walls = [r["wall_s"] for r in runs]
    return {
        "n": len(runs),
        "wall": walls,
        "wall_med": med(walls),
        "process": [r["process_s"] for r in runs],
        "process_med": med([r["process_s"] for r in runs]),
        "import": [r["import_s"] for r in runs],
        "rss": [mib(r["rss_kb"]) for r in runs],
        "rss_med": med([mib(r["rss_kb"]) for r in runs]),
    }


def size_section(size: int, entry: dict, cfg: Config) -> list[str]:
    facts = entry["facts"]
    events = facts["events_rows"]
    out = [f"### {size:,} events/day", "",
           f"Landed for {DAY}: {events:,} event rows and {facts['requests_rows']:,} request samples in "
           f"{facts['files']} files ({facts['bytes'] / 1e6:,.0f} MB). rows/s = event rows / wall.", ""]
    stats = {impl: impl_stats(entry, impl) for impl in IMPLS}
    pipe = stats["pipeline"]
    rows = []
    for impl in IMPLS:
        s = stats[impl]
        failures = [r for r in entry["runs"].get(impl, []) if not r["ok"]]
        if s is None:
            reason = entry["pandas_skipped"] if impl == "pandas" and entry["pandas_skipped"] else (
                failures[0]["error"] if failures else "not run")
            rows.append([impl, f"— {reason}", "", "", "", "", ""])
            continue
        versus = "1.00" if impl == "pipeline" else (f"{s['wall_med'] / pipe['wall_med']:.2f}" if pipe else "-")
        note = f" ({len(failures)} failed)" if failures else ""
        rows.append([
            impl + note, spread(s["wall"]), spread(s["process"]), spread(s["import"]),
            spread(s["rss"], "{:,.0f}"), f"{events / s['wall_med']:,.0f}", versus,
        ])
    out.append(table(["implementation", "wall s, median (min–max)", "process wall s", "imports s",
                      "peak RSS MiB", "rows/s", "wall / pipeline"], rows))
    out.append("")
    ratios = []
    if pipe and stats["reference"]:
        ratios.append(f"pipeline / reference = **{pipe['wall_med'] / stats['reference']['wall_med']:.2f}x** "
                      f"({pipe['process_med'] / stats['reference']['process_med']:.2f}x on process wall)")
    if pipe and stats["pandas"]:
        ratios.append(f"pandas / pipeline = **{stats['pandas']['wall_med'] / pipe['wall_med']:.2f}x** "
                      f"({stats['pandas']['process_med'] / pipe['process_med']:.2f}x on process wall)")
    if ratios:
        out += ["Ratios of medians: " + "; ".join(ratios) + ".", ""]
    checked = [impl for impl in ("reference", "pandas") if stats[impl] and pipe]
    if entry["mismatches"]:
        for impl, problems in entry["mismatches"].items():
            out += [f"**Results differ** ({impl} vs pipeline): " + "; ".join(problems[:5]), ""]
    elif checked:
        out += [f"Results check: {' and '.join(checked)} served the same marts as the pipeline "
                "(daily_engagement, funnel_daily, revenue_daily, retention_cohorts, service_latency; "
                "every column, floats to 1e-9 relative).", ""]
    pandas_runs = ok_runs(entry["runs"].get("pandas", []))
    if pandas_runs:
        d = pandas_runs[0]["details"]
        out += [f"pandas: `read_json(lines=True)` rejected {d.get('ndjson_fallbacks', 0)} of {d.get('ndjson_files', 0)} "
                "NDJSON files (a malformed line fails the whole file); those were parsed line by line with "
                "`json.loads`. Parquet is read through DuckDB (pandas would need pyarrow or fastparquet, which "
                "are not project dependencies).", ""]
    if pipe:
        out += pipeline_steps_table(ok_runs(entry["runs"]["pipeline"]))
    return out


def pipeline_steps_table(runs: list[dict]) -> list[str]:
    order = list(runs[0]["details"]["steps"])
    wall = med([r["wall_s"] for r in runs])
    rows = []
    for step in order:
        step_s = [r["details"]["steps"].get(step, 0.0) for r in runs]
        body_s = [r["details"]["step_body_seconds"].get(step, 0.0) for r in runs]
        peaks = [p for r in runs if (p := r["details"].get("step_peak_rss_mib", {}).get(step)) is not None]
        rows.append([f"`{step}`", spread(step_s), spread(body_s), f"{100 * med(step_s) / wall:.0f}%",
                     f"{med(peaks):,.0f}" if peaks else "-"])
    outside = [r["wall_s"] - sum(r["details"]["steps"].values()) for r in runs]
    rows.append(["outside steps (defs, instance, run start/end, event log)", spread(outside), "",
                 f"{100 * med(outside) / wall:.0f}%", ""])
    return ["Pipeline per step (step s = Dagster's STEP_SUCCESS duration; asset body s = the asset's own "
            "`seconds` metadata; peak RSS = largest RSS sampled every 50 ms while the step ran, median over "
            "repetitions):", "",
            table(["step", "step s", "asset body s", "share of wall", "peak RSS MiB"], rows), ""]


def backfill_section(results: dict) -> list[str]:
    b = results.get("backfill")
    if not b:
        return ["Skipped (--skip-backfill).", ""]
    out = [f"{b['days']} arrival days ({b['start']}..{b['end']}) x {b['events_per_day']:,} events/day "
           f"({b['events_rows']:,} event rows in total), fresh DuckDB file per measurement.", "",
           *remeasured_note(b)]
    rows = []
    for mode, label in (("single", "(a) one run over the range (single-run backfill)"),
                        ("per_partition", f"(b) {b['days']} runs, one per partition, sequentially in one process")):
        runs = ok_runs(b[mode])
        if not runs:
            err = b[mode][0]["error"] if b[mode] else "not run"
            rows.append([label, f"— {err}", "", "", ""])
            continue
        walls = [r["wall_s"] for r in runs]
        rows.append([label, spread(walls, "{:.1f}"), spread([r["process_s"] for r in runs], "{:.1f}"),
                     spread([mib(r["rss_kb"]) for r in runs], "{:,.0f}"), f"{b['events_rows'] / med(walls):,.0f}"])
    out += [table(["mode", "wall s", "process wall s", "peak RSS MiB", "rows/s"], rows), ""]
    single, per = ok_runs(b["single"]), ok_runs(b["per_partition"])
    if per:
        seconds = per[0]["details"]["run_seconds"]
        out += [f"(b) per run: first {seconds[0]:.1f} s, median {statistics.median(seconds):.1f} s, "
                f"max {max(seconds):.1f} s.", ""]
    if single and per and "stored" in single[0]["details"] and "stored" in per[0]["details"]:
        a, b = single[0]["details"]["stored"], per[0]["details"]["stored"]
        same = a == b
        out += [f"`clean.events` in the warehouse after each: (a) {a['clean_events_rows']:,} rows, "
                f"{a['clean_events_distinct_ids']:,} distinct ids; (b) {b['clean_events_rows']:,} rows, "
                f"{b['clean_events_distinct_ids']:,} distinct ids" + (" (same)." if same else " (**differ**)."), ""]
    if single:
        out += ["(a) " + pipeline_steps_table(single)[0][0].lower() + pipeline_steps_table(single)[0][1:]]
        out += pipeline_steps_table(single)[1:]
    return out


def overhead_section(results: dict) -> list[str]:
    runs = ok_runs(results.get("overhead", []))
    if not runs:
        errs = [r["error"] for r in results.get("overhead", [])]
        return [f"Not measured{': ' + errs[0] if errs else ''}.", ""]
    first = [r["details"]["run_seconds"][0] for r in runs]
    later = [s for r in runs for s in r["details"]["run_seconds"][1:]]
    imports = [r["import_s"] for r in runs]
    rss = [mib(r["rss_kb"]) for r in runs]
    rows = [["first run in a fresh process, fresh DuckDB file (creates every table)", spread(first)],
            ["later runs in the same process (median over all)", spread(later)],
            ["imports (dagster + de_assets), once per process", spread(imports)]]
    return [f"`daily_pipeline` for {DAY} with no landed files (every step runs and finds nothing); "
            f"{len(runs)} process(es) x {len(runs[0]['details']['run_seconds'])} runs.", "",
            table(["what", "seconds"], rows), "",
            f"Peak RSS of such a process (imports + empty runs, the pipeline's memory floor): "
            f"{spread(rss, '{:,.0f}')} MiB.", ""]


def goals(cfg: Config, results: dict) -> list[list[str]]:
    rows = []
    entry = results["sizes"].get(str(GOAL_SIZE))
    stats = {impl: impl_stats(entry, impl) for impl in IMPLS} if entry else {}
    pipe, ref, pan = stats.get("pipeline"), stats.get("reference"), stats.get("pandas")

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    if pipe and ref:
        ratio = pipe["wall_med"] / ref["wall_med"]
        rows.append([f"pipeline <= {GOAL_REF_RATIO}x reference at 1M", f"{ratio:.2f}x "
                     f"({pipe['wall_med']:.1f} s vs {ref['wall_med']:.1f} s; {pipe['process_med'] / ref['process_med']:.2f}x "
                     "on process wall)", verdict(ratio <= GOAL_REF_RATIO)])
    else:
        rows.append([f"pipeline <= {GOAL_REF_RATIO}x reference at 1M", "not measured (needs --sizes with 1000000)", "—"])
    if pipe:
        rows.append(["pipeline peak RSS <= 1 GiB at 1M", f"{pipe['rss_med']:,.0f} MiB", verdict(pipe["rss_med"] <= GOAL_RSS_MIB)])
    else:
        rows.append(["pipeline peak RSS <= 1 GiB at 1M", "not measured", "—"])
    big = results["sizes"].get(str(5 * GOAL_SIZE))
    big_pipe = impl_stats(big, "pipeline") if big else None
    if pipe and big_pipe:
        scale = big_pipe["wall_med"] / pipe["wall_med"]
        rows.append(["time growth 1M -> 5M linear or better (<= 5x)",
                     f"{scale:.2f}x ({pipe['wall_med']:.1f} -> {big_pipe['wall_med']:.1f} s)", verdict(scale <= 5)])
        growth = big_pipe["rss_med"] / pipe["rss_med"]
        rows.append([f"peak RSS flat 1M -> 5M (growth <= {GOAL_RSS_FLAT}x)",
                     f"{growth:.2f}x ({pipe['rss_med']:,.0f} -> {big_pipe['rss_med']:,.0f} MiB)",
                     verdict(growth <= GOAL_RSS_FLAT)])
    else:
        rows.append(["time growth 1M -> 5M linear or better (<= 5x)", "not measured (5M not run)", "—"])
        rows.append([f"peak RSS flat 1M -> 5M (growth <= {GOAL_RSS_FLAT}x)", "not measured (5M not run)", "—"])
    if pipe and pan:
        speedup = pan["wall_med"] / pipe["wall_med"]
        rows.append([f"pipeline >= {GOAL_PANDAS_SPEEDUP:.0f}x faster than pandas at 1M", f"{speedup:.2f}x "
                     f"({pan['wall_med']:.1f} s vs {pipe['wall_med']:.1f} s)", verdict(speedup >= GOAL_PANDAS_SPEEDUP)])
    else:
        rows.append([f"pipeline >= {GOAL_PANDAS_SPEEDUP:.0f}x faster than pandas at 1M", "not measured", "—"])
    b = results.get("backfill")
    single = ok_runs(b["single"]) if b else []
    if b and (b["days"], b["events_per_day"]) == GOAL_BACKFILL and single:
        wall = med([r["wall_s"] for r in single])
        per = ok_runs(b["per_partition"])
        extra = f"; one run per partition: {med([r['wall_s'] for r in per]):.1f} s" if per else ""
        rows.append([f"30-day backfill at 100k/day < {GOAL_BACKFILL_S:.0f} s", f"{wall:.1f} s single run{extra}",
                     verdict(wall < GOAL_BACKFILL_S)])
    else:
        what = f"measured {b['days']} days x {b['events_per_day']:,}/day instead" if b else "not measured"
        rows.append([f"30-day backfill at 100k/day < {GOAL_BACKFILL_S:.0f} s", what, "—"])
    h = results.get("long_history")
    if h and h["run"]["ok"]:
        on_disk = h.get("run_sqlite")
        disk = (f"; {on_disk['wall_s']:.1f} s on the default SQLite instance" if on_disk and on_disk["ok"] else "")
        worst = max([h["run"]["wall_s"]] + ([on_disk["wall_s"]] if on_disk and on_disk["ok"] else []))
        rows.append([f"{h['days']} daily partitions (~16k events) in one range run <= {GOAL_LONG_HISTORY_S:.0f} s",
                     f"{h['run']['wall_s']:.1f} s (in-memory event log){disk}", verdict(worst <= GOAL_LONG_HISTORY_S)])
    else:
        rows.append([f"557 daily partitions in one range run <= {GOAL_LONG_HISTORY_S:.0f} s", "not measured", "—"])
    c = results.get("concurrent")
    if c and c["runs"]:
        base = next((r["wall_s"] for r in c["runs"] if r["concurrent"] == 1), None)
        text = ", ".join(f"{r['concurrent']} at once {r['wall_s']:.0f} s"
                         + (f" ({base / r['wall_s']:.2f}x)" if base else "") for r in c["runs"])
        rows.append([f"the backfill's days as runs at once ({c['days']} x {c['events_per_day']:,}/day)", text,
                     "reported"])
    return rows


def code_line(results: dict) -> list[str]:
    """Which pipeline source the measurements ran (it is being edited by others meanwhile)."""
    versions: dict[str, int] = {}
    for m in all_measurements(results):
        if m.get("code"):
            versions[m["code"]] = versions.get(m["code"], 0) + 1
    if not versions:
        return []
    if len(versions) == 1:
        return [f"- pipeline source (sha256 of `de_assets/**/*.py`): `{next(iter(versions))}` for every measurement"]
    listed = ", ".join(f"`{v}` ({n} measurements)" for v, n in versions.items())
    return [f"- **the pipeline source changed during the run** (sha256 of `de_assets/**/*.py`): {listed}; "
            "figures mix versions"]


def render(cfg: Config, results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{cfg.command.strip()}` on {results['finished']} (took {results['took_min']:.0f} min). "
        "Do not edit by hand: rerun the command. How it works: [benchmarks/README.md](../benchmarks/README.md).",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}",
        f"- Python {m['python']}, DuckDB {m['duckdb']}, Dagster {m['dagster']}, pandas {m['pandas']}, pandera {m['pandera']}",
        f"- 1-minute load average: {results['load_start']:.2f} at start, {results['load_end']:.2f} at end, "
        f"max {results['load_max']:.2f} when a measurement started (other work on the machine adds noise)",
        *code_line(results),
        "",
        "## Reproduce",
        "",
        "```bash",
        ". .venv/bin/activate",
        cfg.command.strip(),
        "```",
        "",
        f"Data: `de_assets.generator.generate(seed={cfg.seed})`, default dirt and formats (NDJSON, NDJSON.gz, "
        f"CSV, Parquet events; CSV + NDJSON(.gz) request logs at half the event volume), one arrival day "
        f"{DAY}, cached under `benchmarks/out/data/`. Every measurement is a fresh subprocess; "
        f"the pipeline and the baselines get a fresh DuckDB file each repetition. Repetitions: {cfg.reps}, "
        "interleaved (pipeline, reference, pandas, then the next repetition). "
        "**wall** = the work inside the process (Dagster: building Definitions + instance + the run), "
        "**process wall** = the whole subprocess including interpreter start and imports, "
        "**peak RSS** = VmHWM of the subprocess (its own peak resident set).",
        "",
        "## Results per size",
        "",
    ]
    for size in cfg.sizes:
        entry = results["sizes"].get(str(size))
        if entry:
            lines += size_section(size, entry, cfg)
    lines += pandas_note(cfg, results)
    lines += ["## Backfill", ""] + backfill_section(results)
    lines += ["## Backfill with runs at once", ""] + concurrent_section(results)
    lines += ["## Long history", ""] + long_history_section(results)
    lines += ["## Fixed per-run overhead", ""] + overhead_section(results)
    lines += ["## Goals", "", table(["goal", "measured", "status"], goals(cfg, results), numeric=False), ""]
    return "\n".join(lines) + "\n"


def pandas_note(cfg: Config, results: dict) -> list[str]:
    skipped = [int(s) for s, e in results["sizes"].items() if e["pandas_skipped"] and int(s) > cfg.pandas_max_events]
    if not skipped:
        return []
    measured = [(int(s), impl_stats(e, "pandas")) for s, e in results["sizes"].items() if impl_stats(e, "pandas")]
    text = (f"pandas is not run above {cfg.pandas_max_events:,} events/day ({', '.join(f'{s:,}' for s in skipped)}): "
            "the naive script keeps every record as Python dicts and strings, so its memory and time grow with "
            "the day's volume")
    if measured:
        size, s = max(measured)
        text += (f"; at {size:,} it took {s['wall_med']:.0f} s and {s['rss_med']:,.0f} MiB, so about "
                 + ", ".join(f"{s['wall_med'] * k / size / 60:.1f} min and {s['rss_med'] * k / size / 1024:.1f} GiB "
                             f"at {k:,}" for k in skipped) + " by linear extrapolation")
    return [text + ". Override with `--pandas-max-events`.", ""]


# ------------------------------------------------------------------------------------------------


def all_measurements(results: dict) -> list[dict]:
    sections = [e["runs"][i] for e in results["sizes"].values() for i in IMPLS]
    if "backfill" in results:
        sections += [results["backfill"]["single"], results["backfill"]["per_partition"]]
    if "long_history" in results:
        sections.append([m for m in (results["long_history"].get("run"), results["long_history"].get("run_sqlite")) if m])
    sections.append(results.get("overhead", []))
    return [m for section in sections for m in section]


def write_report(cfg: Config, results: dict) -> None:
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(render(cfg, results))
    print(f"\nwrote {cfg.out.relative_to(ROOT) if cfg.out.is_relative_to(ROOT) else cfg.out}", flush=True)


def rewrite_report(results: dict, out: Path) -> None:
    """The report of `results` (the last full run's figures, a section possibly re-measured since),
    laid out with that full run's settings."""
    measured = parse_args(shlex.split(results["config"]["command"])[2:])
    measured.out = out
    write_report(measured, results)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    if "--render-only" in argv:
        rewrite_report(json.loads((OUT / "results.json").read_text()), cfg.out)
        return 0
    if cfg.only:
        # a full run's figures, this case re-measured in them; without one (a fresh clone), this case alone
        full = (OUT / "results.json").exists()
        results = json.loads((OUT / "results.json").read_text()) if full else {}
        load = os.getloadavg()[0]
        {"concurrent": bench_concurrent, "backfill": bench_backfill, "long_history": bench_long_history}[cfg.only](cfg, results)
        results[cfg.only]["remeasured"] = {
            "command": cfg.command.strip(), "load_start": load,
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        if not full:
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / f"{cfg.only}.json").write_text(json.dumps(results[cfg.only], indent=1, default=str))
            print(f"\nno full run's figures to update (benchmarks/out/results.json): wrote "
                  f"{(OUT / f'{cfg.only}.json').relative_to(ROOT)}, the report is unchanged", flush=True)
            return 0
        (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
        rewrite_report(results, cfg.out)
        return 0
    began = time.perf_counter()
    loads: list[float] = []
    results: dict = {"machine": machine(), "config": {k: str(v) for k, v in asdict(cfg).items()},
                     "sizes": {}, "load_start": os.getloadavg()[0]}
    print(f"benchmark: sizes {cfg.sizes}, {cfg.reps} rep(s); work in {OUT.relative_to(ROOT)}/", flush=True)
    bench_sizes(cfg, results)
    if not cfg.skip_backfill:
        bench_backfill(cfg, results)
        if cfg.concurrency:
            bench_concurrent(cfg, results)
    if cfg.long_history_days:
        bench_long_history(cfg, results)
    bench_overhead(cfg, results)
    loads += [m["loadavg"] for m in all_measurements(results) if m.get("loadavg") is not None]
    results.update(load_end=os.getloadavg()[0], load_max=max(loads, default=0.0),
                   took_min=(time.perf_counter() - began) / 60,
                   finished=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {(OUT / 'results.json').relative_to(ROOT)}", flush=True)
    write_report(cfg, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
