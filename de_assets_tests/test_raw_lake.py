"""The raw layer's system of record is the lake (`lib/raw_lake.py`): Iceberg tables `raw.events` and
`raw.requests`, written by the ingestion steps, read by every other step as views."""

import json
from datetime import date

import dagster as dg
import duckdb
import pytest

from de_assets.assets import ingestion
from de_assets.lib import ingest, privacy, raw_lake, served
from de_assets.lib.tables import RAW_EVENTS, RAW_REQUESTS, SOURCE_FILES
from de_assets_tests.conftest import TEST_KEY, Pipeline, every_table, land, segment_event

DAYS = ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
LINEAGE = "arrival_date, source_file, line_no"
RAW_EVENTS_KEY = dg.AssetKey(["raw", "raw_events"])


def lake_rows(db, table) -> list[tuple]:
    """The rows of a raw table as pyiceberg reads them (no DuckDB): (arrival day, file, line)."""
    catalog = served.open_lake(str(db), create=False)
    data = catalog.load_table(table.name).scan(selected_fields=("arrival_date", "source_file", "line_no")).to_arrow()
    return sorted(zip(*(data[c].to_pylist() for c in ("arrival_date", "source_file", "line_no"))))


def registered_rows(pipeline, source: str) -> int:
    """Rows the registry says were read from the source's files (re-deliveries not counted)."""
    return int(pipeline.query(f"SELECT coalesce(sum(rows), 0) AS n FROM {SOURCE_FILES.name} "
                              "WHERE source = ? AND status <> 'redelivered'", [source])["n"][0])


def snapshot_of(db, table):
    catalog = served.open_lake(str(db), create=False)
    return getattr(catalog.load_table(table.name).current_snapshot(), "snapshot_id", None)


def test_raw_rows_are_in_the_lake_once_and_the_warehouse_reads_them_as_views(pipeline):
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    kinds = pipeline.query("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'raw' "
                           "AND table_name IN ('events', 'requests') ORDER BY 1")
    assert kinds.values.tolist() == [["events", "VIEW"], ["requests", "VIEW"]]
    for table, source in ((RAW_EVENTS, "events"), (RAW_REQUESTS, "requests")):
        rows = lake_rows(pipeline.db, table)
        assert len(rows) == len(set(rows)) == registered_rows(pipeline, source) > 0
        view = pipeline.query(f"SELECT {LINEAGE} FROM {table.name} ORDER BY ALL")
        assert [(r.arrival_date.date(), r.source_file, r.line_no) for r in view.itertuples()] == rows


def test_a_re_run_commits_nothing_and_a_late_file_adds_only_its_rows(pipeline):
    assert pipeline.run(DAYS[1]).success
    before, snapshot = lake_rows(pipeline.db, RAW_EVENTS), snapshot_of(pipeline.db, RAW_EVENTS)
    assert pipeline.run(DAYS[1]).success
    assert snapshot_of(pipeline.db, RAW_EVENTS) == snapshot  # nothing new landed: no commit
    land(pipeline.landing, DAYS[1], "late.ndjson",
         [segment_event("late-1", "u1", "2026-11-01T10:00:00Z"), segment_event("late-2", "u2", "2026-11-01T11:00:00Z")])
    assert pipeline.run(DAYS[1]).success
    after = lake_rows(pipeline.db, RAW_EVENTS)
    assert sorted(set(after) - set(before)) == [(before[0][0], "events/2026-11-01/late.ndjson", n) for n in (1, 2)]
    assert len(after) == len(before) + 2


