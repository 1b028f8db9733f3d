"""Warning rules (drift): volume vs the trailing weeks, source schema changes, category-mix PSI.

Each test builds a few hand-made rows in an in-memory warehouse, so the expected outcome (and the
PSI, computed here independently with math.log) can be checked by hand.
"""

import math
from datetime import date, timedelta

import pytest

from de_assets.lib import drift
from de_assets.lib.tables import ALL_TABLES, CLEAN_EVENTS, CLEAN_REQUESTS, RAW_EVENTS, RAW_REQUESTS

START = date(2026, 11, 2)  # a Monday
DAY = timedelta(days=1)


def assert_plain(metadata: dict):
    """Dagster metadata: plain scalars only."""
    for key, value in metadata.items():
        assert isinstance(value, (int, float, str, bool)) and value is not None, key
        assert not (isinstance(value, float) and math.isnan(value)), key


# ------------------------------------------------------------------------------------- volume

def add_files(con, source: str, day: date, rows: int, status: str = "ingested"):
    con.execute(
        "INSERT INTO raw.source_files (source, arrival_date, path, rows, status) VALUES (?, ?, ?, ?, ?)",
        [source, day, f"{source}/{day}/{status}-{rows}.ndjson", rows, status],
    )


def weekly_pattern(con, first: date, last: date, source: str = "events"):
    """Weekdays ~1000 rows, weekends ~400, with a small deterministic wobble (+-5)."""
    day, i = first, 0
    while day <= last:
        base = 400 if day.weekday() >= 5 else 1000
        add_files(con, source, day, base + (i * 7 % 11) - 5)
        day, i = day + DAY, i + 1


def test_volume_normal_day_passes(con):
    weekly_pattern(con, START - timedelta(weeks=8), START - DAY)
    add_files(con, "events", START, 600)
    add_files(con, "events", START, 402)  # two files on one day are summed: 1002
    add_files(con, "events", START, 5000, status="redelivered")  # a re-delivery adds no rows
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START)
    assert passed, meta
    assert meta["rows"] == 1002 and meta["anomalous_days"] == "" and meta["note"] == ""
    assert abs(meta["expected"] - 1000) < 10
    assert_plain(meta)


def test_volume_drop_fails_and_names_the_day(con):
    weekly_pattern(con, START - timedelta(weeks=8), START - DAY)
    add_files(con, "events", START, 100)
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START)
    assert not passed
    assert meta["anomalous_days"] == "2026-11-02" and meta["rows"] == 100 and meta["score"] < -3.5


def test_volume_is_seasonal_a_normal_saturday_passes(con):
    saturday = START + 5 * DAY
    weekly_pattern(con, START - timedelta(weeks=8), saturday - DAY)
    add_files(con, "events", saturday, 400)
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, saturday, saturday)
    assert passed, meta
    assert abs(meta["expected"] - 400) < 10
    # ...while 400 on a weekday is a drop
    weekday = saturday + 2 * DAY  # Monday
    add_files(con, "events", saturday + DAY, 400)
    add_files(con, "events", weekday, 400)
    assert not drift.volume_vs_trailing_weeks(con, RAW_EVENTS, weekday, weekday)[0]


def test_volume_missing_day_in_the_range_counts_zero(con):
    weekly_pattern(con, START - timedelta(weeks=8), START - DAY)
    add_files(con, "events", START, 1000)
    add_files(con, "events", START + 2 * DAY, 1000)  # Tuesday: no file at all
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START + 2 * DAY)
    assert not passed
    assert meta["anomalous_days"] == "2026-11-03" and meta["rows"] == 2000


def test_volume_with_too_little_history_passes_with_a_note(con):
    weekly_pattern(con, START - 3 * DAY, START - DAY)
    add_files(con, "events", START, 10)
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START)
    assert passed and meta["note"] == "insufficient history"
    assert_plain(meta)
    # nothing landed ever: same
    passed, meta = drift.volume_vs_trailing_weeks(con, RAW_REQUESTS, START, START)
    assert passed and meta["note"] == "insufficient history" and meta["rows"] == 0 and meta["expected"] == -1


def test_volume_reads_only_its_source_and_8_weeks(con):
    weekly_pattern(con, START - timedelta(weeks=8), START - DAY)
    add_files(con, "events", START, 1000)
    before = drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START)
    for back in range(1, 8):  # a wild week just outside the window, and another source
        add_files(con, "events", START - timedelta(weeks=8) - back * DAY, 90_000)
    add_files(con, "requests", START, 1)
    assert drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START) == before


