"""Served tables in the lake (`lib/served.py`, `de_assets/lake.py`, `de-assets sql`): what readers see.

Golden fixture (README): dau 3, 4, 3 on 11-01..11-03; 24 clean events over the three arrival days.
"""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import duckdb
import pytest

from de_assets import cli, lake
from de_assets.lib import marts, ops_store, served, staged
from de_assets.lib.tables import CLEAN_EVENTS, DAILY_ENGAGEMENT
from de_assets_tests.conftest import Pipeline

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def rows(con, table) -> list:
    columns = ", ".join(f'"{c.name}"::VARCHAR' for c in table.columns)
    return sorted(map(repr, con.execute(f"SELECT {columns} FROM {table.name}").fetchall()))


def test_the_lake_serves_exactly_the_warehouse_tables(pipeline):
    # an alert a sensor raised before the run (the golden days raise none): published with the run's
    from de_assets.lib.alerts import Alert, record

    record(ops_store.ensure(served.open_lake(str(pipeline.db)).engine), [Alert(
        severity="critical", kind="run_failure", asset="daily_pipeline", partition="2026-10-31", message="failed")])
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    catalog = served.open_lake(str(pipeline.db), create=False)
    reader = served.connect(catalog)
    held = duckdb.connect()  # the home of alerts and SLOs: the catalog database (lib/ops_store.py)
    for table in ops_store.HELD:
        ops_store.load(catalog.engine, held, table)
    assert held.execute("SELECT count(*) FROM pipeline_health.alerts").fetchone()[0] == 1
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        for table in served.PUBLISHED:
            if table.name.startswith("pipeline_health.") and table.name not in (
                    "pipeline_health.partition_kpis", "pipeline_health.slo_status", "pipeline_health.alerts"):
                continue  # written by other jobs (experiments, retention): published there
            home = held if table in ops_store.HELD else warehouse
            assert rows(reader, table) == rows(home, table), table.name
    assert reader.execute("SELECT list(dau ORDER BY event_date) FROM marts.daily_engagement").fetchone()[0] == [3, 4, 3]
    # any engine that reads Iceberg: pyiceberg alone, no DuckDB, reads every served table whole
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        for table in served.PUBLISHED:
            if table.name.startswith("pipeline_health.") and table.name not in (
                    "pipeline_health.partition_kpis", "pipeline_health.slo_status", "pipeline_health.alerts"):
                continue
            scanned = catalog.load_table(table.name).scan().to_arrow()
            home = held if table in ops_store.HELD else warehouse
            assert scanned.num_rows == home.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0], table.name
            assert scanned.column_names == [c.name for c in table.columns], table.name
    arrow = catalog.load_table("marts.daily_engagement").scan().to_arrow().sort_by("event_date")
    assert arrow.column("dau").to_pylist() == [3, 4, 3]
    assert len(catalog.load_table(CLEAN_EVENTS.name).scan().to_arrow()) == 24
    # every data table is kept in the lake alone: the warehouse file holds no row of them, each is a view
    # over the lake's current snapshot; the file holds no table of its own (the file registry, raw's
    # bookkeeping, is held in the catalog database)
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        kinds = dict(warehouse.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables "
            "WHERE table_schema IN ('raw', 'clean', 'quarantine', 'marts')").fetchall())
    data = {t.name for t in (*served.RAW_TABLES, *served.PUBLISHED) if t.schema != "pipeline_health"}
    assert {name for name in data if kinds.get(name) != "VIEW"} == set()
    assert {name for name, kind in kinds.items() if kind != "VIEW"} == set()


def test_readers_read_a_snapshot_and_the_past(pipeline):
    assert pipeline.run(DAYS[0]).success
    catalog = served.open_lake(str(pipeline.db), create=False)
    first = catalog.load_table(DAILY_ENGAGEMENT.name).current_snapshot().snapshot_id
    moment = datetime.now(timezone.utc)
    pinned = served.connect(catalog)  # opened before the next run commits
    time.sleep(0.01)
    assert pipeline.run(DAYS[1], DAYS[2]).success
    days = "SELECT list(event_date::VARCHAR ORDER BY event_date) FROM marts.daily_engagement"
    assert pinned.execute(days).fetchone()[0] == ["2026-11-01"]  # its snapshot, whatever was committed since
    assert served.connect(catalog).execute(days).fetchone()[0] == list(DAYS)
    assert served.connect(catalog, as_of=moment.isoformat()).execute(days).fetchone()[0] == ["2026-11-01"]
    assert served.connect(catalog, as_of=str(first)).execute(days).fetchone()[0] == ["2026-11-01"]
    with pytest.raises(ValueError, match="no served table has that snapshot"):
        served.connect(catalog, as_of="123")
    with pytest.raises(ValueError, match="'yesterday' is neither a time"):  # not read as "before every snapshot"
        served.connect(catalog, as_of="yesterday")