def test_a_step_stopped_between_the_lake_commit_and_the_registry_is_repaired_by_the_next_run(pipeline, monkeypatch):
    real = ingestion._hand_back_registrations  # the registry's write, after the lake commit
    monkeypatch.setattr(ingestion, "_hand_back_registrations",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stopped")))
    assert not pipeline.run(DAYS[0], DAYS[-1], selection=[RAW_EVENTS_KEY], raise_on_error=False).success
    committed = lake_rows(pipeline.db, RAW_EVENTS)
    assert committed and registered_rows(pipeline, "events") == 0  # rows in the lake, registry not written

    monkeypatch.setattr(ingestion, "_hand_back_registrations", real)
    assert pipeline.run(DAYS[0], DAYS[-1]).success  # rows_reconcile (blocking) passes per file
    assert lake_rows(pipeline.db, RAW_EVENTS) == committed  # the files were not ingested again
    assert registered_rows(pipeline, "events") == len(committed)
    registry = pipeline.query(f"SELECT path, status FROM {SOURCE_FILES.name} WHERE source = 'events'")
    assert len(registry) == len(set(registry["path"])) == 7  # the golden fixture's 7 event files, once each


def between_the_turns(monkeypatch, action) -> list:
    """Run ``action`` once, in the first events raw step, after it read its files and before its
    commit turn on the warehouse. Returns a list that holds True once it ran."""
    real = ingest.ingest_days
    interleaved = []

    def ingest_days(con, root, source, start, end, *args, **kwargs):
        reports = real(con, root, source, start, end, *args, **kwargs)
        if source == "events" and not interleaved:
            interleaved.append(True)
            action()
        return reports

    monkeypatch.setattr(ingest, "ingest_days", ingest_days)
    return interleaved


def test_files_another_run_registers_while_a_step_reads_are_not_ingested_twice(pipeline, monkeypatch):
    """Two runs over the same day (a range backfill and a sensor's run of one of its days): the one
    that commits second sees the other's registrations, commits nothing and reads again."""
    def other_run():
        assert pipeline.run(DAYS[1], selection=[RAW_EVENTS_KEY]).success

    interleaved = between_the_turns(monkeypatch, other_run)
    assert pipeline.run(DAYS[1], selection=[RAW_EVENTS_KEY]).success
    assert interleaved
    rows = lake_rows(pipeline.db, RAW_EVENTS)
    assert len(rows) == len(set(rows)) == registered_rows(pipeline, "events") > 0


def test_raw_rows_an_earlier_version_kept_in_the_warehouse_move_to_the_lake_once(tmp_path, golden_landing):
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as con:  # what an earlier version left: raw rows in the file
        con.execute("SET TimeZone = 'UTC'")
        every_table(con)  # its tables: the forget requests and counts were in the file too
        privacy.install_macros(con, TEST_KEY)
        ingest.ingest_days(con, golden_landing, "events", date.fromisoformat(DAYS[0]), date.fromisoformat(DAYS[-1]), "old")
        kept = con.execute(f"SELECT {LINEAGE}, message_id, user_id, properties::VARCHAR FROM raw.events "
                           "ORDER BY ALL").fetchall()
    assert kept
    pipeline = Pipeline(tmp_path, golden_landing)
    assert pipeline.run(DAYS[0], DAYS[-1]).success  # ingests nothing new: every file is registered
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        assert raw_lake.relation_kind(con, RAW_EVENTS) == "VIEW"
        assert con.execute(f"SELECT {LINEAGE}, message_id, user_id, properties::VARCHAR FROM raw.events "
                           "ORDER BY ALL").fetchall() == kept
    snapshot = snapshot_of(db, RAW_EVENTS)
    assert pipeline.run(DAYS[0]).success
    assert snapshot_of(db, RAW_EVENTS) == snapshot  # moved once


def test_a_dry_run_ingests_into_its_copy_only(pipeline):
    assert pipeline.run(DAYS[1]).success
    land(pipeline.landing, DAYS[1], "late.ndjson", [segment_event("late-1", "u1", "2026-11-01T10:00:00Z")])
    snapshots = {t.name: snapshot_of(pipeline.db, t) for t in raw_lake.RAW_TABLES}
    registry = pipeline.query(f"SELECT * FROM {SOURCE_FILES.name} ORDER BY ALL")
    result = pipeline.run(DAYS[1], dry_run=True)
    assert result.success
    # the dry run read the late file (its raw step counted it) ...
    [materialization] = [m for m in result.asset_materializations_for_node("raw__events")]
    assert materialization.metadata["files_ingested"].value == 1
    # ... and neither the lake nor the registry changed
    assert {t.name: snapshot_of(pipeline.db, t) for t in raw_lake.RAW_TABLES} == snapshots
    assert pipeline.query(f"SELECT * FROM {SOURCE_FILES.name} ORDER BY ALL").equals(registry)


def test_the_outbox_carries_the_registrations_of_each_commit(pipeline):
    assert pipeline.run(DAYS[2]).success  # 11-02: three event files
    catalog = served.open_lake(str(pipeline.db), create=False)
    [snapshot] = catalog.load_table(RAW_EVENTS.name).snapshots()
    outbox = json.loads(snapshot.summary.additional_properties[raw_lake.OUTBOX])
    registry = pipeline.query(f"SELECT path, rows FROM {SOURCE_FILES.name} WHERE source = 'events' ORDER BY path")
    assert sorted((r["path"], r["rows"]) for r in outbox) == [tuple(r) for r in registry.values.tolist()]
    assert len(outbox) == 3


@pytest.mark.parametrize("table", [RAW_EVENTS, RAW_REQUESTS], ids=lambda t: t.name)
def test_raw_views_have_the_declared_types(pipeline, table):
    assert pipeline.run(DAYS[0]).success
    types = pipeline.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' "
                           "AND table_name = ? ORDER BY ordinal_position", [table.name.split(".")[1]])
    assert types.values.tolist() == [[c.name, c.type] for c in table.columns]


