import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from de_assets.definitions import build_defs
from de_assets.lib.tables import IN_CATALOG_DATABASE, ensure_tables
from de_assets.partitions import partition_range_tags
from de_assets.resources import build_resources

# `de-assets` reads `.env` from the working directory (de_assets/cli.py), and `de-assets demo` writes one
# there: a demo run in the checkout must not move the partition start or DAGSTER_HOME of the tests (nor
# of the CLI subprocesses they start, which inherit this).
os.environ["DE_ASSETS_DOTENV"] = "off"

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
TEST_KEY = "test-pseudonym-key"
# The golden fixture is dirt-dense by design: 1 of 4 events landed on 11-01 and 6 of 21 on 11-02 are
# bad, above the production gate of 20%. Tests of the tables themselves raise the gate; tests of
# the gate use the default (test_quality.py).
GOLDEN_MAX_QUARANTINE_RATE = 0.5


def explain(result) -> str:
    """Why a run failed, in full: each failed step's error chain (class, message and the innermost
    traceback) and each failed blocking check with its partition and figures. Dagster's own
    exception for a failed blocking check names the check only, and `raise_on_error` surfaces one
    step's exception: assert `result.success, explain(result)` on a run made with `raise_on_error=False`."""
    lines = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        lines.append(f"step {event.step_key} failed:")
        error, innermost = event.event_specific_data.error, None
        while error is not None:
            lines.append(f"  {error.message.strip()}")
            innermost, error = error, error.cause
        if innermost is not None and innermost.stack:
            lines.append("  " + "".join(innermost.stack).rstrip().replace("\n", "\n  "))
    if not lines:  # the run failed outside any step (e.g. a resource or the run itself)
        lines += [f"run failed: {e.message}" for e in result.all_events if e.is_run_failure]
    for e in result.get_asset_check_evaluations():
        if not e.passed and e.blocking:
            figures = ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in e.metadata.items())
            lines.append(f"blocking check {e.check_name} failed on {e.asset_key.to_user_string()} "
                         f"{e.partition}: {figures}")
    return "\n".join(lines) or "no step failed and no blocking check failed"


class Pipeline:
    """A pipeline on a temporary warehouse + landing folder, run through Dagster in process."""

    def __init__(self, tmp_path: Path, landing: Path, **settings):
        self.db = tmp_path / "warehouse.duckdb"
        self.landing = landing
        self.instance = dg.DagsterInstance.ephemeral()
        settings.setdefault("max_quarantine_rate", GOLDEN_MAX_QUARANTINE_RATE)
        settings.setdefault("reports_root", str(tmp_path / "reports"))
        self.defs = build_defs(build_resources(str(self.db), str(landing), TEST_KEY, **settings))

    def run(self, start: str, end: str | None = None, selection=None, raise_on_error=True, dry_run=False):
        job = self.defs.resolve_job_def("daily_pipeline")
        kwargs = dict(instance=self.instance, raise_on_error=raise_on_error)
        if dry_run:
            kwargs["run_config"] = {"resources": {"run_mode": {"config": {"dry_run": True}}}}
        if selection is not None:
            kwargs["asset_selection"] = selection
        if end is None or end == start:
            return job.execute_in_process(partition_key=start, **kwargs)
        return job.execute_in_process(tags=partition_range_tags(start, end), **kwargs)

    def query(self, sql: str, params=None):
        """``sql`` over the warehouse file, where the tables held in the catalog database that it names
        (the file registry, `raw.source_files`, ...) read under their names too (`reader`)."""
        with reader(self.db, sql) as con:
            return con.execute(sql, params or []).df()

    def alerts(self, sql: str, params=None):
        """`sql` over the alerts as the catalog database holds them (`pipeline_health.alerts`)."""
        return alerts_query(self.db, sql, params)

    def held(self, sql: str, params=None):
        """`sql` over the operational tables the catalog database holds (`ops_store.HELD`: alerts, SLO
        status, retention log, configuration experiments), as it holds them now."""
        return held_query(self.db, sql, params)

    def tables(self) -> list[str]:
        return self.query(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables ORDER BY 1"
        )["t"].tolist()