def test_a_dry_run_publishes_nothing(pipeline):
    assert pipeline.run(DAYS[0]).success
    catalog = served.open_lake(str(pipeline.db), create=False)

    def snapshots():
        return {t.name: getattr(catalog.load_table(t.name).current_snapshot(), "snapshot_id", None)
                for t in served.PUBLISHED if catalog.table_exists(t.name)}

    before = snapshots()
    assert before["marts.daily_engagement"] is not None
    assert pipeline.run(DAYS[0], DAYS[-1], dry_run=True).success
    assert snapshots() == before


def test_days_that_fail_a_blocking_check_are_not_served(tmp_path, golden_landing):
    # at the production gate, 11-01 (1 of 4) and 11-02 (6 of 21) of the golden events are held back:
    # the gate fails on those days, so their clean rows are not published; their quarantine evidence is
    p = Pipeline(tmp_path, golden_landing, max_quarantine_rate=0.2)
    result = p.run(DAYS[0], DAYS[-1], raise_on_error=False)
    reader = served.connect(served.open_lake(str(p.db), create=False))
    # the days that failed are not served, the day that passed is (11-03: m30..m36); the lake is the clean
    # rows' only store (the warehouse's clean.events reads it), so nothing unchecked is stored anywhere:
    # what the failed days would have served stays in the check's metadata
    by_day = "SELECT arrival_date::VARCHAR, count(*) FROM clean.events GROUP BY 1 ORDER BY 1"
    assert reader.execute(by_day).fetchall() == [("2026-11-03", 7)]
    assert p.query(by_day).values.tolist() == [["2026-11-03", 7]]
    gate = [e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["clean", "clean_events"]
            and e.check_name == "quarantine_rate_within_threshold" and not e.passed]
    assert sorted(e.partition for e in gate) == ["2026-11-01", "2026-11-02"]
    assert reader.execute("SELECT count(*) FROM quarantine.events").fetchone()[0] == \
        p.query("SELECT count(*) AS n FROM quarantine.events")["n"][0] > 0


def test_a_re_run_that_fails_a_blocking_check_keeps_serving_the_rows_served_before(tmp_path, golden_landing):
    assert Pipeline(tmp_path, golden_landing).run(DAYS[0], DAYS[-1]).success
    reader = served.connect(served.open_lake(str(tmp_path / "warehouse.duckdb"), create=False))
    before = rows(reader, CLEAN_EVENTS)
    strict = Pipeline(tmp_path, golden_landing, max_quarantine_rate=0.2)
    strict.run(DAYS[0], DAYS[-1], raise_on_error=False)  # the gate fails on 11-01 and 11-02
    reader = served.connect(served.open_lake(str(strict.db), create=False))
    assert rows(reader, CLEAN_EVENTS) == before and len(before) > 0
    with duckdb.connect(str(strict.db), read_only=True) as warehouse:
        assert rows(warehouse, CLEAN_EVENTS) == before


