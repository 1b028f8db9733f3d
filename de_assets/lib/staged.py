"""Staged writes to tables whose system of record is the lake (`clean.*`, `quarantine.*`, `marts.*`): a step
writes its partitions into an in-memory overlay that shadows the tables in its own connection, its
checks read the staged rows under the tables' usual names, and it commits the staged partitions to
the lake (`served.publish`, one commit per table) only when its blocking checks passed. Nothing of
it is written to the warehouse file, and a step that fails or is killed before its commit leaves
the lake as it was.

How: `overlay(con)` attaches an in-memory catalog `staged_<id>` and puts its schemas in the
connection's `search_path` before the warehouse's own (the warehouse's `main` stays first, so
`current_database()` and unqualified names do not change). `target(con, table, days)` is where a
writer deletes and inserts: a table of the staged partitions' rows (first copied from the lake, so
a writer that keeps some of a day's rows finds them), and a view under the table's own name (the
lake's rows of every other partition, then the staged rows). DuckDB resolves `clean.events`
through the search path, so every query of the step reads the view, while other connections and
every reader of the lake still see the last commit.

A dry run never writes the lake: its scratch copy of the warehouse keeps the lake tables as views
over the current snapshots (nothing copied), and one overlay, raw tables included, lasts the whole
run (`Warehouse._dry_run_connection`): it holds only the partitions the run wrote. A table that is
not in the lake (an earlier version's file, an in-memory warehouse without a lake) is written in
place, as before: `target` returns its own name.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import date

from de_assets.lib.sql import ident, literal
from de_assets.lib.tables import (
    CLEAN_EVENTS,
    CLEAN_REQUESTS,
    DAILY_ENGAGEMENT,
    DUPLICATES_EVENTS,
    DUPLICATES_REQUESTS,
    EXPERIMENT_RESULTS,
    FUNNEL_DAILY,
    KPI_ANOMALIES,
    KPI_CHANGES,
    QUARANTINE_EVENTS,
    QUARANTINE_REQUESTS,
    RAW_EVENTS,
    RAW_REQUESTS,
    RETENTION_COHORTS,
    REVENUE_DAILY,
    SERVICE_LATENCY,
    Table,
)

# The cleaning's tables (partitioned by arrival day, like its checks) and the marts: kept in the lake,
# written through an overlay.
CLEANING: tuple[Table, ...] = (CLEAN_EVENTS, CLEAN_REQUESTS, QUARANTINE_EVENTS, QUARANTINE_REQUESTS,
                               DUPLICATES_EVENTS, DUPLICATES_REQUESTS)
MARTS: tuple[Table, ...] = (DAILY_ENGAGEMENT, FUNNEL_DAILY, RETENTION_COHORTS, REVENUE_DAILY, SERVICE_LATENCY,
                            KPI_CHANGES, KPI_ANOMALIES, EXPERIMENT_RESULTS)
TABLES: tuple[Table, ...] = (*CLEANING, *MARTS)
RAW: tuple[Table, ...] = (RAW_EVENTS, RAW_REQUESTS)  # staged only in a dry run (the ingestion commits its own files)
_PREFIX = "staged_"
_DAYS = "_staged_days"  # table_name, day: the partitions staged so far


def _home(con) -> str:
    return con.execute("SELECT current_database()").fetchone()[0]


def active(con) -> str | None:
    """The connection's overlay catalog, or None when it has none."""
    for entry in _search_path(con).split(","):
        catalog = entry.split(".")[0].strip('"')
        if catalog.startswith(_PREFIX):
            return catalog
    return None


@contextmanager
def overlay(con):
    """Shadow the lake's views of this connection (`clean.*` / `quarantine.*` / `marts.*`, and `raw.*` in a dry
    run) with staged partitions for the duration of the block (see the module's docstring). Staged
    rows not committed by then are dropped with it."""
    if active(con) is not None:
        raise RuntimeError("this connection already has a staging overlay")
    name = f"{_PREFIX}{uuid.uuid4().hex[:12]}"
    con.execute(f"ATTACH ':memory:' AS {name}")
    try:
        with search_path_kept(con) as found:
            con.execute(f"CREATE TABLE {name}.main.{_DAYS} (table_name VARCHAR, day DATE)")
            staged_schemas = list(dict.fromkeys(t.schema for t in (*RAW, *TABLES)))
            for schema in staged_schemas:
                con.execute(f"CREATE SCHEMA {name}.{schema}")
            home, *own = home_entries(con)
            later = [e for e in found if e not in (home, *own)]  # e.g. `Warehouse.beside`'s
            entries = [home, *(f"{name}.{s}" for s in staged_schemas), *own, *later]
            con.execute(f"SET search_path = {literal(','.join(entries))}")
            yield name
    finally:
        con.execute(f"DETACH {name}")


