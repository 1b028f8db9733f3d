"""Alerts that mean something: each rule on its own, then a sparse history (60 days, 0-5 events a
day, the shape of the real histories that raised hundreds of warnings) raising none."""

import random
import statistics
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from de_assets.lib import alerts, health, marts
from de_assets.partitions import partition_range_tags
from de_assets_tests.conftest import Pipeline, land, segment_event

# --- the rules, one by one ------------------------------------------------------------------------


def _scored(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"value": [1.0] * n, "expected": [1.0] * n, "score": [0.0] * n, "is_anomaly": [False] * n,
            "volume": [1000.0] * n}
    return pd.DataFrame({**base, **columns})


def test_a_history_without_spread_has_no_score_instead_of_1e9():
    # a KPI that was 0 every day then 1: the detector's scale sits at its 1e-9 floor, score 1e9
    out = marts.classify(_scored(value=[1.0], expected=[0.0], score=[1e9], is_anomaly=[True]), min_volume=100)
    assert out.status.tolist() == ["no_spread"] and np.isnan(out.score[0]) and not out.is_anomaly[0]
    # a real score on a small expected value is kept (its scale is relative to |expected|, far above 1e-9)
    out = marts.classify(_scored(value=[6.0], expected=[5.0], score=[200.0], is_anomaly=[True]), min_volume=100)
    assert out.status.tolist() == ["anomaly"] and out.score[0] == 200.0 and out.is_anomaly[0]


def test_a_flag_counts_only_on_enough_volume():
    frame = _scored(score=[9.0, 9.0, 0.5, np.nan, 9.0], is_anomaly=[True, True, False, False, True],
                    volume=[99.0, 100.0, 5.0, 1000.0, np.nan], value=[1.0, 1.0, 1.5, 1.0, 1.0],
                    expected=[0.5, 0.5, 1.0, np.nan, 0.5])
    out = marts.classify(frame, min_volume=100)
    assert out.status.tolist() == ["low_volume", "anomaly", "low_volume", "no_history", "low_volume"]
    assert out.is_anomaly.tolist() == [False, True, False, False, False]
    assert marts.classify(frame, min_volume=0).is_anomaly.tolist() == [True, True, False, False, True]


def test_volume_is_the_count_a_kpi_stands_on_and_a_drop_stays_alertable():
    assert [marts.volume_kpi(k) for k in ("dau", "arpu", "error_rate", "pipeline.quarantine_rate")] == [
        "events", "orders", "requests", "pipeline.rows_in"]
    days = pd.date_range("2026-10-01", periods=30, freq="D")
    events = [1000.0] * 29 + [10.0]  # an outage on the last day
    history = pd.DataFrame({"ts": days, "kpi": "events", "value": events})
    volume = marts._volumes(history).set_index("ts")["volume"]
    assert volume.iloc[-1] == 1000.0  # the median of the 28 days before, not the day's 10 events
    assert volume.iloc[0] == 1000.0  # the first day: its own count


def test_backfill_reason():
    now = datetime(2026, 11, 29, 12, 0)
    assert alerts.backfill_reason(date(2026, 11, 28), now, 2.0) is None  # ended 12 h ago
    assert alerts.backfill_reason(date(2026, 11, 27), now, 2.0) is None  # ended 1 day 12 h ago
    assert alerts.backfill_reason(date(2026, 11, 26), now, 2.0, backfill_run=True) == "backfill run"
    assert alerts.backfill_reason(date(2026, 11, 26), now, 2.0).startswith("history")  # 2 days 12 h ago


def _kpi(con, day, rows_in, quarantined=0):
    con.execute("INSERT INTO pipeline_health.partition_kpis VALUES (?, 'clean/clean_events', 'r', ?, ?, ?, 0, 1, 1, 0, ?)",
                [day, rows_in, rows_in - quarantined, quarantined, datetime(day.year, day.month, day.day) + timedelta(hours=25)])


def test_completeness_and_rates_on_sparse_data_are_not_applicable(con):
    d = date(2026, 11, 2)
    for weeks, rows in ((1, 3), (2, 5), (3, 0), (4, 4)):  # baseline median 3.5 rows
        _kpi(con, d - timedelta(weeks=weeks), rows)
    _kpi(con, d, 1, quarantined=1)
    rows = {r["slo"]: r for r in health.evaluate_slos(con, d, health.SloTargets())}
    assert rows["completeness"]["status"] == "not_applicable"
    assert rows["completeness"]["actual"] == pytest.approx(1 / 3.5)  # measured all the same
    assert rows["quarantine_rate"]["status"] == "not_applicable" and rows["quarantine_rate"]["budget_burn"] == 0
    judged = {r["slo"]: r for r in health.evaluate_slos(con, d, health.SloTargets(min_volume=1))}
    assert judged["completeness"]["status"] == "breached" and judged["quarantine_rate"]["status"] == "breached"


# --- a sparse history -----------------------------------------------------------------------------

FIRST = date(2026, 8, 3)  # a Monday; 63 days, long before the day the tests run: history
SPARSE_DAYS = 63


