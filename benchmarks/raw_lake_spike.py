"""Spike for issue 12's remaining step (docs/lake.md, "Still to do" 1): the raw layer in the lake.

    python benchmarks/raw_lake_spike.py [--landing DIR] [--day 2025-03-03] [--reps 3] [--out benchmarks/out/raw_lake]

Ingests one landed day two ways, each rep on fresh state, interleaved, and prints seconds per phase:

  file   today's path: `ingest.ingest_days` on a DuckDB file (stage, project, insert; the file's lock held
         throughout, since every phase runs on the warehouse connection)
  lake   stage and project in a private in-memory DuckDB (no lock), COPY the projected rows straight into
         Parquet data files of an Iceberg table `raw.events`, then one pyiceberg append (`add_files`) whose
         snapshot summary carries the day's file registrations (the outbox: a process killed after the
         commit leaves its registrations in the lake, not lost)

then what the cleaning of the day would pay to read its raw rows into memory: from the file's table
vs from the lake snapshot (`lake.register_view` + CREATE TABLE AS), and that the registrations come
back from the snapshot summaries. The landing default is the benchmark's 1M-event day
(`python benchmarks/run.py` generates it). Generated state lives under --out; nothing is committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from de_assets.lib import ingest, lake, landing, privacy, served, staging  # noqa: E402
from de_assets.lib.tables import RAW_EVENTS, ensure_tables  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = "raw-lake-spike-key-raw-lake-spike-key"
REGISTRATIONS = "de-assets.registrations"  # snapshot summary property: the commit's file registrations


def _con(path: str = ":memory:", spill: Path | None = None):
    con = duckdb.connect(path)
    con.execute("SET memory_limit = '600MB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    if spill is not None:
        con.execute(f"SET temp_directory = '{spill}'")
    return con


def file_path(root: Path, day: date, work: Path) -> dict:
    db = work / "warehouse.duckdb"
    con = _con(str(db))
    ensure_tables(con)
    privacy.install_macros(con, KEY)
    began = time.perf_counter()
    ingest.ingest_days(con, root, "events", day, day, "spike")
    ingest_s = time.perf_counter() - began
    rows = con.execute("SELECT count(*) FROM raw.events").fetchone()[0]
    con.close()
    con = _con(str(db))
    began = time.perf_counter()
    con.execute("CREATE TEMP TABLE _raw AS SELECT * FROM raw.events WHERE arrival_date = ?", [day])
    read_s = time.perf_counter() - began
    con.close()
    return {"ingest_s": ingest_s, "locked_s": ingest_s, "read_s": read_s, "rows": rows}


def lake_path(root: Path, day: date, work: Path) -> dict:
    catalog = lake.open_catalog(data_dir=work)
    table = lake.ensure_table(catalog, "raw.events", served.arrow_schema(RAW_EVENTS), "arrival_date")
    folder = Path(urlparse(table.location()).path) / "data" / f"arrival_date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    con = _con(spill=work / "spill")
    privacy.install_macros(con, KEY)
    began = time.perf_counter()
    files = landing.scan_day(root, "events", day).files
    staging.stage(con, files)
    outcomes = staging.outcomes(con)
    con.execute("CREATE TEMP TABLE _file_days AS SELECT DISTINCT source_file, ?::DATE AS arrival_date FROM _lines",
                [day])
    staged_s = time.perf_counter() - began
    _, select_sql = ingest.SOURCES["events"]
    projection = select_sql.replace("{records}", "SELECT * FROM _lines JOIN _file_days USING (source_file)")
    typed = ", ".join(f'"{c.name}"::VARCHAR AS "{c.name}"' if c.type == "JSON" else f'"{c.name}"'
                      for c in RAW_EVENTS.columns)
    data_file = folder / f"{uuid.uuid4().hex}.parquet"
    ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(f"COPY (SELECT {typed} FROM ({projection})) TO '{data_file}' (FORMAT parquet, COMPRESSION zstd, "
                "ROW_GROUP_SIZE 122880)", {"ingested_at": ingested_at})
    projected_s = time.perf_counter() - began - staged_s
    con.close()
    began = time.perf_counter()
    registrations = [{"path": f.relative, "sha256": landing.sha256_of(f.path), "bytes": f.bytes,
                      "rows": outcomes.get(f.relative, ("ingested", None, 0, 0))[2], "arrival_date": str(day)}
                     for f in files]
    with table.transaction() as tx:
        tx.add_files([str(data_file)], snapshot_properties={REGISTRATIONS: json.dumps(registrations)},
                     check_duplicate_files=False)
    commit_s = time.perf_counter() - began  # checksums of the landed files included, as in `file`
    table = catalog.load_table("raw.events")
    outbox = [r for s in table.snapshots() if s.summary is not None
              for r in json.loads(s.summary.additional_properties.get(REGISTRATIONS, "[]"))]
    con = _con()
    began = time.perf_counter()
    lake.register_view(con, table)
    con.execute("CREATE TEMP TABLE _raw AS SELECT * FROM raw.events WHERE arrival_date = ?", [day])
    read_s = time.perf_counter() - began
    rows = con.execute("SELECT count(*) FROM _raw").fetchone()[0]
    con.close()
    return {"ingest_s": staged_s + projected_s + commit_s, "locked_s": 0.0, "stage_s": staged_s,
            "project_s": projected_s, "commit_s": commit_s, "read_s": read_s, "rows": rows,
            "outbox_files": len(outbox), "files": len(files), "parquet_mb": data_file.stat().st_size / 1e6}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", default=str(HERE / "out/data/events1000000-days1-2025-03-03-seed7/landing"))
    parser.add_argument("--day", default="2025-03-03")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "out/raw_lake"))
    args = parser.parse_args(argv)
    root, day, out = Path(args.landing), date.fromisoformat(args.day), Path(args.out)
    results: dict[str, list[dict]] = {"file": [], "lake": []}
    for rep in range(args.reps):
        for name, run in (("file", file_path), ("lake", lake_path)):
            work = out / f"{name}-{rep}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            results[name].append(run(root, day, work))
            print(name, rep, {k: round(v, 2) if isinstance(v, float) else v for k, v in results[name][-1].items()},
                  flush=True)
            shutil.rmtree(work, ignore_errors=True)
    print("\nmedian (min-max) seconds over", args.reps, "reps")
    for name, runs in results.items():
        for key in sorted(runs[0]):
            values = [r[key] for r in runs]
            if isinstance(values[0], float):
                print(f"  {name:5s} {key:10s} {statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"  {name:5s} rows       {runs[0]['rows']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