def test_volume_counts_the_raw_tables_own_landing_source(con):
    add_files(con, "events", START, 1000)
    add_files(con, "requests", START, 7)
    assert drift.volume_vs_trailing_weeks(con, RAW_REQUESTS, START, START)[1]["rows"] == 7
    assert drift.volume_vs_trailing_weeks(con, RAW_EVENTS, START, START)[1]["rows"] == 1000
    with pytest.raises(ValueError, match=r"clean\.events is not a raw table"):
        drift.volume_vs_trailing_weeks(con, CLEAN_EVENTS, START, START)


# ------------------------------------------------------------------------------------- schema

def add_events(con, day: date, n: int = 3, event: str | None = "Signed Up", extra: str | None = '{"channel":"web"}'):
    for i in range(n):
        con.execute(
            """INSERT INTO raw.events (arrival_date, source_file, line_no, message_id, type, event, user_id,
                                       timestamp, properties, context, extra)
               VALUES (?, 'f', ?, ?, 'track', ?, 'u', '2026-11-01T00:00:00Z', '{}', '{}', ?)""",
            [day, i + 1, f"{day}-{i}", event, extra],
        )


def baseline_week(con, days: int = 7):
    for back in range(1, days + 1):
        add_events(con, START - back * DAY)


def test_schema_same_fields_passes(con):
    baseline_week(con)
    add_events(con, START)
    passed, meta = drift.source_schema_change(con, RAW_EVENTS, START, START)
    assert passed, meta
    # message_id, type, event, user_id, timestamp, properties, context, extra.channel
    assert meta == {"fields_added": "", "fields_removed": "", "baseline_days": 7, "fields": 8, "note": ""}


def test_schema_new_extra_key_warns(con):
    baseline_week(con)
    add_events(con, START, n=2)
    add_events(con, START, n=1, extra='{"channel":"web","new_field":1}')
    passed, meta = drift.source_schema_change(con, RAW_EVENTS, START, START)
    assert not passed and meta["fields_added"] == "extra.new_field" and meta["fields_removed"] == ""


def test_schema_field_gone_warns(con):
    baseline_week(con)
    add_events(con, START, event=None, extra="{}")
    passed, meta = drift.source_schema_change(con, RAW_EVENTS, START, START)
    assert not passed
    assert meta["fields_removed"] == "event,extra.channel" and meta["fields_added"] == ""


def test_schema_baseline_is_the_union_of_the_week(con):
    baseline_week(con)
    add_events(con, START - 6 * DAY, n=1, extra='{"channel":"web","rare":true}')  # once in the week
    add_events(con, START, extra='{"channel":"web","rare":false}')
    assert drift.source_schema_change(con, RAW_EVENTS, START, START)[0]


def test_schema_without_baseline_passes_with_a_note(con):
    add_events(con, START)
    passed, meta = drift.source_schema_change(con, RAW_EVENTS, START, START)
    assert passed and meta["note"] == "no baseline" and meta["baseline_days"] == 0
    assert_plain(meta)


def test_schema_on_requests_ignores_lineage_and_fingerprint(con):
    def add(day, cpu):
        con.execute(
            """INSERT INTO raw.requests
                   (arrival_date, source_file, line_no, record_id, timestamp, service, status, cpu_pct)
               VALUES (?, 'f', 1, 'r', '1700000000', 'api', '200', ?)""",
            [day, cpu],
        )

    for back in range(1, 4):
        add(START - back * DAY, "12.5")
    add(START, None)
    passed, meta = drift.source_schema_change(con, RAW_REQUESTS, START, START)
    assert not passed and meta["fields_removed"] == "cpu_pct" and meta["baseline_days"] == 3


def test_schema_reads_only_the_week_before(con):
    baseline_week(con)
    add_events(con, START)
    before = drift.source_schema_change(con, RAW_EVENTS, START, START)
    # 30 days earlier the source looked very different: no effect
    add_events(con, START - 30 * DAY, n=5, event=None, extra='{"legacy":1}')
    add_events(con, START - 8 * DAY, n=5, extra='{"channel":"web","old":1}')
    assert drift.source_schema_change(con, RAW_EVENTS, START, START) == before


# ------------------------------------------------------------------------------- distribution

def add_types(con, day: date, counts: dict):
    for value, n in counts.items():
        con.execute(
            """INSERT INTO clean.events (arrival_date, message_id, type, event)
               SELECT ?, uuid()::VARCHAR, ?, ? FROM range(?)""",
            [day, value, value, n],
        )


def hand_psi(p: dict, q: dict) -> float:
    total = 0.0
    for k in set(p) | set(q):
        pk, qk = max(p.get(k, 0.0), 1e-4), max(q.get(k, 0.0), 1e-4)
        total += (pk - qk) * math.log(pk / qk)
    return total


TYPE_DRIFT = drift.distribution_drift("type", "type")


