"""Operational tables held in the catalog's SQL database (`lib/ops_store.py`), not the warehouse file:
the partition KPIs, the SLO status, the retention audit, the configuration experiments and the
forget-user requests, audit and forgotten-row counts (the alerts: `test_alerts.py`; forget-user end to
end: `test_forget.py`).

Expected values are counted by hand from the golden fixture (fixtures/golden/README.md) or written
into the store by the test itself.
"""

from datetime import date, datetime

import duckdb
import sqlalchemy as sa

from de_assets.lib import ops_store, served
from de_assets.lib.tables import (
    CONFIG_EXPERIMENTS,
    FORGET_AUDIT,
    FORGET_REQUESTS,
    FORGOTTEN_ROWS,
    PARTITION_KPIS,
    RETENTION_LOG,
    SLO_STATUS,
    SOURCE_FILES,
)

T1 = datetime(2026, 11, 2, 6, 0)


def _slo(day: str, slo: str, status: str = "met") -> dict:
    return dict(partition=date.fromisoformat(day), slo=slo, target=0.05, comparison="<=", actual=0.01,
                status=status, breached_days_28d=0, error_budget_days=2.8, budget_burn=0.0, evaluated_at=T1)


def _held(engine, table) -> list[tuple]:
    with duckdb.connect() as con:
        ops_store.load(engine, con, table)
        return con.execute(f"SELECT * FROM {table.name} ORDER BY ALL").fetchall()


def test_a_step_hands_back_only_the_rows_it_owns_so_a_step_of_another_run_loses_nothing(tmp_path):
    engine = ops_store.ensure(served.open_lake(str(tmp_path / "w.duckdb")).engine)
    with engine.begin() as c:
        c.execute(sa.insert(ops_store.HELD[SLO_STATUS]), [_slo("2026-11-01", "completeness")])
    with duckdb.connect() as step:
        ops_store.load(engine, step, SLO_STATUS)  # this step's copy: 11-01 only
        with engine.begin() as c:  # meanwhile another run records 11-05
            c.execute(sa.insert(ops_store.HELD[SLO_STATUS]), [_slo("2026-11-05", "completeness")])
        step.execute("DELETE FROM pipeline_health.slo_status WHERE partition = '2026-11-01'")
        step.execute("INSERT INTO pipeline_health.slo_status VALUES "
                     "('2026-11-01', 'completeness', 0.8, '>=', 0.5, 'breached', 1, 2.8, 0.357, '2026-11-02 07:00')")
        assert ops_store.replace(engine, SLO_STATUS, step, partition=(date(2026, 11, 1), date(2026, 11, 3))) == 1
    rows = _held(engine, SLO_STATUS)
    assert [(str(r[0]), r[5]) for r in rows] == [("2026-11-01", "breached"), ("2026-11-05", "met")]


