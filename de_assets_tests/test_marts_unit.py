"""Unit tests of mart functions on small hand-made tables (no Dagster)."""

from datetime import date, timedelta

import duckdb
import numpy as np

from de_assets.lib import marts
from de_assets.lib.tables import REVENUE_DAILY
from de_assets_tests.conftest import every_table


def test_kpi_anomalies_flags_an_injected_spike_and_only_it():
    con = duckdb.connect()
    every_table(con)
    rng = np.random.default_rng(3)
    first = date(2026, 1, 5)  # a Monday
    days = [first + timedelta(days=i) for i in range(84)]
    for i, day in enumerate(days):
        weekly = 1000 * (0.7 if day.weekday() >= 5 else 1.0)  # weekends are quieter
        dau = weekly + rng.normal(0, 10) + (600 if i == 70 else 0)  # one spike on day 70
        con.execute("INSERT INTO marts.kpi_changes (event_date, kpi, value) VALUES (?, 'dau', ?)", [day, dau])
        con.execute("INSERT INTO marts.kpi_changes (event_date, kpi, value) VALUES (?, 'events', ?)", [day, 5 * weekly])
    written = marts.kpi_anomalies(con, days[28], days[-1])
    assert written == 2 * (84 - 28)
    flagged = con.execute("SELECT event_date, kpi FROM marts.kpi_anomalies WHERE is_anomaly").fetchall()
    assert flagged == [(days[70], "dau")]
    # a weekend day is expected to be lower than a weekday: the baseline is seasonal
    sat, mon = days[75], days[77]
    expected = dict(con.execute(
        "SELECT event_date, expected FROM marts.kpi_anomalies WHERE kpi = 'dau' AND event_date IN (?, ?)", [sat, mon]
    ).fetchall())
    assert expected[sat] < 800 < expected[mon]


def test_kpi_anomalies_rerun_is_idempotent_and_ignores_later_days():
    con = duckdb.connect()
    every_table(con)
    day0 = date(2026, 3, 2)
    for i in range(40):
        con.execute("INSERT INTO marts.kpi_changes (event_date, kpi, value) VALUES (?, 'dau', ?)",
                    [day0 + timedelta(days=i), 100.0 + (i % 7)])
    target = day0 + timedelta(days=30)
    marts.kpi_anomalies(con, target, target)
    before = con.execute("SELECT * FROM marts.kpi_anomalies").fetchall()
    con.execute("UPDATE marts.kpi_changes SET value = 1e6 WHERE event_date > ?", [target])  # the future changes
    marts.kpi_anomalies(con, target, target)
    assert con.execute("SELECT * FROM marts.kpi_anomalies").fetchall() == before
    assert len(before) == 1


def test_kpi_anomalies_also_score_the_pipeline_health_series():
    con = duckdb.connect()
    every_table(con)
    first = date(2026, 1, 5)
    days = [first + timedelta(days=i) for i in range(42)]
    for i, day in enumerate(days):
        quarantined = 300 if i == 40 else 10 + i % 3  # one day quarantines 30% instead of ~1%
        con.execute("INSERT INTO pipeline_health.partition_kpis (partition, asset, run_id, rows_in, rows_quarantined, "
                    "rows_duplicate, recorded_at) VALUES (?, 'clean/clean_events', 'r', 1000, ?, 5, now())", [day, quarantined])
    marts.kpi_anomalies(con, days[35], days[-1])
    flagged = con.execute("SELECT event_date, kpi FROM marts.kpi_anomalies WHERE is_anomaly").fetchall()
    assert flagged == [(days[40], "pipeline.quarantine_rate")]
    assert con.execute("SELECT count(DISTINCT kpi) FROM marts.kpi_anomalies").fetchall()[0][0] == 3