def test_drift_same_mix_passes_with_psi_zero(con):
    for back in range(1, 8):
        add_types(con, START - back * DAY, {"track": 50, "page": 50})
    add_types(con, START, {"track": 40, "page": 40})
    passed, meta = TYPE_DRIFT(con, CLEAN_EVENTS, START, START)
    assert passed and meta["psi"] == 0.0
    assert meta["rows"] == 80 and meta["baseline_rows"] == 700
    assert_plain(meta)


def test_drift_shift_fails_with_the_hand_computed_psi(con):
    for back in range(1, 8):
        add_types(con, START - back * DAY, {"track": 50, "page": 50})
    add_types(con, START, {"track": 90, "page": 10})
    passed, meta = TYPE_DRIFT(con, CLEAN_EVENTS, START, START)
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)  # 0.879
    assert not passed
    assert abs(meta["psi"] - expected) < 1e-3 and abs(meta["psi"] - hand_psi({"track": .9, "page": .1},
                                                                              {"track": .5, "page": .5})) < 1e-3
    assert meta["biggest_mover"] in ("track", "page")  # both moved by 0.4


def test_drift_small_shift_stays_under_threshold(con):
    add_types(con, START - DAY, {"track": 50, "page": 50})
    add_types(con, START, {"track": 55, "page": 45})
    passed, meta = TYPE_DRIFT(con, CLEAN_EVENTS, START, START)
    assert passed and abs(meta["psi"] - hand_psi({"track": .55, "page": .45}, {"track": .5, "page": .5})) < 1e-3


def test_drift_other_and_null_buckets(con):
    check = drift.distribution_drift("event", "event", top=2)
    # baseline: a 5, b 3, c 1, d 1 -> top 2 are a, b; c and d are "(other)"
    add_types(con, START - DAY, {"a": 5, "b": 3, "c": 1, "d": 1})
    # range: a 4, b 2, e 2 (new -> "(other)"), NULL 2 -> "(null)"
    add_types(con, START, {"a": 4, "b": 2, "e": 2})
    con.execute("INSERT INTO clean.events (arrival_date, message_id, type) "
                "SELECT ?, uuid()::VARCHAR, 'page' FROM range(2)", [START])
    passed, meta = check(con, CLEAN_EVENTS, START, START)
    p = {"a": .4, "b": .2, "(other)": .2, "(null)": .2}
    q = {"a": .5, "b": .3, "(other)": .2}
    assert abs(meta["psi"] - hand_psi(p, q)) < 1e-3
    assert not passed and meta["biggest_mover"] == "(null)"  # 0 -> 0.2
    assert check.__name__ == "event_distribution_drift" and "event" in check.__doc__


def test_drift_without_baseline_passes_with_a_note(con):
    add_types(con, START, {"track": 1})
    passed, meta = TYPE_DRIFT(con, CLEAN_EVENTS, START, START)
    assert passed and meta["note"] == "no baseline rows" and meta["baseline_rows"] == 0
    assert_plain(meta)


def test_drift_reads_only_the_week_before(con):
    for back in range(1, 8):
        add_types(con, START - back * DAY, {"track": 50, "page": 50})
    add_types(con, START, {"track": 60, "page": 40})
    before = TYPE_DRIFT(con, CLEAN_EVENTS, START, START)
    add_types(con, START - 30 * DAY, {"identify": 5000})  # far outside the 7-day baseline
    add_types(con, START - 8 * DAY, {"identify": 5000})  # the day just before the baseline
    add_types(con, START + DAY, {"alias": 5000})  # after the range
    assert TYPE_DRIFT(con, CLEAN_EVENTS, START, START) == before


def test_status_class_drift_on_requests(con):
    check = CLEAN_REQUESTS.warnings[1]
    for status, n in ((200, 95), (404, 5)):
        con.execute("INSERT INTO clean.requests (arrival_date, record_id, service, status) "
                    "SELECT ?, uuid()::VARCHAR, 'api', ? FROM range(?)", [START - DAY, status, n])
    for status, n in ((201, 60), (503, 40)):
        con.execute("INSERT INTO clean.requests (arrival_date, record_id, service, status) "
                    "SELECT ?, uuid()::VARCHAR, 'api', ? FROM range(?)", [START, status, n])
    passed, meta = check(con, CLEAN_REQUESTS, START, START)
    assert check.__name__ == "status_class_distribution_drift"
    # class 5 never occurred in the baseline, so it lands in "(other)"
    assert not passed and meta["biggest_mover"] == "(other)"
    assert abs(meta["psi"] - hand_psi({"2": .6, "(other)": .4}, {"2": .95, "4": .05})) < 1e-3


def test_registry_names_are_unique_and_documented():
    for table in ALL_TABLES:
        names = [r.__name__ for r in (*table.checks, *table.warnings)]
        assert len(set(names)) == len(names), table.name
        assert all((r.__doc__ or "").strip() for r in (*table.checks, *table.warnings)), table.name
