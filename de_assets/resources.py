"""Resources: the DuckDB warehouse and the pipeline's settings, configured from the environment.

| variable | default | meaning |
|---|---|---|
| `DE_ASSETS_DUCKDB` | `data/warehouse.duckdb` | warehouse file (`:memory:` for throwaway runs) |
| `DE_ASSETS_DUCKDB_MEMORY_LIMIT` | `600MB` | DuckDB buffer pool; larger work spills to disk |
| `DE_ASSETS_LOCK_WAIT_S` | `3600` | how long a step waits for the warehouse file's write lock (held by a step of another run) |
| `DE_ASSETS_LANDING` | `data/landing` | landing root (`<root>/<source>/<YYYY-MM-DD>/<file>`) |
| `DE_ASSETS_ENV` | `dev` | `dev`, or anything else (`prod`, `staging`) for strict mode |
| `DE_ASSETS_PSEUDONYM_KEY` | none | HMAC key for user-id pseudonyms; outside `dev`: required, >= 32 bytes, not the dev key |
| `DE_ASSETS_MAX_QUARANTINE_RATE` | `0.2` | a cleaning day quarantining more is held back: served rows kept, its rows in quarantine |
| `DE_ASSETS_ALERT_WEBHOOK` | none | URL that new alerts are POSTed to (JSON), besides log + table |
| `DE_ASSETS_EVENTS_API_URL` | none | cursor-paged JSON events API that `landing/events_api` pulls into the landing area |
| `DE_ASSETS_REPORTS` | `data/reports` | where the insights report's HTML pages are written |
| `DE_ASSETS_LATE_LOOKBACK_DAYS` | `7` | late events up to this many days re-open their day; older ones: quarantine `too_late` |
| `DE_ASSETS_EARLIEST_EVENT_TIME` | `1970-01-02` | events (and request samples) before this UTC time: quarantine `*_ts:implausibly_old` |
| `DE_ASSETS_LAKE_COMPRESSION` | `zstd` | feature flag: Parquet codec of the lake's data files (`zstd`, `snappy`, `gzip`, `uncompressed`) |
| `DE_ASSETS_DEDUPE_STRATEGY` | `window` | feature flag: `window` (row_number) or `arg_min` (hash aggregate); same rows |

Dry run is a launch-time switch, not an environment variable: run config
`{"resources": {"run_mode": {"config": {"dry_run": true}}}}` or `de-assets run --dry-run`.
"""

import fcntl
import hashlib
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import sqlalchemy as sa
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr
from sqlalchemy.pool import StaticPool

from de_assets.lib import alerts, contracts, health, ops_store, paths, raw_lake, served, staged
from de_assets.lib.lake import NO_DOWNLOADS
from de_assets.lib.days import utc_now
from de_assets.lib.marts import DEFAULT_FUNNELS
from de_assets.lib.sql import insert_arrow, literal
from de_assets.lib.tables import (
    ALERTS, ALL_TABLES, CLEAN_EVENTS, CLEAN_REQUESTS, PARTITION_KPIS, SOURCE_FILES, ensure_tables,
)

BACKFILL_TAG = "dagster/backfill"  # set by Dagster on the runs of a backfill launched from the UI

DEV_PSEUDONYM_KEY = "de-assets-dev-key-not-for-production"
MIN_KEY_BYTES = 32  # outside dev; the key is an HMAC-SHA256 key, 32 random bytes = its full strength
# Every step that writes the warehouse is in this concurrency pool (a knob for operators: its limit in
# de_assets/instance.py is one step per run). DuckDB allows one writer per file: the steps take turns
# on it (`_connection_in_turn`).
WAREHOUSE_POOL = "duckdb_warehouse"


class RunMode(dg.ConfigurableResource):
    """Switches chosen when a run is launched (run config `resources.run_mode.config`).

    `dry_run: true` runs the whole selected graph against a scratch copy of the warehouse: every
    step computes, validates and reports what it would write (rows, quarantine, checks, the diff
    against what is stored), and the warehouse file itself is never opened for writing.
    """

    dry_run: bool = False


# How long `Warehouse.ops_engine` waits for the file to move an earlier version's state out of it.
ADOPT_WAIT_S = 5.0