def test_kpi_anomaly_episode_is_one_alert():
    """A 3-day outage of a KPI: the three flagged days share `episode_start` (its first day) and
    raise one alert, keyed on that day, whether the days are run together or one by one."""
    from de_assets.assets.analytics import anomaly_alerts

    con = duckdb.connect()
    every_table(con)
    rng = np.random.default_rng(4)
    first = date(2026, 1, 5)
    days = [first + timedelta(days=i) for i in range(70)]
    for i, day in enumerate(days):
        dau = 1000 + rng.normal(0, 10) - (800 if 60 <= i <= 62 else 0)  # outage on days 60-62
        con.execute("INSERT INTO marts.kpi_changes (event_date, kpi, value) VALUES (?, 'dau', ?)", [day, dau])
        # the count dau stands on (an anomaly needs enough volume to be one): 5,000 events a day
        con.execute("INSERT INTO marts.kpi_changes (event_date, kpi, value) VALUES (?, 'events', 5000)", [day])
    marts.kpi_anomalies(con, days[28], days[-1])
    flagged = con.execute("SELECT event_date, episode_start FROM marts.kpi_anomalies WHERE is_anomaly "
                          "ORDER BY event_date").fetchall()
    assert flagged == [(days[i], days[60]) for i in (60, 61, 62)]
    assert con.execute("SELECT count(*) FROM marts.kpi_anomalies WHERE NOT is_anomaly AND episode_start IS NOT NULL"
                       ).fetchone()[0] == 0
    raised = anomaly_alerts(con, days[28], days[-1], "run-1")
    # with the episode's last flagged day, which decides whether it is paged (not while backfilling)
    assert [(day, a.partition, a.discriminator) for day, a in raised] == [(days[62], str(days[60]), "dau")]
    alerts = [a for _, a in raised]
    one_by_one = {a.dedupe_key for i in (60, 61, 62) for _, a in anomaly_alerts(con, days[i], days[i], "run-2")}
    assert one_by_one == {alerts[0].dedupe_key}



def test_a_table_knows_which_rows_a_day_range_covers(con):
    """Hand-checked: 2026-11-04 is a Wednesday, its week starts Monday 2026-11-02; 2026-11-10 is in
    the week of 2026-11-09. A daily table covers exactly the days."""
    from datetime import date

    from de_assets.lib.tables import DAILY_ENGAGEMENT, RETENTION_COHORTS

    start, end = date(2026, 11, 4), date(2026, 11, 10)
    assert RETENTION_COHORTS.weekly and not DAILY_ENGAGEMENT.weekly
    assert RETENTION_COHORTS.partition_values(start, end) == [date(2026, 11, 2), date(2026, 11, 9)]
    wednesday = "DATE '2026-11-04'"
    assert con.execute(f"SELECT {RETENTION_COHORTS.partition_of_day(wednesday)}::DATE").fetchone()[0] == date(2026, 11, 2)
    mondays = "SELECT unnest([DATE '2026-10-26', DATE '2026-11-02', DATE '2026-11-09', DATE '2026-11-16']) AS w"
    weekly = con.execute(f"SELECT list(w ORDER BY 1) FROM ({mondays}) "
                         f"WHERE {RETENTION_COHORTS.range_predicate('?', '?').replace('activity_week', 'w')}",
                         [start, end]).fetchone()[0]
    assert weekly == [date(2026, 11, 2), date(2026, 11, 9)]  # the weeks holding 11-04 and 11-10
    days = "SELECT unnest([DATE '2026-11-03', DATE '2026-11-04', DATE '2026-11-10', DATE '2026-11-11']) AS event_date"
    daily = con.execute(f"SELECT list(event_date ORDER BY 1) FROM ({days}) "
                        f"WHERE {DAILY_ENGAGEMENT.range_predicate('?', '?')}", [start, end]).fetchone()[0]
    assert daily == [date(2026, 11, 4), date(2026, 11, 10)]


def test_revenue_is_summed_exactly_so_a_re_run_gives_the_same_figure():
    """Floating-point sums depend on the order rows are added in (DuckDB aggregates in parallel: re-runs
    of a 30-day backfill differed in the last digits); revenue is summed as DECIMAL, exactly."""
    con = duckdb.connect()
    every_table(con)
    day = date(2026, 11, 1)
    for i, revenue in enumerate([0.1, 0.2, 0.3]):
        con.execute("INSERT INTO clean.events (arrival_date, event_date, message_id, type, event, user_key, revenue) "
                    "VALUES (?, ?, ?, 'track', 'Order Completed', ?, ?)", [day, day, f"m{i}", f"u{i % 2}", revenue])
    marts.replace_range(con, REVENUE_DAILY, marts.REVENUE_DAILY_SQL, day, day)
    [(revenue, arppu)] = con.execute("SELECT revenue, arppu FROM marts.revenue_daily").fetchall()
    assert 0.1 + 0.2 + 0.3 == 0.6000000000000001  # what a floating-point sum gives, in this order
    assert (revenue, arppu) == (0.6, 0.6 / 2)
