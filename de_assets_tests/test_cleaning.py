"""The cleaning layer on hand-made records, through Dagster: history from any year (a configurable
earliest event time instead of a hard-coded bound) and conflicting duplicates (same id, different
content) flagged and counted."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from de_assets.lib import contracts
from de_assets.lib.privacy import pseudonymize
from de_assets_tests.conftest import TEST_KEY, Pipeline, land, segment_event

ROOT = Path(__file__).resolve().parents[1]


def _checks(result, asset: str, name: str) -> list:
    return [e for e in result.get_asset_check_evaluations()
            if e.asset_key.to_user_string() == asset and e.check_name == name]


def test_history_from_1997_loads_and_is_served(tmp_path):
    """A 1997-1998 purchase history landed in its own arrival days, partitions starting in 1997, run
    with the CLI (a fresh process: the partitions are defined at import). Two events sit before the
    default earliest event time 1970-01-02: one from 1969, one stamped by a zeroed clock (epoch +7 s)."""
    landing = tmp_path / "landing"
    land(landing, "1997-12-30", "a.ndjson", [
        segment_event("h1", "u1", "1997-12-30T10:00:00Z", typ="page", event=None),
        segment_event("h2", "u1", "1997-12-30T10:05:00Z"),
    ])
    land(landing, "1997-12-31", "b.ndjson", [
        segment_event("h3", "u2", "1997-12-31T23:00:00Z", typ="page", event=None),
        segment_event("h4", "u1", "1997-12-31T23:30:00Z", event="Order Completed", properties={"revenue": 42.0}),
    ])
    land(landing, "1998-01-01", "c.ndjson", [
        segment_event("h5", "u2", "1998-01-01T00:10:00Z", typ="page", event=None),
        segment_event("h6", "u1", "1997-12-31T22:00:00Z", typ="page", event=None),  # late by one day
        segment_event("h7", "u3", "1969-12-31T23:59:59Z", typ="page", event=None),
        segment_event("h8", "u3", "1970-01-01T00:00:07Z", typ="page", event=None),
        segment_event("h9", "u3", "1998-01-01T01:00:00Z", typ="page", event=None),
    ])
    db = tmp_path / "w.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DE_ASSETS_START_DATE": "1997-01-01", "DE_ASSETS_DUCKDB": str(db),
           "DE_ASSETS_REPORTS": str(tmp_path / "reports"), "DAGSTER_HOME": str(tmp_path / "home"),
           "DE_ASSETS_PSEUDONYM_KEY": TEST_KEY, "DE_ASSETS_MAX_QUARANTINE_RATE": "0.5"}
    env.pop("DE_ASSETS_EARLIEST_EVENT_TIME", None)
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "de_assets.cli", "run", "--start", "1997-12-30", "--end", "1998-01-01",
         "--landing", str(landing)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "daily_pipeline 1997-12-30..1998-01-01: SUCCESS" in done.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        clean = con.execute("SELECT message_id, event_date::VARCHAR FROM clean.events ORDER BY 1").fetchall()
        assert clean == [("h1", "1997-12-30"), ("h2", "1997-12-30"), ("h3", "1997-12-31"), ("h4", "1997-12-31"),
                         ("h5", "1998-01-01"), ("h6", "1997-12-31"), ("h9", "1998-01-01")]
        quarantine = con.execute("SELECT raw_row->>'$.message_id', reason, status FROM quarantine.events ORDER BY 1")
        assert quarantine.fetchall() == [("h7", "event_ts:implausibly_old", "rejected"),
                                         ("h8", "event_ts:implausibly_old", "rejected")]
        # served: 12-30 u1 (h1, h2); 12-31 u2 h3, u1 h4 and the late h6; 01-01 u2 h5, u3 h9
        engagement = con.execute("SELECT event_date::VARCHAR, dau, events FROM marts.daily_engagement ORDER BY 1")
        assert engagement.fetchall() == [("1997-12-30", 1, 2), ("1997-12-31", 2, 3), ("1998-01-01", 2, 2)]
        revenue = con.execute("SELECT orders, revenue FROM marts.revenue_daily WHERE event_date = '1997-12-31'")
        assert revenue.fetchall() == [(1, 42.0)]


def test_earliest_event_time_is_a_setting(tmp_path, golden_landing):
    """With the earliest event time moved to 2026-11-02, the golden fixture's 11-01 events (m01..m03,
    and m29 which happened 11-01 20:00 but arrived 11-02) are implausibly old; nothing else changes."""
    p = Pipeline(tmp_path, golden_landing, earliest_event_time="2026-11-02T00:00:00Z", max_quarantine_rate=1.0)
    assert p.run("2026-11-01", "2026-11-02").success
    old = p.query("SELECT raw_row->>'$.message_id' m, reason FROM quarantine.events "
                  "WHERE reason LIKE '%implausibly_old%' ORDER BY 1")
    assert old.values.tolist() == [["m01", "event_ts:implausibly_old"], ["m02", "event_ts:implausibly_old"],
                                   ["m03", "event_ts:implausibly_old"], ["m29", "event_ts:implausibly_old"]]
    assert p.query("SELECT min(event_date)::VARCHAR d, count(*) n FROM clean.events").values.tolist() == [
        ["2026-11-02", 13]]


def test_a_bad_earliest_event_time_names_the_setting(tmp_path, golden_landing):
    p = Pipeline(tmp_path, golden_landing, earliest_event_time="last tuesday")
    result = p.run("2026-11-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "DE_ASSETS_EARLIEST_EVENT_TIME" in failure.event_specific_data.error.message


def test_parse_earliest():
    assert str(contracts.parse_earliest(None)) == "1970-01-02 00:00:00"
    assert str(contracts.parse_earliest("1995-06-01T02:00:00+02:00")) == "1995-06-01 00:00:00"  # to naive UTC


D1, D2 = "2026-11-10", "2026-11-11"


def test_conflicting_duplicates_are_flagged_counted_and_warned(tmp_path):
    """c3 arrives twice on D1 with different properties: the delivery received first (line 4) is the
    original, line 3 conflicts on `properties`. On D2, c1 again with the same content (only sentAt /
    receivedAt differ) is a plain duplicate; c2 again from another user conflicts on `user_id`; c1
    once more as another event by another user conflicts on `event, user_id`."""
    landing = tmp_path / "landing"
    land(landing, D1, "a.ndjson", [
        segment_event("c1", "u1", f"{D1}T10:00:00Z", properties={"sku": "A"}),
        segment_event("c2", "u2", f"{D1}T10:01:00Z"),
        segment_event("c3", "u3", f"{D1}T10:02:00Z", received=f"{D1}T10:05:00Z", properties={"sku": "A"}),
        segment_event("c3", "u3", f"{D1}T10:02:00Z", properties={"sku": "B"}),
    ])
    land(landing, D2, "b.ndjson", [
        segment_event("c1", "u1", f"{D1}T10:00:00Z", received=f"{D2}T08:00:00Z", properties={"sku": "A"}),
        segment_event("c2", "u9", f"{D1}T10:01:00Z"),
        segment_event("c4", "u4", f"{D2}T09:00:00Z"),
        segment_event("c1", "u5", f"{D1}T10:00:00Z", event="Order Completed", properties={"sku": "A"}),
    ])
    p = Pipeline(tmp_path, landing)
    result = p.run(D1, D2)
    assert result.success  # a warning, not a blocking check
    duplicates = p.query("SELECT arrival_date::VARCHAR d, line_no, dedupe_key, conflict, conflicting_fields "
                         "FROM clean.events_duplicates ORDER BY ALL")
    assert duplicates.astype(object).where(duplicates.notna(), None).values.tolist() == [
        [D1, 3, "c3", True, "properties"],
        [D2, 1, "c1", False, None],
        [D2, 2, "c2", True, "user_id"],
        [D2, 4, "c1", True, "event, user_id"],
    ]
    clean = p.query("SELECT message_id, properties->>'$.sku' sku FROM clean.events ORDER BY 1")
    assert clean.values.tolist() == [["c1", "A"], ["c2", None], ["c3", "B"], ["c4", None]]

    # one evaluation per day (D1: c3 conflicts; D2: c1 plain, c2 and the second c1 conflict)
    evaluations = {e.partition: e for e in _checks(result, "clean/clean_events", "conflicting_duplicates")}
    assert set(evaluations) == {D1, D2}
    assert all(not e.passed and e.severity == dg.AssetCheckSeverity.WARN for e in evaluations.values())
    figures = {day: (e.metadata["rows_duplicate"].value, e.metadata["rows_duplicate_conflicting"].value)
               for day, e in evaluations.items()}
    assert figures == {D1: (1, 1), D2: (3, 2)}
    meta = {k: v.value for e in evaluations.values() for k, v in e.metadata.items()}
    per_day = {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "clean/clean_events"}
    assert {day: m["rows_duplicate_conflicting"].value for day, m in per_day.items()} == {D1: 1, D2: 2}
    clean_meta = per_day[D2]
    # counts and field names only: no message id, user id or pseudonym in what this reports
    text = repr(meta) + repr({k: v.value for k, v in clean_meta.items() if k.startswith("rows_")})
    for secret in ("c1", "c2", "c3", "u9", "u5", pseudonym := pseudonymize(TEST_KEY, "u9"), pseudonym[:12]):
        assert secret not in text
    assert all(e.passed for e in _checks(result, "clean/clean_events", "rows_reconcile"))

    # the other dedupe implementation flags the same rows
    other = Pipeline(tmp_path / "arg_min", landing, dedupe_strategy="arg_min")
    (tmp_path / "arg_min").mkdir()
    assert other.run(D1, D2).success
    again = other.query("SELECT arrival_date::VARCHAR d, line_no, dedupe_key, conflict, conflicting_fields "
                        "FROM clean.events_duplicates ORDER BY ALL")
    assert again.astype(str).values.tolist() == duplicates.astype(str).values.tolist()


def test_a_re_delivery_days_later_is_compared_with_its_original_on_the_day_it_arrived(tmp_path):
    """Each day run on its own: the originals are on earlier days (read from the days the keys were
    delivered on, not the whole history). c1 and c2 arrive on D1, c5 on D2; on D3 c1 comes again
    unchanged (plain duplicate), c2 from another user (conflict on `user_id`), c5 with another
    property (conflict on `properties`)."""
    d3 = "2026-11-12"
    landing = tmp_path / "landing"
    land(landing, D1, "a.ndjson", [segment_event("c1", "u1", f"{D1}T10:00:00Z", properties={"sku": "A"}),
                                   segment_event("c2", "u2", f"{D1}T10:01:00Z")])
    land(landing, D2, "b.ndjson", [segment_event("c5", "u5", f"{D2}T09:00:00Z", properties={"sku": "A"}),
                                   segment_event("c6", "u6", f"{D2}T09:30:00Z")])
    land(landing, d3, "c.ndjson", [
        segment_event("c1", "u1", f"{D1}T10:00:00Z", received=f"{d3}T08:00:00Z", properties={"sku": "A"}),
        segment_event("c2", "u9", f"{D1}T10:01:00Z"),
        segment_event("c5", "u5", f"{D2}T09:00:00Z", properties={"sku": "B"}),
        segment_event("c7", "u7", f"{d3}T09:00:00Z"),
    ])
    for strategy in ("window", "arg_min"):
        (tmp_path / strategy).mkdir()
        p = Pipeline(tmp_path / strategy, landing, dedupe_strategy=strategy)
        for day in (D1, D2, d3):
            assert p.run(day).success
        duplicates = p.query("SELECT arrival_date::VARCHAR d, line_no, dedupe_key, conflict, conflicting_fields "
                             "FROM clean.events_duplicates ORDER BY ALL")
        assert duplicates.astype(object).where(duplicates.notna(), None).values.tolist() == [
            [d3, 1, "c1", False, None],
            [d3, 2, "c2", True, "user_id"],
            [d3, 3, "c5", True, "properties"],
        ], strategy
        assert p.query("SELECT message_id FROM clean.events ORDER BY 1")["message_id"].tolist() == \
            ["c1", "c2", "c5", "c6", "c7"]


def test_golden_duplicates_do_not_conflict(pipeline):
    """m14's re-deliveries (README: later receivedAt on 11-02, again on 11-03) differ only in sentAt and
    receivedAt, and the requests duplicate is the same line again: no conflict anywhere."""
    result = pipeline.run("2026-11-01", "2026-11-03")
    rows = pipeline.query("SELECT dedupe_key, conflict FROM clean.events_duplicates ORDER BY arrival_date")
    assert rows.values.tolist() == [["m14", False], ["m14", False]]
    assert pipeline.query("SELECT list(conflict) c FROM clean.requests_duplicates").c[0].tolist() == [False]
    assert len(_checks(result, "clean/clean_events", "conflicting_duplicates")) == 3  # one per day
    assert all(e.passed for e in _checks(result, "clean/clean_events", "conflicting_duplicates"))
    assert all(e.passed for e in _checks(result, "clean/clean_requests", "conflicting_duplicates"))


def test_an_older_warehouse_gains_the_new_columns(tmp_path):
    """Tables created before `status` / `conflict` existed get them added on connect."""
    from de_assets.lib.tables import ensure_tables

    with duckdb.connect(str(tmp_path / "old.duckdb")) as con:
        con.execute("CREATE SCHEMA quarantine")
        con.execute("CREATE TABLE quarantine.events (arrival_date DATE, source_file VARCHAR, line_no BIGINT, "
                    "reason VARCHAR, raw_row JSON, ingested_at TIMESTAMP)")
        con.execute("INSERT INTO quarantine.events VALUES ('2026-11-01', 'f', 1, 'malformed_json', NULL, NULL)")
        ensure_tables(con)
        ensure_tables(con)  # idempotent
        assert con.execute("SELECT status, reason FROM quarantine.events").fetchall() == [(None, "malformed_json")]
        columns = con.execute("SELECT column_name FROM information_schema.columns "
                              "WHERE table_name = 'events_duplicates' ORDER BY ordinal_position").fetchall()
        assert [c for (c,) in columns][-2:] == ["conflict", "conflicting_fields"]


def test_accounting_names_the_file_that_does_not_balance(pipeline):
    """Golden 11-02 (README table): a.ndjson 18 rows = 11 clean + 6 quarantined + 1 duplicate; b.csv 2
    clean; c.parquet 1 clean. One clean row of b.csv goes missing: only b.csv is unbalanced."""
    from datetime import date

    from de_assets.lib import clean, reconcile, staged

    assert pipeline.run("2026-11-02").success
    day = [date(2026, 11, 2)]
    # kept in the catalog database: the forgotten rows (none) and the file registry
    held = {"forgotten": pipeline.held("SELECT * FROM raw.forgotten_rows"),
            "registry": pipeline.held("SELECT * FROM raw.source_files")}
    with duckdb.connect(str(pipeline.db)) as con, staged.overlay(con):  # clean.events is kept in the lake
        assert reconcile.accounting(con, clean.EVENTS, "events", day, **held)["files_checked"] == 3
        con.execute(f"DELETE FROM {staged.target(con, clean.EVENTS.clean, day)} WHERE message_id = 'm26'")
        books = reconcile.accounting(con, clean.EVENTS, "events", day, **held)
    assert not books["balanced"] and books["files_unbalanced"] == 1
    assert (books["rows_landed"], books["rows_clean"], books["rows_quarantined"], books["rows_duplicate"]) == (
        21, 13, 6, 1)
    assert books["unbalanced_files"].splitlines()[2:] == ["| 2026-11-02 | events/2026-11-02/b.csv | 2 | 1 | 0 | 0 | 2 |"]
