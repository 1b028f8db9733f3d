"""Every warehouse table in one place: name, columns, types, column docs, partition column.

The DDL that creates the tables and the `dagster/column_schema` metadata shown in the UI are both
derived from these definitions, so a column is documented exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from de_assets.lib.days import days_between


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class Table:
    name: str  # schema-qualified, e.g. "clean.events"
    columns: tuple[Column, ...]
    partition_column: str | None = None
    key: tuple[str, ...] = ()  # the grain: columns that identify a row

    @property
    def schema(self) -> str:
        return self.name.split(".")[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def weekly(self) -> bool:
        """Partitioned by week (`activity_week`, a Monday): a day's run rewrites the week holding it."""
        return self.partition_column == "activity_week"

    def partition_values(self, start: date, end: date) -> list[date]:
        """The partition values a run over the days [start, end] writes: those days, or for a weekly
        table the Monday of every week they touch."""
        if self.weekly:
            start, end = start - timedelta(days=start.weekday()), end - timedelta(days=end.weekday())
            step = 7
        else:
            step = 1
        return days_between(start, end)[::step]

    def range_predicate(self, start: str = "$start", end: str = "$end") -> str:
        """SQL: the rows of the partitions a run over the days [start, end] writes (SQL expressions
        or parameters, e.g. `$start` or `?`)."""
        if self.weekly:
            return (f"{self.partition_column} BETWEEN date_trunc('week', {start}::DATE) "
                    f"AND date_trunc('week', {end}::DATE)")
        return f"{self.partition_column} BETWEEN {start} AND {end}"

    def partition_of_day(self, day: str) -> str:
        """SQL: the partition value the day `day` (a SQL expression) belongs to."""
        return f"date_trunc('week', {day})" if self.weekly else f"{day}::DATE"

    def ddl(self) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n)"


def _t(name: str, partition_column: str | None, *cols: tuple[str, str, str], key=()) -> Table:
    return Table(name, tuple(Column(*c) for c in cols), partition_column, tuple(key))


_LINEAGE = (
    ("arrival_date", "DATE", "UTC day the source file landed (landing day folder); the partition"),
    ("source_file", "VARCHAR", "Landing file the row came from, relative to the landing root"),
    ("line_no", "BIGINT", "1-based row number inside the source file"),
)

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

# Cursor and circuit-breaker state of each HTTP API source.
HTTP_SOURCE_STATE = _t(
    "raw.http_source_state",
    None,
    ("source", "VARCHAR", "API source name"),
    ("cursor", "VARCHAR", "Cursor of the next page to fetch (NULL: from the start)"),
    ("consecutive_failures", "INTEGER", "Failed requests in a row"),
    ("open_until", "TIMESTAMP", "Circuit open until this UTC time (no request is made); NULL when closed"),
    ("updated_at", "TIMESTAMP", "UTC time of the last update"),
    key=("source",),
)

