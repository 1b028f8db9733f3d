"""Served tables in the lake: what readers query, published from the warehouse after each write.

The pipeline computes in DuckDB; every step that writes a served table then **publishes** the
partitions it wrote to an Iceberg table of the same name (`lib/lake.py`: one atomic commit per table
and step). Readers (`de-assets sql`, `de_assets.lake.connect()`, notebooks, BI, any engine that reads
Iceberg) query the lake's snapshots and never touch the DuckDB file, so they never wait for a run
and never block one, and can read as of a past snapshot.

What is served: every table of the `clean`, `quarantine` and `marts` schemas (partitioned like the
warehouse table: by arrival day, event day, activity week or as-of day) and the pipeline's own
`pipeline_health` tables (small, unpartitioned, replaced whole). Not served: the raw layer and the
forget-user requests (identifiers of people who asked to be forgotten).

A step publishes only when its blocking checks passed. The data tables (`clean.*`, `quarantine.*`,
`marts.*`) have the lake as their only store: a step stages its rows (`lib/staged.py`), and what it
does not publish is not stored at all (the previous rows stay served; the failing figures are in the
checks' metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
import uuid
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
from pyiceberg.expressions import And, LessThan, NotIn

from de_assets.lib import lake, staged
from de_assets.lib.privacy import PSEUDONYM_COLUMNS
from de_assets.lib.sql import ident, literal, transaction
from de_assets.lib.tables import ALL_TABLES, FORGET_AUDIT, FORGET_REQUESTS, RAW_EVENTS, RAW_REQUESTS, Table

LAKE_CODECS = ("zstd", "snappy", "gzip", "uncompressed")  # Parquet codecs of the lake's data files
# Rows a lake write buffers per thread before writing (a partitioned COPY's flush threshold, a plain
# COPY's row group): DuckDB's defaults (524,288 / 122,880) held too much of a wide 1M-event day to
# stay under a 600MB limit. As fast as the defaults at 1M rows.
WRITE_BATCH_ROWS = 32_768
BIG_PARTITION_ROWS = 10_000  # rows per partition from which each partition is written by a COPY of its own
_ARROW = {
    "VARCHAR": pa.string(), "JSON": pa.string(), "DATE": pa.date32(), "BIGINT": pa.int64(),
    "INTEGER": pa.int32(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us"),
}
# No min/max bounds in the manifests for pseudonyms and what may embed them, so an erased id survives nowhere.
_NO_BOUNDS = (*PSEUDONYM_COLUMNS, "raw_row", "dedupe_key", "message_id")

RAW_TABLES: tuple[Table, ...] = (RAW_EVENTS, RAW_REQUESTS)  # in the lake too, not served (`lib/raw_lake.py`)
PUBLISHED: tuple[Table, ...] = tuple(
    t for t in ALL_TABLES
    if t.schema in ("clean", "quarantine", "marts", "pipeline_health") and t not in (FORGET_REQUESTS, FORGET_AUDIT)
)


def open_lake(database: str, catalog_uri: str | None = None, lake_uri: str | None = None, create: bool = True):
    """The lake of a warehouse: by default `catalog.db` (SQLite) and `lake/` beside its database file
    (`data/catalog.db`, `data/lake/`); in production a PostgreSQL URI and an object-storage location.
    Readers pass ``create=False``: a default lake that does not exist yet is an error, not created."""
    data_dir = Path(database).resolve().parent
    if not create and catalog_uri is None and not (data_dir / "catalog.db").exists():
        raise FileNotFoundError(f"no lake at {data_dir / 'catalog.db'} yet: nothing was published. Run the "
                                "pipeline first (de-assets demo / de-assets run), or set DE_ASSETS_DUCKDB / "
                                "DE_ASSETS_CATALOG_URI to where it runs.")
    return lake.open_catalog(catalog_uri, lake_uri, data_dir=data_dir)


def arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW[c.type]) for c in table.columns])


def partition_column(table: Table) -> str | None:
    """The table's DATE partition column in the lake (None: replaced whole)."""
    if table.schema == "pipeline_health" or table.partition_column is None:
        return None
    return table.partition_column