def _search_path(con) -> str:
    return con.execute("SELECT current_setting('search_path')").fetchone()[0] or ""


@contextmanager
def search_path_kept(con):
    """For the block, the connection's `search_path` entries as found (a list); whatever the block
    sets, they are restored after it (what `overlay` and `Warehouse.beside` lay their schemas on)."""
    found = _search_path(con)
    try:
        yield [e for e in found.split(",") if e]
    finally:
        con.execute(f"SET search_path = {literal(found)}" if found else "RESET search_path")


def home_entries(con) -> list[str]:
    """The `search_path` entries of the connection's own database: its `main`, then its other schemas."""
    home = _home(con)
    own = [s for (s,) in con.execute(
        "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ? AND NOT internal ORDER BY 1",
        [home]).fetchall()]
    return [f"{ident(home)}.main", *(f"{ident(home)}.{s}" for s in own if s != "main")]


def relation_kind(con, table: Table) -> str | None:
    """'BASE TABLE', 'VIEW' or None: what ``table`` is in the connection's warehouse (the overlay
    leaves `current_database()` there)."""
    rows = con.execute("SELECT table_type FROM information_schema.tables WHERE table_catalog = current_database() "
                       "AND table_schema = ? AND table_name = ?", table.name.split(".")).fetchall()
    return rows[0][0] if rows else None


def in_lake(con, table: Table) -> bool:
    """Whether the connection's warehouse sees ``table`` as a view over the lake (its rows change
    only through the lake)."""
    return relation_kind(con, table) == "VIEW"


def target(con, table: Table, days: list[date]) -> str:
    """Where a writer of ``table``'s partitions ``days`` (partition values: a weekly table's Mondays,
    `Table.partition_values`) deletes and inserts: the overlay's table of
    staged rows when ``table`` is in the lake (the partitions are staged first, with the rows the
    lake holds for them), else the table itself. Raises when a table in the lake is written outside
    an overlay (its rows would go nowhere)."""
    if not in_lake(con, table):
        return table.name
    home = _home(con)
    name = active(con)
    if name is None:
        raise RuntimeError(f"{table.name} is kept in the lake: write it inside staged.overlay(con), then publish it")
    schema, short = table.name.split(".")
    rows = f"{name}.main.{ident(f'{schema}__{short}')}"
    column = table.partition_column
    lake_view = f"{ident(home)}.{schema}.{ident(short)}"
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                       [name, f"{schema}__{short}"]).fetchone()[0]:
        con.execute(f"CREATE TABLE {rows} AS SELECT * FROM {lake_view} WHERE false")
        con.execute(
            f"CREATE VIEW {name}.{schema}.{ident(short)} AS "
            f"SELECT * FROM {lake_view} WHERE {column} NOT IN "
            f"(SELECT day FROM {name}.main.{_DAYS} WHERE table_name = {literal(table.name)}) "
            f"UNION ALL SELECT * FROM {rows}"
        )
    staged = {d for (d,) in con.execute(f"SELECT day FROM {name}.main.{_DAYS} WHERE table_name = ?",
                                        [table.name]).fetchall()}
    new = sorted(set(days) - staged)
    if new:
        con.execute(f"INSERT INTO {rows} SELECT * FROM {lake_view} WHERE list_contains($v::DATE[], {column})",
                    {"v": new})
        con.execute(f"INSERT INTO {name}.main.{_DAYS} SELECT ?, unnest(?::DATE[])", [table.name, new])
    return rows


def staged_days(con, table: Table) -> list[date]:
    """The partitions of ``table`` staged in the connection's overlay (none without one)."""
    name = active(con)
    if name is None:
        return []
    return [d for (d,) in con.execute(f"SELECT day FROM {name}.main.{_DAYS} WHERE table_name = ? ORDER BY 1",
                                      [table.name]).fetchall()]
