"""What the report of one day reads from the warehouse, cut at the as-of day.

Every query has an upper bound of `day`: a page built after later days were loaded shows what was
known at the end of `day`, nothing newer. Retention is the one table keyed by week: an activity
week is shown once it is complete (its Sunday <= day), because the mart's row for the week in
progress is rewritten by each later day of that week and would show days after `day`.
"""

from __future__ import annotations

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
        return self.day - timedelta(days=self.day.weekday() + 7 if self.day.weekday() < 6 else 6)


def _query(con, sql: str, params=()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def load(con, day: date, days: int = 90) -> ReportData:
    """The report's data as of the end of `day`: trailing `days` of daily series, the day's snapshot."""
    data = ReportData(day=day, start=day - timedelta(days=days - 1))
    span = (data.start, day)
    data.engagement = _query(con, "SELECT event_date, dau, wau, mau FROM marts.daily_engagement "
                                  "WHERE event_date BETWEEN ? AND ? ORDER BY 1", span)
    data.anomalies = _query(con, "SELECT event_date, kpi, value, expected, score FROM marts.kpi_anomalies "
                                 "WHERE is_anomaly AND event_date BETWEEN ? AND ? ORDER BY 1, 2", span)
    data.funnel = _query(con, "SELECT funnel, step_order, step, users, conversion_from_previous, "
                              "conversion_from_start FROM marts.funnel_daily WHERE event_date = ? "
                              "ORDER BY funnel, step_order", (day,))
    data.retention = _query(con, """SELECT cohort_week, weeks_since, cohort_size, retained_users, retention_rate
                                    FROM marts.retention_cohorts
                                    WHERE cohort_week >= ? AND activity_week <= ? ORDER BY 1, 2""",
                            (day - timedelta(weeks=RETENTION_WEEKS), data.last_complete_week))
    data.revenue = _query(con, "SELECT event_date, revenue, orders, paying_users FROM marts.revenue_daily "
                               "WHERE event_date BETWEEN ? AND ? ORDER BY 1", span)
    data.latency = _query(con, "SELECT service, requests, error_rate, p50_ms, p90_ms, p99_ms "
                               "FROM marts.service_latency WHERE event_date = ? ORDER BY service", (day,))
    data.health = _query(con, f"""SELECT partition, sum(rows_in) AS rows_in,
                                         sum(rows_quarantined) / nullif(sum(rows_in), 0) AS quarantine_rate,
                                         max(freshness_seconds) / 3600 AS freshness_hours
                                  FROM ({LATEST_KPIS}) WHERE asset LIKE 'clean/%' AND partition BETWEEN ? AND ?
                                  GROUP BY 1 ORDER BY 1""", span)
    data.throughput = _query(con, f"""SELECT asset, median(rows_per_second) AS rows_per_second,
                                             count(*) AS partitions
                                      FROM ({LATEST_KPIS})
                                      WHERE partition BETWEEN ? AND ? AND rows_in > 0 AND rows_per_second > 0
                                      GROUP BY 1 ORDER BY 2 DESC, 1""", span)
    data.slos = _query(con, "SELECT slo, comparison, target, actual, status, breached_days_28d, budget_burn "
                            "FROM pipeline_health.slo_status WHERE partition = ? ORDER BY slo", (day,))
    data.slo_targets = {r["slo"]: r["target"] for r in data.slos if r["target"] is not None}
    data.kpis = _query(con, """SELECT c.kpi, c.value, c.dod, c.wow, c.mom, c.yoy, a.expected, a.score,
                                      coalesce(a.is_anomaly, false) AS is_anomaly
                               FROM marts.kpi_changes c LEFT JOIN marts.kpi_anomalies a USING (event_date, kpi)
                               WHERE c.event_date = ? ORDER BY c.kpi""", (day,))
    data.experiments = _query(con, """SELECT experiment_id, metric, variant_id, is_control, users, conversions, rate,
                                             abs_lift, rel_lift, ci_low, ci_high, p_value, srm_p_value,
                                             crossover_users, method, alpha, window_days, cuped
                                      FROM marts.experiment_results WHERE as_of_date = ?
                                      ORDER BY experiment_id, metric, NOT is_control, variant_id""", (day,))
    return data
