"""Clean layer: typed, deduplicated rows, their quarantine (rows the contract rejected) and the re-deliveries."""

from de_assets.lib.drift import distribution_drift
from de_assets.lib.quality import keys_not_null, no_raw_pii, unique_key
from de_assets.lib.tables.model import _LINEAGE, _t

# Typed, deduplicated, pseudonymized Segment events; one row per messageId.
CLEAN_EVENTS = _t(
    "clean.events",
    "arrival_date",
    ("event_date", "DATE", "UTC day of event_ts: the day the event counts toward in the marts"),
    ("event_ts", "TIMESTAMP", "Event time in UTC, clock-skew corrected: receivedAt - (sentAt - timestamp)"),
    ("message_id", "VARCHAR", "Segment messageId; unique in this table"),
    ("type", "VARCHAR", "track, page, screen, identify, group or alias (trimmed, lower-case)"),
    ("event", "VARCHAR", "Track event name (trimmed); NULL for non-track types"),
    ("user_key", "VARCHAR", "The user: pseudonymized userId when known, else pseudonymized anonymousId"),
    ("user_id", "VARCHAR", "Pseudonymized userId"),
    ("anonymous_id", "VARCHAR", "Pseudonymized anonymousId"),
    ("sent_ts", "TIMESTAMP", "sentAt in UTC (device clock)"),
    ("received_ts", "TIMESTAMP", "receivedAt in UTC (server clock)"),
    ("clock_skew_seconds", "DOUBLE", "sentAt - receivedAt in seconds when both are known (device clock error + transit)"),
    ("revenue", "DOUBLE", "properties.revenue, else properties.total, as a number"),
    ("experiment_id", "VARCHAR", "properties.experiment_id of an Experiment Viewed event"),
    ("variant_id", "VARCHAR", "properties.variant_id of an Experiment Viewed event"),
    ("properties", "JSON", "properties object (scrubbed)"),
    ("context", "JSON", "context object (scrubbed)"),
    *_LINEAGE,
    key=("message_id",),
    checks=(unique_key, keys_not_null, no_raw_pii),
    warnings=(distribution_drift("type", "type"), distribution_drift("event", "event")),
)

# Typed, deduplicated request log samples.
CLEAN_REQUESTS = _t(
    "clean.requests",
    "arrival_date",
    ("event_date", "DATE", "UTC day of request_ts"),
    ("request_ts", "TIMESTAMP", "Request time in UTC"),
    ("record_id", "VARCHAR", "Fingerprint of the sample; unique in this table"),
    ("service", "VARCHAR", "Service (trimmed, lower-case)"),
    ("endpoint", "VARCHAR", "Endpoint (trimmed)"),
    ("host", "VARCHAR", "Host (trimmed)"),
    ("status", "INTEGER", "HTTP status code"),
    ("latency_ms", "DOUBLE", "Latency in milliseconds"),
    ("cpu_pct", "DOUBLE", "CPU percent, if reported"),
    ("memory_mb", "DOUBLE", "Memory in MB, if reported"),
    *_LINEAGE,
    key=("record_id",),
    checks=(unique_key, keys_not_null),
    warnings=(distribution_drift("service", "service"), distribution_drift("status // 100", "status_class")),
)

_QUARANTINE_COLS = (
    *_LINEAGE,
    ("reason", "VARCHAR", "Why the row was rejected: contract checks that failed, '; '-separated"),
    ("raw_row", "JSON", "The raw-layer row as JSON (pseudonymized, scrubbed)"),
    ("ingested_at", "TIMESTAMP", "UTC time the row was ingested into the raw layer"),
    ("status", "VARCHAR", "rejected: unparseable or failed the contract (see reason); held_back: passed the contract, "
     "but the quarantine-rate gate held its arrival day back (reason held_back:quarantine_rate; the day's "
     "previously served clean rows stay served)"),
)

# Event rows rejected by the contract, with the reason.
QUARANTINE_EVENTS = _t(
    "quarantine.events", "arrival_date", *_QUARANTINE_COLS,
    key=("arrival_date", "source_file", "line_no"),
    checks=(unique_key, no_raw_pii),
)
# Request rows rejected by the contract, with the reason.
QUARANTINE_REQUESTS = _t(
    "quarantine.requests", "arrival_date", *_QUARANTINE_COLS,
    key=("arrival_date", "source_file", "line_no"),
    checks=(unique_key, no_raw_pii),
)

_DUPLICATE_COLS = (
    *_LINEAGE,
    ("dedupe_key", "VARCHAR", "messageId (events) or record fingerprint (requests)"),
    ("conflict", "BOOLEAN", "The row's content differs from the original (first) delivery of its key: "
     "same id, different user or payload (see conflicting_fields)"),
    ("conflicting_fields", "VARCHAR", "Raw fields that differ from the original delivery, ', '-separated "
     "(field names only); NULL when the content is the same"),
)
# Re-delivered event rows (a later delivery of a known messageId), flagged when their content conflicts with the
# original delivery.
DUPLICATES_EVENTS = _t("clean.events_duplicates", "arrival_date", *_DUPLICATE_COLS)
# Re-delivered request rows.
DUPLICATES_REQUESTS = _t("clean.requests_duplicates", "arrival_date", *_DUPLICATE_COLS)