def select_list(table: Table) -> str:
    return ", ".join(f'"{c.name}"::VARCHAR AS "{c.name}"' if c.type == "JSON" else f'"{c.name}"'
                     for c in table.columns)


def lake_table(catalog, table: Table):
    """The Iceberg table of ``table`` (created on first use; columns added to the contract since are added)."""
    properties = {f"write.metadata.metrics.column.{c}": "none" for c in _NO_BOUNDS if c in table.column_names}
    schema = arrow_schema(table)
    return lake.add_missing_columns(lake.ensure_table(catalog, table.name, schema, partition_column(table), properties),
                                    schema)


@dataclass
class Written:
    """The data files of partitions ``values`` of a partitioned table, written ahead of their commit
    (`write_ahead`), per partition value that has rows. Files no commit adds are orphans, removed by
    the snapshot expiry."""

    table: Table
    values: list[date]
    files: dict[date, list[str]]


def publish(con: duckdb.DuckDBPyConnection, catalog, table: Table, start: date | None = None,
            end: date | None = None, days: list[date] | None = None, compression: str = "zstd",
            relation: str | None = None, written: Written | None = None) -> int | None:
    """Publish the warehouse's rows of ``table`` (or of ``relation``, rows shaped like it) for the
    partitions of [start, end] (or exactly ``days``; all rows of an unpartitioned table) to the lake
    in one commit; returns the snapshot id. With ``written`` (`write_ahead`, covering those
    partitions) the commit adds the files written then instead of writing them now.
    ``compression`` is the Parquet codec of the files DuckDB writes (`LAKE_CODECS`; the feature flag
    `lake_compression`); files pyiceberg writes (unpartitioned tables) use the table's
    `write.parquet.compression-codec` (zstd)."""
    _check_codec(compression)
    target = lake_table(catalog, table)
    column = partition_column(table)
    if column is None:
        data = con.sql(f"SELECT {select_list(table)} FROM {relation or table.name}").to_arrow_table()
        snapshot = lake.replace_all(target, data.cast(arrow_schema(table)))
    else:
        values = sorted(set(days)) if days is not None else table.partition_values(start, end)
        if written is None:
            # DuckDB writes the files (fast, streaming; no Arrow copy of the rows), Iceberg commits them
            files = write_data_files(con, target, _rows(table, relation), values, column, compression)
        else:
            if written.table is not table or not set(values) <= set(written.values):
                raise ValueError(f"{table.name}: the files written ahead do not cover the partitions published")
            files = [f for value in values for f in written.files.get(value, [])]
        snapshot = lake.overwrite_partitions_with_files(target, files, column, values)
    return getattr(snapshot, "snapshot_id", None)


def write_ahead(con: duckdb.DuckDBPyConnection, catalog, table: Table, values: list[date],
                compression: str = "zstd") -> Written:
    """Write the data files of the partitions ``values`` of the partitioned ``table``, as `publish`
    would, without committing them: a step writes them before it takes its turn, and `publish(...,
    written=)` commits in the turn those of the partitions it publishes."""
    _check_codec(compression)
    column = partition_column(table)
    values = sorted(set(values))
    files = write_data_files(con, lake_table(catalog, table), _rows(table), values, column, compression)
    by_value: dict[date, list[str]] = {}
    for path in files:
        by_value.setdefault(_partition_of(path, column), []).append(path)
    return Written(table, values, by_value)


def _check_codec(compression: str) -> None:
    if compression not in LAKE_CODECS:
        raise ValueError(f"lake compression must be one of {LAKE_CODECS}, got {compression!r}")


def _rows(table: Table, relation: str | None = None) -> str:
    """The rows of ``table`` (or of ``relation``) in the partition values `$v`."""
    column = partition_column(table)
    return f"SELECT {select_list(table)} FROM {relation or table.name} WHERE list_contains($v, {column})"


