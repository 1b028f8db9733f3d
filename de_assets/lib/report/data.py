"""What the report of one day reads from the warehouse, cut at the as-of day.

Every page is cut at its `day`: a page built after later days were loaded shows what was known at
the end of `day`, nothing newer. A range of pages reads each table once over the whole range and
cuts it per page in Python (`load_range`), with the same bounds per page as a query of its own.
Retention is the one table keyed by week: an activity week is shown once it is complete (its
Sunday <= day), because the mart's row for the week in progress is rewritten by each later day of
that week and would show days after `day`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from de_assets.lib.health import LATEST_KPIS

RETENTION_WEEKS = 12  # cohorts shown: the weeks starting in the 12 weeks before the day


@dataclass
class ReportData:
    day: date
    start: date  # first day of the trailing window of the daily series
    engagement: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)
    funnel: list[dict] = field(default_factory=list)
    retention: list[dict] = field(default_factory=list)
    revenue: list[dict] = field(default_factory=list)
    latency: list[dict] = field(default_factory=list)
    health: list[dict] = field(default_factory=list)
    throughput: list[dict] = field(default_factory=list)
    slo_targets: dict[str, float] = field(default_factory=dict)
    kpis: list[dict] = field(default_factory=list)
    experiments: list[dict] = field(default_factory=list)
    slos: list[dict] = field(default_factory=list)

    @property
    def last_complete_week(self) -> date:
        """Monday of the newest activity week that ends on or before the day."""
        return last_complete_week(self.day)


DAYS = 90  # the trailing days of each page's daily series


def last_complete_week(day: date) -> date:
    """Monday of the newest activity week that ends on or before `day`."""
    return day - timedelta(days=day.weekday() + 7 if day.weekday() < 6 else 6)


def _query(con, sql: str, params=()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


class _Series:
    """Rows sorted by a date column, sliced by date range (a daily series read once for a range of pages)."""

    def __init__(self, rows: list[dict], column: str):
        self.rows, self.keys = rows, [r[column] for r in rows]

    def between(self, lo: date, hi: date) -> list[dict]:
        return self.rows[bisect_left(self.keys, lo):bisect_right(self.keys, hi)]


def _by_day(rows: list[dict], column: str) -> dict[date, list[dict]]:
    """Rows grouped by their date `column` (kept in order), the column itself dropped."""
    out: dict[date, list[dict]] = {}
    for r in rows:
        r = dict(r)
        out.setdefault(r.pop(column), []).append(r)
    return out


def load(con, day: date, days: int = DAYS) -> ReportData:
    """The report's data as of the end of `day`: trailing `days` of daily series, the day's snapshot."""
    return load_range(con, day, day, days)[0]


def load_range(con, first: date, last: date, days: int = DAYS, own=None) -> list[ReportData]:
    """`load` of every day from `first` to `last`, with one query per table for the whole range
    (the pipeline's own tables, `pipeline_health.partition_kpis` and `slo_status`, from ``own``,
    default ``con``: a copy of the rows the catalog database holds, `Warehouse.held`).

    Each table is read once over the union of the pages' windows and cut per page in Python, so page
    d holds exactly the rows its own query bounded by d would return, in the same order (long
    ranges: ~14 queries in all instead of ~14 per day). The throughput medians are per page window,
    so that one query joins every page's day to its window.
    """
    if last < first:
        return []
    own = con if own is None else own
    lookback = timedelta(days=days - 1)
    span = (first - lookback, last)  # every page's trailing window
    pages = (first, last)  # every page's day
    engagement = _Series(_query(con, "SELECT event_date, dau, wau, mau FROM marts.daily_engagement "
                                     "WHERE event_date BETWEEN ? AND ? ORDER BY 1", span), "event_date")
    anomalies = _Series(_query(con, "SELECT event_date, kpi, value, expected, score FROM marts.kpi_anomalies "
                                    "WHERE is_anomaly AND event_date BETWEEN ? AND ? ORDER BY 1, 2", span),
                        "event_date")
    funnel = _by_day(_query(con, "SELECT event_date, funnel, step_order, step, users, conversion_from_previous, "
                                 "conversion_from_start FROM marts.funnel_daily WHERE event_date BETWEEN ? AND ? "
                                 "ORDER BY event_date, funnel, step_order", pages), "event_date")
    retention = _Series(_query(con, """SELECT cohort_week, weeks_since, cohort_size, retained_users, retention_rate,
                                              activity_week
                                       FROM marts.retention_cohorts
                                       WHERE cohort_week >= ? AND activity_week <= ? ORDER BY 1, 2""",
                               (first - timedelta(weeks=RETENTION_WEEKS), last_complete_week(last))), "cohort_week")
    week_of = [r.pop("activity_week") for r in retention.rows]  # not part of a page's rows
    revenue = _Series(_query(con, "SELECT event_date, revenue, orders, paying_users FROM marts.revenue_daily "
                                  "WHERE event_date BETWEEN ? AND ? ORDER BY 1", span), "event_date")
    latency = _by_day(_query(con, "SELECT event_date, service, requests, error_rate, p50_ms, p90_ms, p99_ms "
                                  "FROM marts.service_latency WHERE event_date BETWEEN ? AND ? "
                                  "ORDER BY event_date, service", pages), "event_date")
    health = _Series(_query(own, f"""SELECT partition, sum(rows_in) AS rows_in,
                                            sum(rows_quarantined) / nullif(sum(rows_in), 0) AS quarantine_rate,
                                            max(freshness_seconds) / 3600 AS freshness_hours
                                     FROM ({LATEST_KPIS}) WHERE asset LIKE 'clean/%' AND partition BETWEEN ? AND ?
                                     GROUP BY 1 ORDER BY 1""", span), "partition")
    throughput = _by_day(_query(own, f"""
        SELECT d.day, k.asset, median(k.rows_per_second) AS rows_per_second, count(*) AS partitions
        FROM (SELECT CAST(unnest(generate_series(CAST(? AS DATE), CAST(? AS DATE), INTERVAL 1 DAY)) AS DATE) AS day) d
        JOIN (SELECT partition, asset, rows_per_second FROM ({LATEST_KPIS})
              WHERE partition BETWEEN ? AND ? AND rows_in > 0 AND rows_per_second > 0) k
          ON k.partition BETWEEN d.day - CAST(? AS INTEGER) AND d.day
        GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""", (*pages, *span, days - 1)), "day")
    slos = _by_day(_query(own, "SELECT partition, slo, comparison, target, actual, status, breached_days_28d, "
                               "budget_burn FROM pipeline_health.slo_status WHERE partition BETWEEN ? AND ? "
                               "ORDER BY partition, slo", pages), "partition")
    kpis = _by_day(_query(con, """SELECT c.event_date, c.kpi, c.value, c.dod, c.wow, c.mom, c.yoy, a.expected,
                                         a.score, coalesce(a.is_anomaly, false) AS is_anomaly
                                  FROM marts.kpi_changes c LEFT JOIN marts.kpi_anomalies a USING (event_date, kpi)
                                  WHERE c.event_date BETWEEN ? AND ? ORDER BY c.event_date, c.kpi""", pages),
                   "event_date")
    experiments = _by_day(_query(con, """SELECT as_of_date, experiment_id, metric, variant_id, is_control, users,
                                                conversions, rate, abs_lift, rel_lift, ci_low, ci_high, p_value,
                                                srm_p_value, crossover_users, method, alpha, window_days, cuped
                                         FROM marts.experiment_results WHERE as_of_date BETWEEN ? AND ?
                                         ORDER BY as_of_date, experiment_id, metric, NOT is_control, variant_id""",
                                 pages), "as_of_date")
    out = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        data = ReportData(day=day, start=day - lookback)
        window = (data.start, day)
        data.engagement = engagement.between(*window)
        data.anomalies = anomalies.between(*window)
        data.funnel = funnel.get(day, [])
        cohorts_from, complete = day - timedelta(weeks=RETENTION_WEEKS), data.last_complete_week
        lo = bisect_left(retention.keys, cohorts_from)
        data.retention = [r for r, week in zip(retention.rows[lo:], week_of[lo:]) if week <= complete]
        data.revenue = revenue.between(*window)
        data.latency = latency.get(day, [])
        data.health = health.between(*window)
        data.throughput = throughput.get(day, [])
        data.slos = slos.get(day, [])
        data.slo_targets = {r["slo"]: r["target"] for r in data.slos if r["target"] is not None}
        data.kpis = kpis.get(day, [])
        data.experiments = experiments.get(day, [])
        out.append(data)
    return out
