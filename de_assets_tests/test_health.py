"""Pipeline health: partition_kpis per step and partition, SLO evaluation with error budgets."""

from datetime import date, datetime, timedelta

import pytest

from de_assets.lib import health
from de_assets.lib.tables import DAILY_ENGAGEMENT

D = date(2026, 11, 2)


def test_record_kpis_shares_seconds_by_rows_and_replaces_its_own_rows(con):
    counts = {D: health.DayCounts(300, 280, 15, 5), D + timedelta(days=1): health.DayCounts(100, 100)}
    meta = health.record_kpis(con, "clean/clean_events", "run-1", DAILY_ENGAGEMENT, D, D + timedelta(days=1), 8.0, counts)
    rows = con.execute("SELECT partition, rows_in, rows_out, rows_quarantined, rows_duplicate, seconds, "
                       "rows_per_second FROM pipeline_health.partition_kpis ORDER BY partition").fetchall()
    # 400 rows in 8 s = 50 rows/s; the first day had 3/4 of the rows -> 6 s of the step
    assert rows == [(D, 300, 280, 15, 5, 6.0, 50.0), (D + timedelta(days=1), 100, 100, 0, 0, 2.0, 50.0)]
    assert meta["rows_per_second"] == 50.0
    health.record_kpis(con, "clean/clean_events", "run-1", DAILY_ENGAGEMENT, D, D, 1.0, {D: health.DayCounts(1, 1)})
    assert con.execute("SELECT count(*) FROM pipeline_health.partition_kpis").fetchall()[0][0] == 2  # replaced
    health.record_kpis(con, "clean/clean_events", "run-2", DAILY_ENGAGEMENT, D, D, 1.0, {D: health.DayCounts(1, 1)})
    assert con.execute("SELECT count(*) FROM pipeline_health.partition_kpis").fetchall()[0][0] == 3  # a new run adds


def test_freshness_is_newest_event_to_availability(con):
    con.execute("INSERT INTO clean.events (message_id, event_date, event_ts) VALUES "
                "('a', '2026-11-02', '2026-11-02 10:00'), ('b', '2026-11-02', '2026-11-02 22:00'), "
                "('c', '2026-11-02', '2099-01-01 00:00')")  # a future-dated event is ignored
    fresh = health.freshness_seconds(con, DAILY_ENGAGEMENT, D, D, datetime(2026, 11, 3, 1, 0))
    assert fresh == {D: 3 * 3600.0}


def _kpi(con, day, asset, rows_in, quarantined=0, duplicate=0, recorded_at=None, run="r"):
    con.execute(
        "INSERT INTO pipeline_health.partition_kpis VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, 0, ?)",
        [day, asset, run, rows_in, rows_in - quarantined - duplicate, quarantined, duplicate,
         recorded_at or datetime(day.year, day.month, day.day) + timedelta(hours=25)],
    )


def test_slos_against_hand_computed_values(con):
    targets = health.SloTargets()
    for weeks, rows in ((1, 1000), (2, 900), (3, 1100), (4, 5000)):  # same weekday, 4 weeks back
        _kpi(con, D - timedelta(weeks=weeks), "clean/clean_events", rows)
    _kpi(con, D, "clean/clean_events", 600, quarantined=30, duplicate=12)
    _kpi(con, D, "clean/clean_requests", 200, quarantined=10)
    _kpi(con, D, "marts/daily_engagement", 5, recorded_at=datetime(2026, 11, 3, 4, 0))
    _kpi(con, D, "marts/revenue_daily", 1, recorded_at=datetime(2026, 11, 3, 5, 30))
    rows = {r["slo"]: r for r in health.evaluate_slos(con, D, targets)}
    # completeness: 800 rows vs median(1000, 900, 1100, 5000) = 1050
    assert rows["completeness"]["actual"] == pytest.approx(800 / 1050)
    assert rows["completeness"]["status"] == "breached"  # 0.76 < 0.8
    assert rows["quarantine_rate"]["actual"] == pytest.approx(40 / 800) and rows["quarantine_rate"]["status"] == "met"
    assert rows["duplicate_rate"]["actual"] == pytest.approx(12 / 800)
    # freshness: the last mart became available at 05:30 the next day -> 5.5 h after the day ended
    assert rows["freshness_hours"]["actual"] == pytest.approx(5.5) and rows["freshness_hours"]["status"] == "met"
    # error budget: 28 x (1 - 0.9) = 2.8 breaches; one used
    assert rows["completeness"]["error_budget_days"] == pytest.approx(2.8)
    assert rows["completeness"]["budget_burn"] == pytest.approx(1 / 2.8)
    stored = con.execute("SELECT slo, status FROM pipeline_health.slo_status ORDER BY slo").fetchall()
    assert stored == [("completeness", "breached"), ("duplicate_rate", "met"), ("freshness_hours", "met"),
                      ("quarantine_rate", "met")]
    # re-evaluating the same day replaces its rows and does not count its own breach twice
    rows = {r["slo"]: r for r in health.evaluate_slos(con, D, targets)}
    assert rows["completeness"]["breached_days_28d"] == 1


