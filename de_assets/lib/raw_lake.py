"""The raw layer in the lake: `raw.events` and `raw.requests` are Iceberg tables (the system of
record), partitioned by arrival day, written by the ingestion steps without holding the warehouse
file, and seen by every other step as DuckDB views over their current snapshot.

* **Writing** (`commit`): an ingestion step stages and projects its new files in a private in-memory
  DuckDB (`lib/ingest.py`, unchanged), DuckDB writes one Parquet file per arrival day straight into
  the lake folder, and one Iceberg commit adds them (`reingest`: replaces the days). Nothing of this
  holds the warehouse file's lock; only the short commit turn and the bookkeeping after it do.
* **The file registry** (`raw.source_files`) is held in the catalog database (`lib/ops_store.py`): a
  step copies its source's registrations into its private DuckDB (`held_reads`), where
  `lib/ingest.py` classifies and registers the files, and hands back its days' after the commit.
* **The outbox.** The commit's snapshot summary carries the registrations of its files
  (`de-assets.registrations`, JSON). The registry is written after the commit; a step killed in
  between leaves rows in the lake that the registry does not know, and the next ingestion step of
  the source registers them from the summary first (`repair_registry`), so the files are not
  ingested twice.
* **Reading** (`attach`): the warehouse connection's `raw.events` / `raw.requests` are views over the
  current snapshot's data files, typed as declared (`lib/tables/raw.py`), rebuilt when the table's
  metadata changed (the metadata location is kept in the view's comment; one catalog query tells which). A step sees one snapshot
  for as long as it holds its connection.
* **An earlier version's warehouse** kept the raw rows in the file: the first connection moves them
  to the lake (one overwrite of their days, idempotent) and drops the file's table.
* Deleting (retention, forget-user) is a delete by filter on the lake table (`delete_where`), after
  which `served.erase_history` expires the snapshots and deletes the files only they referenced.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import NamedTuple

import duckdb
from pyiceberg.expressions import EqualTo

from de_assets.lib import lake, ops_store, served, staged
from de_assets.lib.days import days_between
from de_assets.lib.sql import copy_rows, ident, literal
from de_assets.lib.tables import (
    FORGET_REQUESTS,
    FORGOTTEN_ROWS,
    RAW_EVENTS,
    SOURCE_FILES,
    Table,
)

RAW_TABLES = served.RAW_TABLES
# Every table whose system of record is the lake: the warehouse connection sees each as a view over
# its current snapshot (`attach`). The raw ones are written by the ingestion steps, the cleaning's and
# the marts through a staging overlay (`lib/staged.py`).
LAKE_TABLES: tuple[Table, ...] = (*RAW_TABLES, *staged.TABLES)
OUTBOX = "de-assets.registrations"  # snapshot-summary property: the registrations of the commit's files
_DAY = "arrival_date"


relation_kind = staged.relation_kind
in_lake = staged.in_lake


def _view_sql(con, table: Table, files: list[str]) -> str:
    """The declared columns of ``table`` over ``files``, typed; a column declared after some files were
    written is NULL in them (`union_by_name` fills it only when at least one file has it)."""
    if not files:
        empty = ", ".join(f"CAST(NULL AS {c.type}) AS {ident(c.name)}" for c in table.columns)
        return f"SELECT {empty} WHERE false"
    present = lake.columns_in_files(con, files)
    columns = ", ".join(f"CAST({ident(c.name) if c.name in present else 'NULL'} AS {c.type}) AS {ident(c.name)}"
                        for c in table.columns)
    return f"SELECT {columns} FROM {lake.files_sql(files)}"


def attach(con: duckdb.DuckDBPyConnection, catalog, read_only: bool = False) -> None:
    """Make the connection's raw, clean, quarantine and mart tables (`LAKE_TABLES`) views over the lake's
    current snapshots (moving the rows an earlier version kept in the file to the lake first, once).
    ``read_only`` (a dry run's scratch copy of the warehouse): only bring its views up to the current
    snapshots; nothing is created or moved in the catalog."""
    current = lake.metadata_locations(catalog)  # one catalog query: most views are current already
    comments = {name: comment for name, (_, comment) in _views(con).items()}
    for table in LAKE_TABLES:
        location = current.get(table.name)
        if location is not None and comments.get(table.name) == _stamp(table, location):
            lake.use_storage(con, location)  # same scheme as the data files
            continue  # the view already reads the current snapshot, with the declared columns
        kind = relation_kind(con, table)
        if read_only and (kind != "VIEW" or (location is None and not catalog.table_exists(table.name))):
            continue  # an earlier version's table, or not in the lake yet: the dry run writes it in place
        iceberg = catalog.load_table(table.name) if read_only else served.lake_table(catalog, table)
        if kind == "BASE TABLE":
            _adopt(con, catalog, table)
            iceberg.refresh()
        stamp = _stamp(table, iceberg.metadata_location)
        lake.use_storage(con, iceberg.location())
        if comments.get(table.name) == stamp:
            continue  # the view already reads this snapshot
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {_view_sql(con, table, lake.snapshot_files(iceberg))}")
        con.execute(f"COMMENT ON VIEW {table.name} IS {literal(stamp)}")


def _views(con) -> dict[str, tuple[str, str | None]]:
    """The connection's own views: ``{"schema.view": (CREATE statement, comment)}``."""
    return {name: (sql, comment) for name, sql, comment in con.execute(
        "SELECT schema_name || '.' || view_name, sql, comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal").fetchall()}


def view_stamps(con, tables: tuple[Table, ...]) -> dict[str, str | None]:
    """What each of ``tables`` reads in the connection: its view's stamp (the snapshot's metadata file
    and the columns, `_stamp`), None for a table that is not a view over the lake."""
    views = _views(con)
    return {t.name: views.get(t.name, (None, None))[1] for t in tables}


def days_committed(catalog, table: Table, pinned: str | None, current: str | None) -> set[date] | None:
    """The partitions (days) that the commits to lake ``table`` between two of its view stamps
    (`view_stamps`: ``pinned`` read before, ``current`` now; and any since) wrote, from each
    commit's summary: the days of an overwrite (`de-assets.partitions`), the arrival days of a raw
    commit's registrations (`OUTBOX`). None when a commit does not say (a delete by filter, a
    whole-table replace), when the history between them cannot be told (`lake.commits_since`), or
    when the columns changed."""
    if current is None:
        return None
    if pinned is not None and _unstamp(pinned)[1] != _unstamp(current)[1]:
        return None
    iceberg = catalog.load_table(table.name)  # commits after ``current`` too (none while the file is held)
    commits = lake.commits_since(iceberg, _unstamp(pinned)[0] if pinned is not None else None)
    if commits is None:
        return None
    days: set[date] = set()
    for summary in commits:
        if lake.PARTITIONS in summary:
            days.update(date.fromisoformat(d) for d in summary[lake.PARTITIONS].split(",") if d)
        elif OUTBOX in summary:
            days.update(date.fromisoformat(r[_DAY][:10]) for r in json.loads(summary[OUTBOX]))
        else:
            return None
    return days


def copy_views(src, dst, tables: tuple[Table, ...]) -> None:
    """Make ``dst`` (a private connection, `Warehouse.private`) read the lake ``tables`` as ``src`` (the
    warehouse, its views brought up to the current snapshots when it was opened) reads them: each
    view's definition and stamp copied (replacing the one copied before), no manifest read again."""
    defined = _views(src)
    for table in dict.fromkeys(tables):
        if table.name not in defined:
            continue  # not in the lake (an earlier version's table): as `dst` has it
        sql, comment = defined[table.name]
        dst.execute(f"DROP VIEW IF EXISTS {table.name}")
        if comment:
            lake.use_storage(dst, _unstamp(comment)[0])  # before the view binds its files
        dst.execute(sql)
        if comment:
            dst.execute(f"COMMENT ON VIEW {table.name} IS {literal(comment)}")


def _stamp(table: Table, location: str) -> str:
    """What a view's comment records: the snapshot's metadata file it reads, and its columns (a column
    declared since makes the view be rebuilt, and added to the lake table)."""
    columns = ",".join(f"{c.name}:{c.type}" for c in table.columns)
    return f"{location}#{hashlib.sha256(columns.encode()).hexdigest()[:12]}"


def _unstamp(stamp: str) -> tuple[str, str]:
    """A view's stamp (`_stamp`) read back: (the snapshot's metadata file, the hash of its columns)."""
    location, columns = stamp.rsplit("#", 1)
    return location, columns


def _adopt(con, catalog, table: Table) -> None:
    """Move the rows of an earlier version's warehouse file to the lake, then drop the file's table:
    the days the lake does not hold yet, in one overwrite of them (a move interrupted and done again
    gives the same table). A day the lake holds keeps the lake's rows: an earlier version published
    every day whose checks passed, so a day of the file that differs is one a blocking check kept
    from readers, and stays unserved."""
    iceberg = served.lake_table(catalog, table)
    lake.use_storage(con, iceberg.location())
    column = served.partition_column(table)
    held = {d for (d,) in con.execute(
        f"SELECT DISTINCT {column} FROM ({_view_sql(con, table, lake.snapshot_files(iceberg))})").fetchall()}
    days = [d for (d,) in con.execute(f"SELECT DISTINCT {column} FROM {table.name} ORDER BY 1").fetchall()
            if d not in held]
    if days:
        served.publish(con, catalog, table, days=days)
    con.execute(f"DROP TABLE {table.name}")


def write_files(con, catalog, table: Table, days: list[date], compression: str) -> list[str]:
    """Write the connection's rows of ``table`` on ``days`` (a private connection holding only the
    rows to add) as Parquet files in the lake's folder, one per arrival day with rows; returns them."""
    if not days:
        return []
    rows = f"SELECT {served.select_list(table)} FROM {table.name} WHERE list_contains($v, {_DAY})"
    return served.write_data_files(con, served.lake_table(catalog, table), rows, sorted(days), _DAY, compression)


def _jsonable(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, (date, datetime)) else v for k, v in row.items()}