def test_a_mart_day_that_fails_a_blocking_check_is_stored_nowhere_and_the_others_are_served(pipeline, monkeypatch):
    write = marts.replace_range

    def writes_a_day_twice(con, table, select_sql, start, end):  # a bug the mart's unique_key check catches
        written = write(con, table, select_sql, start, end)
        if table is DAILY_ENGAGEMENT:
            target = staged.target(con, table, table.partition_values(start, end))
            con.execute(f"INSERT INTO {target} SELECT * FROM {target} WHERE event_date = ?", [DAYS[0]])
        return written

    def blocking_failures(result):
        return {(e.asset_key.to_user_string(), e.check_name, e.partition)
                for e in result.get_asset_check_evaluations() if not e.passed and e.blocking}

    catalog = served.open_lake(str(pipeline.db))
    by_day = f"SELECT event_date::VARCHAR, dau FROM {DAILY_ENGAGEMENT.name} ORDER BY 1"
    with monkeypatch.context() as patch:
        patch.setattr(marts, "replace_range", writes_a_day_twice)
        result = pipeline.run(DAYS[0], DAYS[-1], raise_on_error=False)
    assert blocking_failures(result) == {("marts/daily_engagement", "unique_key", DAYS[0])}
    # the day that failed is stored nowhere (the lake, and the file's view of it, never had it); the
    # other days of the range are served (golden dau: 3, 4, 3)
    assert served.connect(catalog).execute(by_day).fetchall() == [(DAYS[1], 4), (DAYS[2], 3)]
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        assert warehouse.execute(by_day).fetchall() == [(DAYS[1], 4), (DAYS[2], 3)]
    assert pipeline.run(DAYS[0], DAYS[-1]).success  # the bug fixed: every day served
    before = rows(served.connect(catalog), DAILY_ENGAGEMENT)
    snapshot = catalog.load_table(DAILY_ENGAGEMENT.name).current_snapshot().snapshot_id
    assert served.connect(catalog).execute(by_day).fetchall() == [(DAYS[0], 3), (DAYS[1], 4), (DAYS[2], 3)]
    monkeypatch.setattr(marts, "replace_range", writes_a_day_twice)  # a later run with the bug again
    assert blocking_failures(pipeline.run(DAYS[0], DAYS[0], raise_on_error=False)) == {
        ("marts/daily_engagement", "unique_key", DAYS[0])}
    # nothing committed: readers and the file's view keep the rows served before
    assert catalog.load_table(DAILY_ENGAGEMENT.name).current_snapshot().snapshot_id == snapshot
    assert rows(served.connect(catalog), DAILY_ENGAGEMENT) == before
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        assert rows(warehouse, DAILY_ENGAGEMENT) == before


def test_retention_deletes_old_partitions_from_the_lake(pipeline):
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    config = {"ops": {"enforce_retention": {"config": {"clean_days": 1, "raw_days": 1, "as_of": DAYS[-1],
                                                       "snapshot_days": 0}}}}
    result = pipeline.defs.resolve_job_def("retention_job").execute_in_process(instance=pipeline.instance,
                                                                              run_config=config)
    assert result.success
    reader = served.connect(served.open_lake(str(pipeline.db), create=False))
    kept = reader.execute("SELECT list(DISTINCT arrival_date::VARCHAR ORDER BY arrival_date::VARCHAR) FROM clean.events").fetchone()[0]
    assert kept == ["2026-11-02", "2026-11-03"]  # clean keeps 1 day before the as-of day: 11-02 onwards
    assert reader.execute("SELECT count(*) FROM marts.daily_engagement").fetchone()[0] == 3  # marts: forever