def _partition_of(path: str, column: str) -> date:
    """The partition value of a file `write_data_files` wrote, from its path (`<column>=<value>`)."""
    part = next(p for p in reversed(path.split("/")) if p.startswith(f"{column}="))
    return date.fromisoformat(part[len(column) + 1:].removesuffix(".parquet"))


def write_data_files(con, target, rows: str, values: list[date], column: str, compression: str) -> list[str]:
    """Write the rows of `rows` (a query over `$v`, the partition values) as Parquet files in a new
    folder under the Iceberg table `target`'s data location (local, or object storage through the
    connection's fsspec filesystem, `lake.use_storage`), one partition value per file; returns them,
    for one commit. Files no commit adds are orphans, removed by the snapshot expiry."""
    location = target.location().rstrip("/")
    lake.use_storage(con, location)
    name = uuid.uuid4().hex
    if not lake.is_local(location):  # a partitioned COPY cannot list folders through fsspec: one COPY each
        return _copy_each(con, rows, _sizes(con, rows, values, column), column, f"{location}/data/{name}", compression)
    folder = Path(urlparse(location).path) / "data" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_partitions(con, rows, values, column, folder, compression)
    return sorted(str(f) for f in folder.rglob("*.parquet"))


def write_partitions(con, rows: str, values: list[date], column: str, folder: Path, compression: str) -> None:
    """Write the rows of `rows` (a query over `$v`, the partition values) as Parquet files under
    the local `folder`, one partition value per file.

    Big partitions are written one `COPY` each: measured on 30 days of `clean.events` (2.72M rows,
    2 cores), 6.7-7.5 s against 10.4-11.9 s for one partitioned `COPY`, which buffers and flushes
    every partition in small pieces (files 6% larger, in row groups of `WRITE_BATCH_ROWS`). Small
    ones (a long history of sparse days) are written by one partitioned `COPY`: 557 partitions of
    ~29 rows, 0.4 s against 1.1 s one by one."""
    sizes = _sizes(con, rows, values, column)
    if sum(sizes.values()) >= BIG_PARTITION_ROWS * len(values):
        folder.mkdir()
        _copy_each(con, rows, sizes, column, str(folder), compression)
        return
    con.execute(f"SET partitioned_write_flush_threshold = {WRITE_BATCH_ROWS}")
    con.execute(f"COPY ({rows}) TO {literal(folder)} (FORMAT parquet, COMPRESSION {compression}, "
                f"PARTITION_BY ({column}), WRITE_PARTITION_COLUMNS true)", {"v": values})


def _sizes(con, rows: str, values: list[date], column: str) -> dict[date, int]:
    return dict(con.execute(f"SELECT {ident(column)}, count(*) FROM ({rows}) GROUP BY 1", {"v": values}).fetchall())


def _copy_each(con, rows: str, sizes: dict[date, int], column: str, folder: str, compression: str) -> list[str]:
    """One `COPY` per partition value with rows (none gets an empty file, as in a partitioned COPY)."""
    files = [f"{folder}/{column}={value}.parquet" for value in sorted(sizes)]
    for value, path in zip(sorted(sizes), files):
        con.execute(f"COPY ({rows}) TO {literal(path)} "
                    f"(FORMAT parquet, COMPRESSION {compression}, ROW_GROUP_SIZE {WRITE_BATCH_ROWS})", {"v": [value]})
    return files


# What a rollback restores: the data tables (not the pipeline's own log in `pipeline_health`).
ROLLBACK_TABLES: tuple[Table, ...] = tuple(t for t in PUBLISHED if partition_column(t) is not None)


@dataclass
class Restored:
    """One partition a rollback restored (or, in a dry run, would restore)."""

    table: str
    partition: date
    rows_before: int  # in the warehouse before the rollback
    rows_after: int  # as of the snapshot rolled back to