def commit(catalog, table: Table, files: list[str], days: list[date], replace: bool,
           registrations: list[dict]) -> int | None:
    """One commit of the raw rows in ``files``: added to the table, or (``replace``: a re-ingest)
    replacing everything of ``days``. The registrations of the files go into the snapshot summary
    (the outbox). Returns the snapshot id; None when there was nothing to commit."""
    if not files and not replace:
        return None
    iceberg = served.lake_table(catalog, table)
    summary = {OUTBOX: json.dumps([_jsonable(r) for r in registrations], separators=(",", ":"))}
    if replace:
        snapshot = lake.overwrite_partitions_with_files(iceberg, files, _DAY, days, summary=summary)
    else:
        snapshot = lake.append_files(iceberg, files, summary=summary)
    return getattr(snapshot, "snapshot_id", None)


def repair_registry(engine, catalog, table: Table, source: str) -> int:
    """Register the files whose rows a commit added to the lake but whose registrations never reached
    the file registry (held in the catalog database ``engine``; a step killed between the two), from
    the commits' outbox, in one transaction; a file registered by an older commit than the latest one
    that carries it (a re-ingest killed before its bookkeeping) gets that commit's registration. A
    re-ingest's outbox replaces its days' (a file removed from the landing area before it stays
    unregistered). Returns the files (re)registered."""
    iceberg = served.lake_table(catalog, table)
    latest: dict[str, dict] = {}
    for snapshot in sorted(iceberg.snapshots(), key=lambda s: s.timestamp_ms):
        props = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        if OUTBOX not in props:
            continue
        if lake.PARTITIONS in props:  # a re-ingest: its days hold exactly the files it registers
            replaced = set(props[lake.PARTITIONS].split(","))
            latest = {path: reg for path, reg in latest.items() if reg["arrival_date"] not in replaced}
        for reg in json.loads(props[OUTBOX]):
            latest[reg["path"]] = reg
    if not latest:
        return 0
    held = ops_store.rows(engine, SOURCE_FILES, source=source)
    known = dict(zip(held["path"].to_pylist(), held["ingested_at"].to_pylist()))
    stale = [reg for path, reg in latest.items()
             if path not in known or (known[path] is not None
                                      and known[path] < datetime.fromisoformat(reg["ingested_at"]))]
    if not stale:
        return 0
    rows = [_from_outbox(reg) for reg in stale]
    ops_store.replace_rows(engine, SOURCE_FILES, rows, source=source, path=[r["path"] for r in rows])
    return len(stale)