class Warehouse(DuckDBResource):
    """The DuckDB warehouse. `connect()` yields a UTC connection with every table created
    (`get_connection()`, DuckDBResource's name for it, is the same connection).

    `memory_limit` caps DuckDB's buffer pool (it spills to `<database>.tmp/` beyond it); DuckDB's
    own default is 80% of RAM, which makes a run's footprint depend on the machine, not the data.
    Insertion order is not preserved (no table here relies on row order), so big inserts stream.

    In a dry run the run works on a copy (`<database>.dry_run/<run id>.duckdb`, deleted when the
    run ends) through one connection for the whole run, reading the lake in place and writing into
    a staging overlay in memory; the stored warehouse is attached read-only as `stored` so steps can
    diff against it.
    """

    memory_limit: str = "600MB"
    catalog_uri: str | None = None  # the lake's SQL catalog; default: SQLite `catalog.db` beside the database file
    lake_uri: str | None = None  # where the lake's files go; default: `lake/` beside the database file
    lake_compression: str = "zstd"  # feature flag: Parquet codec of the lake's data files (lib/flags.py)
    # How long a step waits for another process's write lock before failing: steps of runs at once
    # queue on the lock (one 1M-event day holds it for about a minute, a long range for longer).
    lock_wait_s: float = 3600.0
    run_mode: dg.ResourceDependency[RunMode]
    _scratch: Path | None = PrivateAttr(default=None)
    _catalog: object = PrivateAttr(default=None)
    _ops_engine: object = PrivateAttr(default=None)
    _dry_hand_backs: list = PrivateAttr(default_factory=list)  # a dry run's (table, match, rows) kept, not written
    _dry_con: object = PrivateAttr(default=None)  # a dry run's connection to its scratch copy
    _dry_overlay: ExitStack = PrivateAttr(default_factory=ExitStack)

    @property
    def dry_run(self) -> bool:
        return self.run_mode.dry_run

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.lake_compression not in served.LAKE_CODECS:
            raise dg.Failure(f"DE_ASSETS_LAKE_COMPRESSION (feature flag lake_compression) must be one of "
                             f"{served.LAKE_CODECS}, got {self.lake_compression!r}")
        _record_run_process(context)
        if not self.dry_run:
            return
        if self.database == ":memory:":
            raise dg.Failure("A dry run needs a warehouse file to compare with; DE_ASSETS_DUCKDB is :memory:.")
        scratch_dir = Path(f"{self.database}.dry_run")
        scratch_dir.mkdir(parents=True, exist_ok=True)
        self._scratch = scratch_dir / f"{context.run.run_id}.duckdb"
        for suffix in ("", ".wal"):  # copy, never open: the stored file stays byte-for-byte the same
            if Path(self.database + suffix).exists():
                shutil.copyfile(self.database + suffix, str(self._scratch) + suffix)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            self._dry_overlay.close()  # a dry run's staged rows are dropped with its overlay
        finally:  # and the scratch copy goes, whatever happened
            if self._dry_con is not None:
                self._dry_con.close()
                self._dry_con = None
            if self._scratch is not None:
                shutil.rmtree(self._scratch.parent, ignore_errors=True)
                self._scratch = None

    @contextmanager
    def connect(self, wait_s: float | None = None):
        """The warehouse connection; waits up to `wait_s` (default `lock_wait_s`) for the file's lock
        while a step of another run holds it (`ops_engine`, which a sensor may call, passes a few seconds)."""
        if self._scratch is not None:
            yield self._dry_run_connection()
            return
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        wait = self.lock_wait_s if wait_s is None else wait_s
        with _connection_in_turn(self.database, self.connection_config, wait, dg.get_dagster_logger(),
                                 shared=self._shared_turns()) as con:
            self._configure(con)
            if self._ops_engine is None and self.lake_catalog() is not None:
                self.ops_engine(con)  # state of an earlier version moved out of the file before it is read
            if self.raw_in_lake:
                raw_lake.attach(con, self.lake_catalog())  # raw, clean, quarantine, marts: views over the lake
            yield con

    def _shared_turns(self):
        """Where the turns are taken across machines: the catalog database when it is PostgreSQL (an
        advisory lock, `SharedTurns`), so steps on other machines, each with a warehouse file of its
        own, take turns with this one; None for a SQLite catalog (one machine) or no lake."""
        catalog = self.lake_catalog()
        engine = getattr(catalog, "engine", None)
        if engine is None or engine.dialect.name != "postgresql":
            return None
        return SharedTurns(engine, f"{catalog.name} {catalog.properties.get('warehouse', '')}")

    def _configure(self, con) -> None:
        con.execute(f"SET memory_limit = '{self.memory_limit}'")
        # Row order inside tables carries no meaning here; without it large inserts stream.
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET TimeZone = 'UTC'")
        con.execute(NO_DOWNLOADS)
        ensure_tables(con)

    def _dry_run_connection(self):
        """A dry run's one connection to its scratch copy, opened by its first step and kept until the
        run ends (the copy is the run's own: there is no turn to take). Its lake tables stay views over
        the lake's snapshots as of that first step (nothing of the history is copied), and a staging
        overlay in memory (`lib/staged.py`) holds what each step writes, raw included, for the steps
        after it: only the partitions the run wrote, spilling to disk beyond the memory limit."""
        if self._dry_con is None:
            con = duckdb.connect(str(self._scratch), config=self.connection_config)
            self._configure(con)
            stored_lake = self._stored_lake()
            if stored_lake is not None and any(raw_lake.in_lake(con, t) for t in raw_lake.LAKE_TABLES):
                raw_lake.attach(con, stored_lake, read_only=True)
                self._dry_overlay.enter_context(staged.overlay(con))
            if Path(self.database).exists():
                con.execute(f"ATTACH {literal(self.database)} AS stored (READ_ONLY)")
                self._read_unmoved_from_scratch(con)
            self._dry_con = con
        return self._dry_con

    @contextmanager
    def staging(self, con):
        """The connection's staging overlay for the lake's cleaning and mart tables (`lib/staged.py`): written and
        checked there, committed by `publish`. On leaving it, the warehouse's views read the lake's
        new snapshots, so whoever opens the file next sees what was committed."""
        if staged.active(con) is not None:  # a dry run's, kept for the whole run (`connect`)
            yield
            return
        with staged.overlay(con):
            yield
        if self.raw_in_lake:
            raw_lake.attach(con, self.lake_catalog())

    @contextmanager
    def private(self, tables: bool = True):
        """A private in-memory DuckDB connection with every warehouse table created (empty; only the
        schemas without ``tables``), the same memory limit and time zone, spilling to its own folder:
        where a step computes what it commits to the lake without holding the warehouse file."""
        spill = Path(f"{self.database if self.database != ':memory:' else 'data/memory'}.tmp") / uuid.uuid4().hex
        spill.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(config={"memory_limit": self.memory_limit, "temp_directory": str(spill)})
        try:
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET TimeZone = 'UTC'")
            con.execute(NO_DOWNLOADS)
            if tables:
                ensure_tables(con)
            else:
                for schema in dict.fromkeys(t.schema for t in ALL_TABLES):
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            yield con
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)

    @contextmanager
    def computing(self, table, reads: tuple, kpis: bool = False, log=None, reads_again=None):
        """Where the step writing ``table`` (a mart; a cleaning's clean table) computes without holding
        the warehouse file (`PrivateStep`): a private connection reading the lake's snapshots as of a
        short turn on the file (the views of ``table``, of ``reads``, the lake tables its result
        depends on, which are pinned, and of the clean tables its KPIs are measured on), with
        ``kpis`` a copy of the KPI rows. Nothing else of the warehouse is there (a query of another
        table fails, it does not read an empty one). ``log`` says when the step computes again
        (`PrivateStep.turn`); ``reads_again(table, days)`` narrows what makes it do so: a commit to
        one of ``reads`` since the pin counts only when it wrote partitions ``days`` for which it
        returns True (any commit counts without it, and whenever the commit's days cannot be told).
        A dry run, or a warehouse without a lake, computes on the file as before, holding it
        throughout."""
        if self.lake_catalog() is None:
            with self.connect() as con, self.staging(con):
                if kpis:
                    self.load_held(con, PARTITION_KPIS, asset=HEALTH_SERIES_ASSETS)
                yield PrivateStep(con=con, file=con)
            return
        views = (table, *reads, *MEASURED_ON)
        with self.private(tables=False) as private, ExitStack() as overlay:
            step = PrivateStep(con=private, warehouse=self, views=views, reads=tuple(reads), kpis=kpis,
                               overlay=overlay, log=log, reads_again=reads_again)
            with self.connect() as con:  # a short turn: the snapshots (and KPI rows) the step reads
                step.pin(con)
            yield step

    @property
    def raw_in_lake(self) -> bool:
        """Whether the raw layer's system of record is the lake: yes whenever there is one (local or
        object storage); a dry run keeps it in its scratch copy, and an in-memory warehouse without a
        catalog in the warehouse itself."""
        return self.lake_catalog() is not None

    def _stored_lake(self):
        """The lake's catalog for reading only (a dry run), or None when there is no lake yet."""
        try:
            return served.open_lake(self.database, self.catalog_uri, self.lake_uri, create=False)
        except FileNotFoundError:
            return None

    def get_connection(self):
        """The same connection as `connect()`. DuckDBResource's own would open the stored file
        read-write, bypassing the dry-run copy, the memory limit, UTC and the tables."""
        return self.connect()

    def lake_catalog(self):
        """The lake's catalog (opened once), or None when nothing is published: a dry run, or an
        in-memory warehouse without a configured catalog."""
        if self.dry_run or (self.database == ":memory:" and self.catalog_uri is None):
            return None
        if self._catalog is None:
            self._catalog = served.open_lake(self.database, self.catalog_uri, self.lake_uri)
        return self._catalog

    def ops_engine(self, con=None):
        """The catalog database with the operational tables the lake keeps (`lib/ops_store.py`), as a
        SQLAlchemy engine. Once per catalog, state an earlier version kept in the warehouse file is
        moved there (`ops_store.adopt_from_warehouse`; not in a dry run, which never changes it),
        through ``con`` (the file's connection, held) or a short turn on the file; every step's first
        connection does it (`connect`), so no step reads that state before it is moved."""
        if self._ops_engine is not None:
            return self._ops_engine
        if self.database == ":memory:" and self.catalog_uri is None:  # throwaway, like the warehouse
            self._ops_engine = ops_store.ensure(sa.create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}))
            return self._ops_engine
        if self._catalog is None:
            self._catalog = served.open_lake(self.database, self.catalog_uri, self.lake_uri)
        engine = ops_store.ensure(self._catalog.engine)
        pending = not self.dry_run and ops_store.to_adopt(engine)
        if pending and not Path(self.database).exists():  # a new warehouse: nothing of an earlier one to move
            ops_store.adopt_from_warehouse(engine)
        elif pending and con is not None:
            ops_store.adopt_from_warehouse(engine, con)
        elif pending:
            try:  # briefly: a sensor must not wait for a step; what is written here meanwhile is kept
                with self.connect(wait_s=ADOPT_WAIT_S):  # moves it (`connect` calls back with its connection)
                    pass
                return self._ops_engine or engine
            except duckdb.IOException:
                dg.get_dagster_logger().info("the warehouse file is busy: state of an earlier version is "
                                             "moved to the catalog database next time")
                return engine  # not kept: the next call tries the move again
        self._ops_engine = engine  # tables created, nothing left to move: no need to look again
        return engine

    def _read_unmoved_from_scratch(self, con) -> None:
        """A dry run writes nothing to the catalog database, so it cannot move what an earlier version's
        file still holds there (an upgraded install before its first real step): it reads the tables of
        its scratch copy (``con``) in their place, laid over the held rows as its own hand-backs are
        (`load_held`). Without this it would take every registered file for new."""
        pending = set(ops_store.to_adopt(self.ops_engine()))
        in_copy = {name for (name,) in con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()}
        for table in ops_store.HELD:
            if table.name in pending and table.name in in_copy:
                rows = con.sql(f"SELECT * FROM {table.name}").to_arrow_table()
                self._dry_hand_backs.insert(0, (table, {}, rows))  # the run's own hand-backs are laid after

    def registered_checksums(self, checksums: list[str]) -> set[str] | None:
        """Those of `checksums` (SHA-256 of landed files) in the file registry, under any name or day,
        read from the catalog database: never waits for a run. None (not known yet) while an earlier
        version's registry still has to be moved out of the warehouse file and a run holds the file."""
        if self.database == ":memory:" and self.catalog_uri is None:
            return set()
        engine = self.ops_engine()
        if Path(self.database).exists() and SOURCE_FILES.name in ops_store.to_adopt(engine):
            return None
        return ops_store.registered_checksums(engine, checksums)

    def publish(self, con, table, start=None, end=None, days=None, written=None) -> int | None:
        """Publish the partitions of [start, end] (or exactly `days`) of a served table to the lake in
        one commit (`lib/served.py`), adding the files `write_ahead` wrote if given (``written``)."""
        catalog = self.lake_catalog()
        if catalog is None or table not in served.PUBLISHED:
            return None
        return served.publish(con, catalog, table, start, end, days=days, compression=self.lake_compression,
                              written=written)

    def write_ahead(self, con, table, values) -> "served.Written | None":
        """The data files of partitions ``values`` of a served table, written for a later `publish`
        (`served.write_ahead`); None when nothing is published (a dry run, no lake)."""
        catalog = self.lake_catalog()
        if catalog is None or table not in served.PUBLISHED:
            return None
        return served.write_ahead(con, catalog, table, values, compression=self.lake_compression)

    @contextmanager
    def held(self, *tables, **match):
        """An in-memory DuckDB connection with a copy of each of ``tables`` (operational tables held in
        the catalog database, `ops_store.HELD`; only the rows that match ``match``, `ops_store.load`)
        as it is there now: where a step computes them with the same SQL as any table, then hands
        back the rows it owns (`hand_back`)."""
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            for table in tables:
                self.load_held(con, table, **match)
            yield con

    def load_held(self, con, table, catalog: str | None = None, **match) -> None:
        """Copy the rows of ``table`` held in the catalog database that match ``match`` into DuckDB
        connection ``con`` (or its attached database ``catalog``; `ops_store.load`); in a dry run, with
        the rows the run handed back so far in place of those they replace (the run's own KPIs and
        SLOs, never written there)."""
        if self._scratch is not None:
            self._dry_run_connection()  # what the run reads in place of held rows is laid over from its start
        name = ops_store.load(self.ops_engine(), con, table, catalog, **match)
        for handed, handed_match, rows in self._dry_hand_backs:
            if handed is table:
                where, params = ops_store.duck_where(handed_match)
                con.execute(f"DELETE FROM {name} WHERE {where}", params)
                if match:  # only the rows the copy was asked for
                    in_match, match_params = ops_store.duck_where(match)
                    where, params = f"({where}) AND {in_match}", params + match_params
                insert_arrow(con, name, rows, where, params)

    @contextmanager
    def beside(self, con, table, **match):
        """For the block, ``table`` (held in the catalog database) is readable under its name in the
        warehouse connection ``con`` (the rows that match ``match``, `load_held`), as a table in an
        attached in-memory database whose schema comes last on the connection's `search_path`: what
        a check that queries it by name reads (the raw step's volume check reads `raw.source_files`).
        The file's own tables and views, and a staging overlay's, resolve as before."""
        name = f"held_{uuid.uuid4().hex[:12]}"
        con.execute(f"ATTACH ':memory:' AS {name}")
        try:
            with staged.search_path_kept(con) as found:
                self.load_held(con, table, catalog=name, **match)
                entries = found or staged.home_entries(con)
                con.execute(f"SET search_path = {literal(','.join([*entries, f'{name}.{table.schema}']))}")
                yield
        finally:
            con.execute(f"DETACH {name}")

    def held_rows(self, table, **match) -> pa.Table:
        """The rows `load_held` would copy, as an Arrow table (for a query on another connection)."""
        if self._scratch is not None:
            self._dry_run_connection()  # as in `load_held`
        if not self._dry_hand_backs:  # nothing to lay over them: no DuckDB needed
            return ops_store.rows(self.ops_engine(), table, **match)
        with self.held(table, **match) as con:
            return con.sql(f"SELECT * FROM {table.name}").to_arrow_table()

    def hand_back(self, con, *tables, **match) -> int:
        """Write the rows of ``con``'s copies of ``tables`` (`held`) that match ``match`` to the catalog
        database in one transaction, replacing the rows held there that match it
        (`ops_store.replace`). A dry run writes nothing there: it keeps them for its own later
        steps (`load_held`). Returns the rows written."""
        if self.dry_run:
            where, params = ops_store.duck_where(match)
            kept = 0
            for table in tables:
                rows = con.sql(f"SELECT * FROM {table.name} WHERE {where}", params=params).to_arrow_table()
                self._dry_hand_backs.append((table, match, rows))  # laid over its later copies (`load_held`)
                kept += rows.num_rows
            return kept
        return ops_store.replace(self.ops_engine(), tables, con, **match)

    def record_kpis(self, con, asset: str, run_id: str, table, start: date, end: date, seconds: float,
                    counts: dict | None = None) -> dict[date, dict]:
        """This run's KPI rows of the asset's days (`health.kpi_rows`, measured on ``con``), replaced in
        the catalog database in one transaction (a dry run keeps them, as `hand_back` does); returns
        each day's figures for the UI."""
        rows = [dict(zip(PARTITION_KPIS.column_names, r))
                for r in health.kpi_rows(con, asset, run_id, table, start, end, seconds, counts)]
        match = dict(asset=asset, run_id=run_id, partition=(start, end))
        if self.dry_run:  # kept, as `hand_back` keeps a dry run's rows
            self._dry_hand_backs.append(
                (PARTITION_KPIS, match, pa.Table.from_pylist(rows, schema=served.arrow_schema(PARTITION_KPIS))))
        else:
            ops_store.replace_rows(self.ops_engine(), PARTITION_KPIS, rows, **match)
        return health.day_figures([tuple(r.values()) for r in rows])

    def publish_held(self, table) -> int | None:
        """Publish an operational table as the catalog database holds it now (every run's rows, not
        one step's copy) to the lake (replaced whole, one commit); None when nothing is published
        (a dry run, no lake)."""
        catalog = self.lake_catalog()
        if catalog is None:
            return None
        with self.held(table) as con:
            return served.publish(con, catalog, table)

    def publish_alerts(self) -> int | None:
        """Publish the alerts held in the catalog database to the lake as `pipeline_health.alerts`."""
        return self.publish_held(ALERTS)


