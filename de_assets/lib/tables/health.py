"""pipeline_health: the pipeline's own KPIs, SLOs, experiments, erasure and retention audit, alerts."""

from de_assets.lib.tables.model import _t

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

# Every alert raised, once per dedupe key: first and last time seen and how often. Kept in the catalog's
# SQL database (`lib/ops_store.py`), so raising one never waits for the warehouse file; published to the lake.
ALERTS = _t(
    "pipeline_health.alerts",
    None,
    ("dedupe_key", "VARCHAR", "Identity of the problem; the same key never pages twice"),
    ("severity", "VARCHAR", "critical, error or warning"),
    ("kind", "VARCHAR", "check_failed, slo_breach, kpi_anomaly, run_failure, stale_partition or bad_file"),
    ("asset", "VARCHAR", "Asset key the alert is about (or the job for run failures)"),
    ("partition", "VARCHAR", "Partition (or range) the alert is about"),
    ("message", "VARCHAR", "What is wrong, in one sentence"),
    ("run_id", "VARCHAR", "Run that raised it first"),
    ("first_seen", "TIMESTAMP", "UTC time first raised"),
    ("last_seen", "TIMESTAMP", "UTC time last raised"),
    ("occurrences", "INTEGER", "How many times it was raised"),
    ("webhook_status", "VARCHAR", "not_configured, delivered, failed (after retries), or sending (the POST had not finished)"),
    key=("dedupe_key",),
)
