"""Operational state in the catalog's SQL database, next to pyiceberg's own tables.

State that is updated in place (not data) lives where the lake's catalog lives: the SQLite file
`data/catalog.db` by default, PostgreSQL in production. It is read and written in short SQLAlchemy
transactions, never through the DuckDB warehouse file, so a step holding the warehouse never makes
it wait, and it works wherever the catalog is reachable (another machine, a pod).

Held here so far: the HTTP events source's cursor and circuit breaker per source, and its dead
letters (`lib/http_source.py`); every alert raised (`lib/alerts.py`); the partition KPIs every step
records (`pipeline_health.partition_kpis`); the SLO status per partition
(`pipeline_health.slo_status`); the retention audit (`pipeline_health.retention_log`); the
configuration experiments' measurements (`pipeline_health.config_experiments`); the forget-user
requests (the suppression list), their audit and the raw rows they removed per landed file
(`raw.forgotten_rows`); the file registry (`raw.source_files`: one row per landed file, which the
ingestion steps and the landing sensor read). The tables declared in `lib/tables/` (`HELD`) are
computed in DuckDB like any other: a step gets a copy in an in-memory DuckDB connection (`load`),
writes it there with the same SQL, and hands the rows it owns back in one transaction
(`replace`); served readers read the copy published to the lake.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from de_assets.lib import served, tables
from de_assets.lib.sql import insert_arrow

METADATA = sa.MetaData()
_SQL_TYPES = {"VARCHAR": sa.Text, "TIMESTAMP": sa.DateTime, "INTEGER": sa.Integer, "BIGINT": sa.BigInteger,
              "DOUBLE": sa.Float, "DATE": sa.Date, "BOOLEAN": sa.Boolean}


def _declared(table: tables.Table, name: str, key: tuple[str, ...] | None = None) -> sa.Table:
    """The SQL table of a table declared in `lib/tables/` (columns, types, docs, key declared once;
    ``key``: a primary key for a table declared without one)."""
    key = table.key if key is None else key
    return sa.Table(name, METADATA, *(
        sa.Column(c.name, _SQL_TYPES[c.type], primary_key=c.name in key, comment=c.description)
        for c in table.columns
    ))

# Cursor and circuit-breaker state of each HTTP API source: one row per source.
HTTP_SOURCE_STATE = sa.Table(
    "de_assets_http_source_state", METADATA,
    sa.Column("source", sa.String(200), primary_key=True, comment="API source name"),
    sa.Column("cursor", sa.Text, comment="Cursor of the next page to fetch (NULL: from the start)"),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, comment="Failed requests in a row"),
    sa.Column("open_until", sa.DateTime, comment="Circuit open until this UTC time (no request is made); NULL when closed"),
    sa.Column("updated_at", sa.DateTime, nullable=False, comment="UTC time of the last update"),
)

# API pages that stayed bad after every retry: what was asked, what came back. The cursor was not
# advanced past them. The body excerpt is raw payload: readable by whoever can read the catalog.
HTTP_DEAD_LETTERS = sa.Table(
    "de_assets_http_dead_letters", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False, comment="API source name"),
    sa.Column("cursor", sa.Text, comment="Cursor of the page"),
    sa.Column("url", sa.Text, nullable=False, comment="Requested URL"),
    sa.Column("status", sa.Integer, comment="Last HTTP status (NULL: timeout or connection error)"),
    sa.Column("error", sa.Text, nullable=False, comment="Last error"),
    sa.Column("body_excerpt", sa.Text, comment="First 300 characters of the last response body"),
    sa.Column("failed_at", sa.DateTime, nullable=False, comment="UTC time"),
)


# The tables declared in `lib/tables/` whose rows are held here (`tables.IN_CATALOG_DATABASE`: the
# alerts, the partition KPIs, the SLO status, the retention log, the configuration experiments, the
# forget-user requests, audit and forgotten rows, the file registry), and their SQL tables,
# `de_assets_<table>`. Each step replaces only the rows it owns (`replace`).
HELD: dict[tables.Table, sa.Table] = {
    table: _declared(table, f"de_assets_{table.name.split('.')[1]}") for table in tables.IN_CATALOG_DATABASE
}

# Every alert raised, once per dedupe key (`lib/alerts.py`); the primary key is the dedupe key, so two
# processes raising the same new alert at once insert it once, and only the one that did pages.
ALERTS = HELD[tables.ALERTS]

# The file registry (`raw.source_files`, key source + path): each raw step hands back the rows of its
# days after its lake commit (`lib/raw_lake.py`: the commit's outbox covers a kill in between); the
# landing sensor reads it to tell new files from ingested ones.
SOURCE_FILES = HELD[tables.SOURCE_FILES]

# Which tables of a warehouse file of an earlier version were moved here (see `adopt_from_warehouse`).
ADOPTED = sa.Table(
    "de_assets_adopted_from_warehouse", METADATA,
    sa.Column("warehouse_table", sa.String(200), primary_key=True, comment="Table of the warehouse file"),
    sa.Column("rows_moved", sa.Integer, nullable=False, comment="Rows copied here (0: it did not exist or was empty)"),
    sa.Column("adopted_at", sa.DateTime, nullable=False, comment="UTC time"),
)


def ensure(engine: sa.Engine) -> sa.Engine:
    """Create the tables that do not exist yet; several processes may do it at once. Returns ``engine``."""
    for attempt in range(6):
        try:
            METADATA.create_all(engine, checkfirst=True)
            return engine
        except (OperationalError, IntegrityError, ProgrammingError):  # another process created one meanwhile
            if attempt == 5:
                raise
            time.sleep(0.05 * (attempt + 1))


# Where a warehouse file of an earlier version kept this state.
_WAREHOUSE_TABLES = {
    HTTP_SOURCE_STATE: "raw.http_source_state",
    HTTP_DEAD_LETTERS: "raw.http_dead_letters",
    **{held: table.name for table, held in HELD.items()},
}


# How a move is recorded in `de_assets_adopted_from_warehouse` (the warehouse table's name, except:)
# versions of session 11 to 21 kept the file registry in the warehouse and a copy here, recorded as
# `raw.source_files`; the move of the file's registry (rows the copy lacks) is recorded on its own.
_RECORDED_AS = {tables.SOURCE_FILES.name: f"{tables.SOURCE_FILES.name} (moved)"}


def to_adopt(engine: sa.Engine) -> list[str]:
    """Warehouse tables of earlier versions not yet moved here (checked once per catalog, then never)."""
    with engine.connect() as c:
        done = set(c.execute(sa.select(ADOPTED.c.warehouse_table)).scalars())
    return [name for name in _WAREHOUSE_TABLES.values() if _RECORDED_AS.get(name, name) not in done]


def adopt_from_warehouse(engine: sa.Engine, con=None) -> int:
    """Move the state a warehouse file of an earlier version kept in its own tables (the HTTP source's
    cursor, breaker and dead letters; every table of `HELD`, the file registry among them) here, once
    per table: in one transaction, the rows whose key is not here yet (state written here since wins;
    dead letters are all appended), recorded in `de_assets_adopted_from_warehouse`; then the warehouse
    table is dropped. Without ``con`` (there is no warehouse file yet: a new install), nothing is there
    to move, which is recorded the same way. Returns the rows moved."""
    old = set() if con is None else {name for (name,) in con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()}
    pending = set(to_adopt(engine))
    moved = 0
    for table, name in _WAREHOUSE_TABLES.items():
        if name not in pending:
            continue
        rows = []
        if name in old:
            result = con.execute(f"SELECT * FROM {name}")
            columns = [d[0] for d in result.description]
            rows = [dict(zip(columns, row)) for row in result.fetchall()]
        key = [c.name for c in table.primary_key.columns]
        try:
            with engine.begin() as c:
                if table is HTTP_DEAD_LETTERS:  # a log: every letter, with ids of this database
                    rows = [{k: v for k, v in row.items() if k != "id"} for row in rows]
                else:
                    here = set(c.execute(sa.select(*table.primary_key.columns)).all())
                    rows = [row for row in rows if tuple(row[k] for k in key) not in here]
                if rows:
                    c.execute(sa.insert(table), rows)
                c.execute(sa.insert(ADOPTED), {"warehouse_table": _RECORDED_AS.get(name, name), "rows_moved": len(rows),
                                               "adopted_at": _now()})
        except IntegrityError:  # another process moved it meanwhile: its copy stands, this one rolled back
            continue
        moved += len(rows)
        if con is not None:
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return moved


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def rows(engine: sa.Engine, table: tables.Table, **match) -> pa.Table:
    """The rows of ``table`` (one of `HELD`) held here that match ``match`` (see `_where`), typed as declared."""
    held = HELD[table]
    with engine.connect() as c:
        exists = sa.inspect(c).has_table(held.name)  # a catalog nothing was written to yet: no rows
        found = [dict(r._mapping) for r in c.execute(sa.select(held).where(*_where(held, match)))] if exists else []
    return pa.Table.from_pylist(found, schema=served.arrow_schema(table))


def load(engine: sa.Engine, con, table: tables.Table, catalog: str | None = None, **match) -> str:
    """(Re)create ``table`` (one of `HELD`) in DuckDB connection ``con`` (an in-memory one; or in its
    attached database ``catalog``) as a copy of the rows held here (those that match ``match``, see
    `_where`): what a step computes on and hands back (`replace`), what is published to the lake,
    what `de-assets status` lists. Returns the name it has there."""
    schema = table.schema if catalog is None else f"{catalog}.{table.schema}"
    name = table.name if catalog is None else f"{catalog}.{table.name}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute(table.ddl().replace(table.name, name, 1))
    insert_arrow(con, name, rows(engine, table, **match))
    return name


def fingerprint(engine: sa.Engine, table: tables.Table, **match) -> tuple:
    """A figure of the rows held here that match ``match`` which changes whenever one of them is
    written: their count, the newest value of each timestamp column, the sum of each number column."""
    held = HELD[table]
    figures = [sa.func.count()]
    for column in table.columns:
        if column.type == "TIMESTAMP":
            figures.append(sa.func.max(held.c[column.name]))
        elif column.type in ("BIGINT", "INTEGER", "DOUBLE"):
            figures.append(sa.func.sum(held.c[column.name]))
    with engine.connect() as c:
        if not sa.inspect(c).has_table(held.name):
            return ()
        return tuple(c.execute(sa.select(*figures).where(*_where(held, match))).one())


def duck_where(match: dict) -> tuple[str, list]:
    """``match`` (see `_where`) as a DuckDB condition and its parameters."""
    sql, params = ["true"], []
    for column, value in match.items():
        if isinstance(value, list):
            sql.append(f'list_contains(?, "{column}")')
            params.append(value)
        elif isinstance(value, tuple):
            for op, bound in zip((">=", "<="), value):
                if bound is not None:
                    sql.append(f'"{column}" {op} ?')
                    params.append(bound)
        else:
            sql.append(f'"{column}" LIKE ?' if isinstance(value, str) and "%" in value else f'"{column}" = ?')
            params.append(value)
    return " AND ".join(sql), params


def _where(held: sa.Table, match: dict) -> list:
    """``match`` as SQLAlchemy conditions: column=value; column=(low, high), both ends included,
    None for an open end; column=[values], one of them; a text value with a ``%`` is a LIKE pattern."""
    clause = []
    for column, value in match.items():
        c = held.c[column]
        if isinstance(value, list):
            clause.append(c.in_(value))
        elif isinstance(value, tuple):
            low, high = value
            clause += ([c >= low] if low is not None else []) + ([c <= high] if high is not None else [])
        elif isinstance(value, str) and "%" in value:
            clause.append(c.like(value))
        else:
            clause.append(c == value)
    return clause


def load_alerts(engine: sa.Engine, con) -> None:
    """`load` of `pipeline_health.alerts`."""
    load(engine, con, tables.ALERTS)


def replace(engine: sa.Engine, table: tables.Table | tuple[tables.Table, ...], con, **match) -> int:
    """Make the rows of ``table`` (one of `HELD`, or several: one transaction for all) held here that
    match ``match`` (see `_where`) equal to the rows of ``con``'s copy (`load`) that match it, in one
    transaction. A step hands back exactly the rows it owns (its partitions, its run, its experiment,
    its request), so steps of other runs writing other rows at once lose nothing. Returns the rows
    written."""
    where, params = duck_where(match)
    batches = []
    for one in table if isinstance(table, tuple) else (table,):
        result = con.execute(f"SELECT * FROM {one.name} WHERE {where}", params)
        columns = [d[0] for d in result.description]
        batches.append((one, [dict(zip(columns, row)) for row in result.fetchall()]))
    return _replace(engine, batches, match)


def replace_rows(engine: sa.Engine, table: tables.Table, rows: list[dict], **match) -> int:
    """`replace` with the rows given (each a dict of ``table``'s columns; those not matching
    ``match`` are the caller's mistake, not checked)."""
    return _replace(engine, [(table, rows)], match)


def _replace(engine: sa.Engine, batches: list[tuple[tables.Table, list[dict]]], match: dict) -> int:
    with engine.begin() as c:
        for table, rows in batches:
            held = HELD[table]
            c.execute(sa.delete(held).where(*_where(held, match)))
            if rows:
                c.execute(sa.insert(held), rows)
    return sum(len(rows) for _, rows in batches)


def registered_checksums(engine: sa.Engine, checksums: list[str]) -> set[str]:
    """Those of ``checksums`` (SHA-256 of landed files) in the file registry, under any name or day
    (a byte-identical re-delivery counts as registered)."""
    wanted = sorted(set(checksums))
    found: set[str] = set()
    with engine.connect() as c:
        for i in range(0, len(wanted), _IN_CHUNK):  # a first tick over a long history lists many files
            found |= set(c.execute(sa.select(SOURCE_FILES.c.sha256).distinct()
                                   .where(SOURCE_FILES.c.sha256.in_(wanted[i:i + _IN_CHUNK]))).scalars())
    return found


_IN_CHUNK = 500  # values bound in one IN list (SQLite limits the variables of a statement)