def rollback(con: duckdb.DuckDBPyConnection, catalog, when: datetime | str | int, tables: list[Table],
             start: date | None = None, end: date | None = None, commit: bool = True) -> list[Restored]:
    """Restore the partitions of ``tables`` (within [start, end] if given: the partitions a run over
    those days writes) that differ from the lake as of ``when`` (a time, or a snapshot id of one
    table), in the lake (for a table the warehouse file keeps, an earlier version's, there too): per
    table, one lake commit of exactly those partitions. A table younger than ``when`` had no rows then: its
    partitions are emptied. A new commit, not a reset of the table's history: commits of other
    partitions made after ``when`` stay, concurrent writers are safe, and the rollback itself can be
    read past (``--as-of``) and undone. ``commit=False`` (dry run) changes nothing and reports what
    would change. Returns the restored partitions."""
    owner, at = _resolve(catalog, when)
    targets = []  # every table's snapshot first: a refusal must come before anything is restored
    for table in tables:
        if not catalog.table_exists(table.name):
            continue  # never published: nothing to go back to
        iceberg = catalog.load_table(table.name)
        snapshot = int(when) if table.name == owner else _snapshot_at(iceberg, at)
        if snapshot is None and _history_expired(iceberg):
            # expired by retention, or by forget-user (whose erased rows must never come back)
            raise ValueError(f"{table.name} keeps no snapshot that old (its older snapshots were expired): "
                             "roll back to a later time")
        targets.append((table, iceberg, snapshot))
    restored: list[Restored] = []
    for table, iceberg, snapshot in targets:
        _then_view(con, iceberg, table, snapshot)
        column = partition_column(table)
        now, then = (partition_fingerprints(con, table, relation, start, end) for relation in (table.name, "_then"))
        days = changed_partitions(now, then)
        if not days:
            continue
        changed = [(p, now.get(p, (0, 0))[0], then.get(p, (0, 0))[0]) for p in days]
        if commit and staged.in_lake(con, table):  # the lake is its only copy
            publish(con, catalog, table, days=days, relation="_then")
        elif commit:
            with transaction(con):
                con.execute(f"DELETE FROM {table.name} WHERE list_contains($v, {column})", {"v": days})
                con.execute(f"INSERT INTO {table.name} BY NAME SELECT * FROM _then WHERE list_contains($v, {column})",
                            {"v": days})
                publish(con, catalog, table, days=days)  # the lake commit last: a failure rolls the warehouse back
        restored += [Restored(table.name, p, now, past) for p, now, past in changed]
    con.execute("DROP VIEW IF EXISTS _then")
    return restored


def partition_fingerprints(con, table: Table, relation: str | None = None, start: date | None = None,
                           end: date | None = None, by: str | None = None) -> dict[date, tuple[int, int]]:
    """Per partition of `relation` (rows shaped like `table`, default the table itself; within the
    partitions a run over [start, end] writes, if given), or per value of column `by`: (rows, sum of
    the rows' hashes). Two fingerprints differ when a row was added, removed or changed in any column."""
    where = "TRUE" if start is None else table.range_predicate("$start", "$end")
    row = ", ".join(f'"{c.name}"::VARCHAR' if c.type == "JSON" else f'"{c.name}"' for c in table.columns)
    rows = con.execute(
        f"SELECT {by or table.partition_column} AS p, count(*), sum(hash({row})) FROM {relation or table.name} "
        f"WHERE {where} GROUP BY ALL",
        {} if start is None else {"start": start, "end": end},
    ).fetchall()
    return {p: (n, h) for p, n, h in rows}


