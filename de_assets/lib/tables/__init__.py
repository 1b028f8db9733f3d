"""Every warehouse table in one place: name, columns, types, column docs, partition column, key, and
the rules its asset checks run (`checks`: blocking, from `lib/quality.py`; `warnings`: from `lib/drift.py`).

The DDL that creates the tables, the `dagster/column_schema` metadata shown in the UI and the asset
checks are all derived from these definitions, so a column or a rule is declared exactly once. One module per layer
(`raw`, `clean`, `marts`, `health`) over the `Table`/`Column` model (`model`); every name is importable
from here.
"""

from __future__ import annotations

from de_assets.lib.tables.clean import (
    CLEAN_EVENTS,
    CLEAN_REQUESTS,
    DUPLICATES_EVENTS,
    DUPLICATES_REQUESTS,
    QUARANTINE_EVENTS,
    QUARANTINE_REQUESTS,
)
from de_assets.lib.tables.health import (
    ALERTS,
    CONFIG_EXPERIMENTS,
    FORGET_AUDIT,
    FORGET_REQUESTS,
    PARTITION_KPIS,
    RETENTION_LOG,
    SLO_STATUS,
)
from de_assets.lib.tables.marts import (
    DAILY_ENGAGEMENT,
    EXPERIMENT_RESULTS,
    FUNNEL_DAILY,
    KPI_ANOMALIES,
    KPI_CHANGES,
    RETENTION_COHORTS,
    REVENUE_DAILY,
    SERVICE_LATENCY,
)
from de_assets.lib.tables.model import Column, Table
from de_assets.lib.tables.raw import (
    FORGOTTEN_ROWS,
    RAW_EVENTS,
    RAW_REQUESTS,
    SOURCE_FILES,
)

ALL_TABLES: tuple[Table, ...] = (
    SOURCE_FILES,
    FORGOTTEN_ROWS,
    RAW_EVENTS,
    RAW_REQUESTS,
    CLEAN_EVENTS,
    CLEAN_REQUESTS,
    QUARANTINE_EVENTS,
    QUARANTINE_REQUESTS,
    DUPLICATES_EVENTS,
    DUPLICATES_REQUESTS,
    DAILY_ENGAGEMENT,
    FUNNEL_DAILY,
    RETENTION_COHORTS,
    REVENUE_DAILY,
    SERVICE_LATENCY,
    KPI_CHANGES,
    KPI_ANOMALIES,
    EXPERIMENT_RESULTS,
    PARTITION_KPIS,
    SLO_STATUS,
    CONFIG_EXPERIMENTS,
    RETENTION_LOG,
    FORGET_AUDIT,
    FORGET_REQUESTS,
    ALERTS,
)

# Tables whose rows live in the catalog's SQL database (`lib/ops_store.py`), updated in place in short
# transactions, not in the warehouse file; declared here all the same (columns, docs, the lake's schema).
IN_CATALOG_DATABASE: tuple[Table, ...] = (ALERTS, PARTITION_KPIS, SLO_STATUS, RETENTION_LOG, CONFIG_EXPERIMENTS,
                                          FORGET_REQUESTS, FORGET_AUDIT, FORGOTTEN_ROWS, SOURCE_FILES)
WAREHOUSE_TABLES: tuple[Table, ...] = tuple(t for t in ALL_TABLES if t not in IN_CATALOG_DATABASE)


def ensure_tables(con) -> None:
    """Create every schema and warehouse table that does not exist yet, and add the columns a table
    of an older warehouse lacks (columns are only ever added, never changed; idempotent)."""
    for schema in dict.fromkeys(t.schema for t in WAREHOUSE_TABLES):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in WAREHOUSE_TABLES:
        con.execute(table.ddl())
    # Columns added since a warehouse was created (CREATE TABLE IF NOT EXISTS keeps the old shape).
    # A view (the raw tables over the lake, `lib/raw_lake.py`) gets them when it is rebuilt.
    existing = set(con.execute(
        "SELECT table_schema || '.' || table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database()"
    ).fetchall())
    views = {f"{s}.{n}" for s, n in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'VIEW'").fetchall()}
    for table in (t for t in WAREHOUSE_TABLES if t.name not in views):
        for column in table.columns:
            if (f"{table.name}.{column.name}",) not in existing:
                con.execute(f'ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS "{column.name}" {column.type}')


__all__ = [
    "ALERTS",
    "ALL_TABLES",
    "CLEAN_EVENTS",
    "CLEAN_REQUESTS",
    "CONFIG_EXPERIMENTS",
    "Column",
    "DAILY_ENGAGEMENT",
    "DUPLICATES_EVENTS",
    "DUPLICATES_REQUESTS",
    "EXPERIMENT_RESULTS",
    "FORGET_AUDIT",
    "FORGET_REQUESTS",
    "FORGOTTEN_ROWS",
    "FUNNEL_DAILY",
    "IN_CATALOG_DATABASE",
    "KPI_ANOMALIES",
    "KPI_CHANGES",
    "PARTITION_KPIS",
    "QUARANTINE_EVENTS",
    "QUARANTINE_REQUESTS",
    "RAW_EVENTS",
    "RAW_REQUESTS",
    "RETENTION_COHORTS",
    "RETENTION_LOG",
    "REVENUE_DAILY",
    "SERVICE_LATENCY",
    "SLO_STATUS",
    "SOURCE_FILES",
    "Table",
    "WAREHOUSE_TABLES",
    "ensure_tables",
]
