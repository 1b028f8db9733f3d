"""Served tables, computed in DuckDB SQL from the clean layer for an event-day range.

Every query takes ``$start`` and ``$end`` (DATE, inclusive) and yields exactly the rows of those
days, so one pass computes one partition or a whole backfill range. Trailing windows (WAU, MAU,
first-seen, sessions crossing midnight, retention) read clean data, never other partitions'
outputs, so a partition's result depends only on data. Definitions: docs/contracts.md.

Each mart's asset in `assets/analytics.py` names its table (`lib/tables/marts.py`: columns, key,
checks) and its query here, e.g. `_mart(DAILY_ENGAGEMENT, ..., sql=marts.DAILY_ENGAGEMENT_SQL)`;
funnel_daily's query depends on the configured funnels (`funnel_sql`), kpi_anomalies is computed
in pandas (`kpi_anomalies`).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from de_assets.anomaly import detect, episodes
from de_assets.lib import staged
from de_assets.lib.health import HEALTH_SERIES_SQL
from de_assets.lib.sql import literal, transaction
from de_assets.lib.tables import (
    DAILY_ENGAGEMENT,
    KPI_ANOMALIES,
    REVENUE_DAILY,
    SERVICE_LATENCY,
    Table,
)

DEFAULT_FUNNELS: dict[str, list[str]] = {
    "checkout": ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"],
}
SESSION_GAP_MINUTES = 30
# The longest trailing window a mart row of day d reads (MAU: d - 29 .. d): a change in the clean
# rows of event day e can change the marts of e .. e + TRAILING_WINDOW_DAYS - 1.
TRAILING_WINDOW_DAYS = 30
# Reads of the whole history, declared as "every earlier day" (ten years: longer than any history kept):
# kpi_anomalies scores day d against the KPI history before it (de_assets.anomaly's windows reach back
# months: a level, seasonal slots over weeks, a scale over past errors; an episode can run on), and
# new_users / retention cohorts depend on each user's first event day ever.
HISTORY_DAYS = 10 * 366

_DAYS = "SELECT unnest(generate_series($start::DATE, $end::DATE, INTERVAL 1 DAY))::DATE AS event_date"

DAILY_ENGAGEMENT_SQL = f"""
WITH days AS ({_DAYS}),
user_days AS (
    SELECT DISTINCT user_key, event_date FROM clean.events
    WHERE event_date BETWEEN $start::DATE - 29 AND $end::DATE
),
actives AS (
    SELECT d.event_date,
           count(DISTINCT u.user_key) FILTER (WHERE u.event_date = d.event_date) AS dau,
           count(DISTINCT u.user_key) FILTER (WHERE u.event_date >= d.event_date - 6) AS wau,
           count(DISTINCT u.user_key) AS mau
    FROM days d LEFT JOIN user_days u ON u.event_date BETWEEN d.event_date - 29 AND d.event_date
    GROUP BY d.event_date
),
first_seen AS (
    SELECT user_key, min(event_date) AS first_date FROM clean.events
    WHERE user_key IN (SELECT user_key FROM user_days WHERE event_date BETWEEN $start AND $end)
    GROUP BY user_key
),
new_users AS (
    SELECT first_date AS event_date, count(*) AS new_users FROM first_seen
    WHERE first_date BETWEEN $start AND $end GROUP BY 1
),
recent AS (
    SELECT user_key, event_ts, event_ts::DATE AS event_date FROM clean.events
    WHERE event_date BETWEEN $start::DATE - 1 AND $end::DATE
      AND event_ts >= $start::TIMESTAMP - INTERVAL {SESSION_GAP_MINUTES} MINUTE
),
gaps AS (
    SELECT event_date, event_ts - lag(event_ts) OVER (PARTITION BY user_key ORDER BY event_ts) AS gap
    FROM recent
),
daily AS (
    SELECT event_date,
           count(*) FILTER (WHERE gap IS NULL OR gap > INTERVAL {SESSION_GAP_MINUTES} MINUTE) AS sessions,
           count(*) AS events
    FROM gaps WHERE event_date BETWEEN $start AND $end GROUP BY 1
)
SELECT a.event_date, a.dau, a.wau, a.mau,
       a.dau / nullif(a.mau, 0) AS stickiness,
       coalesce(n.new_users, 0) AS new_users,
       a.dau - coalesce(n.new_users, 0) AS returning_users,
       coalesce(s.sessions, 0) AS sessions,
       coalesce(s.events, 0) AS events