def changed_partitions(before: dict, after: dict) -> list[date]:
    """The partitions whose fingerprint (`partition_fingerprints`) differs, or that one side lacks."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _history_expired(iceberg) -> bool:
    """Whether older snapshots of the table were expired: its oldest snapshot is not its first one
    (sequence numbers count a table's snapshots from 1; expiry clears parent ids, not these). When
    the first is still there, a time before it is a time the table had no rows."""
    snapshots = iceberg.snapshots()
    return bool(snapshots) and (min(s.sequence_number or 0 for s in snapshots) > 1)


def _then_view(con, iceberg, table: Table, snapshot: int | None) -> None:
    """The temporary view `_then`: ``table`` at ``snapshot`` (no rows when None), JSON columns as text."""
    files = lake.snapshot_files(iceberg, snapshot) if snapshot is not None else []
    if files:
        source = lake.files_sql(files)
        have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    else:  # the table had no rows then
        source, have = "(SELECT 1) WHERE false", set()
    # a column added to the contract after the snapshot was NULL then
    columns = ", ".join(f'"{c.name}"' if c.name in have else f'NULL::{_sql_type(c)} AS "{c.name}"'
                        for c in table.columns)
    con.execute(f"CREATE OR REPLACE TEMP VIEW _then AS SELECT {columns} FROM {source}")


def _sql_type(column) -> str:
    return "VARCHAR" if column.type == "JSON" else column.type


def delete_before(catalog, table: Table, cutoff: date, keep: list[date] = ()) -> None:
    """Retention: drop the lake rows of partitions before ``cutoff``, except the days in ``keep``."""
    column = partition_column(table)
    if column is None or not catalog.table_exists(table.name):
        return
    row_filter = LessThan(column, cutoff.isoformat())
    if keep:
        row_filter = And(row_filter, NotIn(column, [d.isoformat() for d in keep]))
    lake.delete_where(catalog.load_table(table.name), row_filter)


def erase_history(catalog, now: datetime) -> int:
    """Expire every snapshot older than ``now`` of every table of the lake (served and raw) and delete
    the files only they referenced, so rows
    deleted before ``now`` are physically gone (forget-user: ``now``; the daily retention job: a week
    ago, which keeps a week of time travel). Returns the files deleted."""
    deleted = 0
    for table in (*PUBLISHED, *RAW_TABLES):
        if catalog.table_exists(table.name):
            deleted += len(lake.expire_and_clean(catalog.load_table(table.name), now).deleted_files)
    return deleted


def connect(catalog, as_of: int | str | datetime | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only view of the lake: an in-memory DuckDB connection with every served table as the
    view ``schema.table`` over its current snapshot, or as of ``as_of``: a time (ISO text, UTC if
    naive), or the id of a snapshot of one table (that table at that snapshot, every other table as
    of the moment it was committed). A table not published yet, or younger than ``as_of``, is an
    empty view with the table's columns."""
    owner, when = _resolve(catalog, as_of)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(lake.NO_DOWNLOADS)
    for table in PUBLISHED:
        iceberg = catalog.load_table(table.name) if catalog.table_exists(table.name) else None
        snapshot = None
        if iceberg is not None and when is not None:
            snapshot = int(as_of) if table.name == owner else _snapshot_at(iceberg, when)
        if iceberg is not None and (when is None or snapshot is not None):
            lake.register_view(con, iceberg, snapshot, name=table.name)
        else:
            _empty_view(con, table)
    return con


def _resolve(catalog, as_of) -> tuple[str | None, datetime | str | None]:
    """(table owning the snapshot id, the time to read every table at) for ``as_of``; a value that is
    neither a time nor a snapshot id is an error (not "before every snapshot": that reads as empty)."""
    if as_of is None or isinstance(as_of, datetime):
        return None, as_of
    if not str(as_of).strip().isdigit():
        try:
            datetime.fromisoformat(str(as_of))
        except ValueError:
            raise ValueError(f"{as_of!r} is neither a time (YYYY-MM-DDTHH:MM:SS, UTC) nor a snapshot id") from None
        return None, as_of
    snapshot_id = int(as_of)
    for table in PUBLISHED:
        if catalog.table_exists(table.name):
            snapshot = catalog.load_table(table.name).snapshot_by_id(snapshot_id)
            if snapshot is not None:
                return table.name, datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=timezone.utc)
    raise ValueError(f"as of {snapshot_id}: no served table has that snapshot (expired, or never existed); "
                     "give a time instead (YYYY-MM-DDTHH:MM:SS, UTC)")


def _snapshot_at(iceberg, when) -> int | None:
    try:
        return lake.as_of(iceberg, when)
    except ValueError:  # no snapshot that old: the table was empty then
        return None


def _empty_view(con, table: Table) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.schema}")
    columns = ", ".join(f'NULL::{_sql_type(c)} AS "{c.name}"' for c in table.columns)
    con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT {columns} WHERE false")