# API pages that stayed bad after every retry: what was asked, what came back. The cursor was not advanced.
HTTP_DEAD_LETTERS = _t(
    "raw.http_dead_letters",
    None,
    ("source", "VARCHAR", "API source name"),
    ("cursor", "VARCHAR", "Cursor of the page"),
    ("url", "VARCHAR", "Requested URL"),
    ("status", "INTEGER", "Last HTTP status (NULL: timeout or connection error)"),
    ("error", "VARCHAR", "Last error"),
    ("body_excerpt", "VARCHAR", "First 300 characters of the last response body"),
    ("failed_at", "TIMESTAMP", "UTC time"),
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
)

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
)
# Request rows rejected by the contract, with the reason.
QUARANTINE_REQUESTS = _t(
    "quarantine.requests", "arrival_date", *_QUARANTINE_COLS,
    key=("arrival_date", "source_file", "line_no"),
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

# Daily active users, trailing 7/30-day actives, stickiness, new vs returning, sessions, events.
DAILY_ENGAGEMENT = _t(
    "marts.daily_engagement",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("dau", "BIGINT", "Users with an event on the day"),
    ("wau", "BIGINT", "Users with an event in [d-6, d]"),
    ("mau", "BIGINT", "Users with an event in [d-29, d]"),
    ("stickiness", "DOUBLE", "dau / mau (NULL when mau = 0)"),
    ("new_users", "BIGINT", "Users whose first event ever is on the day"),
    ("returning_users", "BIGINT", "dau - new_users"),
    ("sessions", "BIGINT", "Sessions starting on the day (a session: a user's events with gaps <= 30 min)"),
    ("events", "BIGINT", "Clean, deduplicated events on the day"),
    key=("event_date",),
)

# Per day and funnel step: users who did steps 1..k in order that day, and conversion.
FUNNEL_DAILY = _t(
    "marts.funnel_daily",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("funnel", "VARCHAR", "Funnel name"),
    ("step_order", "INTEGER", "1-based position of the step"),
    ("step", "VARCHAR", "Step: a track event name, or Page for page events"),
    ("users", "BIGINT", "Users who did steps 1..k in order on the day"),
    ("conversion_from_previous", "DOUBLE", "users / users at step k-1 (1.0 at step 1; NULL when the base is 0)"),
    ("conversion_from_start", "DOUBLE", "users / users at step 1 (NULL when the base is 0)"),
    key=("event_date", "funnel", "step_order"),
)

# Weekly signup cohorts (week of first event) x weeks since: retained users and rate.
RETENTION_COHORTS = _t(
    "marts.retention_cohorts",
    "activity_week",
    ("cohort_week", "DATE", "Monday of the week of the users' first event"),
    ("weeks_since", "INTEGER", "k: weeks between cohort week and activity week"),
    ("cohort_size", "BIGINT", "Users whose first event is in cohort_week"),
    ("retained_users", "BIGINT", "Cohort users with an event in week cohort_week + 7k days"),
    ("retention_rate", "DOUBLE", "retained_users / cohort_size"),
    ("activity_week", "DATE", "cohort_week + 7k days: the week a daily partition rewrites"),
    key=("cohort_week", "weeks_since"),
)

# Orders, revenue, paying users, ARPU and ARPPU per day.
REVENUE_DAILY = _t(
    "marts.revenue_daily",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("orders", "BIGINT", "Order Completed events"),
    ("revenue", "DOUBLE", "Sum of properties.revenue (else properties.total) over orders"),
    ("paying_users", "BIGINT", "Users with an order on the day"),
    ("arpu", "DOUBLE", "revenue / dau (NULL when dau = 0)"),
    ("arppu", "DOUBLE", "revenue / paying_users (NULL when paying_users = 0)"),
    key=("event_date",),
)

# Requests, errors (status >= 500), error rate and continuous p50/p90/p99 latency per service per day.
SERVICE_LATENCY = _t(
    "marts.service_latency",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("service", "VARCHAR", "Service"),
    ("requests", "BIGINT", "Requests"),
    ("errors", "BIGINT", "Requests with status >= 500"),
    ("error_rate", "DOUBLE", "errors / requests"),
    ("p50_ms", "DOUBLE", "Median latency (quantile_cont)"),
    ("p90_ms", "DOUBLE", "90th percentile latency (quantile_cont)"),
    ("p99_ms", "DOUBLE", "99th percentile latency (quantile_cont)"),
    key=("event_date", "service"),
)

# Every headline KPI per day with relative change vs the previous day, week, month and year.
KPI_CHANGES = _t(
    "marts.kpi_changes",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("kpi", "VARCHAR", "KPI name"),
    ("value", "DOUBLE", "KPI value on the day"),
    ("dod", "DOUBLE", "value / value(d-1) - 1 (NULL where no base or base = 0)"),
    ("wow", "DOUBLE", "value / value(d-7) - 1"),
    ("mom", "DOUBLE", "value / value(d - 1 month) - 1"),
    ("yoy", "DOUBLE", "value / value(d - 1 year) - 1"),
    key=("event_date", "kpi"),
)

# Every headline KPI per day with the value the detector expected, a robust score and a flag.
KPI_ANOMALIES = _t(
    "marts.kpi_anomalies",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("kpi", "VARCHAR", "KPI name (as in marts.kpi_changes)"),
    ("value", "DOUBLE", "KPI value on the day"),
    ("expected", "DOUBLE", "Seasonal, outlier-robust expectation from days before (NULL: too little history)"),
    ("score", "DOUBLE", "(value - expected) / robust scale; positive above expected (NULL: not scored, see status)"),
    ("is_anomaly", "BOOLEAN", "Flagged by the detector (|score| above its threshold; docs/anomaly.md) on enough volume"),
    ("episode_start", "DATE", "For a flagged day, the first day of its run of consecutive flagged days (NULL otherwise)"),
    ("volume", "DOUBLE", "The count the KPI stands on (events, orders, requests or pipeline rows in): the larger of "
     "the day's and the median of the 28 days before"),
    ("status", "VARCHAR", "anomaly, normal, low_volume (volume below the minimum: never flagged), no_history "
     "(too little history to score), no_spread (history without any variation: no score) or no_value"),
    key=("event_date", "kpi"),
)

# A/B readouts as of each day: per experiment x variant x metric, exposed users, conversions, rate, lift vs control
# with CI and p-value, sample-ratio-mismatch p-value and crossover users.
EXPERIMENT_RESULTS = _t(
    "marts.experiment_results",
    "as_of_date",
    ("as_of_date", "DATE", "Readout as of the end of this UTC day (the partition)"),
    ("experiment_id", "VARCHAR", "properties.experiment_id of the Experiment Viewed events"),
    ("variant_id", "VARCHAR", "properties.variant_id"),
    ("metric", "VARCHAR", "Conversion metric (e.g. purchase = Order Completed) or revenue_per_user"),
    ("is_control", "BOOLEAN", "The variant the others are compared with"),
    ("users", "BIGINT", "Exposed users in this variant (crossover users excluded)"),
    ("conversions", "BIGINT", "Users who converted after their first exposure within the window (revenue: paying users)"),
    ("rate", "DOUBLE", "conversions / users (revenue_per_user: mean revenue per exposed user)"),
    ("abs_lift", "DOUBLE", "rate - control rate (NULL for the control)"),
    ("rel_lift", "DOUBLE", "abs_lift / control rate"),
    ("ci_low", "DOUBLE", "Lower bound of the (1 - alpha) confidence interval of abs_lift"),
    ("ci_high", "DOUBLE", "Upper bound of the (1 - alpha) confidence interval of abs_lift"),
    ("p_value", "DOUBLE", "Two-sided p-value (pooled two-proportion z-test; Welch t-test for revenue)"),
    ("srm_p_value", "DOUBLE", "Chi-square p-value of users per variant vs the planned split"),
    ("srm_flag", "BOOLEAN", "srm_p_value < 0.001: sample ratio mismatch, readout not trustworthy"),
    ("crossover_users", "BIGINT", "Users seen in more than one variant (excluded everywhere)"),
    ("method", "VARCHAR", "Test used"),
    ("alpha", "DOUBLE", "Significance level"),
    ("window_days", "INTEGER", "Attribution window after the first exposure"),
    ("cuped", "BOOLEAN", "Whether CUPED variance reduction (pre-exposure covariate) was applied"),
    key=("as_of_date", "experiment_id", "variant_id", "metric"),
)

# The pipeline's own KPIs: one row per partition x asset x run, appended by every step as it finishes.
PARTITION_KPIS = _t(
    "pipeline_health.partition_kpis",
    "partition",
    ("partition", "DATE", "Daily partition (arrival day for raw/clean, event day for marts)"),
    ("asset", "VARCHAR", "Asset key, e.g. clean/clean_events"),
    ("run_id", "VARCHAR", "Dagster run that materialized it"),
    ("rows_in", "BIGINT", "Rows the step read for this partition (raw rows for cleaning, written rows elsewhere)"),
    ("rows_out", "BIGINT", "Rows the step wrote for this partition"),
    ("rows_quarantined", "BIGINT", "Rows rejected into quarantine (cleaning; 0 elsewhere)"),
    ("rows_duplicate", "BIGINT", "Rows counted as duplicates (cleaning; 0 elsewhere)"),
    ("seconds", "DOUBLE", "Step wall time apportioned to this partition by its share of rows_in"),
    ("rows_per_second", "DOUBLE", "Step throughput: rows_in / step seconds"),
    ("freshness_seconds", "DOUBLE", "Data freshness: seconds from the newest event of the partition to availability"),
    ("recorded_at", "TIMESTAMP", "UTC time the row was written"),
    key=("partition", "asset", "run_id"),
)

# Per partition and SLO: target, measured value, met or breached, and the error budget burnt over 28 days.
SLO_STATUS = _t(
    "pipeline_health.slo_status",
    "partition",
    ("partition", "DATE", "Daily partition the SLO was evaluated for"),
    ("slo", "VARCHAR", "freshness_hours, completeness, quarantine_rate or duplicate_rate"),
    ("target", "DOUBLE", "Target value (configurable, `SloTargets`)"),
    ("comparison", "VARCHAR", "'<=' when lower is better, '>=' when higher is better"),
    ("actual", "DOUBLE", "Measured value for the partition (NULL when it cannot be measured yet)"),
    ("status", "VARCHAR", "met, breached, not_applicable (too little volume to judge), no_data or backfill"),
    ("breached_days_28d", "INTEGER", "Partitions breaching this SLO in the 28 days ending here"),
    ("error_budget_days", "DOUBLE", "Breaches allowed in 28 days: 28 x (1 - objective)"),
    ("budget_burn", "DOUBLE", "breached_days_28d / error_budget_days (above 1: budget exhausted)"),
    ("evaluated_at", "TIMESTAMP", "UTC time of evaluation"),
    key=("partition", "slo"),
)

# A/B tests of pipeline configurations: one measurement per experiment x arm x repetition x metric.
CONFIG_EXPERIMENTS = _t(
    "pipeline_health.config_experiments",
    None,
    ("experiment_id", "VARCHAR", "Name of the experiment run"),
    ("run_at", "TIMESTAMP", "UTC time the experiment finished"),
    ("arm", "VARCHAR", "A (baseline) or B (candidate)"),
    ("flags", "VARCHAR", "The arm's feature flags as JSON"),
    ("repetition", "INTEGER", "1-based repetition"),
    ("metric", "VARCHAR", "wall_seconds, ingest_seconds, clean_seconds, marts_seconds, rows_per_second, bytes_stored, quarantine_rate"),
    ("value", "DOUBLE", "Measured value"),
    ("identical_tables", "BOOLEAN", "Every arm and repetition served identical tables"),
    key=("experiment_id", "arm", "repetition", "metric"),
)

# Audit of forget-user (erasure) requests: who, when, rows deleted per table. Never the user id.
FORGET_AUDIT = _t(
    "pipeline_health.forget_audit",
    None,
    ("request_id", "VARCHAR", "Forget request (pipeline_health.forget_requests)"),
    ("requested_at", "TIMESTAMP", "UTC time of the deletion"),
    ("requested_by", "VARCHAR", "Who asked (run config `requested_by`)"),
    ("subject_hash", "VARCHAR", "SHA-256 of the user's pseudonym: checkable given the id and key, not reversible"),
    ("table_name", "VARCHAR", "Table rows were deleted from"),
    ("rows_deleted", "BIGINT", "Rows deleted"),
    ("first_event_day", "DATE", "Earliest event day of the user's clean events (marts re-served from here)"),
    ("last_event_day", "DATE", "Latest event day of the user's clean events"),
    key=("request_id", "table_name"),
)

# Forget-user (erasure) requests and the suppression list: every request not `no_match` keeps the subject's rows out
# of every later ingest and re-ingest. Only the keyed pseudonym, never the id.
FORGET_REQUESTS = _t(
    "pipeline_health.forget_requests",
    None,
    ("request_id", "VARCHAR", "Opaque request id: the only thing the Dagster run config carries"),
    ("requested_at", "TIMESTAMP", "UTC time the request was recorded"),
    ("requested_by", "VARCHAR", "Who asked (`--requested-by`)"),
    ("pseudonym", "VARCHAR", "Keyed HMAC of the user id (the same value as raw user_id/anonymous_id)"),
    ("key_fingerprint", "VARCHAR", "Identifies the pseudonymization key the pseudonym was made with (not the key)"),
    ("status", "VARCHAR", "pending, erased, suppressed (no row matched, suppression recorded on purpose) or no_match"),
    ("run_id", "VARCHAR", "Dagster run of forget_user_job that executed it"),
    ("completed_at", "TIMESTAMP", "UTC time the erasure finished"),
    ("rows_deleted", "BIGINT", "Rows deleted over every table"),
    key=("request_id",),
)

# What each retention run deleted, per table, and which days it kept because a run still needed them.
RETENTION_LOG = _t(
    "pipeline_health.retention_log",
    "cutoff",
    ("run_id", "VARCHAR", "Dagster run of the retention job"),
    ("run_at", "TIMESTAMP", "UTC time of the deletion"),
    ("layer", "VARCHAR", "raw, clean or marts"),
    ("table_name", "VARCHAR", "Table the rows were deleted from"),
    ("cutoff", "DATE", "First day kept: partitions before it were deleted"),
    ("rows_deleted", "BIGINT", "Rows deleted"),
    ("days_kept_for_runs", "VARCHAR", "Days older than the cutoff kept because a queued or running run needs them"),
    key=("run_id", "table_name"),
)

# Every alert raised, once per dedupe key: first and last time seen and how often.
ALERTS = _t(
    "pipeline_health.alerts",
    None,
    ("dedupe_key", "VARCHAR", "Identity of the problem; the same key never pages twice"),
    ("severity", "VARCHAR", "critical, error or warning"),
    ("kind", "VARCHAR", "check_failed, slo_breach, kpi_anomaly, run_failure or stale_partition"),
    ("asset", "VARCHAR", "Asset key the alert is about (or the job for run failures)"),
    ("partition", "VARCHAR", "Partition (or range) the alert is about"),
    ("message", "VARCHAR", "What is wrong, in one sentence"),
    ("run_id", "VARCHAR", "Run that raised it first"),
    ("first_seen", "TIMESTAMP", "UTC time first raised"),
    ("last_seen", "TIMESTAMP", "UTC time last raised"),
    ("occurrences", "INTEGER", "How many times it was raised"),
    ("webhook_status", "VARCHAR", "not_configured, delivered or failed (after retries)"),
    key=("dedupe_key",),
)

ALL_TABLES: tuple[Table, ...] = (
    SOURCE_FILES,
    FORGOTTEN_ROWS,
    HTTP_SOURCE_STATE,
    HTTP_DEAD_LETTERS,
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


def ensure_tables(con) -> None:
    """Create every schema and table that does not exist yet, and add the columns a table of an
    older warehouse lacks (columns are only ever added, never changed; idempotent)."""
    for schema in dict.fromkeys(t.schema for t in ALL_TABLES):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in ALL_TABLES:
        con.execute(table.ddl())
    # Columns added since a warehouse was created (CREATE TABLE IF NOT EXISTS keeps the old shape).
    existing = set(con.execute(
        "SELECT table_schema || '.' || table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database()"
    ).fetchall())
    for table in ALL_TABLES:
        for column in table.columns:
            if (f"{table.name}.{column.name}",) not in existing:
                con.execute(f'ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS "{column.name}" {column.type}')