def test_retention_deletes_old_raw_partitions_from_the_lake_and_its_files(pipeline):
    assert pipeline.run(DAYS[1], DAYS[-1]).success
    config = {"ops": {"enforce_retention": {"config": {"raw_days": 1, "clean_days": 400, "as_of": DAYS[-1],
                                                       "snapshot_days": 0}}}}
    assert pipeline.defs.resolve_job_def("retention_job").execute_in_process(
        instance=pipeline.instance, run_config=config).success
    # raw keeps one day before the as-of day: 11-02 and 11-03; 11-01 is gone from the lake ...
    assert sorted({day.isoformat() for day, _, _ in lake_rows(pipeline.db, RAW_EVENTS)}) == DAYS[2:]
    assert pipeline.query("SELECT DISTINCT arrival_date::VARCHAR AS d FROM raw.events ORDER BY 1").d.tolist() == DAYS[2:]
    # ... and from every data file left on disk (the snapshots that held it expired, their files deleted)
    files = list((pipeline.db.parent / "lake" / "raw" / "events").rglob("*.parquet"))
    with duckdb.connect() as con:
        days = con.execute(f"SELECT DISTINCT arrival_date::VARCHAR FROM read_parquet({[str(f) for f in files]}) "
                           "ORDER BY 1").fetchall()
    assert [d for (d,) in days] == DAYS[2:]
    # the registry keeps the files (a re-delivery of them is still recognized)
    assert "events/2026-11-01/batch-1.ndjson" in pipeline.query(f"SELECT path FROM {SOURCE_FILES.name}").path.tolist()


def test_a_file_removed_before_a_re_ingest_stays_unregistered(pipeline):
    """docs/operations.md, rolling back a bad load: remove the bad file, re-ingest its day. The
    outbox of the first ingest still lists the file; the re-ingest's replaces it for that day."""
    bad = land(pipeline.landing, DAYS[1], "bad.ndjson", [segment_event("bad-1", "u9", "2026-11-01T09:00:00Z")])
    assert pipeline.run(DAYS[1]).success
    bad.unlink()
    reingest = {"ops": {"raw__events": {"config": {"reingest": True}}}}
    assert pipeline.defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=pipeline.instance, partition_key=DAYS[1], run_config=reingest).success
    assert pipeline.run(DAYS[1]).success  # the next raw step looks for registrations to repair
    paths = pipeline.query(f"SELECT path FROM {SOURCE_FILES.name} WHERE source = 'events'").path.tolist()
    assert paths == ["events/2026-11-01/batch-1.ndjson"]
    assert [r[1] for r in lake_rows(pipeline.db, RAW_EVENTS)] == ["events/2026-11-01/batch-1.ndjson"] * 4


@pytest.fixture
def raw_events_with_a_later_column():
    """`raw.events` as declared by a later version: one more column (restored afterwards)."""
    from de_assets.lib.tables import Column
    columns = RAW_EVENTS.columns
    object.__setattr__(RAW_EVENTS, "columns", columns + (Column("later_col", "VARCHAR", "added later"),))
    yield
    object.__setattr__(RAW_EVENTS, "columns", columns)


def test_a_raw_column_declared_later_reads_as_null_for_the_files_written_before(pipeline, request):
    assert pipeline.run(DAYS[1]).success
    before = pipeline.query(f"SELECT count(*) AS n FROM {RAW_EVENTS.name}")["n"][0]
    request.getfixturevalue("raw_events_with_a_later_column")
    assert pipeline.run(DAYS[2]).success
    rows = pipeline.query(f"SELECT arrival_date::DATE AS day, count(*) AS n, count(later_col) AS filled "
                          f"FROM {RAW_EVENTS.name} GROUP BY 1 ORDER BY 1")
    assert rows["day"].astype(str).tolist() == DAYS[1:3]
    assert rows["n"][0] == before and rows["n"][1] > 0
    assert rows["filled"].tolist() == [0, 0]  # nothing fills it yet: NULL in the old and the new files
    catalog = served.open_lake(str(pipeline.db), create=False)
    scanned = catalog.load_table(RAW_EVENTS.name).scan(selected_fields=("arrival_date", "later_col")).to_arrow()
    assert scanned.num_rows == rows["n"].sum() and scanned["later_col"].null_count == scanned.num_rows