def _sparse_landing(root) -> list[int]:
    """0-5 clean events a day (page views and the odd order) from 6 users; no file on a day with
    none. On the last day one event is delivered twice: the first duplicate of the history, after
    weeks of a duplicate rate of exactly 0 (the series whose score used to read 1e9). Returns the
    rows landed per day."""
    rng = random.Random(7)
    counts = []
    for i in range(SPARSE_DAYS):
        day = FIRST + timedelta(days=i)
        n = rng.randint(0, 5) if i < SPARSE_DAYS - 1 else 3
        counts.append(n)
        if n == 0:
            continue
        lines = [segment_event(f"m{i}-{j}", f"user-{rng.randint(1, 6)}", f"{day}T{10 + j}:00:00Z",
                               event=rng.choice(["Product Viewed", "Product Viewed", "Order Completed"]),
                               properties={"revenue": 10.0})
                 for j in range(n)]
        land(root, str(day), "events.ndjson", lines)
        if i == SPARSE_DAYS - 1:
            land(root, str(day), "again.ndjson", lines[:1])
            counts[-1] += 1
    return counts


def _duplicate_day(p):
    last = FIRST + timedelta(days=SPARSE_DAYS - 1)
    return p.query("SELECT value, score, status, is_anomaly FROM marts.kpi_anomalies "
                   f"WHERE kpi = 'pipeline.duplicate_rate' AND event_date = '{last}'").iloc[0]


def _run(p, slo_config: dict):
    last = FIRST + timedelta(days=SPARSE_DAYS - 1)
    return p.defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=p.instance, tags=partition_range_tags(str(FIRST), str(last)),
        run_config={"ops": {"pipeline_health__slo_status": {"config": slo_config}}},
    )


def _alerts(p) -> dict:
    return dict(p.alerts("SELECT kind, count(*) n FROM pipeline_health.alerts GROUP BY 1").values.tolist())


def test_a_sparse_history_raises_no_alert(tmp_path):
    counts = _sparse_landing(tmp_path / "landing")
    assert sum(counts) > 100 and counts.count(0) > 5  # sparse: a few events a day, some days none
    # paging on, even for days long gone: only the volume rules stand between the data and a page
    p = Pipeline(tmp_path, tmp_path / "landing", alerting={"backfill_after_days": 1e6})
    assert _run(p, {}).success
    # Hand-reasoned: every KPI stands on at most 5 events/orders (pipeline rows in: the same) a day,
    # below the 100 of anomaly_min_volume: no KPI is ever an anomaly; completeness compares with a
    # median of at most 5 rows and the rates see at most 5 rows: not_applicable; freshness: the days
    # were loaded months later (backfill). Clean data: no failed check. So: no alert at all.
    assert _alerts(p) == {}
    statuses = p.held("SELECT slo, list(DISTINCT status ORDER BY status) s FROM pipeline_health.slo_status GROUP BY 1")
    # (a rate on a day without rows has no number either: below min_volume too)
    assert {slo: list(s) for slo, s in statuses.values.tolist()} == {
        "completeness": ["no_data", "not_applicable"], "duplicate_rate": ["not_applicable"],
        "freshness_hours": ["backfill"], "quarantine_rate": ["not_applicable"]}
    assert p.query("SELECT count(*) n FROM marts.kpi_anomalies WHERE is_anomaly OR abs(score) > 1e6").n[0] == 0
    # the first duplicate after weeks of exactly 0: 1 of 4 rows, no score (not 1e9), said why
    dup = _duplicate_day(p)
    assert (dup.value, dup.status, dup.is_anomaly) == (0.25, "no_spread", False) and pd.isna(dup.score)


def test_without_the_volume_rules_the_same_history_pages_and_backfill_holds_them(tmp_path):
    counts = _sparse_landing(tmp_path / "landing")
    p = Pipeline(tmp_path, tmp_path / "landing", anomaly_min_volume=0, alerting={"backfill_after_days": 1e6})
    assert _run(p, {"min_volume": 0}).success
    raised = _alerts(p)
    # completeness breaches, counted independently: a day whose rows are below 80% of the median
    # of the same weekday 1-4 weeks before (days before the history are not in the baseline; a 0
    # median is no baseline)
    breaches = 0
    for i, n in enumerate(counts):
        base = [counts[i - 7 * w] for w in range(1, 5) if i - 7 * w >= 0]
        if base and statistics.median(base) and n / statistics.median(base) < 0.8:
            breaches += 1
    completeness = p.held("SELECT count(*) n FROM pipeline_health.slo_status "
                           "WHERE slo = 'completeness' AND status = 'breached'").n[0]
    assert completeness == breaches > 5
    # plus the duplicate rate of the last day (1 of 4 rows > 10%); no KPI anomaly: the detector
    # scores this history within |3.1| and the one score it cannot compute is no longer 1e9
    assert raised == {"slo_breach": breaches + 1}
    assert _duplicate_day(p).status == "no_spread"
    # the same history loaded with paging of history off (the default): every row written, no page
    quiet = Pipeline(tmp_path / "quiet", tmp_path / "landing", anomaly_min_volume=0)
    (tmp_path / "quiet").mkdir()
    assert _run(quiet, {"min_volume": 0}).success
    assert _alerts(quiet) == {}
    assert quiet.held("SELECT count(*) n FROM pipeline_health.slo_status WHERE status = 'breached'").n[0] \
        == p.held("SELECT count(*) n FROM pipeline_health.slo_status WHERE status = 'breached'").n[0]
