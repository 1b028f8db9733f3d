"""The Dagster instances the project creates, from one source, and what keeps them honest.

* `render("dev" | "prod")`: the `dagster.yaml` of each profile. Both share `SHARED` (run queue,
  concurrency limits, run monitoring); only the storage differs (Dagster's default SQLite files in
  the home folder in dev, PostgreSQL in prod). `deploy/prod/dagster.yaml` is `render("prod")`, regenerated with
  `python -m de_assets.instance prod > deploy/prod/dagster.yaml` (a test fails when they differ).
* `ensure_home()`: what every CLI command calls first. Creates `$DAGSTER_HOME` (default
  `data/dagster_home`), writes the dev `dagster.yaml` when there is none, and initializes the
  storage, all under an exclusive file lock, so several processes starting at once on a fresh
  home do not race on the schema (alembic: "more than one head present").
* `DevInstance`: the dev profile's instance class. The same SQLite files in the home folder as
  Dagster's default storage, but the event log keeps one connection per database file instead of
  opening a new engine and connection for every statement (`KeptConnectionEventLogStorage`): a range
  run records ~70 events per day (materializations, planned materializations, one check
  evaluation per check and day), and opening a connection re-reads the file's schema each time.
  Measured: a 60-day range run, 4,185 events, 57.6 s -> 26.6 s (21.0 s with the in-memory event
  log). Production uses PostgreSQL, whose storage pools its connections already.
* `sweep_dead_runs()`: marks failed the runs whose process is gone. Dagster's run monitoring does
  not watch runs executed in process (`de-assets run` uses `execute_in_process`: no run launcher)
  and the default run launcher has no worker health check, so a killed run stays STARTED forever
  and keeps its concurrency slot. Every run records its process (`de_assets/pid`, `de_assets/host`);
  the sweep runs when a CLI command starts and every minute from the `dead_run_sweeper` sensor.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool, QueuePool

from de_assets.lib import paths, processes

DEFAULT_HOME = paths.DAGSTER_HOME
PID_TAG = "de_assets/pid"
HOST_TAG = "de_assets/host"
LOCK_NAME = ".de_assets_instance.lock"

# Settings shared by every instance the project creates (dev and prod).
SHARED = """\
# Runs wait in a queue; the daemon starts them within the limits under `concurrency.runs`.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator

concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      # one backfill at a time: a 90-day range is one run, but a long one
      - key: dagster/backfill
        limit: 1
      # retention and forget-user delete data: never two at once
      - key: de_assets/kind
        value: maintenance
        limit: 1
      # one run per day at a time: runs of different days go in parallel, two runs of the same day
      # never write it at once (a range run has no `dagster/partition` tag: the backfill limit above)
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  # Every asset and op that writes the DuckDB file is in the `duckdb_warehouse` pool
  # (de_assets/resources.py: WAREHOUSE_POOL). Its steps take turns on the file (an flock on
  # `<file>.lock`, handed over within ~10 ms); the pool only bounds how many wait at once (one per
  # run). A limit of 1 would queue them in Dagster instead, whose waiting steps re-check every
  # 1-15 s: measured, 4 runs at once then took twice as long as one after the other (docs/lake.md).
  pools:
    granularity: op
    default_limit: 4

# The daemon fails runs that do not start within 3 minutes or do not finish cancelling, and frees
# the concurrency slots of ended runs. Runs whose process died are failed by the `dead_run_sweeper`
# sensor and at every CLI start (de_assets/instance.py): the default run launcher has no worker
# health check, and runs executed in process have no launcher at all.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
  free_slots_after_run_end_seconds: 60

telemetry:
  enabled: false
"""

HEADERS = {
    "dev": """\
# The dev instance of de_assets, written by the `de-assets` CLI into $DAGSTER_HOME (default
# data/dagster_home) when it has no dagster.yaml. Same run queue, limits and run monitoring as
# production (deploy/prod/dagster.yaml); only the storage differs. Generated: de_assets/instance.py.
""",
    "prod": """\
# Production profile for de_assets (docs/production.md). Copy to $DAGSTER_HOME/dagster.yaml.
# Generated from de_assets/instance.py (`python -m de_assets.instance prod`): the settings after the
# storage are shared with the dev instance the CLI creates; edit them there.
""",
}

STORAGE = {
    "dev": """\
# Storage: no `storage` key, so SQLite files under this folder (history/, schedules/), wherever the
# folder is: runs, event logs and schedule/sensor ticks, laid out as Dagster's default storage. The
# instance class only keeps one connection per event-log file open (de_assets/instance.py).
instance_class:
  module: de_assets.instance
  class: DevInstance
""",
    "prod": """\
# Runs, event logs and schedule/sensor ticks in PostgreSQL (dagster-postgres), from the environment.
storage:
  postgres:
    postgres_db:
      hostname: {env: DAGSTER_PG_HOST}
      port: {env: DAGSTER_PG_PORT}
      db_name: {env: DAGSTER_PG_DB}
      username: {env: DAGSTER_PG_USER}
      password: {env: DAGSTER_PG_PASSWORD}
      # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would otherwise pick psycopg 3
      scheme: postgresql+psycopg2