def test_a_user_forgotten_while_a_step_reads_is_not_ingested_after_the_erasure(pipeline, monkeypatch):
    """A forget request completed between a raw step's two turns: the rows the step read were
    pseudonymized before the user was on the suppression list, so it reads again instead of committing them."""
    from de_assets_tests.conftest import record_forget_request

    assert pipeline.run(DAYS[2], selection=[RAW_EVENTS_KEY]).success  # carol is known: the request matches
    carol = privacy.pseudonymize(TEST_KEY, "carol")

    def forget_carol():
        request_id = record_forget_request(pipeline.db, carol, TEST_KEY)
        assert pipeline.defs.resolve_job_def("forget_user_job").execute_in_process(
            instance=pipeline.instance, run_config={"ops": {"forget_user": {"config": {"request_id": request_id}}}}).success

    interleaved = between_the_turns(monkeypatch, forget_carol)
    assert pipeline.run(DAYS[3], selection=[RAW_EVENTS_KEY]).success
    assert interleaved
    catalog = served.open_lake(str(pipeline.db), create=False)
    data = catalog.load_table(RAW_EVENTS.name).scan(selected_fields=("arrival_date", "user_id")).to_arrow()
    assert data.num_rows > 0 and carol not in set(data["user_id"].to_pylist())
    forgotten = pipeline.held("SELECT arrival_date::DATE::VARCHAR AS day, sum(rows) AS n FROM raw.forgotten_rows "
                              "GROUP BY 1 ORDER BY 1")
    assert forgotten["day"].tolist() == DAYS[2:4]  # erased on the first day, dropped at ingest on the second


def test_a_step_killed_after_its_lake_commit_keeps_the_counts_of_the_rows_it_dropped(pipeline, monkeypatch):
    """The counts of rows a forget request kept out at ingest are written before the lake commit: a step
    that dies after the commit (registry not written) loses none of them. The re-run takes the
    registrations from the commit's outbox, does not read the files again, and the books balance."""
    from de_assets_tests.conftest import record_forget_request

    carol = privacy.pseudonymize(TEST_KEY, "carol")
    record_forget_request(pipeline.db, carol, TEST_KEY)  # pending: suppresses her at every ingest

    def killed(*args, **kwargs):
        raise RuntimeError("killed after the lake commit")

    monkeypatch.setattr(ingestion, "_hand_back_registrations", killed)
    assert not pipeline.run(DAYS[2], selection=[RAW_EVENTS_KEY], raise_on_error=False).success
    monkeypatch.undo()
    assert pipeline.query(f"SELECT count(*) AS n FROM {SOURCE_FILES.name}").n[0] == 0  # the registry lost them
    result = pipeline.run(DAYS[2])
    assert result.success
    ingested = [m.metadata["files_ingested"].value for m in result.asset_materializations_for_node("raw__events")]
    assert ingested == [0]  # registered from the outbox: nothing read twice
    # carol's landed lines of 11-02 (golden README): 3 in a.ndjson, 1 in c.parquet
    forgotten = pipeline.held("SELECT source_file, rows FROM raw.forgotten_rows ORDER BY 1")
    assert [tuple(r) for r in forgotten.itertuples(index=False)] == [
        ("events/2026-11-02/a.ndjson", 3), ("events/2026-11-02/c.parquet", 1)]
    books = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile"]
    assert books and all(e.passed for e in books)


def test_a_raw_commit_says_which_arrival_days_it_wrote(pipeline):
    """What a cleaning that computed on a pinned snapshot asks before it commits (`days_committed`,
    between two stamps of the raw view): a raw commit wrote the arrival days of its registrations;
    a view whose columns changed meanwhile cannot be told apart (None: compute again)."""
    assert pipeline.run(DAYS[1], DAYS[2]).success
    catalog = served.open_lake(str(pipeline.db), create=False)

    def stamp():
        return raw_lake._stamp(RAW_EVENTS, catalog.load_table(RAW_EVENTS.name).metadata_location)

    pinned = stamp()
    assert pipeline.run(DAYS[3], selection=[RAW_EVENTS_KEY]).success
    assert raw_lake.days_committed(catalog, RAW_EVENTS, pinned, stamp()) == {date(2026, 11, 3)}
    assert raw_lake.days_committed(catalog, RAW_EVENTS, None, stamp()) == {date(2026, 11, d) for d in (1, 2, 3)}
    assert raw_lake.days_committed(catalog, RAW_EVENTS, f"{pinned.rsplit('#', 1)[0]}#other", stamp()) is None
