"""The raw layer: landed files -> `raw.events` / `raw.requests`, pseudonymized at the door.

Rules:
* Every landed file is registered in `raw.source_files` with its sha256, size, format and rows.
* A file whose checksum was ingested before (under any name, any day) is a re-delivery: it is
  registered with ``status = 'redelivered'`` and its rows are not ingested again.
* The raw layer is append-only: a file already registered is never read twice, so re-running a
  partition ingests only files that are new since the last run.
* A day's new files are ingested in one transaction together with their registry rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from de_assets.lib import forget, landing
from de_assets.lib import rawstore
from de_assets.lib.tables import RAW_EVENTS, RAW_REQUESTS, SOURCE_FILES

_EVENT_FIELDS = ("messageId", "type", "event", "userId", "anonymousId", "timestamp", "sentAt",
                 "receivedAt", "originalTimestamp", "properties", "context")
_EVENT_SHAPE = "{" + ", ".join(
    f'"{f}": "{"JSON" if f in ("properties", "context") else "VARCHAR"}"' for f in _EVENT_FIELDS
) + "}"
_EXTRA_PATCH = "{" + ",".join(f'"{f}":null' for f in _EVENT_FIELDS) + "}"
_ID_FIELDS_RE = r'("(userId|anonymousId|user_id)"\s*:\s*)"[^"]*"'

# One JSON parse per line into a struct `r`; `ok` is false when the line is not a JSON object.
# Expensive intermediates are computed in their own SELECT level and CASE is applied on top: DuckDB
# re-evaluates repeated (macro) sub-expressions inside CASE branches, which cost 3-4x here.
_PARSED = """
    SELECT source_file, line_no, line, ok, CASE WHEN ok THEN from_json(line, '{shape}') END AS r
    FROM (SELECT *, json_valid(line) AND regexp_matches(line, '^\\s*\\{{') AS ok FROM ({{records}}))
"""

RAW_EVENTS_SELECT = f"""
    WITH parsed AS ({_PARSED.format(shape=_EVENT_SHAPE)}),
    with_ip AS (SELECT *, r.context->>'$.ip' AS ip FROM parsed),
    patched AS (
        SELECT *,
            -- context.ip -> truncated, as a plain string replace of its exact value; an ip written
            -- differently (spacing) is still caught by scrub, which truncates any full address
            CASE WHEN ip IS NULL THEN r.context::VARCHAR
                 ELSE replace(r.context::VARCHAR, '"ip":"' || ip || '"',
                              '"ip":' || coalesce('"' || truncate_ip(ip) || '"', 'null')) END AS context_ip,
            json_merge_patch(CASE WHEN ok THEN line END, '{_EXTRA_PATCH}') AS extra_fields
        FROM with_ip
    )
    SELECT
        $arrival_date::DATE AS arrival_date, source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        r.messageId AS message_id,
        r.type AS type,
        r.event AS event,
        pseudonym(r.userId) AS user_id,
        pseudonym(r.anonymousId) AS anonymous_id,
        r.timestamp AS timestamp,
        r.sentAt AS sent_at,
        r.receivedAt AS received_at,
        r.originalTimestamp AS original_timestamp,
        scrub(r.properties::VARCHAR) AS properties,
        scrub(strip_trait_pii(context_ip::JSON)::VARCHAR) AS context,
        CASE WHEN ok THEN scrub(strip_trait_pii(extra_fields)::VARCHAR) END AS extra,
        CASE WHEN NOT ok THEN 'malformed_json' END AS parse_error,
        CASE WHEN NOT ok THEN scrub(regexp_replace(line, '{_ID_FIELDS_RE}', '\\1"[redacted]"', 'g')) END
            AS raw_text
    FROM patched
"""

_REQUEST_FIELDS = ("timestamp", "service", "endpoint", "host", "status", "latency_ms", "cpu_pct", "memory_mb")
_REQUEST_SHAPE = "{" + ", ".join(f'"{f}": "VARCHAR"' for f in _REQUEST_FIELDS) + "}"

RAW_REQUESTS_SELECT = f"""
    SELECT
        $arrival_date::DATE AS arrival_date, source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        CASE WHEN ok THEN md5(concat_ws('|', r.timestamp, r.service, r.host, r.endpoint,
            r.status, r.latency_ms)) END AS record_id,
        r.timestamp, r.service, r.endpoint, r.host, r.status, r.latency_ms, r.cpu_pct, r.memory_mb,
        CASE WHEN NOT ok THEN 'malformed_json' END AS parse_error,
        CASE WHEN NOT ok THEN scrub(line) END AS raw_text
    FROM ({_PARSED.format(shape=_REQUEST_SHAPE)})