def test_tables_of_an_earlier_warehouse_are_moved_to_the_catalog_database_once(tmp_path):
    """A warehouse file of an earlier version kept KPIs, SLOs, the retention audit, the experiments,
    the forget-user requests, audit and forgotten-row counts and the file registry in its own tables:
    the first `ops_engine()` moves their rows and drops the tables from the file."""
    from de_assets.resources import RunMode, Warehouse

    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA pipeline_health")
        con.execute("CREATE SCHEMA raw")
        for table in (PARTITION_KPIS, SLO_STATUS, RETENTION_LOG, CONFIG_EXPERIMENTS, FORGET_REQUESTS, FORGET_AUDIT,
                      FORGOTTEN_ROWS, SOURCE_FILES):
            con.execute(table.ddl())
        con.execute("INSERT INTO pipeline_health.forget_requests VALUES "
                    "('q1', '2026-11-19 09:00', 'dpo', 'pseud-x', 'fp', 'erased', 'run-9', '2026-11-19 09:01', 5)")
        con.execute("INSERT INTO pipeline_health.forget_audit VALUES "
                    "('q1', '2026-11-19 09:01', 'dpo', 'hash', 'raw.events', 5, '2026-11-01', '2026-11-02')")
        con.execute("INSERT INTO raw.forgotten_rows VALUES ('events', '2026-11-01', 'events/2026-11-01/a.ndjson', 5, 'q1')")
        con.execute("INSERT INTO raw.source_files VALUES ('events', '2026-11-01', 'events/2026-11-01/a.ndjson', "
                    "'ndjson', 'sha-a', 120, 9, 'ingested', NULL, NULL, '2026-11-01 05:00', 'run-1')")
        con.execute("INSERT INTO pipeline_health.partition_kpis VALUES "
                    "('2026-11-01', 'clean/clean_events', 'r0', 4, 3, 1, 0, 0.5, 8.0, 3600.0, '2026-11-02 05:00')")
        con.execute("INSERT INTO pipeline_health.slo_status VALUES "
                    "('2026-11-01', 'completeness', 0.8, '>=', 0.9, 'met', 0, 2.8, 0.0, '2026-11-02 06:00'), "
                    "('2026-11-02', 'completeness', 0.8, '>=', 0.5, 'breached', 1, 2.8, 0.357, '2026-11-03 06:00')")
        con.execute("INSERT INTO pipeline_health.retention_log VALUES "
                    "('r1', '2026-11-20 03:00', 'raw', 'raw.events', '2026-11-03', 21, '')")
        con.execute("INSERT INTO pipeline_health.config_experiments VALUES "
                    "('e1', '2026-11-20 04:00', 'A', '{}', 1, 'wall_seconds', 12.5, true)")
    engine = Warehouse(database=str(db), run_mode=RunMode()).ops_engine()
    assert [(str(r[0]), r[1], r[3]) for r in _held(engine, PARTITION_KPIS)] == [("2026-11-01", "clean/clean_events", 4)]
    assert [(str(r[0]), r[5]) for r in _held(engine, SLO_STATUS)] == [("2026-11-01", "met"), ("2026-11-02", "breached")]
    assert [(r[0], r[3], r[5]) for r in _held(engine, RETENTION_LOG)] == [("r1", "raw.events", 21)]
    assert [(r[0], r[5], r[6]) for r in _held(engine, CONFIG_EXPERIMENTS)] == [("e1", "wall_seconds", 12.5)]
    assert [(r[0], r[5], r[8]) for r in _held(engine, FORGET_REQUESTS)] == [("q1", "erased", 5)]
    assert [(r[0], r[4], r[5]) for r in _held(engine, FORGET_AUDIT)] == [("q1", "raw.events", 5)]
    assert [(r[2], r[3], r[4]) for r in _held(engine, FORGOTTEN_ROWS)] == [("events/2026-11-01/a.ndjson", 5, "q1")]
    assert [(r[2], r[4], r[6]) for r in _held(engine, SOURCE_FILES)] == [("events/2026-11-01/a.ndjson", "sha-a", 9)]
    with duckdb.connect(str(db), read_only=True) as con:  # none of them is left in the file
        assert con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall() == []
    assert ops_store.to_adopt(engine) == []


def test_slos_are_recorded_in_the_catalog_database_replaced_on_a_re_run_and_untouched_by_a_dry_run(pipeline):
    assert pipeline.run("2026-11-01", "2026-11-03").success
    with duckdb.connect(str(pipeline.db), read_only=True) as con:  # not in the warehouse file
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'slo_status'").fetchone()[0] == 0
    first = pipeline.held("SELECT partition::VARCHAR p, slo, evaluated_at FROM pipeline_health.slo_status ORDER BY 1, 2")
    assert len(first) == 4 * 3  # 4 SLOs x 3 days
    assert pipeline.run("2026-11-02", dry_run=True).success
    assert pipeline.held("SELECT partition::VARCHAR p, slo, evaluated_at FROM pipeline_health.slo_status "
                         "ORDER BY 1, 2").equals(first)
    assert pipeline.run("2026-11-02").success  # a re-run replaces its day's rows, keeps the others
    again = pipeline.held("SELECT partition::VARCHAR p, slo, evaluated_at FROM pipeline_health.slo_status ORDER BY 1, 2")
    assert len(again) == 12
    changed = again.evaluated_at != first.evaluated_at
    assert sorted(set(again.p[changed])) == ["2026-11-02"]
    # and served as the catalog database holds them
    reader = served.connect(served.open_lake(str(pipeline.db), create=False))
    assert reader.execute("SELECT count(*), count(DISTINCT evaluated_at) FROM pipeline_health.slo_status").fetchone() \
        == (12, len(set(again.evaluated_at)))


def test_kpis_are_held_in_the_catalog_database_and_a_dry_run_reads_its_own_without_writing_them(pipeline):
    """Every step's KPI rows go to the catalog database. A dry run writes none there, yet its later
    steps read the rows its earlier steps recorded, as a real run would: the SLOs of a day only the
    dry run cleaned are measured on them."""
    assert pipeline.run("2026-11-01", "2026-11-02").success
    with duckdb.connect(str(pipeline.db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'partition_kpis'").fetchone()[0] == 0
    before = pipeline.held("SELECT count(*) n, max(recorded_at) t FROM pipeline_health.partition_kpis")
    assert before.n[0] == 14 * 2  # 14 pipeline assets x 2 days
    result = pipeline.run("2026-11-03", dry_run=True)
    assert result.success
    assert pipeline.held("SELECT count(*) n, max(recorded_at) t FROM pipeline_health.partition_kpis").equals(before)
    [quarantine] = [e for e in result.get_asset_check_evaluations() if e.check_name == "slo_quarantine_rate"]
    # golden fixture: 11-03 quarantines 0 of 8 events and 1 of 3 requests
    assert quarantine.metadata["actual"].value == round(1 / 11, 5)