@contextmanager
def reader(database, sql: str | None = None):
    """A connection reading warehouse file ``database`` only (UTC), where the operational tables held in
    the catalog database beside it (`ops_store.HELD`) that ``sql`` names (all without ``sql``) read
    under their served names too, as `Warehouse.beside` shows one to a step: copies in an attached
    in-memory database whose schemas come last on the `search_path`."""
    from de_assets.lib import ops_store, served, staged
    from de_assets.lib.sql import literal

    named = [t for t in ops_store.HELD if sql is None or t.name in sql]
    if not named:
        with duckdb.connect(str(database), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        return
    with duckdb.connect() as con:  # a read-only connection cannot attach an in-memory database: the file is attached
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH {literal(str(database))} AS warehouse (READ_ONLY)")
        con.execute("USE warehouse")
        if named:
            engine = served.open_lake(str(database)).engine
            con.execute("ATTACH ':memory:' AS held")
            for table in named:
                ops_store.load(engine, con, table, catalog="held")
            schemas = dict.fromkeys(f"held.{t.schema}" for t in named)
            con.execute(f"SET search_path = {literal(','.join([*staged.home_entries(con), *schemas]))}")
        yield con


def alerts_query(database, sql: str, params=None):
    """`sql` over the alerts held in the catalog database beside warehouse file `database`, as the
    table `pipeline_health.alerts` (a DataFrame)."""
    return held_query(database, sql, params)


def held_query(database, sql: str, params=None):
    """`sql` over every operational table held in the catalog database beside warehouse file
    `database` (`ops_store.HELD`), under their served names (a DataFrame)."""
    from de_assets.lib import ops_store, served

    with duckdb.connect() as con:
        engine = served.open_lake(str(database)).engine
        for table in ops_store.HELD:
            ops_store.load(engine, con, table)
        return con.execute(sql, params or []).df()


def record_forget_request(database, pseudonym: str, key: str, requested_by: str = "dpo", now=None) -> str:
    """What `de-assets forget-user` does before its job: record a request for ``pseudonym`` (made with
    ``key``) in the catalog database beside warehouse file ``database``; its id."""
    from de_assets.lib import forget, ops_store, served
    from de_assets.lib.tables import FORGET_REQUESTS

    engine = ops_store.ensure(served.open_lake(str(database)).engine)
    with duckdb.connect() as held:
        ops_store.load(engine, held, FORGET_REQUESTS)
        request_id = forget.record_request(held, pseudonym, requested_by, forget.key_fingerprint(key),
                                           now or datetime(2026, 11, 20))
        ops_store.replace(engine, FORGET_REQUESTS, held, request_id=request_id)
    return request_id


@contextmanager
def held_by_another_process(database):
    """For the block, another process holds the DuckDB file ``database`` open read-write (as a step of
    another run, or a notebook, does), so this process cannot open it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(120)", str(database)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a server started with `start_new_session=True` and everything it spawned."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def memory_warehouse(key: str = "k"):
    """An in-memory UTC warehouse with every table and the privacy macros (keyed `key`): what the
    ingest and clean functions of `lib/` need, without Dagster."""
    from de_assets.lib import privacy

    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    every_table(c)
    privacy.install_macros(c, key)
    return c


def every_table(c) -> None:
    """Every table in DuckDB connection `c`: the warehouse's, and the copies of those the catalog
    database holds (`Warehouse.held`), which the SQL core computes like any other."""
    ensure_tables(c)
    for table in IN_CATALOG_DATABASE:
        c.execute(f"CREATE SCHEMA IF NOT EXISTS {table.schema}")
        c.execute(table.ddl())


@pytest.fixture
def con():
    """An in-memory warehouse with every table, for unit tests of the SQL core."""
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    every_table(c)
    yield c
    c.close()


@pytest.fixture
def golden_landing(tmp_path) -> Path:
    target = tmp_path / "landing"
    shutil.copytree(GOLDEN / "landing", target)
    return target


@pytest.fixture
def pipeline(tmp_path, golden_landing) -> Pipeline:
    return Pipeline(tmp_path, golden_landing)


def segment_event(message_id: str, user: str, ts: str, event: str | None = "Product Viewed", typ: str = "track",
                  received: str | None = None, **fields) -> dict:
    """A hand-made Segment record; `received` (default: `ts`) is both sentAt and receivedAt."""
    record = {"messageId": message_id, "type": typ, "userId": user, "timestamp": ts,
              "sentAt": received or ts, "receivedAt": received or ts, "properties": {}, "context": {}}
    if event is not None:
        record["event"] = event
    record.update(fields)
    return record


def land(landing: Path, day: str, name: str, lines: list, source: str = "events") -> Path:
    """Land a file of ndjson lines (dicts are JSON-encoded, strings written as they are)."""
    import json

    path = landing / source / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path
