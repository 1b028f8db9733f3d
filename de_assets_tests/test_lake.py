"""The lake core (de_assets/lib/lake.py) on real files: concurrent commits from processes, idempotent
overwrites, pinned snapshot reads through DuckDB, physical erasure, and a writer killed mid-commit."""

import multiprocessing
import os
import signal
from datetime import date, datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from de_assets.lib import lake

SCHEMA = pa.schema([("id", pa.int64()), ("user_id", pa.string()), ("value", pa.int64()),
                    ("event_date", pa.date32())])
DAYS = [date(2024, 3, d) for d in (1, 2, 3, 4)]
TABLE = "clean.events"
# No column statistics for the personal column: manifests would otherwise keep an erased id as a bound.
PII_PROPS = {"write.metadata.metrics.column.user_id": "none"}


def rows(day: date, n: int, tag: str) -> pa.Table:
    """n rows for ``day``; ids unique per day, user ids and values say which write they came from."""
    base = day.day * 1_000_000
    return pa.table({"id": [base + i for i in range(n)], "user_id": [f"{tag}-{i % 7}" for i in range(n)],
                     "value": [i for i in range(n)], "event_date": [day] * n}, schema=SCHEMA)


def open_table(data_dir):
    return lake.ensure_table(lake.open_catalog(data_dir=data_dir), TABLE, SCHEMA, "event_date", PII_PROPS)


def read(table, snapshot_id=None, sql="SELECT id, user_id, value, event_date FROM clean.events ORDER BY id"):
    with duckdb.connect() as con:
        lake.register_view(con, table, snapshot_id)
        return con.execute(sql).fetchall()


def expected(*parts: pa.Table):
    return sorted((r["id"], r["user_id"], r["value"], r["event_date"]) for p in parts for r in p.to_pylist())


def _writer(data_dir, day, rounds, n, barrier, errors):
    """One process: open (and maybe create) catalog and table, then overwrite its day ``rounds`` times."""
    try:
        table = open_table(data_dir)
        barrier.wait(timeout=60)
        for r in range(rounds):
            lake.overwrite_partitions(table, rows(day, n + r, f"r{r}"), "event_date", [day])
    except BaseException as exc:  # report the cause to the parent, not only a non-zero exit code
        errors.put(f"{day}: {type(exc).__name__}: {exc}")
        raise


def test_four_processes_overwrite_their_days_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(len(DAYS)), ctx.Queue()
    rounds, n = 4, 50
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), d, rounds, n, barrier, errors)) for d in DAYS]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert failures == [] and [p.exitcode for p in procs] == [0] * len(DAYS)

    table = open_table(tmp_path)
    last = rounds - 1
    assert read(table) == expected(*(rows(d, n + last, f"r{last}") for d in DAYS))
    assert len(read(table)) == len(DAYS) * (n + last)
    # every overwrite was one commit: 4 days x 4 rounds commit ids, each a DELETE+APPEND pair except the
    # first write of a day (nothing to delete: APPEND only)
    commits = {}
    for s in table.snapshots():
        commits.setdefault(s.summary.additional_properties[lake.COMMIT_ID], []).append(s.summary.operation.value)
    assert len(commits) == len(DAYS) * rounds
    assert sorted(map(tuple, commits.values())) == sorted([("append",)] * 4 + [("delete", "append")] * 12)


def _same_day_writer(data_dir, tag, rounds, barrier, errors):
    try:
        table = open_table(data_dir)
        barrier.wait(timeout=60)
        for r in range(rounds):
            lake.overwrite_partitions(table, rows(DAYS[0], 30 + r, f"{tag}{r}"), "event_date", [DAYS[0]])
    except BaseException as exc:
        errors.put(f"{tag}: {type(exc).__name__}: {exc}")
        raise