FROM actives a
LEFT JOIN new_users n USING (event_date)
LEFT JOIN daily s USING (event_date)
"""


def funnel_sql(funnels: dict[str, list[str]]) -> str:
    """Users who did steps 1..k in order on the day (earliest match of each step after the previous).

    Greedy earliest matching is exact for "did the steps in order": if any in-order sequence exists,
    the one built from each step's earliest occurrence after the previous step is one too.
    A `page` event is the step named `Page`; a tie in time counts as in order.
    """
    parts = []
    for funnel, steps in funnels.items():
        names = ", ".join(literal(s) for s in steps)
        ctes = [
            f"""ev AS (
                SELECT event_date, user_key, event_ts, CASE WHEN type = 'page' THEN 'Page' ELSE event END AS step
                FROM clean.events
                WHERE event_date BETWEEN $start AND $end
                  AND (CASE WHEN type = 'page' THEN 'Page' WHEN type = 'track' THEN event END) IN ({names})
            )""",
            f"s1 AS (SELECT event_date, user_key, min(event_ts) AS t FROM ev WHERE step = {literal(steps[0])} GROUP BY ALL)",
        ]
        for k in range(2, len(steps) + 1):
            ctes.append(
                f"""s{k} AS (
                SELECT e.event_date, e.user_key, min(e.event_ts) AS t
                FROM ev e JOIN s{k - 1} p ON e.event_date = p.event_date AND e.user_key = p.user_key AND e.event_ts >= p.t
                WHERE e.step = {literal(steps[k - 1])} GROUP BY ALL)"""
            )
        counts = " UNION ALL ".join(
            f"SELECT event_date, {k} AS step_order, count(*) AS users FROM s{k} GROUP BY 1"
            for k in range(1, len(steps) + 1)
        )
        step_rows = ", ".join(f"({k}, {literal(s)})" for k, s in enumerate(steps, start=1))
        ctes.append(f"counts AS ({counts})")
        ctes.append(f"grid AS (SELECT * FROM ({_DAYS}) CROSS JOIN (VALUES {step_rows}) AS s(step_order, step))")
        parts.append(
            f"""(WITH {", ".join(ctes)},
            filled AS (
                SELECT g.event_date, g.step_order, g.step, coalesce(c.users, 0) AS users
                FROM grid g LEFT JOIN counts c USING (event_date, step_order)
            )
            SELECT event_date, {literal(funnel)} AS funnel, step_order, step, users,
                   CASE WHEN step_order = 1 THEN CASE WHEN users > 0 THEN 1.0 END
                        ELSE users / nullif(lag(users) OVER w, 0) END AS conversion_from_previous,
                   users / nullif(first_value(users) OVER w, 0) AS conversion_from_start
            FROM filled
            WINDOW w AS (PARTITION BY event_date ORDER BY step_order))"""
        )
    return "\nUNION ALL\n".join(parts)


RETENTION_SQL = """
WITH weeks AS (
    SELECT DISTINCT date_trunc('week', d)::DATE AS activity_week
    FROM generate_series($start::DATE, $end::DATE, INTERVAL 1 DAY) AS t(d)
),
first_seen AS (
    SELECT user_key, date_trunc('week', min(event_date))::DATE AS cohort_week FROM clean.events GROUP BY user_key
),
cohorts AS (SELECT cohort_week, count(*) AS cohort_size FROM first_seen GROUP BY 1),
active AS (
    SELECT DISTINCT date_trunc('week', event_date)::DATE AS activity_week, user_key FROM clean.events
    WHERE event_date BETWEEN (SELECT min(activity_week) FROM weeks) AND (SELECT max(activity_week) + 6 FROM weeks)
),
retained AS (
    SELECT f.cohort_week, a.activity_week, count(*) AS retained_users
    FROM active a JOIN first_seen f USING (user_key) GROUP BY ALL
)
SELECT c.cohort_week,
       (date_diff('day', c.cohort_week, w.activity_week) // 7)::INTEGER AS weeks_since,
       c.cohort_size,
       coalesce(r.retained_users, 0) AS retained_users,
       coalesce(r.retained_users, 0) / c.cohort_size AS retention_rate,
       w.activity_week
FROM weeks w
JOIN cohorts c ON c.cohort_week <= w.activity_week
LEFT JOIN retained r ON r.cohort_week = c.cohort_week AND r.activity_week = w.activity_week
"""

REVENUE_DAILY_SQL = f"""
WITH days AS ({_DAYS}),
-- revenue summed exactly (DECIMAL, to the millionth): a parallel floating-point sum depends on the order
-- rows are added in, and re-runs of a 30-day backfill differed in the last digits (96524.96999999961
-- and 96524.97000000079), enough to report the day as changed and re-serve the comparisons after it
orders AS (
    SELECT event_date, count(*) AS orders, sum(revenue::DECIMAL(38, 6))::DOUBLE AS revenue,
           count(DISTINCT user_key) AS paying_users
    FROM clean.events
    WHERE event_date BETWEEN $start AND $end AND type = 'track' AND event = 'Order Completed'
    GROUP BY 1
),
actives AS (
    SELECT event_date, count(DISTINCT user_key) AS dau FROM clean.events
    WHERE event_date BETWEEN $start AND $end GROUP BY 1
)
SELECT d.event_date,
       coalesce(o.orders, 0) AS orders,
       coalesce(o.revenue, 0.0) AS revenue,
       coalesce(o.paying_users, 0) AS paying_users,
       coalesce(o.revenue, 0.0) / nullif(a.dau, 0) AS arpu,
       o.revenue / nullif(o.paying_users, 0) AS arppu
FROM days d LEFT JOIN orders o USING (event_date) LEFT JOIN actives a USING (event_date)
"""

SERVICE_LATENCY_SQL = """
SELECT event_date, service, requests, errors, errors / requests AS error_rate,
       q[1] AS p50_ms, q[2] AS p90_ms, q[3] AS p99_ms
FROM (
    SELECT event_date, service, count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors,
           quantile_cont(latency_ms, [0.5, 0.9, 0.99]) AS q
    FROM clean.requests WHERE event_date BETWEEN $start AND $end
    GROUP BY ALL
)
"""

HEADLINE_KPIS: dict[Table, list[str]] = {
    DAILY_ENGAGEMENT: ["dau", "wau", "mau", "stickiness", "new_users", "returning_users", "sessions", "events"],
    REVENUE_DAILY: ["orders", "revenue", "paying_users", "arpu", "arppu"],
}


def _kpi_long_sql() -> str:
    parts = []
    for table, kpis in HEADLINE_KPIS.items():
        casts = ", ".join(f"{k}::DOUBLE AS {k}" for k in kpis)
        parts.append(
            f"SELECT event_date, kpi, value FROM (SELECT event_date, {casts} FROM {table.name}) "
            f"UNPIVOT INCLUDE NULLS (value FOR kpi IN ({', '.join(kpis)}))"
        )
    parts.append(
        "SELECT event_date, kpi, value FROM (SELECT event_date, sum(requests)::DOUBLE AS requests, "
        f"sum(errors) / sum(requests) AS error_rate FROM {SERVICE_LATENCY.name} GROUP BY 1) "
        "UNPIVOT INCLUDE NULLS (value FOR kpi IN (requests, error_rate))"
    )
    return "\nUNION ALL\n".join(parts)


KPI_CHANGES_SQL = f"""
WITH kpis AS ({_kpi_long_sql()})
SELECT c.event_date, c.kpi, c.value,
       c.value / nullif(d.value, 0) - 1 AS dod,
       c.value / nullif(w.value, 0) - 1 AS wow,
       c.value / nullif(m.value, 0) - 1 AS mom,
       c.value / nullif(y.value, 0) - 1 AS yoy
FROM kpis c
LEFT JOIN kpis d ON d.kpi = c.kpi AND d.event_date = c.event_date - 1
LEFT JOIN kpis w ON w.kpi = c.kpi AND w.event_date = c.event_date - 7
LEFT JOIN kpis m ON m.kpi = c.kpi AND m.event_date = (c.event_date - INTERVAL 1 MONTH)::DATE
LEFT JOIN kpis y ON y.kpi = c.kpi AND y.event_date = (c.event_date - INTERVAL 1 YEAR)::DATE
WHERE c.event_date BETWEEN $start AND $end
"""


def replace_range(con, table: Table, select_sql: str, start: date, end: date) -> int:
    """Delete the table's rows for [start, end] and insert the query's rows, in one transaction.

    A weekly table (retention, keyed by activity week) has the weeks that contain the range rewritten.
    A mart kept in the lake is written in the connection's staging overlay (`lib/staged.py`), which
    the step publishes once its checks passed. Returns the number of rows written.
    """
    rows = staged.target(con, table, table.partition_values(start, end))
    with transaction(con):
        con.execute(f"DELETE FROM {rows} WHERE {table.range_predicate('?', '?')}", [start, end])
        written = con.execute(
            f"INSERT INTO {rows} BY NAME {select_sql}", {"start": start, "end": end}
        ).fetchone()[0]
    return written


# The count each KPI stands on: an anomaly of a KPI is alerted only when this count is large enough.
VOLUME_OF = {
    **dict.fromkeys(("orders", "revenue", "arpu", "arppu", "paying_users"), "orders"),
    **dict.fromkeys(("requests", "error_rate"), "requests"),
}
VOLUME_DAYS = 28  # the trailing window whose median volume keeps a sudden drop alertable
ABSOLUTE_SCALE_FLOOR = 1e-9  # de_assets.anomaly: a scale at this floor means "no spread in the history"


def volume_kpi(kpi: str) -> str:
    """The KPI whose value is the count behind `kpi` (pipeline series: rows in; else events)."""
    if kpi.startswith("pipeline."):
        return "pipeline.rows_in"
    return VOLUME_OF.get(kpi, "events")


def _volumes(history: pd.DataFrame) -> pd.DataFrame:
    """Per (ts, base KPI): max(the day's count, median of the 28 days before), so a day far below
    a large usual volume (an outage) stays alertable while a sparse history never is."""
    out = []
    for kpi in sorted({volume_kpi(k) for k in history["kpi"].unique()}):
        series = history[history["kpi"] == kpi].set_index("ts")["value"].astype(float).sort_index()
        if series.empty:
            continue
        before = series.rolling(f"{VOLUME_DAYS}D", closed="left").median()
        out.append(pd.DataFrame({"ts": series.index, "base": kpi,
                                 "volume": np.fmax(series.to_numpy(), before.to_numpy())}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["ts", "base", "volume"])


def classify(scored: pd.DataFrame, min_volume: float) -> pd.DataFrame:
    """`status` and the final `is_anomaly` of scored rows (columns value, expected, score,
    is_anomaly, volume): a row without a value or a score is never an anomaly; a score whose
    scale sat at the detector's absolute floor (a history without any variation, e.g. always 0)
    is meaningless (it would read 1e9) and is set to NULL with status no_spread; a flag on a KPI
    whose volume is below `min_volume` is not an anomaly (low_volume)."""
    out = scored.copy()
    value, expected, score = (pd.to_numeric(out[c], errors="coerce").astype(float) for c in ("value", "expected", "score"))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (value - expected).abs() / score.abs()
    no_spread = score.notna() & (score != 0) & (value != expected) & (scale <= ABSOLUTE_SCALE_FLOOR * (1 + 1e-6))
    low = ~(pd.to_numeric(out["volume"], errors="coerce").fillna(0) >= min_volume)
    status = np.select(
        [value.isna(), expected.isna() | score.isna(), no_spread, low, out["is_anomaly"].fillna(False).astype(bool)],
        ["no_value", "no_history", "no_spread", "low_volume", "anomaly"],
        default="normal",
    )
    out["status"] = status
    out["score"] = score.mask(no_spread)
    out["is_anomaly"] = status == "anomaly"
    return out


def kpi_anomalies(con, start: date, end: date, min_volume: float = 100.0) -> int:
    """Score each KPI of [start, end] against its own history (days before it): the headline KPIs
    of kpi_changes and the pipeline-health series (`pipeline.rows_in`, `.quarantine_rate`,
    `.duplicate_rate` per arrival day, from the KPI rows the cleaning steps record).

    Small data (days x KPIs), so the series go to pandas for `de_assets.anomaly.detect`, which
    uses only points before t: re-running a day gives the same result whatever came later. A flag
    counts (`is_anomaly`) only on enough volume (`classify`, `min_volume`). Consecutive flagged
    days of a KPI are one episode (`de_assets.anomaly.episodes`): each flagged row carries the
    first day of its episode in `episode_start`, which the alerts are keyed on.
    """
    history = con.execute(
        f"""SELECT event_date AS ts, kpi, value FROM (
                SELECT event_date, kpi, value FROM marts.kpi_changes
                UNION ALL {HEALTH_SERIES_SQL})
            WHERE event_date <= ? ORDER BY kpi, ts""",
        [end],
    ).df()
    volumes = _volumes(history)
    scored = []
    for kpi, series in history.groupby("kpi", sort=True):
        frame = detect(series).assign(kpi=kpi, base=volume_kpi(kpi))
        frame = frame.merge(volumes, on=["ts", "base"], how="left").drop(columns="base")
        scored.append(episodes(classify(frame, min_volume)))
    frame = history.iloc[0:0].assign(expected=0.0, score=0.0, is_anomaly=False, episode_start=pd.NaT,
                                      volume=0.0, status="")
    if scored:
        frame = pd.concat(scored, ignore_index=True)
    frame = frame[frame["ts"].dt.date.between(start, end)].rename(columns={"ts": "event_date"})
    con.register("_kpi_anomalies_df", frame)
    try:
        return replace_range(
            con, KPI_ANOMALIES,
            "SELECT event_date::DATE AS event_date, kpi, value, expected, score, coalesce(is_anomaly, false) AS is_anomaly, "
            "episode_start::DATE AS episode_start, volume::DOUBLE AS volume, status "
            "FROM _kpi_anomalies_df WHERE $start::DATE <= event_date::DATE AND event_date::DATE <= $end::DATE",
            start, end,
        )
    finally:
        con.unregister("_kpi_anomalies_df")

