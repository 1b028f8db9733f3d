"""Golden tests: the checked-in landing fixture through the whole graph (in process, via Dagster)
against hand-verified expected tables. How each expected number was derived is in
fixtures/golden/README.md."""

import pytest

from de_assets.lib.privacy import pseudonymize
from de_assets_tests.conftest import TEST_KEY
from de_assets_tests.golden import assert_matches, expected, select_sql

START, END = "2026-11-01", "2026-11-03"

MARTS = {
    "daily_engagement": ["event_date"],
    "funnel_daily": ["event_date", "funnel", "step_order"],
    "retention_cohorts": ["cohort_week", "weeks_since"],
    "revenue_daily": ["event_date"],
    "service_latency": ["event_date", "service"],
    "kpi_changes": ["event_date", "kpi"],
}
KPI_ORDER = ["dau", "wau", "mau", "stickiness", "new_users", "returning_users", "sessions", "events",
             "orders", "revenue", "paying_users", "arpu", "arppu", "requests", "error_rate"]


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    import shutil

    from de_assets_tests.conftest import GOLDEN, Pipeline

    tmp = tmp_path_factory.mktemp("golden")
    shutil.copytree(GOLDEN / "landing", tmp / "landing")
    p = Pipeline(tmp, tmp / "landing")
    result = p.run(START, END)
    assert result.success
    return p, result


@pytest.mark.parametrize("mart", list(MARTS))
def test_mart_matches_hand_verified_table(golden_run, mart):
    p, _ = golden_run
    want = expected(mart)
    order = MARTS[mart]
    if mart == "kpi_changes":
        kpis = ", ".join(f"'{k}'" for k in KPI_ORDER)
        order = ["event_date", f"list_position([{kpis}], kpi)"]
    actual = p.query(select_sql(f"marts.{mart}", list(want.columns), order))
    assert_matches(actual, want)


def test_clean_events_match(golden_run):
    p, _ = golden_run
    want = expected("clean_events")
    actual = p.query(select_sql("clean.events", list(want.columns), ["message_id"]))
    assert_matches(actual, want)


def test_users_are_keyed_pseudonyms(golden_run):
    p, _ = golden_run
    users = p.query("SELECT DISTINCT message_id, user_key FROM clean.events WHERE message_id IN ('m01', 'm16')")
    by_msg = dict(zip(users.message_id, users.user_key))
    assert by_msg["m01"] == pseudonymize(TEST_KEY, "alice")
    assert by_msg["m16"] == pseudonymize(TEST_KEY, "anon-1")  # no userId: the anonymousId


def test_quarantine_has_every_rejected_row_with_its_reason(golden_run):
    p, _ = golden_run
    want = expected("quarantine_events")
    actual = p.query(
        "SELECT arrival_date::VARCHAR AS arrival_date, source_file, line_no, raw_row->>'$.message_id' AS message_id, "
        "reason FROM quarantine.events ORDER BY arrival_date, source_file, line_no"
    )
    assert len(actual) == len(want)
    for got, exp in zip(actual.itertuples(), want.itertuples()):
        assert (got.arrival_date, got.source_file, str(got.line_no)) == (exp.arrival_date, exp.source_file, exp.line_no)
        assert (got.message_id or "") == exp.message_id
        assert exp.reason in got.reason, f"{got.message_id}: {got.reason!r} lacks {exp.reason!r}"


def test_every_landed_row_is_accounted_for(golden_run):
    p, result = golden_run
    want = expected("accounting")
    for row in want.itertuples():
        books = p.query(
            f"""SELECT (SELECT sum(rows) FROM raw.source_files WHERE source = '{row.source}' AND arrival_date = $d) AS landed,
                       (SELECT count(*) FROM clean.{row.source} WHERE arrival_date = $d) AS clean,
                       (SELECT count(*) FROM quarantine.{row.source} WHERE arrival_date = $d) AS quarantined,
                       (SELECT count(*) FROM clean.{row.source}_duplicates WHERE arrival_date = $d)
                       + (SELECT coalesce(sum(rows), 0) FROM raw.source_files
                          WHERE source = '{row.source}' AND arrival_date = $d AND status = 'redelivered') AS duplicate""",
            {"d": row.arrival_date},
        ).iloc[0]
        assert [int(books.landed), int(books.clean), int(books.quarantined), int(books.duplicate)] == [
            int(row.rows_landed), int(row.rows_clean), int(row.rows_quarantined), int(row.rows_duplicate)
        ], row
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert checks[("clean/clean_events", "rows_reconcile")].passed
    assert checks[("clean/clean_requests", "rows_reconcile")].passed


def test_redelivered_file_is_recognized_not_ingested(golden_run):
    p, _ = golden_run
    files = p.query("SELECT path, status, duplicate_of, rows FROM raw.source_files ORDER BY path")
    redelivered = files[files.status == "redelivered"]
    assert redelivered.path.tolist() == ["events/2026-11-03/redelivered.ndjson"]
    assert redelivered.duplicate_of.tolist() == ["events/2026-11-02/a.ndjson"]
    assert p.query("SELECT count(*) AS n FROM raw.events WHERE source_file LIKE '%redelivered%'").n[0] == 0


def test_no_pii_past_the_door(golden_run):
    """No plain user id, e-mail, full IP or trait name anywhere in raw, clean, quarantine or marts."""
    p, _ = golden_run
    forbidden = ["alice", "carol", "anon-1", "@example.com", "203.0.113.77", "198.51.100.9", "192.0.2.55", "Alice A"]
    for table in p.tables():
        if table.startswith(("raw.source_files",)):
            continue
        text = p.query(f"SELECT string_agg(to_json(t)::VARCHAR, '\n') AS s FROM {table} t").s[0] or ""
        leaks = [f for f in forbidden if f in text]
        assert not leaks, f"{table} leaks {leaks}"
    context = p.query("SELECT context->>'$.ip' AS ip FROM raw.events WHERE message_id = 'm01'").ip[0]
    assert context == "203.0.113.0"
    traits = p.query("SELECT extra->'$.traits' AS t FROM raw.events WHERE message_id = 'm22'").t[0]
    assert traits == '{"plan":"pro"}'


def test_kpi_anomalies_cover_every_kpi_and_flag_nothing_without_history(golden_run):
    """Three days are too little history for the detector: every KPI row is there, unscored. The
    KPIs are those of kpi_changes plus 3 pipeline-health series for each of the 3 arrival days."""
    p, _ = golden_run
    rows = p.query(
        "SELECT count(*) AS n, count(expected) AS scored, count(*) FILTER (WHERE is_anomaly) AS flagged "
        "FROM marts.kpi_anomalies"
    ).iloc[0]
    assert (int(rows.n), int(rows.scored), int(rows.flagged)) == (len(expected("kpi_changes")) + 9, 0, 0)
    health = p.query("SELECT event_date::VARCHAR d, value FROM marts.kpi_anomalies "
                     "WHERE kpi = 'pipeline.quarantine_rate' ORDER BY d")
    # (events + requests) quarantined / rows in: 1/4, (6 + 2)/(21 + 9), (0 + 1)/(8 + 3)
    assert health.value.tolist() == pytest.approx([1 / 4, 8 / 30, 1 / 11])
