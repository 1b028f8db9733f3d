"""Spike for issue 13's "1M -> 5M linear" goal: what the raw step's intermediate tables cost as the day grows.

    python benchmarks/raw_stream_spike.py [--landing DIR] [--day 2025-03-03] [--reps 1] [--ways today,staged,stream]
                                          [--out benchmarks/out/raw_stream]

The raw step (`lib/ingest.py`, `lib/raw_lake.py`) projects a day's landed events in a private in-memory DuckDB
whose buffer pool is capped at 600 MB (the pipeline's default), and materializes the rows twice before its
Parquet file: the staged lines (`_lines`, every line's text) and the private `raw.events` table (the projected
rows), which `raw_lake.write_files` then copies into the lake's file. Beyond the cap both spill to disk. This
spike times three ways of getting from the landed files to the same Parquet file, each on a fresh connection:

  today    stage `_lines`, INSERT the projection into the private raw table, COPY it to Parquet
  staged   stage `_lines`, COPY the projection straight to Parquet (no private raw table)
  stream   COPY the projection of one scan of the files straight to Parquet (nothing staged)

and samples the spill folder every 0.2 s (largest size seen). The three files must hold the same rows (count and
an order-independent hash of every column). Nothing of the pipeline changes; generated state lives under --out.
Default landing: the benchmark's 1M-event day (`python benchmarks/run.py` generates it and the 5M one).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from de_assets.lib import ingest, landing, privacy, served, staging  # noqa: E402
from de_assets.lib.sql import literal  # noqa: E402
from de_assets.lib.tables import RAW_EVENTS, ensure_tables  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = "raw-stream-spike-key-raw-stream-spike"
MEMORY_LIMIT = "600MB"  # the pipeline's default (`DE_ASSETS_DUCKDB_MEMORY_LIMIT`)
INGESTED_AT = datetime(2026, 12, 3, tzinfo=timezone.utc).replace(tzinfo=None)


class SpillSampler:
    """Largest size of a folder, sampled every 0.2 s while in the `with` block."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()

    def _run(self):
        while not self._stop.wait(0.2):
            size = sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())
            self.peak = max(self.peak, size)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _con(spill: Path):
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(spill)})
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    ensure_tables(con)
    privacy.install_macros(con, KEY)
    return con


def _copy(con, select: str, target: Path) -> None:
    con.execute(f"COPY ({select}) TO {literal(str(target))} (FORMAT parquet, COMPRESSION zstd)",
                {"ingested_at": INGESTED_AT})


def _projection(records: str) -> str:
    """The raw step's projection (`ingest.RAW_EVENTS_SELECT`) of ``records``, typed as the lake file is."""
    _, select_sql = ingest.SOURCES["events"]
    return f"SELECT {served.select_list(RAW_EVENTS)} FROM ({select_sql.replace('{records}', records)})"


def _stage(con, files, day: date) -> None:
    staging.stage(con, files)
    con.execute("CREATE OR REPLACE TEMP TABLE _file_days AS SELECT DISTINCT source_file, ?::DATE AS arrival_date "
                "FROM _lines", [day])


STAGED = "SELECT * FROM _lines JOIN _file_days USING (source_file)"


def today(con, files, day: date, target: Path) -> dict:
    began = time.perf_counter()
    _stage(con, files, day)
    staged = time.perf_counter()
    _, select_sql = ingest.SOURCES["events"]
    con.execute(f"INSERT INTO {RAW_EVENTS.name} BY NAME {select_sql.replace('{records}', STAGED)}",
                {"ingested_at": INGESTED_AT})
    projected = time.perf_counter()
    con.execute(f"COPY (SELECT {served.select_list(RAW_EVENTS)} FROM {RAW_EVENTS.name}) TO {literal(str(target))} "
                "(FORMAT parquet, COMPRESSION zstd)")
    done = time.perf_counter()
    return {"stage_s": staged - began, "project_s": projected - staged, "write_s": done - projected}


def staged(con, files, day: date, target: Path) -> dict:
    began = time.perf_counter()
    _stage(con, files, day)
    mid = time.perf_counter()
    _copy(con, _projection(STAGED), target)
    return {"stage_s": mid - began, "project_write_s": time.perf_counter() - mid}


def stream(con, files, day: date, target: Path) -> dict:
    began = time.perf_counter()
    con.execute("SET preserve_insertion_order = true")  # line numbers: each file read in order, as staging does
    scans = "\nUNION ALL\n".join(
        f"SELECT {literal(f.relative)} AS source_file, line_no, line, NULL::VARCHAR AS read_error, "
        f"{literal(day)}::DATE AS arrival_date FROM ({landing.records_sql(con, f)})" for f in files)
    _copy(con, _projection(scans), target)
    return {"project_write_s": time.perf_counter() - began}


WAYS = {"today": today, "staged": staged, "stream": stream}


def fingerprint(path: Path) -> tuple:
    columns = ", ".join(f'"{c.name}"' for c in RAW_EVENTS.columns)
    with duckdb.connect() as con:
        return con.execute(f"SELECT count(*), sum(hash({columns})) FROM read_parquet({literal(str(path))})").fetchone()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", default=str(HERE / "out/data/events1000000-days1-2025-03-03-seed7/landing"))
    parser.add_argument("--day", default="2025-03-03")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--ways", default="today,staged,stream", help="which of the three to run, comma separated")
    parser.add_argument("--out", default=str(HERE / "out/raw_stream"))
    args = parser.parse_args(argv)
    day, out = date.fromisoformat(args.day), Path(args.out)
    files = landing.scan_day(args.landing, "events", day).files
    results: dict[str, list[dict]] = {}
    prints = {}
    for rep in range(args.reps):
        for name, run in ((w, WAYS[w]) for w in args.ways.split(",")):
            work = out / name
            shutil.rmtree(work, ignore_errors=True)
            con = _con(work / "spill")
            target = work / "raw_events.parquet"
            began = time.perf_counter()
            with SpillSampler(work / "spill") as spill:
                phases = run(con, files, day, target)
            phases["total_s"] = time.perf_counter() - began
            phases["spill_peak_mb"] = spill.peak / 1e6
            con.close()
            prints[name] = fingerprint(target)
            results.setdefault(name, []).append(phases)
            print(name, rep, {k: round(v, 2) for k, v in phases.items()}, flush=True)
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{sum(f.bytes for f in files) / 1e6:,.0f} MB in {len(files)} files; median (min-max) over {args.reps} "
          f"rep(s), memory_limit {MEMORY_LIMIT}")
    for name, runs in results.items():
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"  {name:7s} {key:16s} {statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})")
    rows = {name: p[0] for name, p in prints.items()}
    same = len(set(prints.values())) == 1
    print(f"rows {rows}; same rows in every file: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
