"""The lake's data tables (the cleaning's and the marts) are written through a staging overlay (`lib/staged.py`):
what a step stages is seen by that step's connection only, and reaches the lake, and every other
reader, only when the step publishes it."""

from datetime import date

import duckdb
import pytest

from de_assets.lib import marts, raw_lake, served, staged
from de_assets.lib.tables import CLEAN_EVENTS, KPI_ANOMALIES, RAW_EVENTS, RETENTION_COHORTS, ensure_tables

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)


def _add(con, relation: str, day: date, *ids: str) -> None:
    for message_id in ids:
        con.execute(f"INSERT INTO {relation} BY NAME SELECT ?::DATE AS arrival_date, ?::DATE AS event_date, "
                    "? AS message_id", [day, day, message_id])


def _ids(con, relation: str = CLEAN_EVENTS.name) -> list[tuple]:
    return con.execute(f"SELECT arrival_date, message_id FROM {relation} ORDER BY ALL").fetchall()


def _lake_ids(catalog) -> list[tuple]:
    """What any engine reading the lake sees (pyiceberg alone, no DuckDB)."""
    data = catalog.load_table(CLEAN_EVENTS.name).scan(selected_fields=("arrival_date", "message_id")).to_arrow()
    return sorted(zip(data["arrival_date"].to_pylist(), data["message_id"].to_pylist()))


@pytest.fixture
def warehouse(tmp_path):
    """A warehouse file whose clean tables are views over a lake holding D1: a, b and D2: c."""
    db = tmp_path / "warehouse.duckdb"
    catalog = served.open_lake(str(db))
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    ensure_tables(con)
    _add(con, CLEAN_EVENTS.name, D1, "a", "b")
    _add(con, CLEAN_EVENTS.name, D2, "c")
    raw_lake.attach(con, catalog)
    yield con, catalog
    con.close()