def test_sql_command_formats(pipeline, monkeypatch, capsys):
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(pipeline.db))
    sql = "SELECT event_date, dau, stickiness FROM marts.daily_engagement ORDER BY event_date"
    assert cli.main(["sql", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "event_date,dau,stickiness\n2026-11-01,3,1.0\n2026-11-02,4,0.8\n2026-11-03,3,0.6\n"
    assert cli.main(["sql", sql + " LIMIT 1", "--format", "json"]) == 0
    assert capsys.readouterr().out.replace(" ", "").replace("\n", "") == \
        '[{"event_date":"2026-11-01","dau":3,"stickiness":1.0}]'
    assert cli.main(["sql", sql]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(3 rows)"
    assert cli.main(["sql", "SELECT * FROM marts.nope"]) == 1
    assert "marts.nope" in capsys.readouterr().err


@pytest.mark.slow  # ~60 s: two pipeline runs in subprocesses while a reader loops
def test_readers_never_wait_for_a_run_that_writes(tmp_path):
    """A run writes in another process while a reader queries through `de_assets.lake` and the
    `de-assets sql` command: every read answers (from the last committed snapshot), none waits on
    the warehouse's lock, and the final answer is the run's."""
    from datetime import date

    from de_assets.generator import generate

    landing = tmp_path / "landing"
    generate(landing, date(2026, 11, 1), 4, 1500, seed=3)
    env = {**os.environ, "DE_ASSETS_DUCKDB": str(tmp_path / "w.duckdb"), "DAGSTER_HOME": str(tmp_path / "home"),
           "DE_ASSETS_REPORTS": str(tmp_path / "reports")}
    (tmp_path / "home").mkdir()
    first = subprocess.run([sys.executable, "-m", "de_assets.cli", "run", "--start", "2026-11-01",
                            "--landing", str(landing)], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:]
    writer = subprocess.Popen([sys.executable, "-m", "de_assets.cli", "run", "--start", "2026-11-02", "--end",
                               "2026-11-04", "--landing", str(landing)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    os.environ["DE_ASSETS_DUCKDB"] = str(tmp_path / "w.duckdb")
    answers, during = [], 0
    try:
        while writer.poll() is None:
            answers.append(lake.query("SELECT count(*) AS days FROM marts.daily_engagement", "csv"))
            during += writer.poll() is None
        cli_read = subprocess.run([sys.executable, "-m", "de_assets.cli", "sql",
                                   "SELECT count(*) AS days FROM marts.daily_engagement", "--format", "csv"],
                                  env=env, capture_output=True, text=True, timeout=120)
    finally:
        del os.environ["DE_ASSETS_DUCKDB"]
        writer.wait(timeout=600)
    assert writer.returncode == 0, writer.stdout.read()[-2000:]
    print(f"\n{during} reads answered while the run wrote, {len(answers)} in all: {sorted(set(answers))}")
    assert during >= 1  # at least one read answered while the run was writing
    assert set(answers) <= {"days\n1", "days\n2", "days\n3", "days\n4"}  # committed states only
    assert cli_read.returncode == 0 and cli_read.stdout.strip() == "days\n4"


@pytest.mark.parametrize("big_rows", [served.BIG_PARTITION_ROWS, 10**9], ids=["a COPY per partition", "partitioned COPY"])
def test_publishing_a_day_larger_than_the_memory_limit_streams_to_the_lake(tmp_path, monkeypatch, big_rows):
    """A partitioned COPY buffers up to `partitioned_write_flush_threshold` rows per thread before
    writing (DuckDB's default: 524,288): a day of 1M events (~800 bytes each) ran out of memory under
    the default 600MB limit. Scaled down: 600,000 rows of ~900 bytes under a 300MB limit, written
    both ways `served.publish` writes partitions."""
    from de_assets.lib import lake as lake_core

    monkeypatch.setattr(served, "BIG_PARTITION_ROWS", big_rows)

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("SET memory_limit = '300MB'; SET preserve_insertion_order = false; SET threads = 2")
    con.execute("CREATE SCHEMA clean")
    columns = ", ".join(
        f"repeat(md5(i::VARCHAR), 28) AS {c.name}" if c.name == "properties"
        else f"NULL::{'VARCHAR' if c.type == 'JSON' else c.type} AS {c.name}"
        for c in CLEAN_EVENTS.columns if c.name not in ("arrival_date", "message_id")
    )
    con.execute(f"CREATE TABLE clean.events AS SELECT DATE '2026-11-01' AS arrival_date, "
                f"md5(i::VARCHAR) AS message_id, {columns} FROM range(600000) t(i)")
    catalog = lake_core.open_catalog(data_dir=tmp_path)
    day = datetime(2026, 11, 1).date()
    served.publish(con, catalog, CLEAN_EVENTS, day, day)
    read = served.connect(catalog)
    assert read.execute("SELECT count(*), count(DISTINCT message_id) FROM clean.events").fetchone() == (600000, 600000)


def _clean_events_of(values: str) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose `clean.events` holds the rows ``values`` (SQL VALUES of (arrival
    day, message id)), every other column NULL."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA clean")
    columns = ", ".join(f"NULL::{'VARCHAR' if c.type == 'JSON' else c.type} AS {c.name}"
                        for c in CLEAN_EVENTS.columns if c.name not in ("arrival_date", "message_id"))
    con.execute(f"CREATE TABLE clean.events AS SELECT d::DATE AS arrival_date, m AS message_id, {columns} "
                f"FROM (VALUES {values}) t(d, m)")
    return con


@pytest.mark.parametrize("big_rows", [1, 10**9], ids=["a COPY per partition", "partitioned COPY"])
def test_both_ways_of_writing_partitions_serve_exactly_the_partitions_written(tmp_path, monkeypatch, big_rows):
    """`served.publish` writes big partitions one COPY each and small ones in one partitioned COPY
    (`BIG_PARTITION_ROWS`); either way one file per partition with rows, none for an empty one, and a
    re-publish replaces exactly the partitions of its range."""
    from datetime import date

    from de_assets.lib import lake as lake_core

    monkeypatch.setattr(served, "BIG_PARTITION_ROWS", big_rows)
    con = _clean_events_of("('2026-11-01', 'a'), ('2026-11-01', 'b'), ('2026-11-01', 'c'), "
                           "('2026-11-03', 'd'), ('2026-11-03', 'e')")
    catalog = lake_core.open_catalog(data_dir=tmp_path)
    served.publish(con, catalog, CLEAN_EVENTS, date(2026, 11, 1), date(2026, 11, 3))
    per_day = "SELECT arrival_date::VARCHAR, list(message_id ORDER BY message_id) FROM clean.events GROUP BY 1 ORDER BY 1"
    assert served.connect(catalog).execute(per_day).fetchall() == [("2026-11-01", ["a", "b", "c"]),
                                                                   ("2026-11-03", ["d", "e"])]
    files = lake_core.snapshot_files(catalog.load_table(CLEAN_EVENTS.name))
    assert len(files) == 2  # 11-02 has no rows, so no file
    con.execute("DELETE FROM clean.events WHERE message_id = 'a'")
    con.execute("INSERT INTO clean.events (arrival_date, message_id) VALUES ('2026-11-02', 'x'), ('2026-11-03', 'y')")
    served.publish(con, catalog, CLEAN_EVENTS, date(2026, 11, 1), date(2026, 11, 2))  # not 11-03
    assert served.connect(catalog).execute(per_day).fetchall() == [("2026-11-01", ["b", "c"]), ("2026-11-02", ["x"]),
                                                                   ("2026-11-03", ["d", "e"])]


@pytest.mark.parametrize("big_rows", [1, 10**9], ids=["a COPY per partition", "partitioned COPY"])
def test_files_written_ahead_are_committed_for_the_partitions_published_only(tmp_path, monkeypatch, big_rows):
    """`served.write_ahead` writes a range's data files without committing (nothing is served yet);
    `publish(..., written=)` then commits the files of the partitions it publishes, exactly those: a
    partition left out (a day a blocking check failed) keeps what was served before, and publishing a
    partition the files do not cover is refused rather than served empty."""
    from datetime import date

    from de_assets.lib import lake as lake_core

    monkeypatch.setattr(served, "BIG_PARTITION_ROWS", big_rows)
    con = _clean_events_of("('2026-11-01', 'a'), ('2026-11-02', 'b'), ('2026-11-03', 'c')")
    catalog = lake_core.open_catalog(data_dir=tmp_path)
    days = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    served.publish(con, catalog, CLEAN_EVENTS, days=days)  # served before
    con.execute("UPDATE clean.events SET message_id = message_id || '2'")
    written = served.write_ahead(con, catalog, CLEAN_EVENTS, days[:2])
    assert sorted(written.files) == days[:2] and all(len(f) == 1 for f in written.files.values())
    per_day = ("SELECT arrival_date::VARCHAR, list(message_id ORDER BY message_id) FROM clean.events "
               "GROUP BY 1 ORDER BY 1")
    before = [("2026-11-01", ["a"]), ("2026-11-02", ["b"]), ("2026-11-03", ["c"])]
    assert served.connect(catalog).execute(per_day).fetchall() == before  # written, not committed
    with pytest.raises(ValueError, match="do not cover"):
        served.publish(con, catalog, CLEAN_EVENTS, days=days[1:], written=written)  # 11-03 was not written
    assert served.connect(catalog).execute(per_day).fetchall() == before
    served.publish(con, catalog, CLEAN_EVENTS, days=[days[1]], written=written)  # 11-01 blocked
    assert served.connect(catalog).execute(per_day).fetchall() == [("2026-11-01", ["a"]), ("2026-11-02", ["b2"]),
                                                                   ("2026-11-03", ["c"])]
