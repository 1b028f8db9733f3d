"""The production profile (deploy/prod/dagster.yaml) against a real PostgreSQL server on loopback:
the instance initializes there, runs and sensor ticks are recorded there, and two runs launched
together against one DuckDB file both succeed (their steps take turns on the file's lock)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from de_assets_tests import postgres
from de_assets_tests.conftest import GOLDEN, TEST_KEY, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
REASON = postgres.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no PostgreSQL server can be started here: {REASON}")


@pytest.fixture(scope="module")
def pg():
    with postgres.server() as settings:
        yield settings


@pytest.fixture
def prod_env(tmp_path, pg, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "prod" / "dagster.yaml", home / "dagster.yaml")
    landing = tmp_path / "landing"
    shutil.copytree(GOLDEN / "landing", landing)
    env = {
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": pg["host"], "DAGSTER_PG_PORT": pg["port"],
        "DAGSTER_PG_DB": pg["db"], "DAGSTER_PG_USER": pg["user"], "DAGSTER_PG_PASSWORD": pg["password"],
        "DE_ASSETS_DUCKDB": str(tmp_path / "warehouse.duckdb"), "DE_ASSETS_LANDING": str(landing),
        "DE_ASSETS_PSEUDONYM_KEY": TEST_KEY, "DE_ASSETS_MAX_QUARANTINE_RATE": "0.5",
        "DE_ASSETS_REPORTS": str(tmp_path / "reports"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _sql(pg, query):
    import psycopg2

    with psycopg2.connect(host=pg["host"], port=pg["port"], dbname=pg["db"], user=pg["user"]) as con:
        with con.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()


def test_instance_records_a_partitioned_run_in_postgres(prod_env, pg):
    from de_assets.definitions import build_defs

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = build_defs().resolve_job_def("daily_pipeline").execute_in_process(
            instance=instance, partition_key="2026-11-01")
        assert result.success
    rows = _sql(pg, f"SELECT status FROM runs WHERE run_id = '{result.run_id}'")
    assert rows == [("SUCCESS",)]
    assert _sql(pg, "SELECT count(*) FROM run_tags WHERE key = 'dagster/partition' AND value = '2026-11-01'")[0][0] >= 1


def test_daemon_records_sensor_ticks_in_postgres(prod_env, pg):
    before = _sql(pg, "SELECT count(*) FROM job_ticks")[0][0]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            ticks = _sql(pg, "SELECT count(*) FROM job_ticks")[0][0]
            if ticks > before:
                break
            time.sleep(2)
    finally:
        stop_process_group(daemon)
    assert ticks > before, daemon.stdout.read().decode()[-3000:]
    names = {row[0] for row in _sql(pg, "SELECT DISTINCT selector_id FROM job_ticks")}
    assert names  # ticks of the landing / alert sensors, recorded in PostgreSQL


RUN = """
import sys, dagster as dg
from de_assets.definitions import build_defs
with dg.DagsterInstance.get() as instance:
    r = build_defs().resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance, partition_key=sys.argv[1], raise_on_error=False)