def _from_outbox(registration: dict) -> dict:
    """A registration as the outbox holds it (JSON: days and times as ISO text), with Python values."""
    parse = {"DATE": date.fromisoformat, "TIMESTAMP": datetime.fromisoformat}
    return {c.name: registration.get(c.name) if registration.get(c.name) is None or c.type not in parse
            else parse[c.type](registration[c.name]) for c in SOURCE_FILES.columns}


# What an ingestion step reads besides the landed files (`lib/ops_store.py`, ``match`` of
# `Warehouse.held`): the source's file registry (every day: earlier days hold the originals of
# re-deliveries), the suppression list and the days' counts of rows removed for forget requests.
def held_reads(source: str, start: date, end: date) -> list[tuple[Table, dict]]:
    """The held tables ingesting ``source`` on [start, end] reads, with the rows it reads of each."""
    return [(SOURCE_FILES, {"source": source}), (FORGET_REQUESTS, {}),
            (FORGOTTEN_ROWS, {"source": source, "arrival_date": (start, end)})]


class Inputs(NamedTuple):
    """What an ingestion step's result depends on besides the landed files, held in the catalog
    database: the registrations of its days (another run may ingest there) and the forget requests (a
    user forgotten meanwhile: a figure of them, `ops_store.fingerprint`)."""
    registry: list[tuple]
    requests: tuple