"""

SOURCES = {
    "events": (RAW_EVENTS, RAW_EVENTS_SELECT),
    "requests": (RAW_REQUESTS, RAW_REQUESTS_SELECT),
}


@dataclass
class IngestReport:
    source: str
    files_ingested: int = 0
    files_redelivered: int = 0
    files_already_known: int = 0
    files_unsupported: list[str] = field(default_factory=list)
    rows_ingested: int = 0
    rows_redelivered: int = 0
    bytes_ingested: int = 0

    def as_metadata(self) -> dict:
        return {
            "files_ingested": self.files_ingested,
            "files_redelivered": self.files_redelivered,
            "files_already_known": self.files_already_known,
            "files_unsupported": len(self.files_unsupported),
            "rows_ingested": self.rows_ingested,
            "rows_redelivered": self.rows_redelivered,
            "bytes_ingested": self.bytes_ingested,
        }


def forget_partition(con, source: str, start: date, end: date, delete_files: bool = True) -> None:
    """Delete raw rows (both stores) and file registrations for an arrival-day range (explicit re-ingest only)."""
    table, _ = SOURCES[source]
    con.execute(f"DELETE FROM {table.name} WHERE arrival_date BETWEEN ? AND ?", [start, end])
    rawstore.forget(con, table, start, end, delete_files=delete_files)
    con.execute(
        f"DELETE FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date BETWEEN ? AND ?",
        [source, start, end],
    )


def ingest_day(
    con, root, source: str, day: date, run_id: str, report: IngestReport,
    raw_format: str = "json", raw_dir: str | None = None,
) -> IngestReport:
    """Ingest every file that landed for ``source`` on ``day`` and is not registered yet.

    All new files of the day are read in one statement (DuckDB parallelizes across them) and
    registered in the same transaction, so a day's ingestion is all-or-nothing. ``raw_format``
    chooses the store of the rows (`lib/rawstore.py`): the DuckDB table, or one Parquet file per
    batch under ``raw_dir``.
    """
    if raw_format not in rawstore.FORMATS:
        raise ValueError(f"raw_format must be one of {rawstore.FORMATS}, got {raw_format!r}")
    table, select_sql = SOURCES[source]
    to_read: list[tuple[landing.LandedFile, str]] = []
    redelivered: list[tuple[landing.LandedFile, str, str]] = []  # (file, checksum, original path)
    first_path_of: dict[str, str] = {}
    for landed in landing.list_files(root, source, day):
        if landed.format is None:
            report.files_unsupported.append(landed.relative)
            continue
        checksum = landing.sha256_of(landed.path)
        known = con.execute(
            f"SELECT sha256 FROM {SOURCE_FILES.name} WHERE source = ? AND path = ?", [source, landed.relative]
        ).fetchone()
        if known is not None:
            if known[0] != checksum:
                raise ValueError(
                    f"landing file {landed.relative} changed after it was ingested "
                    f"(sha256 {known[0][:12]}… -> {checksum[:12]}…); landed files are immutable: "
                    "deliver the correction under a new name"
                )
            report.files_already_known += 1
            continue
        original = first_path_of.get(checksum) or _ingested_path(con, source, checksum)
        if original is None:
            first_path_of[checksum] = landed.relative
            to_read.append((landed, checksum))
        else:
            redelivered.append((landed, checksum, original))
    if not to_read and not redelivered:
        return report

    ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        rows_by_path: dict[str, int] = {}
        if to_read:
            # Line numbers need each file read in order, so the numbered lines are staged with
            # insertion order on; the heavy projection then runs with it off (the warehouse
            # default), which lets DuckDB stream the insert within its memory limit.
            records = "\nUNION ALL\n".join(
                f"SELECT {_literal(f.relative)} AS source_file, * FROM ({landing.records_sql(con, f)})"
                for f, _ in to_read
            )
            con.execute("SET preserve_insertion_order = true")
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE _lines AS {records}")
            finally:
                con.execute("SET preserve_insertion_order = false")
            projected = select_sql.replace("{records}", "SELECT * FROM _lines")
            params = {"arrival_date": day, "ingested_at": ingested_at}
            if raw_format == "json":
                con.execute(f"INSERT INTO {table.name} BY NAME {projected}", params)
                stored = table.name
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE _batch AS {projected}", params)
                rawstore.write_parquet_batch(con, table, "_batch", day, raw_dir, f"{ingested_at:%Y%m%dT%H%M%S%f}")
                stored = "_batch"
            con.execute("DROP TABLE _lines")
            rows_by_path = dict(con.execute(
                f"SELECT source_file, count(*) FROM {stored} WHERE arrival_date = ? AND ingested_at = ? "
                "GROUP BY 1", [day, ingested_at],
            ).fetchall())
            forget.drop_suppressed(con, source, day, ingested_at)  # forgotten users stay out (counted per file)
            con.execute("DROP TABLE IF EXISTS _batch")
        registrations = [
            (f, checksum, rows_by_path.get(f.relative, 0), "ingested", None) for f, checksum in to_read
        ] + [
            (f, checksum, rows_by_path.get(original) or _registered_rows(con, source, original), "redelivered", original)
            for f, checksum, original in redelivered
        ]
        for f, checksum, rows, status, original in registrations:
            con.execute(
                f"INSERT INTO {SOURCE_FILES.name} BY NAME SELECT ? AS source, ? AS arrival_date, ? AS path, "
                "? AS format, ? AS sha256, ? AS bytes, ? AS rows, ? AS status, ? AS duplicate_of, "
                "? AS ingested_at, ? AS run_id",
                [source, day, f.relative, f.format, checksum, f.bytes, rows, status, original, ingested_at, run_id],
            )
            if status == "ingested":
                report.files_ingested += 1
                report.rows_ingested += rows
                report.bytes_ingested += f.bytes
            else:
                report.files_redelivered += 1
                report.rows_redelivered += rows
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return report


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ingested_path(con, source: str, checksum: str) -> str | None:
    row = con.execute(
        f"SELECT path FROM {SOURCE_FILES.name} WHERE source = ? AND sha256 = ? AND status = 'ingested' "
        "ORDER BY arrival_date, path LIMIT 1",
        [source, checksum],
    ).fetchone()
    return row[0] if row else None


def _registered_rows(con, source: str, path: str) -> int:
    return con.execute(f"SELECT rows FROM {SOURCE_FILES.name} WHERE source = ? AND path = ?", [source, path]).fetchone()[0]
