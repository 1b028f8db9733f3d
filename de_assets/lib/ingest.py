"""The raw layer: landed files -> `raw.events` / `raw.requests`, pseudonymized at the door.

Rules:
* Every landed file is registered in `raw.source_files` with its sha256, size, format and rows.
* A file whose checksum was ingested before (under any name, any day) is a re-delivery: it is
  registered with ``status = 'redelivered'`` and its rows are not ingested again.
* The raw layer is append-only: a file already registered is never read twice, so re-running a
  partition ingests only files that are new since the last run.
* Each file is ingested in its own transaction together with its registry row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from de_assets.lib import landing
from de_assets.lib.tables import RAW_EVENTS, RAW_REQUESTS, SOURCE_FILES

_EVENT_FIELDS = ("messageId", "type", "event", "userId", "anonymousId", "timestamp", "sentAt",
                 "receivedAt", "originalTimestamp", "properties", "context")
_EXTRA_PATCH = "{" + ",".join(f'"{f}":null' for f in _EVENT_FIELDS) + "}"
_ID_FIELDS_RE = r'("(userId|anonymousId|user_id)"\s*:\s*)"[^"]*"'

# Parse once, then project. `rec` is NULL for text that is not a JSON object.
_PARSED = """
    SELECT line_no, line,
           CASE WHEN json_valid(line) AND json_type(line::JSON) = 'OBJECT' THEN line::JSON END AS rec
    FROM ({records})
"""

RAW_EVENTS_SELECT = f"""
    SELECT
        $arrival_date::DATE AS arrival_date, $source_file AS source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        rec->>'$.messageId' AS message_id,
        rec->>'$.type' AS type,
        rec->>'$.event' AS event,
        pseudonym(rec->>'$.userId') AS user_id,
        pseudonym(rec->>'$.anonymousId') AS anonymous_id,
        rec->>'$.timestamp' AS timestamp,
        rec->>'$.sentAt' AS sent_at,
        rec->>'$.receivedAt' AS received_at,
        rec->>'$.originalTimestamp' AS original_timestamp,
        scrub((rec->'$.properties')::VARCHAR)::JSON AS properties,
        CASE WHEN json_type(rec, '$.context') = 'OBJECT' THEN scrub(strip_trait_pii(json_merge_patch(
            rec->'$.context', json_object('ip', truncate_ip(rec->>'$.context.ip'))))::VARCHAR)::JSON
             ELSE scrub((rec->'$.context')::VARCHAR)::JSON END AS context,
        CASE WHEN rec IS NOT NULL THEN
            scrub(strip_trait_pii(json_merge_patch(rec, '{_EXTRA_PATCH}'))::VARCHAR)::JSON END AS extra,
        CASE WHEN rec IS NULL THEN 'malformed_json' END AS parse_error,
        CASE WHEN rec IS NULL THEN scrub(regexp_replace(line, '{_ID_FIELDS_RE}', '\\1"[redacted]"', 'g')) END
            AS raw_text
    FROM ({_PARSED})
"""

RAW_REQUESTS_SELECT = f"""
    SELECT
        $arrival_date::DATE AS arrival_date, $source_file AS source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        CASE WHEN rec IS NOT NULL THEN md5(concat_ws('|', rec->>'$.timestamp', rec->>'$.service',
            rec->>'$.host', rec->>'$.endpoint', rec->>'$.status', rec->>'$.latency_ms')) END AS record_id,
        rec->>'$.timestamp' AS timestamp,
        rec->>'$.service' AS service,
        rec->>'$.endpoint' AS endpoint,
        rec->>'$.host' AS host,
        rec->>'$.status' AS status,
        rec->>'$.latency_ms' AS latency_ms,
        rec->>'$.cpu_pct' AS cpu_pct,
        rec->>'$.memory_mb' AS memory_mb,
        CASE WHEN rec IS NULL THEN 'malformed_json' END AS parse_error,
        CASE WHEN rec IS NULL THEN scrub(line) END AS raw_text
    FROM ({_PARSED})
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


def forget_partition(con, source: str, start: date, end: date) -> None:
    """Delete raw rows and file registrations for an arrival-day range (explicit re-ingest only)."""
    table, _ = SOURCES[source]
    con.execute(f"DELETE FROM {table.name} WHERE arrival_date BETWEEN ? AND ?", [start, end])
    con.execute(
        f"DELETE FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date BETWEEN ? AND ?",
        [source, start, end],
    )


def ingest_day(con, root, source: str, day: date, run_id: str, report: IngestReport) -> IngestReport:
    """Ingest every file that landed for ``source`` on ``day`` and is not registered yet."""
    table, select_sql = SOURCES[source]
    for landed in landing.list_files(root, source, day):
        known = con.execute(
            f"SELECT sha256 FROM {SOURCE_FILES.name} WHERE source = ? AND path = ?", [source, landed.relative]
        ).fetchone()
        if landed.format is None:
            report.files_unsupported.append(landed.relative)
            continue
        checksum = landing.sha256_of(landed.path)
        if known is not None:
            if known[0] != checksum:
                raise ValueError(
                    f"landing file {landed.relative} changed after it was ingested "
                    f"(sha256 {known[0][:12]}… -> {checksum[:12]}…); landed files are immutable: "
                    "deliver the correction under a new name"
                )
            report.files_already_known += 1
            continue
        ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)
        original = con.execute(
            f"SELECT path, rows FROM {SOURCE_FILES.name} WHERE source = ? AND sha256 = ? "
            "AND status = 'ingested' ORDER BY arrival_date, path LIMIT 1",
            [source, checksum],
        ).fetchone()
        con.execute("BEGIN TRANSACTION")
        try:
            if original is None:
                params = {"arrival_date": day, "source_file": landed.relative, "ingested_at": ingested_at}
                query = select_sql.replace("{records}", landing.records_sql(con, landed))
                rows = con.execute(f"INSERT INTO {table.name} BY NAME {query}", params).fetchone()[0]
                status, duplicate_of = "ingested", None
                report.files_ingested += 1
                report.rows_ingested += rows
                report.bytes_ingested += landed.bytes
            else:
                duplicate_of, rows = original
                status = "redelivered"
                report.files_redelivered += 1
                report.rows_redelivered += rows
            con.execute(
                f"INSERT INTO {SOURCE_FILES.name} BY NAME SELECT ? AS source, ? AS arrival_date, ? AS path, "
                "? AS format, ? AS sha256, ? AS bytes, ? AS rows, ? AS status, ? AS duplicate_of, "
                "? AS ingested_at, ? AS run_id",
                [source, day, landed.relative, landed.format, checksum, landed.bytes, rows, status,
                 duplicate_of, ingested_at, run_id],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return report
