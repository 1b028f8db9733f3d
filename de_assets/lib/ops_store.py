"""Operational state in the catalog's SQL database, next to pyiceberg's own tables.

State that is updated in place (not data) lives where the lake's catalog lives: the SQLite file
`data/catalog.db` by default, PostgreSQL in production. It is read and written in short SQLAlchemy
transactions, never through the DuckDB warehouse file, so a step holding the warehouse never makes
it wait, and it works wherever the catalog is reachable (another machine, a pod).

Held here so far: the HTTP events source's cursor and circuit breaker per source, and its dead
letters (`lib/http_source.py`). The other operational tables (file registry, alerts, KPIs, audits)
are still in the warehouse file: docs/lake.md, "Still to do".
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

METADATA = sa.MetaData()

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


def is_empty(engine: sa.Engine) -> bool:
    """Whether no HTTP source state was saved yet (a new catalog, or one of an earlier version)."""
    with engine.connect() as c:
        return not c.execute(sa.select(sa.func.count()).select_from(HTTP_SOURCE_STATE)).scalar()


# Where a warehouse file of an earlier version kept this state (DuckDB tables of the raw schema).
_WAREHOUSE_TABLES = {HTTP_SOURCE_STATE: "raw.http_source_state", HTTP_DEAD_LETTERS: "raw.http_dead_letters"}


def adopt_from_warehouse(engine: sa.Engine, con) -> int:
    """Move the HTTP source's state out of a warehouse file of an earlier version (cursor, breaker,
    dead letters), once: copied into the catalog database in one transaction when it holds no state
    yet, then the warehouse tables are dropped. Returns the rows moved."""
    old = {name for (name,) in con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()}
    moved = 0
    with engine.begin() as c:
        if c.execute(sa.select(sa.func.count()).select_from(HTTP_SOURCE_STATE)).scalar():
            return 0
        for table, name in _WAREHOUSE_TABLES.items():
            if name not in old:
                continue
            result = con.execute(f"SELECT * FROM {name}")
            columns = [d[0] for d in result.description]
            rows = [dict(zip(columns, row)) for row in result.fetchall()]
            if rows:
                c.execute(sa.insert(table), rows)
                moved += len(rows)
    for name in _WAREHOUSE_TABLES.values():
        con.execute(f"DROP TABLE IF EXISTS {name}")
    return moved