# The KPI rows the health series read (`health.HEALTH_SERIES_SQL`: the cleanings'), as an `ops_store` match.
HEALTH_SERIES_ASSETS = "clean/%"

# What a served step's KPIs and metadata are measured on (`health.source_rows_per_day`, `freshness_seconds`).
MEASURED_ON = (CLEAN_EVENTS, CLEAN_REQUESTS)


class PrivateStep:
    """A step (a mart, a cleaning) computing without the warehouse file (`Warehouse.computing`).
    ``con`` is a private connection reading the lake through views copied from the warehouse in a
    short turn (their snapshots pinned), where the step writes into its staging overlay
    (`lib/staged.py`), runs its checks and writes its data files (`bookkeeping.evaluate`). `turn()`
    then takes the file for what must not interleave with other steps: if a table the step reads
    was committed since it was pinned (or, with ``kpis``, a KPI row the health series read was
    recorded), it is pinned again there, `committed_meanwhile` names what changed, and the caller
    computes again, still holding the file; then the KPI rows, the commit, and the materialization
    are recorded. So a materialization is still recorded after the snapshots it read
    and before any later commit of them, which the late_data_refresh sensor relies on (docs/lake.md)."""

    def __init__(self, con, file=None, warehouse: "Warehouse | None" = None, views: tuple = (), reads: tuple = (),
                 kpis: bool = False, overlay: ExitStack | None = None, log=None, reads_again=None):
        self.con = con
        self.file = file  # the warehouse connection: inside `turn()` (throughout, for a step on the file)
        self.committed_meanwhile = ""  # in `turn()`: what was committed since the pin ("" when nothing was)
        self._warehouse, self._views, self._reads, self._kpis = warehouse, views, reads, kpis
        self._overlay, self._log, self._reads_again = overlay, log, reads_again
        self._pins: tuple | None = None

    def _matters(self, name: str, pinned: str | None, current: str | None) -> bool:
        """Whether the commits to lake table ``name`` between two stamps of its view make the step
        compute again (`Warehouse.computing`'s ``reads_again``)."""
        if self._reads_again is None:
            return True
        table = next(t for t in self._reads if t.name == name)
        days = raw_lake.days_committed(self._warehouse.lake_catalog(), table, pinned, current)
        return days is None or self._reads_again(table, days)

    def _inputs(self, con) -> tuple:
        kpis = (ops_store.fingerprint(self._warehouse.ops_engine(), PARTITION_KPIS, asset=HEALTH_SERIES_ASSETS)
                if self._kpis else None)
        return raw_lake.view_stamps(con, self._reads), kpis

    def pin(self, file) -> None:
        """Read the lake as the warehouse connection ``file`` reads it now (and the KPI rows as the
        catalog database holds them), with nothing staged: what was staged before is dropped."""
        self._overlay.close()
        raw_lake.copy_views(file, self.con, self._views)
        pins = self._inputs(self.con)  # the KPI rows' figure before they are copied: a write in between shows
        if self._kpis:
            self._warehouse.load_held(self.con, PARTITION_KPIS, asset=HEALTH_SERIES_ASSETS)
        self._pins = pins
        self._overlay.enter_context(staged.overlay(self.con))

    @contextmanager
    def turn(self):
        """The warehouse connection, held for the block (see the class's docstring)."""
        if self._warehouse is None:
            yield self.file
            return
        with self._warehouse.connect() as file:
            self.file = file
            try:
                (stamps, kpis), (pinned_stamps, pinned_kpis) = self._inputs(file), self._pins
                changed = [name for name, stamp in stamps.items()
                           if stamp != pinned_stamps[name] and self._matters(name, pinned_stamps[name], stamp)]
                changed += ["KPI rows"] if kpis != pinned_kpis else []
                if changed:
                    self.committed_meanwhile = ", ".join(changed)
                    if self._log is not None:
                        self._log.info(f"{self._views[0].name}: {self.committed_meanwhile} committed while it "
                                       "computed: computing again")
                    self.pin(file)
                yield file
                # the file's views read what was committed, as after `staging`: for whoever opens it next
                raw_lake.attach(file, self._warehouse.lake_catalog())
            finally:
                self.file = None