""",
}


class KeptConnectionEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (one file per run, plus the index), with one open connection kept
    per file for the most recent files. Dagster's class creates an engine and a connection for every
    statement, and each new connection parses the file's schema again: ~9 ms per event, most of a
    long range run. Access stays serialized by the class's own lock, as in Dagster's class; a
    connection is never shared across a fork (a child process opens its own)."""

    KEEP = 16  # files with a kept connection: the index, the running runs, the runs the UI reads

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        super().__init__(base_dir, inst_data)

    def _new_engine(self, shard: str, poolclass, check_same_thread: bool = True, **pool) -> Engine:
        return create_engine(self.conn_string_for_shard(shard), poolclass=poolclass, **pool, connect_args={
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": check_same_thread})

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():  # forked: the parent's connections are not ours to use
            for inherited in self._engines.values():
                inherited.dispose(close=False)
            self._engines.clear()
            self._engines_pid = os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            # one connection, used under the class's lock only, by whichever thread holds it
            engine = self._new_engine(shard, poolclass=QueuePool, pool_size=1, max_overflow=0,
                                      check_same_thread=False)
        self._engines[shard] = engine
        while len(self._engines) > self.KEEP:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            if shard not in self._initialized_dbs:  # as Dagster's class does (it needs more than one connection)
                engine = self._new_engine(shard, poolclass=NullPool)
                self._initdb(engine)
                engine.dispose()
                self._initialized_dbs.add(shard)
            with self._engine(shard).connect() as conn, conn.begin():
                yield conn

    def _close_kept(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._close_kept()  # before Dagster deletes the files
        super().wipe()

    def dispose(self) -> None:
        self._close_kept()
        super().dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)


class _DevSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage of a home folder, with `KeptConnectionEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._event_log_storage = KeptConnectionEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)


class DevInstance(dg.DagsterInstance):
    """The dev profile's instance (`instance_class` in its dagster.yaml): Dagster's default instance
    of a home folder, storage included, except for the event log's kept connections."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str):
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, _DevSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False)
        )
        return defaults


def render(profile: str) -> str:
    """The dagster.yaml of a profile (`dev` or `prod`)."""
    if profile not in STORAGE:
        raise ValueError(f"unknown instance profile {profile!r}: expected one of {sorted(STORAGE)}")
    return f"{HEADERS[profile]}\n{STORAGE[profile]}\n{SHARED}"


@contextmanager
def _exclusive(lock_path: Path):
    """An exclusive advisory lock on `lock_path` (held until the block ends, or the process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (start one process first on a fresh home)
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_home(default: Path = DEFAULT_HOME) -> Path:
    """Resolve `$DAGSTER_HOME` (default `default`, created), give it the dev dagster.yaml when it has
    none, and initialize its storage once; exports `DAGSTER_HOME`. Safe when processes race."""
    given = os.getenv("DAGSTER_HOME")
    if given:
        home = Path(given)
        if not home.is_dir():
            raise SystemExit(
                f"DAGSTER_HOME={given} does not exist: create it (mkdir -p) or unset DAGSTER_HOME "
                f"to use {default}"
            )
    else:
        home = default
        home.mkdir(parents=True, exist_ok=True)  # race-safe; everything else happens under the lock
    home = home.resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    with _exclusive(home / LOCK_NAME):
        config = home / "dagster.yaml"
        if not config.exists():
            partial = home / f".dagster.yaml.{os.getpid()}.tmp"
            partial.write_text(render("dev"))
            partial.replace(config)  # atomic: a reader sees no file or the whole file
        # Creating the instance creates (or migrates) its storage: once, while no one else does.
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
    return home


def on_outside_dev(variable: str, environ=None) -> bool:
    """A switch for work that runs by itself (retention, freshness-check runs): `<variable>=on|off`;
    unset, it is on outside dev and off in dev (`DE_ASSETS_ENV=dev`, the default), so `dagster dev`
    on a laptop starts no run of its own."""
    environ = os.environ if environ is None else environ
    setting = environ.get(variable, "").strip().lower()
    if setting in ("on", "off"):
        return setting == "on"
    if setting:
        raise ValueError(f"{variable} must be 'on' or 'off', got {setting!r}")
    return environ.get("DE_ASSETS_ENV", "dev") != "dev"


def process_tags() -> dict[str, str]:
    """Run tags naming this process, so a sweep can tell when the run's process is gone."""
    return {PID_TAG: processes.identity(), HOST_TAG: processes.host()}


IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def sweep_dead_runs(instance: dg.DagsterInstance, log=None) -> list[str]:
    """Mark failed every in-flight run of this host whose recorded process no longer runs, and
    free its concurrency slots. Returns their run ids. Runs of other hosts are left alone."""
    here = processes.host()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={HOST_TAG: here})):
        recorded = run.tags.get(PID_TAG)
        if not recorded or processes.is_alive(recorded):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue
        message = (f"Run {run.run_id} ({run.job_name}) marked as failed: its process "
                   f"(pid {recorded.split(':')[0]} on {here}) is gone (killed or crashed) while the run was "
                   f"{current.status.value}.")
        instance.report_run_failed(current, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if log is not None:
            log.warning(message)
        failed.append(run.run_id)
    return failed


def prepare(default: Path = DEFAULT_HOME) -> tuple[Path, list[str]]:
    """What a CLI command does before it runs anything: `ensure_home()`, then `sweep_dead_runs()`."""
    home = ensure_home(default)
    with dg.DagsterInstance.get() as instance:
        return home, sweep_dead_runs(instance)


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1] if len(sys.argv) > 1 else "dev"))
