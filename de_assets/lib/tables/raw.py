"""Raw layer: the landed rows as received (pseudonymized, scrubbed), the file register and the state of the
HTTP API sources."""

from de_assets.lib.drift import source_schema_change, volume_vs_trailing_weeks
from de_assets.lib.tables.model import _LINEAGE, _t

# One row per landed file: checksum, row count, format and whether it was a re-delivery.
SOURCE_FILES = _t(
    "raw.source_files",
    "arrival_date",
    ("source", "VARCHAR", "Landing source: events or requests"),
    ("arrival_date", "DATE", "UTC day folder the file landed in"),
    ("path", "VARCHAR", "File path relative to the landing root"),
    ("format", "VARCHAR", "ndjson, ndjson.gz, json, csv or parquet"),
    ("sha256", "VARCHAR", "SHA-256 of the file bytes"),
    ("bytes", "BIGINT", "File size in bytes"),
    ("rows", "BIGINT", "Raw rows from the file, readable or not (for a re-delivery: rows of the original)"),
    ("status", "VARCHAR", "ingested; partial (some records unreadable) or rejected (none readable), their "
     "rows quarantined; redelivered (an identical file was ingested before); refused (not read: a link "
     "leaving the landing root, not a regular file, or an unsupported extension)"),
    ("reason", "VARCHAR", "Why a file is partial, rejected or refused (names the kind of fault, never content)"),
    ("duplicate_of", "VARCHAR", "For a re-delivery: path of the file first ingested with this checksum"),
    ("ingested_at", "TIMESTAMP", "UTC time the file was registered"),
    ("run_id", "VARCHAR", "Dagster run that registered the file"),
    key=("source", "path"),
)

# Segment events as landed, pseudonymized and scrubbed of free PII; immutable, replayable.
RAW_EVENTS = _t(
    "raw.events",
    "arrival_date",
    *_LINEAGE,
    ("ingested_at", "TIMESTAMP", "UTC time the row was ingested"),
    ("message_id", "VARCHAR", "Segment messageId as sent (the dedupe key)"),
    ("type", "VARCHAR", "Segment type as sent (not yet normalized)"),
    ("event", "VARCHAR", "Track event name as sent"),
    ("user_id", "VARCHAR", "HMAC-SHA256 pseudonym of userId (never the plain id)"),
    ("anonymous_id", "VARCHAR", "HMAC-SHA256 pseudonym of anonymousId"),
    ("timestamp", "VARCHAR", "timestamp as sent"),
    ("sent_at", "VARCHAR", "sentAt as sent"),
    ("received_at", "VARCHAR", "receivedAt as sent"),
    ("original_timestamp", "VARCHAR", "originalTimestamp as sent"),
    ("properties", "JSON", "properties object, e-mails redacted, IPv4 truncated"),
    ("context", "JSON", "context object, ip truncated, traits PII removed"),
    ("extra", "JSON", "Every other top-level field (integrations, channel, traits without PII, ...)"),
    ("parse_error", "VARCHAR", "Why the row could not be parsed (e.g. malformed_json), else NULL"),
    ("raw_text", "VARCHAR", "The unparseable line, scrubbed, when parse_error is set"),
    warnings=(volume_vs_trailing_weeks, source_schema_change),
)

# Raw rows removed by forget-user requests (erased, or dropped at ingest by the suppression list), per landed file and
# request, so the accounting identity still holds.
FORGOTTEN_ROWS = _t(
    "raw.forgotten_rows",
    "arrival_date",
    ("source", "VARCHAR", "Landing source"),
    ("arrival_date", "DATE", "Arrival day of the removed rows"),
    ("source_file", "VARCHAR", "Landing file they came from"),
    ("rows", "BIGINT", "Rows removed"),
    ("request_id", "VARCHAR", "Forget request (pipeline_health.forget_requests) that removed or suppressed them"),
    key=("request_id", "arrival_date", "source_file"),
)

# Operational request log samples as landed; immutable, replayable.
RAW_REQUESTS = _t(
    "raw.requests",
    "arrival_date",
    *_LINEAGE,
    ("ingested_at", "TIMESTAMP", "UTC time the row was ingested"),
    ("record_id", "VARCHAR", "Fingerprint of the sample's fields (the dedupe key)"),
    ("timestamp", "VARCHAR", "timestamp as sent: ISO-8601 or epoch seconds/milliseconds"),
    ("service", "VARCHAR", "Service name as sent"),
    ("endpoint", "VARCHAR", "Endpoint as sent"),
    ("host", "VARCHAR", "Host as sent"),
    ("status", "VARCHAR", "HTTP status as sent"),
    ("latency_ms", "VARCHAR", "Latency in milliseconds as sent"),
    ("cpu_pct", "VARCHAR", "CPU percent as sent"),
    ("memory_mb", "VARCHAR", "Memory in MB as sent"),
    ("parse_error", "VARCHAR", "Why the row could not be parsed, else NULL"),
    ("raw_text", "VARCHAR", "The unparseable line, scrubbed, when parse_error is set"),
    warnings=(volume_vs_trailing_weeks, source_schema_change),
)