def _record_run_process(context: dg.InitResourceContext) -> None:
    """Tag a run with the process that executes it, unless launched with the tag (the CLI tags its
    runs): a sweep fails the run once that process is gone (de_assets/instance.py)."""
    from de_assets.instance import PID_TAG, process_tags

    run = context.run
    if context.instance is None or run is None or PID_TAG in run.tags:
        return
    context.instance.add_run_tags(run.run_id, process_tags())


TURN_POLL_S = 0.01  # how often a waiting step tries for its turn on the warehouse file (a syscall)
LOCK_POLL_S = 0.05  # how often it retries DuckDB's own lock (an open attempt: ~5 ms of CPU each)
_turns_guard = threading.Lock()
# warehouse file -> [open lock file, connections of this process in it, `SharedTurns` connection or None]
_turns: dict[str, list] = {}


class SharedTurns:
    """The turn on the lake across machines: a PostgreSQL advisory lock (session level) in the
    catalog database, keyed by the lake, held on a connection of its own for as long as the turn.
    Taken after the machine's own turn (the `flock`), so two processes never wait for each other
    in opposite orders (and while the process's table of turns is locked: its other threads wait
    for it too, as for the flock). A waiter is queued by the server and gets the lock as soon as
    it is released; past ``wait`` it fails naming the lock."""

    def __init__(self, engine, lake: str):
        self.engine = engine
        digest = hashlib.sha256(f"de_assets turns {lake}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)

    def take(self, wait: "_Wait"):
        con = self.engine.raw_connection()
        try:
            cur = con.cursor()
            cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            if not cur.fetchone()[0]:
                wait.waiting()
                cur.execute(f"SET lock_timeout = {max(int(wait.left() * 1000), 1)}")
                try:
                    cur.execute("SELECT pg_advisory_lock(%s)", (self.key,))
                except Exception as error:
                    raise duckdb.IOException(
                        f"Could not take the turn on the lake: another machine's step has held it (advisory lock "
                        f"{self.key} in the catalog database) for more than {wait.seconds:.0f} s") from error
                cur.execute("SET lock_timeout = 0")
            con.commit()
            return con
        except BaseException:
            con.close()
            raise

    @staticmethod
    def release(con) -> None:
        try:
            con.rollback()
            con.cursor().execute("SELECT pg_advisory_unlock_all()")
            con.commit()
        except Exception:
            con.invalidate()  # its session is closed, and a closed session holds no lock
        finally:
            con.close()  # back to the engine's pool, unlocked (or discarded)


@contextmanager
def _connection_in_turn(database: str, config: dict, wait_s: float, log=None, shared: SharedTurns | None = None):
    """A DuckDB connection to `database` opened in its turn. The processes of this project take
    turns on a warehouse file through an exclusive `flock` on `<database>.lock`, held while any
    connection of the process is open (a process may open several: DuckDB shares one database per
    process), then open the file, waiting out DuckDB's own lock too for any other process that has
    it open. A try for the turn is a syscall, so the next waiter gets the file within `TURN_POLL_S`
    of its release at no cost; retrying DuckDB's lock instead costs ~5 ms of CPU an attempt, which
    three waiting runs at 20 attempts a second take from the one that computes. With ``shared``
    (a PostgreSQL catalog), the turn is also taken across machines (`SharedTurns`). Waits up to
    `wait_s` in all (saying so in `log`); past it raises duckdb.IOException naming the lock."""
    if database == ":memory:":
        con = duckdb.connect(database, config=dict(config))
        try:
            yield con
        finally:
            con.close()
        return
    wait = _Wait(wait_s, log)
    key = os.path.realpath(database)
    _take_turn(key, wait, shared)
    try:
        con = _connect_with_retry(database, config, wait)
        wait.done()
        try:
            yield con
        finally:
            con.close()
    finally:
        _end_turn(key)


class _Wait:
    """One connection's wait for the warehouse file: its deadline, and what it tells the step's log
    (that it waits, once; how long it waited, once it has the file)."""

    def __init__(self, seconds: float, log=None):
        self.seconds, self.log = seconds, log
        self.began = time.monotonic()
        self.waited = False

    def expired(self) -> bool:
        return time.monotonic() - self.began >= self.seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.began)

    def waiting(self) -> None:
        """Say once that the step waits."""
        if not self.waited and self.log is not None:
            self.log.info(f"waiting for the warehouse file's lock (held by another process; up to {self.seconds:.0f} s)")
        self.waited = True

    def pause(self, seconds: float) -> None:
        self.waiting()
        time.sleep(max(min(seconds, self.left()), 0.001))

    def done(self) -> None:
        if self.waited and self.log is not None:
            self.log.info(f"got the warehouse file's lock after {time.monotonic() - self.began:.1f} s")


