"""Spike for issue 12's next step (docs/lake.md, "Still to do" 1): the clean layer in the lake.

    python benchmarks/clean_lake_spike.py WAREHOUSE [--day 2025-03-03] [--reps 3]

WAREHOUSE: the DuckDB file of a pipeline run of one day, with its lake beside it (`catalog.db` +
`lake/`), e.g. the 1M-event day of `benchmarks/run.py` run once into a scratch folder. The spike
WRITES to it (rewrites the day's `clean.events` rows, publishes them again): use a scratch copy.

Today the cleaning writes its rows twice: into the file's `clean.events` (`clean._write`, inside the
file's lock), then the same rows as Parquet files + one Iceberg commit (`served.publish`, after the
checks). With the lake as the store, the first write goes and every reader of `clean.events` reads
Parquet through a view instead of the file's table. This measures both sides, on the same rows:

  insert   the day's rows deleted and inserted again into the file's table, one transaction (what goes)
  publish  the day's rows written as Parquet data files and committed (what stays)
  readers  each query that reads `clean.events` in a daily run (the marts over clean events, the
           table's checks), on the file's table vs on a view over the lake's current data files. The
           view shadows `clean.events` through the connection's `search_path` (an attached in-memory
           catalog listed first), the way the plan lets the checks judge staged rows.

Repetitions alternate the two sides; medians are printed. Nothing is generated or committed to git.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from de_assets.lib import lake, marts, served  # noqa: E402
from de_assets.lib.raw_lake import _view_sql  # noqa: E402
from de_assets.lib.tables import CLEAN_EVENTS  # noqa: E402

CHECK_RULES = [*CLEAN_EVENTS.checks, *CLEAN_EVENTS.warnings]


def _connect(path: str):
    con = duckdb.connect(path)
    con.execute("SET memory_limit = '600MB'")  # the Warehouse resource's default
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _readers(day: date) -> dict[str, object]:
    """name -> callable(con): every query of a daily run that reads clean.events (marts and checks)."""
    params = {"start": day, "end": day}
    queries = {
        "marts.daily_engagement": marts.DAILY_ENGAGEMENT_SQL,
        "marts.funnel_daily": marts.funnel_sql(marts.DEFAULT_FUNNELS),
        "marts.retention_cohorts": marts.RETENTION_SQL,
        "marts.revenue_daily": marts.REVENUE_DAILY_SQL,
    }
    out = {name: (lambda con, sql=sql: con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall())
           for name, sql in queries.items()}
    for rule in CHECK_RULES:
        by_day = getattr(rule, "by_day", None)
        out[f"check {rule.__name__}"] = (
            (lambda con, f=by_day: f(con, CLEAN_EVENTS, day, day)) if by_day
            else (lambda con, f=rule: f(con, CLEAN_EVENTS, day, day)))
    return out


def _shadow(con, files: list[str]) -> None:
    """`clean.events` in this connection = a view over the lake's data files (other connections of
    the file still see its table)."""
    con.execute("ATTACH IF NOT EXISTS ':memory:' AS lakeview")
    con.execute("CREATE SCHEMA IF NOT EXISTS lakeview.clean")
    con.execute(f"CREATE OR REPLACE VIEW lakeview.clean.events AS {_view_sql(con, CLEAN_EVENTS, files)}")


def _use(con, side: str, database: str) -> None:
    """Which `clean.events` the connection's queries read: the file's table, or the lake view."""
    if side == "lake":
        con.execute(f"SET search_path = 'lakeview.main,{Path(database).stem}.main'")
    else:
        con.execute("RESET search_path")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warehouse")
    parser.add_argument("--day", default="2025-03-03")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    day = date.fromisoformat(args.day)
    catalog = served.open_lake(args.warehouse, None, None, create=False)
    con = _connect(args.warehouse)
    [(rows,)] = con.execute(f"SELECT count(*) FROM {CLEAN_EVENTS.name} WHERE arrival_date = ?", [day]).fetchall()
    print(f"{CLEAN_EVENTS.name} on {day}: {rows:,} rows; {args.reps} rep(s), medians in seconds", flush=True)
    con.execute(f"CREATE TEMP TABLE _staged AS SELECT * FROM {CLEAN_EVENTS.name} WHERE arrival_date = ?", [day])

    def insert() -> None:
        con.execute("BEGIN")
        con.execute(f"DELETE FROM {CLEAN_EVENTS.name} WHERE arrival_date = ?", [day])
        con.execute(f"INSERT INTO {CLEAN_EVENTS.name} BY NAME SELECT * FROM _staged")
        con.execute("COMMIT")

    writes = {"insert": [], "publish": []}
    for _ in range(args.reps):
        writes["insert"].append(_timed(insert))
        writes["publish"].append(_timed(lambda: served.publish(con, catalog, CLEAN_EVENTS, day, day)))
    for name, times in writes.items():
        print(f"  {name:<34} {statistics.median(times):7.3f}   ({', '.join(f'{t:.3f}' for t in times)})", flush=True)

    table = served.lake_table(catalog, CLEAN_EVENTS)
    lake.use_storage(con, table.location())
    _shadow(con, lake.snapshot_files(table))
    for side in ("file", "lake"):  # the shadow answers the same rows
        _use(con, side, args.warehouse)
        print(f"  rows seen through the {side:<4} side: "
              f"{con.execute('SELECT count(*) FROM clean.events WHERE arrival_date = ?', [day]).fetchone()[0]:,}")
    print(f"\n  {'reader':<34} {'file':>7} {'lake':>7} {'lake-file':>9}")
    totals = {"file": 0.0, "lake": 0.0}
    for name, query in _readers(day).items():
        times = {"file": [], "lake": []}
        for rep in range(args.reps):
            for side in (("file", "lake") if rep % 2 == 0 else ("lake", "file")):
                _use(con, side, args.warehouse)
                times[side].append(_timed(lambda: query(con)))
        med = {side: statistics.median(t) for side, t in times.items()}
        for side in totals:
            totals[side] += med[side]
        print(f"  {name:<34} {med['file']:7.3f} {med['lake']:7.3f} {med['lake'] - med['file']:+9.3f}", flush=True)
    print(f"  {'all readers':<34} {totals['file']:7.3f} {totals['lake']:7.3f} {totals['lake'] - totals['file']:+9.3f}")
    saved = statistics.median(writes["insert"])
    print(f"\nthe move: -{saved:.3f} s (no insert into the file), {totals['lake'] - totals['file']:+.3f} s (readers)"
          f" = {totals['lake'] - totals['file'] - saved:+.3f} s per daily run of this size")
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
