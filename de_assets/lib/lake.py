"""The lake: Iceberg tables (pyiceberg + a SQL catalog) that many processes write and DuckDB reads.

Dagster-free core for the storage migration (issue 12, spike). What it guarantees:
- ``open_catalog`` / ``ensure_table``: safe when several processes open or create at once.
- ``overwrite_partitions``: one catalog commit replaces exactly the given days (idempotent); commits of
  disjoint days from other processes are retried by pyiceberg itself (refresh + revalidate), and the whole
  overwrite is redone on a conflict that survives those retries.
- ``snapshot_files`` / ``register_view`` / ``connect``: DuckDB reads a (pinned) snapshot's Parquet files
  with ``read_parquet``; readers take no lock and never block writers.
- ``delete_where`` + ``expire_and_clean``: rows are erased from every data file once the snapshots that
  still reference the old files are expired and unreferenced files are removed.
One pyiceberg overwrite is two snapshots (DELETE then APPEND) in one commit: both carry the same
``de-assets.commit-id`` and ``as_of`` never resolves a time to the half-done first one.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.snapshots import Snapshot
from sqlalchemy.exc import IntegrityError, OperationalError

from de_assets.lib.sql import ident, literal

COMMIT_ID = "de-assets.commit-id"
PARTITIONS = "de-assets.partitions"
# Copy-on-write everywhere: pyiceberg writes no delete files, and other engines (Spark, Trino) writing
# these tables must not either, or DuckDB's plain read_parquet would show deleted rows.
TABLE_PROPERTIES = {
    "format-version": "2",
    "write.delete.mode": "copy-on-write",
    "write.update.mode": "copy-on-write",
    "write.merge.mode": "copy-on-write",
    # pyiceberg's own retry of a commit that lost the race (refresh, revalidate, recommit; no rewrite).
    "commit.retry.num-retries": "20",
    "commit.retry.min-wait-ms": "20",
    "commit.retry.max-wait-ms": "2000",
    "commit.retry.total-timeout-ms": "300000",
    # Bound the metadata.json files kept per table (one is written per commit).
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}
_RETRYABLE = (CommitFailedException, ValidationException)
logger = logging.getLogger(__name__)


class DeleteFilesPresent(RuntimeError):
    """The snapshot has merge-on-read delete files: its data files alone do not give its rows."""


def open_catalog(uri: str | None = None, warehouse: str | None = None, data_dir: str | Path = "data",
                 name: str = "de_assets") -> SqlCatalog:
    """The SQL catalog: ``sqlite:///<data_dir>/catalog.db`` and ``file://<data_dir>/lake`` by default;
    a PostgreSQL URI and an object-storage warehouse in production. Several processes may open (and so
    create) it at once."""
    root = Path(data_dir).resolve()
    if uri is None:
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'catalog.db'}"
    if warehouse is None:
        (root / "lake").mkdir(parents=True, exist_ok=True)
        warehouse = (root / "lake").as_uri()
    if uri.startswith("sqlite") and "timeout=" not in uri:
        uri += ("&" if "?" in uri else "?") + "timeout=60"  # wait for the SQLite write lock, do not fail
    properties = _object_storage_properties(warehouse)
    for attempt in range(8):
        try:
            catalog = SqlCatalog(name, uri=uri, warehouse=warehouse, **properties)
            break
        except (OperationalError, IntegrityError):  # two processes creating the catalog tables at once
            if attempt == 7:
                raise
            time.sleep(_delay(attempt, 0.05))
    if uri.startswith("sqlite"):
        try:  # WAL: catalog readers (load_table) do not wait for a committing writer
            with catalog.engine.connect() as con:
                con.exec_driver_sql("PRAGMA journal_mode=WAL")
        except OperationalError:
            pass  # another process is switching it; the mode is persistent in the file
    return catalog


def _object_storage_properties(warehouse: str) -> dict[str, str]:
    """pyiceberg's S3 settings from the standard AWS environment: an endpoint (MinIO, a test server;
    `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) and the region. s3fs (DuckDB's reads) and
    pyarrow.fs (`expire_and_clean`) read the same variables themselves; pyiceberg does not."""
    if urlparse(warehouse).scheme not in ("s3", "s3a"):
        return {}
    properties = {}
    if endpoint := os.getenv("AWS_ENDPOINT_URL_S3") or os.getenv("AWS_ENDPOINT_URL"):
        properties["s3.endpoint"] = endpoint
    if region := os.getenv("AWS_REGION") or os.getenv("AWS_DEFAULT_REGION"):
        properties["s3.region"] = region
    return properties


def ensure_table(catalog: Catalog, identifier: str, schema: pa.Schema, partition_column: str | None = None,
                 properties: dict[str, str] | None = None) -> Table:
    """Load ``identifier`` (``namespace.table``), creating namespace and table if absent, partitioned by
    identity on the DATE column ``partition_column``. Concurrent creators all get the same table."""
    try:  # the usual case: one catalog read, no write (a namespace attempt is a write transaction)
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    namespace = identifier.rsplit(".", 1)[0]
    try:
        catalog.create_namespace(namespace)
    except (NamespaceAlreadyExistsError, IntegrityError):
        pass
    if partition_column is not None and schema.field(partition_column).type != pa.date32():
        raise ValueError(f"partition column {partition_column!r} of {identifier} must be date32")
    try:  # schema and identity spec in one commit (field ids are assigned by the catalog)
        with catalog.create_table_transaction(identifier, schema=schema,
                                              properties={**TABLE_PROPERTIES, **(properties or {})}) as create:
            if partition_column is not None:
                with create.update_spec() as spec:
                    spec.add_identity(partition_column)
    except (TableAlreadyExistsError, IntegrityError, CommitFailedException):
        pass  # another process created it first (the catalog says so in one of these ways)
    return catalog.load_table(identifier)


def _delay(attempt: int, backoff: float, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter: writers that collided do not collide again in step."""
    return random.uniform(0, min(cap, backoff * 2**attempt))


def _commit_with_retry(table: Table, action, attempts: int, backoff: float, commit_id: str) -> Snapshot | None:
    """Run ``action()`` (one commit); on a conflict left after pyiceberg's own retries, refresh the
    table and redo it, at most ``attempts`` times. A commit that already landed is not redone."""
    for attempt in range(attempts):
        try:
            action()
            return table.current_snapshot()
        except _RETRYABLE as exc:
            if attempt == attempts - 1:
                raise
            logger.warning("commit conflict on %s (%s), redoing (attempt %d of %d)",
                           ".".join(table.name()), type(exc).__name__, attempt + 2, attempts)
            time.sleep(_delay(attempt, backoff))
            table.refresh()
            if any(s.summary is not None and s.summary.additional_properties.get(COMMIT_ID) == commit_id
                   for s in table.snapshots()):
                return table.current_snapshot()
    raise AssertionError("unreachable")


def _commit(table: Table, change, attempts: int, backoff: float, **summary: str) -> Snapshot | None:
    """One commit: ``change(snapshot_properties)`` under a fresh commit id (kept in the snapshot
    summary with ``summary``), retried on conflicts (``_commit_with_retry``)."""
    commit_id = uuid.uuid4().hex

    def action():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            change({COMMIT_ID: commit_id, **summary})

    return _commit_with_retry(table, action, attempts, backoff, commit_id)


def _days(days) -> list[date]:
    out = sorted({date.fromisoformat(d) if isinstance(d, str) else d for d in days})
    if not out:
        raise ValueError("overwrite_partitions needs at least one day")
    return out


def overwrite_partitions(table: Table, data: pa.Table, column: str, days, *, attempts: int = 5,
                         backoff: float = 0.05) -> Snapshot | None:
    """Replace exactly the rows of ``days`` (DATE ``column``) by ``data`` in one atomic commit.

    Every row of ``data`` must fall in ``days``; a day without rows ends up empty. Re-running with the
    same data gives the same table (idempotent). Returns the new current snapshot."""
    days = _days(days)
    if column not in data.column_names:
        raise ValueError(f"column {column!r} missing from the data for {'.'.join(table.name())}")
    inside = pc.is_in(data[column].cast(pa.date32()), value_set=pa.array(days, pa.date32()))
    outside = len(data) - pc.sum(pc.fill_null(inside, False).cast(pa.int64())).as_py() if len(data) else 0
    if outside:
        raise ValueError(f"{outside} rows of {'.'.join(table.name())} have {column} outside the days written")
    row_filter = EqualTo(column, days[0]) if len(days) == 1 else In(column, days)
    return _commit(table, lambda props: table.overwrite(data, overwrite_filter=row_filter, snapshot_properties=props),
                   attempts, backoff, **{PARTITIONS: ",".join(d.isoformat() for d in days)})


def overwrite_partitions_with_files(table: Table, files: list[str], column: str, days, *, attempts: int = 5,
                                    backoff: float = 0.05, summary: dict[str, str] | None = None) -> Snapshot | None:
    """Like ``overwrite_partitions``, with data files already written (e.g. by DuckDB's COPY ...
    PARTITION_BY, one partition value per file, columns named as the table's): one commit deletes
    ``days`` and adds ``files``. Idempotent; on a conflict the commit is redone with the same files.
    ``summary``: more properties for the snapshot summary."""
    days = _days(days)
    row_filter = EqualTo(column, days[0]) if len(days) == 1 else In(column, days)

    def swap(props):
        with table.transaction() as tx:
            tx.delete(row_filter, snapshot_properties=props)
            if files:
                add_files(tx, table.io, files, props)

    return _commit(table, swap, attempts, backoff, **{PARTITIONS: ",".join(d.isoformat() for d in days)},
                   **(summary or {}))


def append_files(table: Table, files: list[str], *, attempts: int = 5, backoff: float = 0.05,
                 summary: dict[str, str] | None = None) -> Snapshot | None:
    """Add data files already written (columns named as the table's) in one commit, keeping every
    row the table holds. Not idempotent by itself: the caller records what it added (the raw layer's
    file registry) and never adds the same files twice. ``summary``: more snapshot-summary properties."""
    def append(props):
        with table.transaction() as tx:
            add_files(tx, table.io, files, props)

    return _commit(table, append, attempts, backoff, **(summary or {}))


def add_files(tx: Transaction, io, files: list[str], snapshot_properties: dict[str, str]) -> None:
    """Append data files already written to the transaction's table: pyiceberg's
    `Transaction.add_files` (without its scan for files already referenced: the callers add new
    files only), describing the files with `data_files`."""
    if tx.table_metadata.name_mapping() is None:
        tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING:
                             tx.table_metadata.schema().name_mapping.model_dump_json()})
    with tx.update_snapshot(snapshot_properties=snapshot_properties).fast_append() as append:
        for data_file in data_files(tx.table_metadata, io, files):
            append.append_data_file(data_file)


def data_files(metadata, io, files: list[str]) -> list:
    """The manifest entries of Parquet files (footer statistics, partition, size), as pyiceberg's
    `parquet_file_to_data_file` builds them, with the table's statistics plan and column mapping
    computed once and each distinct file schema checked against the table's once: pyiceberg
    recomputes all three per file, 1.2 s for the 557 one-day files of a long range against 0.2 s.
    pyiceberg's Parquet module is imported here, as pyiceberg itself does: a process that never
    commits (the CLI, a reader) does not load it."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        _check_pyarrow_schema_compatible,
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    schema = metadata.schema()
    stats_columns = compute_statistics_plan(schema, metadata.properties)
    column_mapping = parquet_path_to_id_mapping(schema)
    checked: list[pa.Schema] = []
    out = []
    for path in files:
        input_file = io.new_input(path)
        with input_file.open() as stream:
            footer = pq.read_metadata(stream)
        arrow_schema = footer.schema.to_arrow_schema()
        if not any(arrow_schema.equals(seen) for seen in checked):
            _check_pyarrow_schema_compatible(schema, arrow_schema, format_version=metadata.format_version)
            checked.append(arrow_schema)
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=footer, stats_columns=stats_columns, parquet_column_mapping=column_mapping)
        out.append(DataFile.from_args(
            content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
            partition=statistics.partition(metadata.spec(), schema), file_size_in_bytes=len(input_file),
            sort_order_id=None, spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None,
            **statistics.to_serialized_dict(),
        ))
    return out


def replace_all(table: Table, data: pa.Table, *, attempts: int = 5, backoff: float = 0.05) -> Snapshot | None:
    """Replace every row of an unpartitioned (small) table by ``data`` in one atomic commit."""
    return _commit(table, lambda props: table.overwrite(data, snapshot_properties=props), attempts, backoff)


def metadata_locations(catalog: Catalog) -> dict[str, str]:
    """Every table's current metadata file, ``{"namespace.table": location}``, in one query of the SQL
    catalog's own table (`iceberg_tables`, the JDBC catalog's layout): what tells a reader whether
    its views are still current without loading any table. Empty for other catalogs (the caller
    loads each table instead)."""
    if not isinstance(catalog, SqlCatalog):
        return {}
    from pyiceberg.catalog.sql import IcebergTables
    from sqlalchemy import select
    from sqlalchemy.orm import Session
    with Session(catalog.engine) as session:
        rows = session.execute(select(IcebergTables.table_namespace, IcebergTables.table_name,
                                      IcebergTables.metadata_location)
                               .where(IcebergTables.catalog_name == catalog.name)).all()
    return {f"{namespace}.{name}": location for namespace, name, location in rows if location}


def commits_since(table: Table, metadata_location: str | None) -> list[dict[str, str]] | None:
    """The snapshot-summary properties of every commit to ``table`` (as loaded now) after the snapshot
    that metadata file ``metadata_location`` made current (None: since the table was created), newest
    first. None when that cannot be told: the snapshot is no longer an ancestor of the current one (a
    rollback, expired history) or its metadata file is gone (only the last ones are kept)."""
    if metadata_location == table.metadata_location:
        return []
    pinned = None
    if metadata_location is not None:
        try:
            pinned = FromInputFile.table_metadata(table.io.new_input(metadata_location)).current_snapshot_id
        except Exception:  # deleted (`write.metadata.previous-versions-max`) or unreadable: not known
            return None
    found = []
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id != pinned:
        found.append(dict(snapshot.summary.additional_properties) if snapshot.summary is not None else {})
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
        if parent is not None and snapshot is None:
            return None  # the chain is cut (expired) before the pinned snapshot
    return found if (snapshot is not None or pinned is None) else None


def add_missing_columns(table: Table, schema: pa.Schema) -> Table:
    """Add the columns of ``schema`` the table lacks (a column added to the contract later); returns the table."""
    have = {f.name for f in table.schema().fields}
    if all(name in have for name in schema.names):
        return table
    with table.update_schema() as update:
        update.union_by_name(Catalog._convert_schema_if_needed(schema, 2))
    return table


def delete_where(table: Table, row_filter: str | BooleanExpression, *, attempts: int = 5,
                 backoff: float = 0.05) -> Snapshot | None:
    """Delete the rows matching ``row_filter`` (copy-on-write: files holding other rows are rewritten
    without them). The old files stay readable by older snapshots until ``expire_and_clean``."""
    return _commit(table, lambda props: table.delete(row_filter, snapshot_properties=props), attempts, backoff)


def _commit_of(snapshot: Snapshot | None) -> str | None:
    return None if snapshot is None or snapshot.summary is None else snapshot.summary.additional_properties.get(COMMIT_ID)


def as_of(table: Table, when: int | str | datetime) -> int:
    """The snapshot id for ``when``: a snapshot id (int or digits) or a time (datetime or ISO text, UTC
    if naive): the last snapshot made current at or before it. A time inside one commit (between its
    DELETE and APPEND snapshots) resolves to the state before that commit."""
    if isinstance(when, str) and when.strip().lstrip("-").isdigit():
        when = int(when)
    if isinstance(when, int):
        if table.snapshot_by_id(when) is None:
            raise ValueError(f"no snapshot {when} in {'.'.join(table.name())} (expired or never existed)")
        return when
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    ms = int(when.timestamp() * 1000)
    log = table.history()
    index = max((i for i, e in enumerate(log) if e.timestamp_ms <= ms), default=None)
    if index is None:
        raise ValueError(f"{'.'.join(table.name())} has no snapshot at or before {when.isoformat()}")
    commit = _commit_of(table.snapshot_by_id(log[index].snapshot_id))
    if commit is not None and index + 1 < len(log) and _commit_of(table.snapshot_by_id(log[index + 1].snapshot_id)) == commit:
        while index >= 0 and _commit_of(table.snapshot_by_id(log[index].snapshot_id)) == commit:
            index -= 1  # mid-commit: step back before the commit's first snapshot
        if index < 0:
            raise ValueError(f"{'.'.join(table.name())} has no complete snapshot at or before {when.isoformat()}")
    return log[index].snapshot_id


def is_local(uri: str) -> bool:
    """Whether ``uri`` (a table or warehouse location) is on the local file system (else object
    storage, which DuckDB reads and writes through `use_storage`)."""
    return urlparse(uri).scheme in ("", "file")


# DuckDB would download an extension it lacks (e.g. `httpfs` for an s3:// path it has no filesystem
# for) at run time; nothing here may download anything, so such a read fails instead, naming it.
NO_DOWNLOADS = "SET autoinstall_known_extensions = false"


def use_storage(con: duckdb.DuckDBPyConnection, location: str) -> None:
    """Let the DuckDB connection read and write the files under ``location``. Nothing to do on the
    local file system. On object storage (``s3://``, ``gs://``, ``abfs://``) the scheme's fsspec
    filesystem (s3fs, gcsfs, adlfs; the `prod` extra installs s3fs) is registered with DuckDB once
    per connection: no DuckDB extension (`httpfs` is not bundled, and nothing is downloaded at run
    time). Credentials and endpoint come from the usual environment (``AWS_*``)."""
    if is_local(location):
        return
    scheme = urlparse(location).scheme
    try:
        filesystem = fsspec.filesystem(scheme)  # one cached instance per process
    except (ImportError, ValueError) as error:
        raise RuntimeError(f"the lake is on {scheme}:// storage, which DuckDB reads through an fsspec filesystem "
                           f"that is not installed ({error}); for S3: pip install 'de_assets[prod]' (s3fs)") from None
    protocols = filesystem.protocol if isinstance(filesystem.protocol, (tuple, list)) else (filesystem.protocol,)
    if not set(protocols) & set(con.list_filesystems()):  # s3 and s3a are one filesystem, registered once
        con.register_filesystem(filesystem)


def _fs_path(uri: str) -> str:
    """A path DuckDB / pyarrow.fs understand: ``file:///x`` -> ``/x``; other schemes are kept."""
    return urlparse(uri).path if uri.startswith("file:") else uri


def snapshot_files(table: Table, snapshot_id: int | None = None,
                   row_filter: str | BooleanExpression = AlwaysTrue()) -> list[str]:
    """The data files of a snapshot (current by default), pruned by ``row_filter`` on partitions and
    column statistics (rows in a kept file are NOT filtered: repeat the filter in SQL).
    Raises ``DeleteFilesPresent`` when a file has merge-on-read deletes (none under copy-on-write)."""
    if snapshot_id is None and table.current_snapshot() is None:
        return []
    tasks = list(table.scan(row_filter=row_filter, snapshot_id=snapshot_id).plan_files())
    if any(task.delete_files for task in tasks):
        raise DeleteFilesPresent(f"{'.'.join(table.name())} snapshot {snapshot_id or 'current'} has delete files")
    return sorted(_fs_path(task.file.file_path) for task in tasks)


def _key(uri: str) -> str:
    """A file's name as pyarrow.fs lists it: ``/x`` for ``file:///x``, ``bucket/x`` for ``s3://bucket/x``."""
    parsed = urlparse(uri)
    if not parsed.scheme or uri.startswith("file:"):
        return parsed.path
    return parsed.netloc + parsed.path


def files_sql(files: list[str]) -> str:
    """SQL reading a snapshot's data files in DuckDB: columns matched by name (not Iceberg field id),
    and no hive partitioning (pyiceberg's folders look like `event_date=2024-03-01/`)."""
    return f"read_parquet({_list(files)}, union_by_name = true, hive_partitioning = false)"


def columns_in_files(con: duckdb.DuckDBPyConnection, files: list[str]) -> set[str]:
    """The column names found in the Parquet files (their footers only)."""
    return {name for (name,) in con.execute(f"SELECT DISTINCT name FROM parquet_schema({_list(files)})").fetchall()}


def _list(files: list[str]) -> str:
    return f"[{', '.join(literal(p) for p in files)}]"


def register_view(con: duckdb.DuckDBPyConnection, table: Table, snapshot_id: int | None = None,
                  name: str | None = None) -> int | None:
    """Create (or replace) the DuckDB view ``schema.table`` over a snapshot of ``table`` (current if
    ``snapshot_id`` is None). The view reads the snapshot's files, so later commits do not change it.
    Returns the snapshot id served (None for a table without snapshots)."""
    schema_name, view_name = (name or ".".join(table.name()[-2:])).rsplit(".", 1)
    target = f"{ident(schema_name)}.{ident(view_name)}"
    use_storage(con, table.location())
    snapshot_id = snapshot_id if snapshot_id is not None else getattr(table.current_snapshot(), "snapshot_id", None)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema_name)}")
    files = snapshot_files(table, snapshot_id)
    if files:
        con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {files_sql(files)}")
    else:  # no data file: an empty view with the table's columns and types
        empty = con.from_arrow(table.schema().as_arrow().empty_table())
        columns = ", ".join(f"CAST(NULL AS {t}) AS {ident(c)}" for c, t in zip(empty.columns, empty.types))
        con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT {columns} WHERE false")
    return snapshot_id


def connect(catalog: Catalog, when: int | str | datetime | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every catalog table as a view ``schema.table`` over its
    current snapshot (or its snapshot as of the time ``when``). Nothing is locked: commits made while it
    is open are not seen until the views are registered again."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(NO_DOWNLOADS)
    for namespace in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            table = catalog.load_table(identifier)
            pinned = None if when is None or table.current_snapshot() is None else as_of(table, when)
            register_view(con, table, pinned)
    return con


@dataclass
class CleanReport:
    expired_snapshots: int = 0
    deleted_files: list[str] = field(default_factory=list)
    kept_recent_orphans: int = 0  # unreferenced but younger than the grace period (maybe a write in flight)


def referenced_files(table: Table, without: set[int] = frozenset()) -> set[str]:
    """Every file the snapshots (except ``without``) and metadata versions of ``table`` need (as ``_key``)."""
    md = table.metadata
    refs = {table.metadata_location, *(entry.metadata_file for entry in md.metadata_log)}
    refs |= {s.statistics_path for s in getattr(md, "statistics", [])}
    refs |= {s.statistics_path for s in getattr(md, "partition_statistics", [])}
    seen: set[str] = set()
    for snapshot in (s for s in md.snapshots if s.snapshot_id not in without):
        refs.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            refs.add(manifest.manifest_path)
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                refs.add(entry.data_file.file_path)
    return {_key(r) for r in refs}


def expire_and_clean(table: Table, older_than: datetime, grace: timedelta = timedelta(hours=1),
                     dry_run: bool = False) -> CleanReport:
    """Expire the snapshots made before ``older_than`` (never the current one), then delete the files
    under the table location that no retained snapshot or metadata version references:
    - files only the expired snapshots referenced (old copies of deleted rows, replaced days) at once:
      they were committed, so no writer in flight can be about to use them;
    - files never referenced (leftovers of failed or killed writes) only when older than ``grace``,
      which must exceed the longest write in flight (its files are not referenced until it commits).
    Readers pinned to an expired snapshot lose its files: ``older_than`` is their protection.
    ``dry_run`` commits and deletes nothing and reports what would go."""
    report = CleanReport()
    cutoff_ms = int(older_than.timestamp() * 1000)
    for attempt in range(5):
        table.refresh()
        current = getattr(table.current_snapshot(), "snapshot_id", None)
        expired = {s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id != current}
        committed = referenced_files(table)
        if not expired or dry_run:
            break
        try:
            table.maintenance.expire_snapshots().by_ids(sorted(expired)).commit()
            break
        except CommitFailedException:  # a writer committed meanwhile: recompute on the new metadata
            if attempt == 4:
                raise
            time.sleep(_delay(attempt, 0.05))
    report.expired_snapshots = len(expired)
    if dry_run:
        keep = referenced_files(table, without=expired)
    else:
        keep = referenced_files(table.refresh())
    filesystem, root = pafs.FileSystem.from_uri(table.location())
    young = time.time() - grace.total_seconds()
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        path = info.path
        if info.type != pafs.FileType.File or path in keep:
            continue
        if path not in committed and info.mtime is not None and info.mtime.timestamp() > young:
            report.kept_recent_orphans += 1
            continue
        report.deleted_files.append(path)
        if not dry_run:
            filesystem.delete_file(info.path)
    return report