def inputs_of(engine, source: str, start: date, end: date) -> Inputs:
    """The registrations of ``source`` on [start, end] and the figure of the forget requests, as of now."""
    held = ops_store.rows(engine, SOURCE_FILES, source=source, arrival_date=(start, end))
    registry = sorted(zip(*(held[c].to_pylist() for c in ("path", "sha256", "status", "ingested_at"))))
    return Inputs(registry, ops_store.fingerprint(engine, FORGET_REQUESTS))


def registered(private, source: str, start: date, end: date) -> set[tuple]:
    """(path, ingested_at) of the registrations of ``source`` on [start, end] in the private connection."""
    return set(private.execute(f"SELECT path, ingested_at FROM {SOURCE_FILES.name} "
                               "WHERE source = ? AND arrival_date BETWEEN ? AND ?", [source, start, end]).fetchall())


def new_registrations(private, source: str, start: date, end: date, before: set[tuple]) -> list[dict]:
    """The registrations the private connection added on [start, end] (not among ``before``, `registered`)."""
    result = private.execute(f"SELECT * FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date BETWEEN ? AND ?",
                             [source, start, end])
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, row)) for row in result.fetchall()]
    return [r for r in rows if (r["path"], r["ingested_at"]) not in before]


def stage(private, con, table: Table, start: date, end: date, replace: bool) -> None:
    """What `commit` does to the lake, done to the connection's staging overlay instead (a dry run's):
    the private connection's rows of ``table`` on [start, end] added to its staged days, or
    (``replace``: a re-ingest) replacing them. A day that gets no new row is not staged: the steps
    after it read it from the lake, as in a real run."""
    days = days_between(start, end) if replace else [d for (d,) in private.execute(
        f"SELECT DISTINCT {_DAY} FROM {table.name} WHERE {_DAY} BETWEEN ? AND ?", [start, end]).fetchall()]
    if not days:
        return
    target = staged.target(con, table, days)
    if replace:
        con.execute(f"DELETE FROM {target} WHERE {_DAY} BETWEEN ? AND ?", [start, end])
    copy_rows(private, con, table.name, f"{_DAY} BETWEEN ? AND ?", [start, end], into=target)


def delete_user(catalog, pseudonym: str) -> None:
    """Delete one pseudonymized user's rows from `raw.events` in the lake (forget-user): one delete
    per id column. pyiceberg 0.12 deletes nothing for ``Or(EqualTo(a), EqualTo(b))`` when ``b`` is
    NULL in the rows (`docs/lake.md`); each predicate alone deletes exactly its rows."""
    iceberg = served.lake_table(catalog, RAW_EVENTS)
    for column in ("user_id", "anonymous_id"):
        lake.delete_where(iceberg, EqualTo(column, pseudonym))