def _take_turn(key: str, wait: _Wait, shared: SharedTurns | None = None) -> None:
    """Hold the turn on the warehouse file `key` (re-entrant within a process), and with ``shared``
    the turn across machines after it."""
    while True:
        with _turns_guard:
            if key in _turns:
                _turns[key][1] += 1
                return
            handle = open(f"{key}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
            else:
                try:
                    across = shared.take(wait) if shared is not None else None
                except BaseException:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    handle.close()
                    raise
                _turns[key] = [handle, 1, across]
                return
        if wait.expired():
            raise duckdb.IOException(f"Could not set lock on file {key}: another process of this project has "
                                     f"held its turn ({key}.lock) for more than {wait.seconds:.0f} s")
        wait.pause(TURN_POLL_S)


def _end_turn(key: str) -> None:
    with _turns_guard:
        held = _turns[key]
        held[1] -= 1
        if held[1] == 0:
            del _turns[key]
            try:
                if held[2] is not None:
                    SharedTurns.release(held[2])
            finally:
                fcntl.flock(held[0], fcntl.LOCK_UN)
                held[0].close()


def _connect_with_retry(database: str, config: dict, wait: _Wait):
    """Open DuckDB, waiting out another process's lock on the file: one that opened it without
    taking its turn (`_connection_in_turn`), e.g. a notebook on the warehouse file."""
    while True:
        try:
            return duckdb.connect(database, config=dict(config))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or wait.expired():
                raise
            wait.pause(LOCK_POLL_S * random.uniform(0.5, 1.5))


class PipelineSettings(dg.ConfigurableResource):
    """Where files land, how user ids are pseudonymized, which funnels are served."""

    landing_root: str = paths.LANDING
    environment: str = "dev"
    pseudonym_key: str | None = None
    funnels: dict[str, list[str]] = DEFAULT_FUNNELS
    max_quarantine_rate: float = 0.2
    late_lookback_days: int = 7  # older events are quarantined as too_late; newer re-open their day
    # Events before this UTC date/time are implausible (quarantined as `event_ts:implausibly_old`).
    # The default only rejects the Unix epoch day, where zeroed clocks land: decades of history load.
    earliest_event_time: str = contracts.DEFAULT_EARLIEST_EVENT_TIME
    events_api_url: str | None = None  # JSON events API pulled by landing/events_api (R2)
    reports_root: str = paths.REPORTS  # where reports/insights writes its HTML pages
    # Feature flags (pipeline configuration experiments, R7); results are identical either way.
    dedupe_strategy: str = "window"
    # A KPI is flagged as anomalous (and alerted) only when the count it stands on (events, orders,
    # requests or pipeline rows in, see lib/marts.kpi_anomalies) is at least this on the day or in
    # the median of the 28 days before (DE_ASSETS_ANOMALY_MIN_VOLUME).
    anomaly_min_volume: float = 100.0

    def earliest_event_ts(self):
        """`earliest_event_time` as a naive UTC timestamp; an unparseable value is a clear error."""
        try:
            return contracts.parse_earliest(self.earliest_event_time)
        except ValueError as err:
            raise dg.Failure(str(err)) from None

    def key(self, log) -> str:
        """The HMAC key; in dev a fixed default with a loud warning. Elsewhere it must be set, at least
        MIN_KEY_BYTES long and not the public dev key (errors name the setting, never the key)."""
        if self.pseudonym_key and self.environment != "dev":
            if self.pseudonym_key == DEV_PSEUDONYM_KEY:
                raise dg.Failure(
                    f"DE_ASSETS_PSEUDONYM_KEY is the public dev key and DE_ASSETS_ENV={self.environment!r} is not "
                    "'dev': refusing it, anyone can recompute its pseudonyms. Set a random secret key "
                    f"of at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)."
                )
            if len(self.pseudonym_key.encode()) < MIN_KEY_BYTES:
                raise dg.Failure(
                    f"DE_ASSETS_PSEUDONYM_KEY is shorter than {MIN_KEY_BYTES} bytes and DE_ASSETS_ENV="
                    f"{self.environment!r} is not 'dev': refusing it, a short key can be recovered by brute "
                    "force from one known user id. Set a random secret key (e.g. `openssl rand -hex 32`)."
                )
        if self.pseudonym_key:
            return self.pseudonym_key
        if self.environment == "dev":
            log.warning(
                "DE_ASSETS_PSEUDONYM_KEY is not set: using the PUBLIC dev key. Pseudonyms are NOT "
                "protected. Set DE_ASSETS_PSEUDONYM_KEY (and DE_ASSETS_ENV=prod) for real data."
            )
            return DEV_PSEUDONYM_KEY
        raise dg.Failure(
            f"DE_ASSETS_PSEUDONYM_KEY is not set and DE_ASSETS_ENV={self.environment!r} is not 'dev': "
            "refusing to ingest user ids without a secret pseudonymization key."
        )


class Alerting(dg.ConfigurableResource):
    """The alert sink: a structured log line and a row in the catalog database's alerts (once per
    dedupe key; `Warehouse.ops_engine`, never the warehouse file), plus a JSON POST to `webhook_url`
    when set (timeout, retries with backoff)."""

    webhook_url: str | None = None
    timeout_seconds: float = 5.0
    retries: int = 3
    # KPI anomalies and SLO breaches of days that ended more than this many days before the run
    # (or of any day in a run launched as a Dagster backfill) are not paged (DE_ASSETS_ALERT_BACKFILL_DAYS).
    backfill_after_days: float = 2.0
    run_mode: dg.ResourceDependency[RunMode]
    warehouse: dg.ResourceDependency[Warehouse]

    def send(self, items: list[alerts.Alert], log=None) -> list[alerts.Alert]:
        """Record the alerts; returns the new ones (repeats only bump their counters). A new alert is
        published to the lake at once (`pipeline_health.alerts`), so readers see a failed run's alert
        although that run never reaches the end-of-run publish. In a dry run nothing is recorded: they
        are logged as what a real run would raise, never paged."""
        if not items:
            return []
        new = alerts.record(
            self.warehouse.ops_engine(), items, webhook_url=self.webhook_url, timeout=self.timeout_seconds,
            retries=self.retries, log=log, dry_run=self.run_mode.dry_run,
        )
        if new and not self.run_mode.dry_run:
            try:
                self.warehouse.publish_alerts()
            except Exception as error:  # recorded and paged already: the lake's copy catches up at the next publish
                (log or dg.get_dagster_logger()).warning(
                    f"alerts recorded, but their copy in the lake was not refreshed ({type(error).__name__}); "
                    "it is at the next publish")
        return new

    def page(self, items: list[tuple[date, alerts.Alert]], run_tags: Mapping[str, str], log=None,
             now: datetime | None = None) -> dict:
        """Send the alerts about the data of a day (KPI anomalies, SLO breaches), except those of
        history being backfilled (`alerts.backfill_reason`); returns metadata that says how many
        were raised and held back, and why."""
        now = now or utc_now()
        backfill_run = BACKFILL_TAG in run_tags
        held, send = [], []
        for day, alert in items:
            reason = alerts.backfill_reason(day, now, self.backfill_after_days, backfill_run)
            (held if reason else send).append((alert, reason))
        new = self.send([a for a, _ in send], log=log)
        if held and log is not None:
            log.info(f"{len(held)} alert(s) not paged while backfilling history: {held[0][1]}")
        return {
            "alerts_raised": len(new),
            "alerts_suppressed": len(held),
            **({"alerts_suppressed_because": held[0][1]} if held else {}),
        }


def _env(name: str):
    """EnvVar when the variable is set (so secrets stay out of the UI), else None (use the default)."""
    return dg.EnvVar(name) if os.getenv(name) else None


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def build_resources(
    database: str | None = None, landing_root: str | None = None, pseudonym_key: str | None = None,
    alerting: dict | None = None, **settings
) -> dict:
    """Every resource, configured from the environment; arguments override it (tests, benchmarks):
    `alerting` overrides fields of the Alerting resource, `catalog_uri`, `lake_uri` and
    `lake_compression` (a feature flag) the Warehouse's, the other keywords PipelineSettings."""
    run_mode = RunMode.configure_at_launch()
    warehouse = Warehouse(
        run_mode=run_mode,
        **_given(database=database or _env("DE_ASSETS_DUCKDB") or paths.DATABASE,
                 memory_limit=_env("DE_ASSETS_DUCKDB_MEMORY_LIMIT"),
                 lock_wait_s=float(os.environ["DE_ASSETS_LOCK_WAIT_S"]) if os.getenv("DE_ASSETS_LOCK_WAIT_S") else None,
                 catalog_uri=settings.pop("catalog_uri", None) or _env("DE_ASSETS_CATALOG_URI"),
                 lake_uri=settings.pop("lake_uri", None) or _env("DE_ASSETS_LAKE"),
                 lake_compression=settings.pop("lake_compression", None) or os.getenv("DE_ASSETS_LAKE_COMPRESSION")),
    )
    rate = os.getenv("DE_ASSETS_MAX_QUARANTINE_RATE")
    lookback = os.getenv("DE_ASSETS_LATE_LOOKBACK_DAYS")
    min_volume = os.getenv("DE_ASSETS_ANOMALY_MIN_VOLUME")
    backfill_days = os.getenv("DE_ASSETS_ALERT_BACKFILL_DAYS")
    return {
        "run_mode": run_mode,
        "warehouse": warehouse,
        "settings": PipelineSettings(
            **{
                **_given(
                    landing_root=landing_root or _env("DE_ASSETS_LANDING"),
                    environment=_env("DE_ASSETS_ENV"),
                    pseudonym_key=pseudonym_key or _env("DE_ASSETS_PSEUDONYM_KEY"),
                    max_quarantine_rate=float(rate) if rate else None,
                    late_lookback_days=int(lookback) if lookback else None,
                    earliest_event_time=os.getenv("DE_ASSETS_EARLIEST_EVENT_TIME") or None,
                    events_api_url=_env("DE_ASSETS_EVENTS_API_URL"),
                    reports_root=_env("DE_ASSETS_REPORTS"),
                    dedupe_strategy=os.getenv("DE_ASSETS_DEDUPE_STRATEGY"),
                    anomaly_min_volume=float(min_volume) if min_volume else None,
                ),
                **settings,
            }
        ),
        "alerting": Alerting(run_mode=run_mode, warehouse=warehouse, **{
            **_given(webhook_url=_env("DE_ASSETS_ALERT_WEBHOOK"),
                     backfill_after_days=float(backfill_days) if backfill_days else None),
            **(alerting or {}),
        }),
    }