def test_an_earlier_versions_clean_rows_move_to_the_lake_except_days_the_lake_already_serves(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    catalog = served.open_lake(str(db))
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        ensure_tables(con)
        _add(con, CLEAN_EVENTS.name, D1, "a")
        served.publish(con, catalog, CLEAN_EVENTS, days=[D1])  # served: D1 = a
        _add(con, CLEAN_EVENTS.name, D1, "unchecked")  # a later write of D1 a blocking check kept from readers
        _add(con, CLEAN_EVENTS.name, D2, "c")  # never published (before the lake)
        raw_lake.attach(con, catalog)
        assert raw_lake.relation_kind(con, CLEAN_EVENTS) == "VIEW"
        assert _ids(con) == _lake_ids(catalog) == [(D1, "a"), (D2, "c")]
        snapshot = catalog.load_table(CLEAN_EVENTS.name).current_snapshot().snapshot_id
        raw_lake.attach(con, catalog)
        assert catalog.load_table(CLEAN_EVENTS.name).current_snapshot().snapshot_id == snapshot  # moved once


def test_staged_rows_are_seen_by_the_step_alone_until_it_publishes_them(warehouse):
    con, catalog = warehouse
    other = con.cursor()  # another connection of the same warehouse, in the same process
    with staged.overlay(con):
        rows = staged.target(con, CLEAN_EVENTS, [D2])
        assert _ids(con, rows) == [(D2, "c")]  # the day's rows as the lake holds them
        con.execute(f"DELETE FROM {rows} WHERE message_id = 'c'")
        _add(con, rows, D2, "d", "e")
        assert _ids(con) == [(D1, "a"), (D1, "b"), (D2, "d"), (D2, "e")]  # the step reads its staged day
        assert _ids(other) == _lake_ids(catalog) == [(D1, "a"), (D1, "b"), (D2, "c")]  # nobody else does
        assert staged.staged_days(con, CLEAN_EVENTS) == [D2]
        served.publish(con, catalog, CLEAN_EVENTS, days=[D2])
        assert _lake_ids(catalog) == [(D1, "a"), (D1, "b"), (D2, "d"), (D2, "e")]
    raw_lake.attach(con, catalog)
    assert _ids(con) == [(D1, "a"), (D1, "b"), (D2, "d"), (D2, "e")]


def test_staged_rows_never_published_are_dropped_with_the_overlay(warehouse):
    con, catalog = warehouse
    with staged.overlay(con):
        con.execute(f"DELETE FROM {staged.target(con, CLEAN_EVENTS, [D1])}")
        assert _ids(con) == [(D2, "c")]
    assert staged.active(con) is None
    assert _ids(con) == _lake_ids(catalog) == [(D1, "a"), (D1, "b"), (D2, "c")]


def test_a_table_kept_in_the_lake_is_never_written_outside_an_overlay(warehouse):
    con, _ = warehouse
    with pytest.raises(RuntimeError, match="clean.events is kept in the lake"):
        staged.target(con, CLEAN_EVENTS, [D1])
    with staged.overlay(con), pytest.raises(RuntimeError, match="already has a staging overlay"):
        with staged.overlay(con):
            pass


def test_a_table_not_in_the_lake_is_written_in_place():
    with duckdb.connect() as con:
        ensure_tables(con)
        assert staged.target(con, CLEAN_EVENTS, [D1]) == CLEAN_EVENTS.name
        with staged.overlay(con):
            assert staged.target(con, CLEAN_EVENTS, [D1]) == CLEAN_EVENTS.name


def test_a_weekly_mart_is_staged_and_published_by_its_activity_weeks(tmp_path):
    # retention_cohorts is partitioned by activity week (a Monday): a run over days rewrites the weeks
    # they touch (`Table.partition_values`), and only those reach the lake
    db = tmp_path / "warehouse.duckdb"
    catalog = served.open_lake(str(db))
    cell = ("SELECT ?::DATE AS cohort_week, 0 AS weeks_since, ? AS cohort_size, ? AS retained_users, "
            "1.0 AS retention_rate, ?::DATE AS activity_week")
    oct26, nov02 = date(2026, 10, 26), date(2026, 11, 2)
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        ensure_tables(con)
        for week in (oct26, nov02):
            con.execute(f"INSERT INTO {RETENTION_COHORTS.name} BY NAME {cell}", [week, 5, 5, week])
        raw_lake.attach(con, catalog)  # both weeks moved to the lake, the file's table dropped
        assert raw_lake.relation_kind(con, RETENTION_COHORTS) == "VIEW"
        with staged.overlay(con):
            # days 11-03..11-04 touch the week of 11-02 only: its cell is replaced, 10-26's is kept
            rewritten = ("SELECT DATE '2026-11-02' AS cohort_week, 0 AS weeks_since, 7 AS cohort_size, "
                         "7 AS retained_users, 1.0 AS retention_rate, DATE '2026-11-02' AS activity_week "
                         "WHERE $start::DATE <= $end::DATE")
            marts.replace_range(con, RETENTION_COHORTS, rewritten, date(2026, 11, 3), date(2026, 11, 4))
            assert staged.staged_days(con, RETENTION_COHORTS) == [nov02]
            served.publish(con, catalog, RETENTION_COHORTS, date(2026, 11, 3), date(2026, 11, 4))
    data = catalog.load_table(RETENTION_COHORTS.name).scan().to_arrow().sort_by("activity_week")
    assert list(zip(data["activity_week"].to_pylist(), data["cohort_size"].to_pylist())) == [(oct26, 5), (nov02, 7)]


# --- a mart step computes without the warehouse file (`Warehouse.computing`) ----------------------------------

@pytest.fixture
def lake_warehouse(tmp_path):
    """A Warehouse resource whose lake serves clean events D1: a, b and D2: c."""
    from de_assets.resources import RunMode, Warehouse

    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"), run_mode=RunMode())
    with warehouse.connect() as con, warehouse.staging(con):
        for day, ids in ((D1, ("a", "b")), (D2, ("c",))):
            _add(con, staged.target(con, CLEAN_EVENTS, [day]), day, *ids)
        warehouse.publish(con, CLEAN_EVENTS, days=[D1, D2])
    return warehouse


def _commit_clean_events(warehouse, day: date, *ids: str) -> None:
    """What another run's cleaning does meanwhile: the day's clean rows replaced, published."""
    with warehouse.connect() as con, warehouse.staging(con):
        target = staged.target(con, CLEAN_EVENTS, [day])
        con.execute(f"DELETE FROM {target} WHERE arrival_date = ?", [day])
        _add(con, target, day, *ids)
        warehouse.publish(con, CLEAN_EVENTS, days=[day])


def _holds_the_file(warehouse) -> bool:
    import os

    from de_assets import resources

    return os.path.realpath(warehouse.database) in resources._turns


def test_a_mart_step_computes_on_the_lake_without_holding_the_file_and_takes_it_to_commit(lake_warehouse):
    from de_assets.lib.tables import PARTITION_KPIS

    with lake_warehouse.computing(RETENTION_COHORTS, (CLEAN_EVENTS,)) as step:
        assert not _holds_the_file(lake_warehouse)  # pinned in a short turn, then let go
        assert _ids(step.con) == [(D1, "a"), (D1, "b"), (D2, "c")]  # the lake, read in the private connection
        target = staged.target(step.con, RETENTION_COHORTS, [date(2026, 10, 26)])  # staged there
        step.con.execute(f"INSERT INTO {target} (activity_week, cohort_week, weeks_since) VALUES "
                         "('2026-10-26', '2026-10-26', 0)")
        with step.turn():
            assert _holds_the_file(lake_warehouse) and not step.committed_meanwhile
            lake_warehouse.record_kpis(step.con, "marts/x", "r", RETENTION_COHORTS, D1, D1, 1.0)
            lake_warehouse.publish(step.con, RETENTION_COHORTS, days=[date(2026, 10, 26)])
        assert not _holds_the_file(lake_warehouse)
    catalog = lake_warehouse.lake_catalog()
    assert catalog.load_table(RETENTION_COHORTS.name).scan().to_arrow().num_rows == 1
    with lake_warehouse.held(PARTITION_KPIS) as kpis:  # the KPI row went to the catalog database
        assert kpis.execute(f"SELECT count(*) FROM {PARTITION_KPIS.name} WHERE asset = 'marts/x'").fetchone() == (1,)


def test_a_mart_step_reads_only_the_tables_it_was_given_and_fails_on_any_other(lake_warehouse):
    """Its private connection holds the views of its table, its inputs and the clean tables, nothing
    else: a query of another table fails instead of reading an empty one."""
    with lake_warehouse.computing(RETENTION_COHORTS, (CLEAN_EVENTS,)) as step:
        assert step.con.execute(f"SELECT count(*) FROM {RETENTION_COHORTS.name}").fetchone() == (0,)
        with pytest.raises(duckdb.CatalogException):
            step.con.execute(f"SELECT count(*) FROM {RAW_EVENTS.name}")


def test_a_mart_step_whose_input_was_committed_meanwhile_computes_again_in_its_turn(lake_warehouse):
    """Another run's cleaning commits the table a mart reads between the mart's pin and its commit:
    the mart must not commit (nor record as built after that cleaning) what it computed on the old
    snapshot. In its turn it is pinned again on the new one, with what it staged dropped."""
    logged: list[str] = []
    log = type("Log", (), {"info": staticmethod(logged.append)})
    with lake_warehouse.computing(RETENTION_COHORTS, (CLEAN_EVENTS,), log=log) as step:
        target = staged.target(step.con, CLEAN_EVENTS, [D2])
        step.con.execute(f"DELETE FROM {target}")  # something staged on the old snapshot
        _commit_clean_events(lake_warehouse, D1, "a2")
        assert _ids(step.con) == [(D1, "a"), (D1, "b")]  # still the pinned snapshot, with the staged write
        with step.turn():
            assert step.committed_meanwhile == "clean.events"
            assert logged == ["marts.retention_cohorts: clean.events committed while it computed: computing again"]
            assert _ids(step.con) == [(D1, "a2"), (D2, "c")]  # the new snapshot; the staged write dropped
            assert staged.staged_days(step.con, CLEAN_EVENTS) == []


def test_a_mart_step_is_not_pinned_again_for_tables_it_does_not_read(lake_warehouse):
    with lake_warehouse.computing(RETENTION_COHORTS, ()) as step:
        _commit_clean_events(lake_warehouse, D1, "a2")
        with step.turn():
            assert not step.committed_meanwhile
            assert _ids(step.con) == [(D1, "a"), (D1, "b"), (D2, "c")]


def test_a_mart_step_reading_the_health_series_is_pinned_again_when_a_cleaning_records_kpis(lake_warehouse):
    """kpi_anomalies scores the cleanings' KPI rows: a cleaning that records them meanwhile (even one
    whose rows a blocking check kept from the lake) makes it compute again."""
    from de_assets.lib.tables import PARTITION_KPIS

    def record(asset: str) -> None:  # another run's step, as it finishes
        with lake_warehouse.connect() as con:
            lake_warehouse.record_kpis(con, asset, "other-run", CLEAN_EVENTS, D1, D1, 1.0)

    with lake_warehouse.computing(KPI_ANOMALIES, (), kpis=True) as step:
        assert step.con.execute(f"SELECT count(*) FROM {PARTITION_KPIS.name}").fetchone() == (0,)
        record("marts/daily_engagement")  # not what the health series read
        with step.turn():
            assert not step.committed_meanwhile
    with lake_warehouse.computing(KPI_ANOMALIES, (), kpis=True) as step:
        record("clean/clean_events")
        with step.turn():
            assert step.committed_meanwhile == "KPI rows"
            assert step.con.execute(f"SELECT count(*) FROM {PARTITION_KPIS.name} "
                                    "WHERE asset = 'clean/clean_events'").fetchone() == (1,)


def test_a_held_table_reads_by_name_beside_the_files_views_and_a_staging_overlay(pipeline):
    """`Warehouse.beside` shows a table held in the catalog database under its name on a warehouse
    connection (the raw step's volume check reads `raw.source_files` so): the file's views and a
    staging overlay opened inside it resolve as before, each restores the search path it found, and
    after it the name is unknown again (the file holds no registry)."""
    from de_assets.lib.tables import SOURCE_FILES
    from de_assets.resources import RunMode, Warehouse

    assert pipeline.run("2026-11-01").success  # golden 11-01: one events file, batch-1.ndjson, 4 lines
    warehouse = Warehouse(database=str(pipeline.db), run_mode=RunMode())

    def path(con) -> str:
        return con.execute("SELECT current_setting('search_path')").fetchone()[0]

    with warehouse.connect() as con:
        found = path(con)
        with warehouse.beside(con, SOURCE_FILES, source="events"):
            beside = path(con)
            assert con.execute("SELECT path, rows FROM raw.source_files").fetchall() == [
                ("events/2026-11-01/batch-1.ndjson", 4)]
            assert con.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 4  # the file's view
            with staged.overlay(con):
                con.execute(f"DELETE FROM {staged.target(con, CLEAN_EVENTS, [date(2026, 11, 1)])}")
                assert con.execute("SELECT count(*) FROM clean.events").fetchone()[0] == 0  # the staged rows
                assert con.execute("SELECT count(*) FROM raw.source_files").fetchone()[0] == 1
            assert path(con) == beside
            assert con.execute("SELECT count(*) FROM clean.events").fetchone()[0] == 3  # the lake's again
        assert path(con) == found
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT count(*) FROM raw.source_files")
