"""Marts: the served daily analytics tables."""

from de_assets.lib.quality import funnel_monotonic, keys_not_null, rate_in_unit_interval, unique_key
from de_assets.lib.tables.model import _t

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
    checks=(unique_key, keys_not_null, rate_in_unit_interval("stickiness")),
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
    checks=(unique_key, keys_not_null, funnel_monotonic, rate_in_unit_interval("conversion_from_start")),
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
    checks=(unique_key, keys_not_null, rate_in_unit_interval("retention_rate")),
)

# Orders, revenue, paying users, ARPU and ARPPU per day.
REVENUE_DAILY = _t(
    "marts.revenue_daily",
    "event_date",
    ("event_date", "DATE", "UTC day"),
    ("orders", "BIGINT", "Order Completed events"),
    ("revenue", "DOUBLE", "Sum of properties.revenue (else properties.total) over orders, exact to the millionth"),
    ("paying_users", "BIGINT", "Users with an order on the day"),
    ("arpu", "DOUBLE", "revenue / dau (NULL when dau = 0)"),
    ("arppu", "DOUBLE", "revenue / paying_users (NULL when paying_users = 0)"),
    key=("event_date",),
    checks=(unique_key, keys_not_null),
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
    checks=(unique_key, keys_not_null, rate_in_unit_interval("error_rate")),
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
    checks=(unique_key, keys_not_null),
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
    checks=(unique_key, keys_not_null),
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
    checks=(unique_key, keys_not_null, rate_in_unit_interval("p_value"), rate_in_unit_interval("srm_p_value")),
)