def test_two_processes_overwriting_the_same_day_leave_exactly_one_version(tmp_path):
    """Not the intended use (Dagster never runs one partition twice at once), but safe: a conflicting
    overwrite is detected by pyiceberg's validation and redone, so the last commit wins whole."""
    ctx = multiprocessing.get_context("spawn")
    barrier, errors, rounds = ctx.Barrier(2), ctx.Queue(), 3
    procs = [ctx.Process(target=_same_day_writer, args=(str(tmp_path), tag, rounds, barrier, errors)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert errors.empty() and [p.exitcode for p in procs] == [0, 0]
    got = read(open_table(tmp_path))
    candidates = [expected(rows(DAYS[0], 30 + r, f"{tag}{r}")) for tag in "ab" for r in range(rounds)]
    assert got in candidates
    assert got[0][1].startswith(("a2", "b2"))  # a writer's last round is the last thing it commits


def test_overwrite_is_idempotent_and_replaces_exactly_the_days(tmp_path):
    table = open_table(tmp_path)
    d1, d2, d3 = DAYS[:3]
    lake.overwrite_partitions(table, pa.concat_tables([rows(d1, 5, "a"), rows(d2, 3, "a")]), "event_date", [d1, d2])
    lake.overwrite_partitions(table, rows(d3, 2, "a"), "event_date", ["2024-03-03"])
    first = read(table)
    lake.overwrite_partitions(table, rows(d3, 2, "a"), "event_date", [d3])  # the same write again
    assert read(table) == first == expected(rows(d1, 5, "a"), rows(d2, 3, "a"), rows(d3, 2, "a"))

    lake.overwrite_partitions(table, rows(d2, 4, "b"), "event_date", [d2])  # replaces d2 only
    assert read(table) == expected(rows(d1, 5, "a"), rows(d2, 4, "b"), rows(d3, 2, "a"))
    lake.overwrite_partitions(table, rows(d1, 0, "c"), "event_date", [d1, d3])  # days without rows: emptied
    assert read(table) == expected(rows(d2, 4, "b"))

    with pytest.raises(ValueError, match="2 rows of clean.events have event_date outside the days written"):
        lake.overwrite_partitions(table, rows(d1, 2, "x"), "event_date", [d2])
    assert read(table) == expected(rows(d2, 4, "b"))


def _commit_day(data_dir, day, n, tag):
    lake.overwrite_partitions(open_table(data_dir), rows(day, n, tag), "event_date", [day])


def test_reader_pinned_to_a_snapshot_keeps_its_rows_while_a_writer_commits(tmp_path):
    table = open_table(tmp_path)
    lake.overwrite_partitions(table, rows(DAYS[0], 6, "a"), "event_date", [DAYS[0]])
    pinned = table.current_snapshot().snapshot_id

    with duckdb.connect() as con:  # a reader holding a view over snapshot S
        assert lake.register_view(con, table) == pinned
        before = con.execute("SELECT id, user_id FROM clean.events ORDER BY id").fetchall()
        writer = multiprocessing.get_context("spawn").Process(target=_commit_day, args=(str(tmp_path), DAYS[0], 3, "b"))
        writer.start()
        writer.join(timeout=120)
        assert writer.exitcode == 0  # the open reader did not block the writer
        assert con.execute("SELECT id, user_id FROM clean.events ORDER BY id").fetchall() == before
    assert before == [(r[0], r[1]) for r in expected(rows(DAYS[0], 6, "a"))]

    table.refresh()
    assert table.current_snapshot().snapshot_id != pinned
    assert read(table) == expected(rows(DAYS[0], 3, "b"))
    assert read(table, lake.as_of(table, pinned)) == expected(rows(DAYS[0], 6, "a"))
    assert read(table, lake.as_of(table, str(pinned))) == expected(rows(DAYS[0], 6, "a"))
    # a time between the overwrite's DELETE and APPEND snapshots resolves to the state before it
    delete_snap, append_snap = [table.snapshot_by_id(e.snapshot_id) for e in table.history()[-2:]]
    assert delete_snap.summary.operation.value == "delete"
    mid = datetime.fromtimestamp(delete_snap.timestamp_ms / 1000, timezone.utc)
    assert lake.as_of(table, mid) == pinned
    end = datetime.fromtimestamp(append_snap.timestamp_ms / 1000, timezone.utc).isoformat()
    assert lake.as_of(table, end) == append_snap.snapshot_id
    with pytest.raises(ValueError, match="no snapshot 42 in clean.events"):
        lake.as_of(table, 42)


def _parquet_values(location: str, column: str) -> set:
    root = lake._fs_path(location)
    found = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet"):
                found |= set(pq.read_table(os.path.join(dirpath, name), columns=[column])[column].to_pylist())
    return found


def test_delete_then_expire_and_clean_erases_the_rows_from_every_file(tmp_path):
    table = open_table(tmp_path)
    for day in DAYS[:2]:
        lake.overwrite_partitions(table, rows(day, 14, "u"), "event_date", [day])
    lake.delete_where(table, "user_id == 'u-0'")
    assert [r for r in read(table) if r[1] == "u-0"] == []
    assert len(read(table)) == 24  # 2 days x (14 - 2 rows of u-0)
    assert "u-0" in _parquet_values(table.location(), "user_id")  # still in the files of older snapshots

    # the default grace (1 h) protects only files never committed: the old copies go at once
    dry = lake.expire_and_clean(table, datetime.now(timezone.utc) + timedelta(seconds=1), dry_run=True)
    assert dry.expired_snapshots == 2 and dry.deleted_files
    assert "u-0" in _parquet_values(table.location(), "user_id")  # a dry run deletes nothing

    report = lake.expire_and_clean(table, datetime.now(timezone.utc) + timedelta(seconds=1))
    assert report.expired_snapshots == 2 and sorted(report.deleted_files) == sorted(dry.deleted_files)
    assert report.kept_recent_orphans == 0
    assert _parquet_values(table.location(), "user_id") == {f"u-{i}" for i in range(1, 7)}
    assert len(read(table)) == 24
    # no manifest of the remaining snapshot carries user_id bounds (metrics mode none for that column)
    user_field = table.schema().find_field("user_id").field_id
    for manifest in table.current_snapshot().manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            assert user_field not in (entry.data_file.lower_bounds or {})
            assert user_field not in (entry.data_file.upper_bounds or {})
    assert lake.expire_and_clean(table, datetime.now(timezone.utc), grace=timedelta(0)).deleted_files == []


def _killed_writer(data_dir, day, n, when):
    """Overwrite ``day`` and SIGKILL this process mid-commit: after the new metadata file is written
    but before the catalog points to it, or right after the catalog row is updated."""
    from pyiceberg.catalog.sql import SqlCatalog

    table = open_table(data_dir)
    if when == "before_swap":
        original = SqlCatalog._write_metadata

        def write_then_die(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        SqlCatalog._write_metadata = staticmethod(write_then_die)
    else:
        original = SqlCatalog.commit_table

        def commit_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        SqlCatalog.commit_table = commit_then_die
    lake.overwrite_partitions(table, rows(day, n, "new"), "event_date", [day])


@pytest.mark.parametrize("when", ["before_swap", "after_swap"])
def test_writer_killed_mid_commit_leaves_a_whole_snapshot_and_a_rerun_repairs(tmp_path, when):
    table = open_table(tmp_path)
    old = pa.concat_tables([rows(DAYS[0], 5, "old"), rows(DAYS[1], 5, "old")])
    lake.overwrite_partitions(table, old, "event_date", DAYS[:2])
    before = table.current_snapshot().snapshot_id

    proc = multiprocessing.get_context("spawn").Process(target=_killed_writer, args=(str(tmp_path), DAYS[0], 2000, when))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL

    table.refresh()
    if when == "before_swap":  # the commit did not happen: the table is the previous snapshot, no partial day
        assert table.current_snapshot().snapshot_id == before
        assert read(table) == expected(old)
        young = lake.expire_and_clean(table, datetime(2000, 1, 1, tzinfo=timezone.utc))  # grace 1 h: kept
        assert young.deleted_files == [] and young.kept_recent_orphans > 0
        leftovers = lake.expire_and_clean(table, datetime(2000, 1, 1, tzinfo=timezone.utc), grace=timedelta(0))
        assert len(leftovers.deleted_files) == young.kept_recent_orphans
        kinds = sorted({p.rsplit(".", 1)[-1] for p in leftovers.deleted_files})
        assert kinds == ["avro", "json", "parquet"]  # data files, manifests and the unswapped metadata file
    else:  # the commit happened as a whole before the kill
        assert read(table) == expected(rows(DAYS[0], 2000, "new"), rows(DAYS[1], 5, "old"))
    assert lake.expire_and_clean(table, datetime(2000, 1, 1, tzinfo=timezone.utc), grace=timedelta(0)).deleted_files == []

    lake.overwrite_partitions(table, rows(DAYS[0], 2000, "new"), "event_date", [DAYS[0]])  # the re-run
    assert read(table) == expected(rows(DAYS[0], 2000, "new"), rows(DAYS[1], 5, "old"))


def test_commits_since_a_snapshot_say_which_days_they_wrote_or_that_it_cannot_be_told(tmp_path):
    """What a step that computed on a pinned snapshot asks before it commits: which commits came
    after it, and what they wrote (each snapshot of an overwrite, its delete and its append, names
    the days); a history cut by expiry cannot be told."""
    table = open_table(tmp_path)
    lake.overwrite_partitions(table, rows(DAYS[0], 5, "a"), "event_date", [DAYS[0]])
    pinned = table.metadata_location
    assert lake.commits_since(table, pinned) == []
    lake.overwrite_partitions(table, rows(DAYS[1], 5, "b"), "event_date", [DAYS[1]])  # new day: an append
    lake.overwrite_partitions(table, rows(DAYS[0], 6, "c"), "event_date", [DAYS[0]])  # a delete, then an append
    commits = lake.commits_since(table, pinned)
    assert [c[lake.PARTITIONS] for c in commits] == ["2024-03-01", "2024-03-01", "2024-03-02"]  # newest first
    assert len(lake.commits_since(table, None)) == 4  # since the table was created: the first one too
    lake.delete_where(table, "user_id == 'c-0'")
    assert lake.PARTITIONS not in lake.commits_since(table, pinned)[0]  # a delete by filter does not say
    lake.expire_and_clean(table, datetime.now(timezone.utc) + timedelta(seconds=1))
    assert lake.commits_since(table, pinned) is None


def _entries(table) -> list[dict]:
    """What the manifests say of each data file of the current snapshot (its path aside)."""
    out = []
    for task in table.scan().plan_files():
        f = task.file
        out.append(dict(name=os.path.basename(f.file_path), partition=tuple(f.partition), records=f.record_count,
                        size=f.file_size_in_bytes, spec_id=f.spec_id, column_sizes=dict(f.column_sizes),
                        value_counts=dict(f.value_counts), null_counts=dict(f.null_value_counts),
                        lower=dict(f.lower_bounds), upper=dict(f.upper_bounds), split_offsets=f.split_offsets))
    return sorted(out, key=lambda e: e["name"])


def test_files_are_described_as_pyiceberg_describes_them(tmp_path):
    """`lake.add_files` (statistics plan and schema check once per commit) records the same manifest
    entries as pyiceberg's own `Transaction.add_files` for the same Parquet files: partition, counts,
    sizes, bounds, and no bounds for a column whose metrics are off (`user_id`)."""
    written = tmp_path / "files"
    written.mkdir()
    paths = []
    for day in DAYS[:3]:
        path = written / f"event_date={day}.parquet"
        pq.write_table(rows(day, 20 + day.day, f"w{day.day}"), path)
        paths.append(str(path))
    ours = open_table(tmp_path / "ours")
    theirs = open_table(tmp_path / "theirs")
    lake.append_files(ours, paths)
    with theirs.transaction() as tx:
        tx.add_files(paths, check_duplicate_files=False)
    assert len(_entries(ours)) == 3 and all(e["lower"] for e in _entries(ours))
    assert _entries(ours) == _entries(theirs)
    assert all(len(e["lower"]) == 3 for e in _entries(ours))  # id, value, event_date; not user_id
    assert ours.properties.get("schema.name-mapping.default") == theirs.properties.get("schema.name-mapping.default")
    assert read(ours) == read(theirs) == expected(*(rows(d, 20 + d.day, f"w{d.day}") for d in DAYS[:3]))
    # a file whose columns do not fit the table is refused, as pyiceberg refuses it
    bad = written / "bad.parquet"
    pq.write_table(pa.table({"id": ["not a number"], "event_date": [DAYS[3]]}), bad)
    with pytest.raises(ValueError, match="Mismatch in fields"):
        lake.append_files(ours, [str(bad)])
    assert len(_entries(ours)) == 3
