"""Figures for the lake spike (docs/lake.md): de_assets/lib/lake.py on a local SQLite catalog + file warehouse.

    python benchmarks/lake_spike.py [--rows-per-day 100000] [--days 10] [--reps 3] [--commits 6]
                                    [--writer-rows 20000] [--small-commits 200] [--out benchmarks/out/lake]
                                    [--writers-only]

Measures, each printed as median (min-max) seconds over --reps:
  overwrite   one day (--rows-per-day rows) replaced in one commit, on a table of --days days; and a
              10-row day (mostly fixed commit cost: manifests + metadata.json + catalog row)
  listing     snapshot_files() of the current snapshot, after --days commits and after --small-commits more
  writers     1, 2 and 4 processes each overwriting its own day --commits times at once (spawn):
              commits/s, rows/s and how many commits pyiceberg had to retry; then 2 and 4 writers that
              take a per-table file lock around each overwrite (serialized instead of optimistic)
  read        one aggregate over the --days x --rows-per-day rows: DuckDB read_parquet view over the
              snapshot's files vs the same rows in a native DuckDB table (file database)
Generated state lives under --out (deleted and recreated); nothing is committed.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import multiprocessing
import shutil
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from de_assets.lib import lake  # noqa: E402

SCHEMA = pa.schema([("message_id", pa.string()), ("user_id", pa.string()), ("event", pa.string()),
                    ("ts", pa.timestamp("us", tz="UTC")), ("value", pa.int64()), ("event_date", pa.date32())])
EVENTS = np.array(["page", "track:signup", "track:purchase", "identify", "screen"])
DAY0 = date(2025, 3, 1)
QUERY = ("SELECT event_date, event, count(*) AS n, count(DISTINCT user_id) AS users, sum(value) AS v "
         "FROM {t} GROUP BY ALL ORDER BY ALL")


def day_rows(day: date, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    midnight = np.datetime64(day.isoformat(), "us")
    return pa.table({
        "message_id": pa.array(np.char.add(f"{day.isoformat()}-{seed}-", ids.astype(str))),
        "user_id": pa.array(np.char.add("u-", rng.integers(0, n // 10 + 1, n).astype(str))),
        "event": pa.array(EVENTS[rng.integers(0, len(EVENTS), n)]),
        "ts": pa.array(midnight + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
        "value": pa.array(rng.integers(0, 1000, n)),
        "event_date": pa.array([day] * n, pa.date32()),
    }, schema=SCHEMA)


def timed(fn, reps: int) -> tuple[list[float], object]:
    out, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        out.append(time.perf_counter() - start)
    return out, result


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"


class Counter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.inner = self.outer = 0

    def emit(self, record):
        message = record.getMessage()
        self.inner += "Commit failed due to a concurrent update" in message
        self.outer += "commit conflict on" in message


def _writer(data_dir, day, commits, n, barrier, results, lock):
    counter = Counter()
    for name in ("pyiceberg", "de_assets.lib.lake"):
        logging.getLogger(name).addHandler(counter)
    logging.getLogger("pyiceberg").setLevel(logging.WARNING)
    table = lake.ensure_table(lake.open_catalog(data_dir=data_dir), "clean.events", SCHEMA, "event_date")
    data = [day_rows(day, n, seed) for seed in range(commits)]
    barrier.wait(timeout=120)
    start = time.time()
    for seed in range(commits):
        if lock:  # experiment: one writer per table at a time (flock) instead of optimistic retries
            with open(Path(data_dir) / "table.lock", "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                table.refresh()
                lake.overwrite_partitions(table, data[seed], "event_date", [day])
        else:
            lake.overwrite_partitions(table, data[seed], "event_date", [day])
    results.put((start, time.time(), counter.inner, counter.outer))


def writers(out: Path, count: int, commits: int, n: int, lock: bool) -> dict:
    data_dir = out / f"writers{count}{'-locked' if lock else ''}"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(data_dir), DAY0 + timedelta(days=i), commits, n, barrier, results, lock))
             for i in range(count)]
    for p in procs:
        p.start()
    got = [results.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    wall = max(g[1] for g in got) - min(g[0] for g in got)
    return {"writers": count, "commits": count * commits, "wall_s": wall, "commits_per_s": count * commits / wall,
            "rows_per_s": count * commits * n / wall, "pyiceberg_retries": sum(g[2] for g in got),
            "redone_overwrites": sum(g[3] for g in got)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--commits", type=int, default=6)
    parser.add_argument("--writer-rows", type=int, default=20_000)
    parser.add_argument("--small-commits", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/lake"))
    parser.add_argument("--writers-only", action="store_true", help="only the 1/2/4 concurrent writers")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    if args.writers_only:
        return run_writers(args)
    n, days = args.rows_per_day, [DAY0 + timedelta(days=i) for i in range(args.days)]

    table = lake.ensure_table(lake.open_catalog(data_dir=args.out / "single"), "clean.events", SCHEMA, "event_date")
    load, _ = timed(lambda: [lake.overwrite_partitions(table, day_rows(d, n, 0), "event_date", [d]) for d in days], 1)
    print(f"setup: {args.days} days x {n:,} rows committed one day at a time in {load[0]:.1f} s")
    batch = day_rows(days[0], n, 1)
    big, _ = timed(lambda: lake.overwrite_partitions(table, batch, "event_date", [days[0]]), args.reps)
    tiny_day = days[-1] + timedelta(days=1)
    tiny, _ = timed(lambda: lake.overwrite_partitions(table, day_rows(tiny_day, 10, 0), "event_date", [tiny_day]), args.reps)
    print(f"overwrite one day of {n:,} rows: {fmt(big)}; of 10 rows: {fmt(tiny)}")

    listing, files = timed(lambda: lake.snapshot_files(table), args.reps)
    manifests = len(table.current_snapshot().manifests(table.io))
    print(f"snapshot_files after {len(table.snapshots())} snapshots: {fmt(listing)} ({len(files)} files, {manifests} manifests)")

    with duckdb.connect() as con:
        register, _ = timed(lambda: lake.register_view(con, table), args.reps)
        lake.register_view(con, table)
        total = con.execute("SELECT count(*) FROM clean.events").fetchone()[0]
        view_q, expected = timed(lambda: con.execute(QUERY.format(t="clean.events")).fetchall(), args.reps)
    native_db = args.out / "native.duckdb"
    with duckdb.connect(str(native_db)) as con:
        lake.register_view(con, table, name="lake.events")
        con.execute("CREATE TABLE events AS SELECT * FROM lake.events")
        con.execute("DROP VIEW lake.events")
    with duckdb.connect(str(native_db), read_only=True) as con:
        native_q, got = timed(lambda: con.execute(QUERY.format(t="events")).fetchall(), args.reps)
    assert got == expected, "native table and lake view disagree"
    print(f"read {total:,} rows, group-by: read_parquet view {fmt(view_q)} (view registration {fmt(register)}); "
          f"native DuckDB table {fmt(native_q)}")

    for i in range(args.small_commits):
        lake.overwrite_partitions(table, day_rows(tiny_day, 10, i), "event_date", [tiny_day])
    listing, files = timed(lambda: lake.snapshot_files(table), args.reps)
    manifests = len(table.current_snapshot().manifests(table.io))
    print(f"snapshot_files after {len(table.snapshots())} snapshots: {fmt(listing)} ({len(files)} files, {manifests} manifests)")
    tiny2, _ = timed(lambda: lake.overwrite_partitions(table, day_rows(tiny_day, 10, 0), "event_date", [tiny_day]), args.reps)
    print(f"overwrite of 10 rows now: {fmt(tiny2)}")

    run_writers(args)


def run_writers(args) -> None:
    for count, lock in ((1, False), (2, False), (4, False), (2, True), (4, True)):
        r = writers(args.out, count, args.commits, args.writer_rows, lock)
        print(f"{count} writer(s){' (flock per table)' if lock else ''} x {args.commits} overwrites of {args.writer_rows:,} rows: {r['wall_s']:.2f} s, "
              f"{r['commits_per_s']:.2f} commits/s, {r['rows_per_s']:,.0f} rows/s, "
              f"pyiceberg retries {r['pyiceberg_retries']}, redone overwrites {r['redone_overwrites']}")


if __name__ == "__main__":
    main()
