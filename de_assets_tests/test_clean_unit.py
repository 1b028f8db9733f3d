"""The clean layer (`lib/clean.py`, `lib/reconcile.py`) on hand-written deliveries, no Dagster.

Each test lands a few NDJSON lines, ingests them with `lib/ingest.py` into an in-memory warehouse
and cleans arrival days with `clean.clean_range`; every expected value is counted by hand from the
lines written here.
"""

from datetime import date

import duckdb
import pytest

from de_assets.lib import clean, ingest, privacy, reconcile, tables
from de_assets_tests.conftest import land, segment_event

D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture
def warehouse():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tables.ensure_tables(con)
    privacy.install_macros(con, "k")
    yield con
    con.close()


def _ingest(con, root, *days):
    for day in days:
        ingest.ingest_day(con, root, "events", day, "run", ingest.IngestReport("events"))


def _clean(con, day, **kwargs) -> clean.CleanReport:
    return clean.clean_range(con, clean.EVENTS, day, day, **kwargs)


def _fates(con) -> dict[str, list]:
    return {
        "clean": con.execute("SELECT message_id, arrival_date::VARCHAR FROM clean.events ORDER BY ALL").fetchall(),
        "duplicates": con.execute("SELECT dedupe_key, arrival_date::VARCHAR, conflict FROM clean.events_duplicates "
                                  "ORDER BY ALL").fetchall(),
        "quarantine": con.execute("SELECT line_no, reason, status FROM quarantine.events ORDER BY ALL").fetchall(),
    }


def test_first_delivery_wins_within_a_day_and_across_days(warehouse, tmp_path):
    # 11-01: m1 received 10:05, then again (same content) received 10:01: the 10:01 copy is the original
    land(tmp_path, "2026-11-01", "a.ndjson", [
        segment_event("m1", "u1", "2026-11-01T10:00:00Z", received="2026-11-01T10:05:00Z"),
        segment_event("m1", "u1", "2026-11-01T10:00:00Z", received="2026-11-01T10:01:00Z"),
        segment_event("m2", "u1", "2026-11-01T11:00:00Z"),
    ])
    # 11-02: m2 again (a re-delivery of 11-01's), with another user: a conflicting duplicate; m3 new
    land(tmp_path, "2026-11-02", "b.ndjson", [
        segment_event("m2", "u2", "2026-11-01T11:00:00Z"),
        segment_event("m3", "u1", "2026-11-02T09:00:00Z"),
    ])
    _ingest(warehouse, tmp_path, D1, D2)
    first, second = _clean(warehouse, D1), _clean(warehouse, D2)
    assert (first.rows_in, first.rows_clean, first.rows_duplicate) == (3, 2, 1)
    assert (second.rows_in, second.rows_clean, second.rows_duplicate, second.rows_duplicate_conflicting) == (2, 1, 1, 1)
    fates = _fates(warehouse)
    assert fates["clean"] == [("m1", "2026-11-01"), ("m2", "2026-11-01"), ("m3", "2026-11-02")]
    assert fates["duplicates"] == [("m1", "2026-11-01", False), ("m2", "2026-11-02", True)]
    # the original of m1 is line 2 (received first): line 1 is the duplicate
    assert warehouse.execute("SELECT line_no FROM clean.events WHERE message_id = 'm1'").fetchone()[0] == 2


def test_a_contract_failure_is_quarantined_with_its_reason_and_the_gate_holds_the_day_back(warehouse, tmp_path):
    land(tmp_path, "2026-11-01", "a.ndjson", [
        segment_event("m1", "u1", "2026-11-01T10:00:00Z"),
        segment_event("m2", "u1", "2026-11-01T10:00:00Z", typ="bogus"),
        '{"messageId": "m3", "type":',
    ])
    _ingest(warehouse, tmp_path, D1)
    held = _clean(warehouse, D1, max_quarantine_rate=0.5)  # 2 of 3 quarantined: 67% > 50%
    assert held.gated_days == ["2026-11-01"] and held.rows_held_back == 1
    fates = _fates(warehouse)
    assert fates["clean"] == []  # nothing was served before, nothing is served now
    assert [r for r, _, _ in fates["quarantine"]] == [1, 2, 3]
    assert [(s, r.split(":")[0]) for _, r, s in fates["quarantine"]] == [
        ("held_back", "held_back"), ("rejected", "type"), ("rejected", "malformed_json")]
    accepted = _clean(warehouse, D1, max_quarantine_rate=0.7)
    assert accepted.gated_days == [] and _fates(warehouse)["clean"] == [("m1", "2026-11-01")]


def test_a_day_cleaned_before_an_earlier_day_was_ingested_is_found_stale(warehouse, tmp_path):
    """11-02 re-delivers 11-01's m1 (and m2 is its own). Cleaned before 11-01 was ingested, 11-02
    serves m1; ingesting and cleaning 11-01 finds 11-02 stale, and rebuilding it makes m1 a duplicate.
    11-03 shares no key with 11-01 and is not stale."""
    land(tmp_path, "2026-11-01", "a.ndjson", [segment_event("m1", "u1", "2026-11-01T10:00:00Z")])
    land(tmp_path, "2026-11-02", "b.ndjson", [segment_event("m1", "u1", "2026-11-01T10:00:00Z"),
                                              segment_event("m2", "u1", "2026-11-02T10:00:00Z")])
    land(tmp_path, "2026-11-03", "c.ndjson", [segment_event("m4", "u1", "2026-11-03T10:00:00Z")])
    _ingest(warehouse, tmp_path, D2, D3)
    _clean(warehouse, D2), _clean(warehouse, D3)
    _ingest(warehouse, tmp_path, D1)
    _clean(warehouse, D1)
    assert warehouse.execute("SELECT count(*) FROM clean.events WHERE message_id = 'm1'").fetchone()[0] == 2
    assert reconcile.stale_later_days(warehouse, clean.EVENTS, D1, D1) == [D2]
    _clean(warehouse, D2)
    assert reconcile.stale_later_days(warehouse, clean.EVENTS, D1, D1) == []
    assert _fates(warehouse)["clean"] == [("m1", "2026-11-01"), ("m2", "2026-11-02"), ("m4", "2026-11-03")]
    assert _fates(warehouse)["duplicates"] == [("m1", "2026-11-02", False)]


def test_marts_to_refresh_covers_late_days_and_the_trailing_windows_after_the_range():
    # a run over 11-10..11-11 that saw late events of 11-05 and rebuilt 11-12 (rows of event day 11-08)
    ranges = reconcile.marts_to_refresh(date(2026, 11, 10), date(2026, 11, 11), [date(2026, 11, 5)],
                                        [date(2026, 11, 12)], [date(2026, 11, 8)], window_days=30)
    # late: 11-05 through the range's end; after: 11-12 .. 11-12 + 29 days = 12-11
    assert ranges == [(date(2026, 11, 5), date(2026, 11, 11)), (date(2026, 11, 12), date(2026, 12, 11))]
    plain = reconcile.marts_to_refresh(date(2026, 11, 10), date(2026, 11, 10), [], [], [], window_days=30)
    assert plain == [(date(2026, 11, 11), date(2026, 12, 9))]