def test_budget_burn_accumulates_over_28_days_and_late_loads_are_backfills(con):
    targets = health.SloTargets(objective=0.9)
    for offset in range(4):  # four days with a high quarantine rate
        day = D + timedelta(days=offset)
        _kpi(con, day, "clean/clean_events", 100, quarantined=50)
        rows = {r["slo"]: r for r in health.evaluate_slos(con, day, targets)}
    assert rows["quarantine_rate"]["breached_days_28d"] == 4
    assert rows["quarantine_rate"]["budget_burn"] == pytest.approx(4 / 2.8)  # > 1: exhausted
    assert rows["completeness"]["status"] == "no_data"  # no same-weekday history
    late = D - timedelta(days=30)
    _kpi(con, late, "marts/daily_engagement", 5, recorded_at=datetime(2026, 11, 20))
    rows = {r["slo"]: r for r in health.evaluate_slos(con, late, targets)}
    assert rows["freshness_hours"]["status"] == "backfill"


def test_golden_run_fills_partition_kpis_for_every_step_and_partition(pipeline):
    result = pipeline.run("2026-11-01", "2026-11-03")
    assert result.success
    kpis = pipeline.query("SELECT partition::VARCHAR p, asset, rows_in, rows_out, rows_quarantined q, rows_duplicate d "
                          "FROM pipeline_health.partition_kpis")
    assert len(kpis) == 14 * 3  # 14 pipeline assets x 3 partitions, one run
    events = kpis[kpis.asset == "clean/clean_events"].sort_values("p")[["rows_in", "rows_out", "q", "d"]].values.tolist()
    # README: raw rows per arrival day 4 / 21 / 8 (the re-delivered file is not ingested);
    # clean 3 / 14 / 7, quarantined 1 / 6 / 0, duplicates 0 / 1 (m14 again) / 1 (m14 cross-day)
    assert events == [[4, 3, 1, 0], [21, 14, 6, 1], [8, 7, 0, 1]]
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations[("pipeline_health/partition_kpis", "every_step_reported")]
    slo = pipeline.query("SELECT partition::VARCHAR p, slo, actual, status FROM pipeline_health.slo_status "
                         "WHERE slo = 'quarantine_rate' ORDER BY p")
    # quarantined / rows in over both sources: 11-01 events 1/4 (no requests); 11-02 (6 + 2) / (21 + 9);
    # 11-03 (0 + 1) / (8 + 3)
    assert slo.actual.tolist() == pytest.approx([1 / 4, 8 / 30, 1 / 11])
    assert slo.status.tolist() == ["breached", "breached", "breached"]  # all above the 5% target
    # the only breaches: duplicates (1 + 1) / 30 and 1 / 11 stay under 10%, freshness is a backfill
    # (loaded weeks later), completeness has no history
    alerts = pipeline.query("SELECT partition, message FROM pipeline_health.alerts WHERE kind = 'slo_breach' ORDER BY 1")
    assert alerts.partition.tolist() == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert all("quarantine_rate" in m for m in alerts.message)