print("RESULT", sys.argv[1], r.success, flush=True)
sys.exit(0 if r.success else 1)
"""


def test_two_runs_launched_together_on_one_duckdb_file_both_succeed(prod_env, pg, tmp_path):
    with dg.DagsterInstance.get():
        pass  # create the schema once, before two processes race to
    procs = [subprocess.Popen([sys.executable, "-c", RUN, day], cwd=ROOT, env={**os.environ},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for day in ("2026-11-02", "2026-11-03")]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "Could not set lock" not in out
    import duckdb

    with duckdb.connect(prod_env["DE_ASSETS_DUCKDB"], read_only=True) as con:
        days = con.execute("SELECT count(DISTINCT event_date) FROM marts.daily_engagement "
                           "WHERE event_date IN ('2026-11-02', '2026-11-03')").fetchall()[0][0]
    assert days == 2


def test_the_lake_catalog_and_its_operational_state_live_in_postgres(prod_env, pg, tmp_path):
    """`DE_ASSETS_CATALOG_URI=postgresql+psycopg2://...`: the served tables' catalog and the HTTP
    source's state (cursor, breaker, dead letters; `lib/ops_store.py`), the file registry and the alerts are
    rows in PostgreSQL."""
    import socket
    from datetime import date

    from de_assets.lib import http_source, ops_store
    from de_assets.resources import RunMode, Warehouse
    from de_assets_tests.conftest import Pipeline

    uri = f"postgresql+psycopg2://{pg['user']}@{pg['host']}:{pg['port']}/{pg['db']}"
    p = Pipeline(tmp_path, Path(prod_env["DE_ASSETS_LANDING"]), catalog_uri=uri)
    assert p.run("2026-11-01").success
    assert ("marts", "daily_engagement") in _sql(pg, "SELECT table_namespace, table_name FROM iceberg_tables")
    # the file registry: the golden fixture's one file of 11-01
    assert _sql(pg, f"SELECT source, path, status FROM {ops_store.SOURCE_FILES.name}") == [
        ("events", "events/2026-11-01/batch-1.ndjson", "ingested")]
    engine = Warehouse(database=str(p.db), run_mode=RunMode(), catalog_uri=uri).ops_engine()
    with socket.socket() as s:  # a dead endpoint: one dead letter, the state saved
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = http_source.HttpPolicy(connect_timeout_s=0.5, retries=0)
    report = http_source.pull(engine, f"http://127.0.0.1:{port}/x", str(tmp_path / "api"), date(2026, 11, 20), policy,
                              sleep=lambda s: None)
    assert report.dead_letters == 1
    assert _sql(pg, f"SELECT source, consecutive_failures FROM {ops_store.HTTP_SOURCE_STATE.name}") == [("events_api", 1)]
    [(error,)] = _sql(pg, f"SELECT error FROM {ops_store.HTTP_DEAD_LETTERS.name}")
    assert "ConnectionRefusedError" in error
    # alerts: the key's uniqueness is PostgreSQL's primary key, so the repeat is counted, not inserted
    from de_assets.lib.alerts import Alert, record

    alert = Alert(severity="critical", kind="run_failure", asset="daily_pipeline", partition="2026-11-01", message="x")
    assert record(engine, [alert]) == [alert] and record(engine, [alert]) == []
    assert _sql(pg, f"SELECT kind, occurrences FROM {ops_store.ALERTS.name}") == [("run_failure", 2)]


def test_steps_on_two_machines_take_turns_through_the_catalog_database(prod_env, pg, tmp_path):
    """Two machines share one lake through a PostgreSQL catalog, each with a warehouse file of its own
    (views over the lake only). A step's turn is a turn on the lake: an advisory lock in the catalog
    database, so a step of the other machine waits for it (here: gives up after its 1 s wait, naming
    the lock) and gets it once it is released. Runs of two days launched on the two machines at once
    both succeed, and the lake serves each message id once."""
    import duckdb
    import psycopg2

    from de_assets.lib import served
    from de_assets.resources import WAREHOUSE_POOL, RunMode, Warehouse

    uri = f"postgresql+psycopg2://{pg['user']}@{pg['host']}:{pg['port']}/{pg['db']}"
    lake_uri = (tmp_path / "shared-lake").as_uri()  # object storage in production
    machines = [tmp_path / name for name in ("machine-a", "machine-b")]
    for machine in machines:
        machine.mkdir()
    one, other = (Warehouse(database=str(m / "warehouse.duckdb"), run_mode=RunMode(), catalog_uri=uri,
                            lake_uri=lake_uri) for m in machines)
    with one.connect():
        with pytest.raises(duckdb.IOException, match="Could not take the turn on the lake"):
            with other.connect(wait_s=1):
                pass
    with other.connect(wait_s=1):  # released with the first machine's turn
        pass
    with psycopg2.connect(host=pg["host"], port=pg["port"], dbname=pg["db"], user=pg["user"]) as con:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            assert cur.fetchone()[0] == 0  # nothing left held

    with dg.DagsterInstance.get() as instance:  # the schema and the pool's limit once, before two processes race to
        # (Dagster 1.13 on PostgreSQL: two processes setting a pool's default limit at once, the second
        # fails its step on the unique key, dagster-io/dagster#33552; see docs/production.md)
        if WAREHOUSE_POOL not in instance.event_log_storage.get_concurrency_keys():  # (and again, it fails)
            instance.event_log_storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    procs = [subprocess.Popen([sys.executable, "-c", RUN, day], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              env={**os.environ, "DE_ASSETS_DUCKDB": str(machine / "warehouse.duckdb"),
                                   "DE_ASSETS_CATALOG_URI": uri, "DE_ASSETS_LAKE": lake_uri})
             for machine, day in zip(machines, ("2026-11-02", "2026-11-03"))]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    with served.connect(served.open_lake(str(machines[0] / "warehouse.duckdb"), uri, lake_uri)) as con:
        rows, ids, days = con.execute(  # (the module's earlier test served 11-01 through this catalog)
            "SELECT count(*), count(DISTINCT message_id), count(DISTINCT arrival_date) FROM clean.events "
            "WHERE arrival_date IN ('2026-11-02', '2026-11-03')").fetchone()
    assert rows == ids > 0 and days == 2


def _tables_on(warehouse) -> dict:
    """`test_parallel._tables` of a warehouse whose lake and operational state live in PostgreSQL: the
    data tables through its connection (views rebuilt from the catalog), the held ones from the catalog
    database."""
    import duckdb

    from de_assets.lib import ops_store
    from de_assets.lib.config_experiment import COMPARED, fingerprint

    held = [t for t in COMPARED if t in ops_store.HELD]
    with warehouse.connect() as con:
        prints = fingerprint(con, [t for t in COMPARED if t not in held])
    with duckdb.connect() as con:
        for table in held:
            ops_store.load(warehouse.ops_engine(), con, table)
        prints.update(fingerprint(con, held))
    return prints


@pytest.mark.slow  # ~4 minutes on 2 cores
def test_four_runs_on_two_machines_equal_one_sequential_run(prod_env, pg, tmp_path, monkeypatch):
    """Pods of a partitioned backfill: two machines (a warehouse file each) share one Dagster instance, one
    lake and its PostgreSQL catalog. The two later days run at once, one on each machine, then the two
    earlier ones: their cleanings find re-deliveries the later days served as originals and repair those
    days, whichever machine built them. No run fails, and once the late-data sensor has settled, every
    table (data, file registry, forgotten rows) equals one sequential range run's on a single machine."""
    from datetime import date

    import psycopg2

    from de_assets.definitions import build_defs
    from de_assets.generator import generate
    from de_assets.resources import WAREHOUSE_POOL, RunMode, Warehouse, build_resources
    from de_assets_tests.test_parallel import DAYS, _cli, _settle, _tables

    landing = tmp_path / "generated"
    generate(landing, date(2026, 11, 1), len(DAYS), 1500, seed=11)  # cross-day re-deliveries (test_parallel)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DE_ASSETS_CATALOG") and k != "DE_ASSETS_LAKE"}
    base["DE_ASSETS_LANDING"] = str(landing)

    (tmp_path / "sequential" / "home").mkdir(parents=True)  # one machine, SQLite catalog and instance
    done = subprocess.run(_cli("run", "--start", DAYS[0], "--end", DAYS[-1]), cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**base, "DAGSTER_HOME": str(tmp_path / "sequential" / "home"),
                                                       "DE_ASSETS_DUCKDB": str(tmp_path / "sequential" / "w.duckdb")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    con = psycopg2.connect(host=pg["host"], port=pg["port"], dbname=pg["db"], user=pg["user"])
    con.autocommit = True  # a database of its own: the module's other tests wrote days of the golden data
    con.cursor().execute("CREATE DATABASE two_machines")
    con.close()
    uri = f"postgresql+psycopg2://{pg['user']}@{pg['host']}:{pg['port']}/two_machines"
    shared = {**base, "DAGSTER_PG_DB": "two_machines", "DE_ASSETS_CATALOG_URI": uri,
              "DE_ASSETS_LAKE": (tmp_path / "shared-lake").as_uri()}  # object storage in production
    machines = [tmp_path / name for name in ("machine-a", "machine-b")]
    for machine in machines:
        machine.mkdir()
    monkeypatch.setenv("DAGSTER_PG_DB", "two_machines")
    with dg.DagsterInstance.get() as instance:  # the pool's limit once: dagster-io/dagster#33552, see above
        instance.event_log_storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    for wave in (DAYS[:1:-1], DAYS[1::-1]):  # the later days first, so the earlier ones must repair them
        runs = [subprocess.Popen(_cli("run", "--start", day), cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 env={**shared, "DE_ASSETS_DUCKDB": str(machine / "warehouse.duckdb")})
                for machine, day in zip(machines, wave)]
        outputs = [r.communicate(timeout=900)[0] for r in runs]
        for run, output in zip(runs, outputs):
            assert run.returncode == 0, output[-3000:]

    machine = Warehouse(database=str(machines[0] / "warehouse.duckdb"), run_mode=RunMode(), catalog_uri=uri,
                        lake_uri=shared["DE_ASSETS_LAKE"])
    with dg.DagsterInstance.get() as instance:  # the sensor re-serves marts a run built before another's cleaning
        _settle(instance, build_defs(build_resources(machine.database, str(landing), catalog_uri=uri,
                                                     lake_uri=shared["DE_ASSETS_LAKE"],
                                                     reports_root=str(tmp_path / "reports"))))
    tables = _tables_on(machine)
    assert tables["clean.events"][0] > 0
    assert tables == _tables(tmp_path / "sequential" / "w.duckdb")
