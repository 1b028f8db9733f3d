"""de_assets.lib.days: naive-UTC now, inclusive day lists, the start..end label (no Dagster)."""

from datetime import date, datetime, timedelta, timezone

import pytest

from de_assets.lib.days import days_between, parse_range, parse_ranges, range_label, ranges_label, short_label, utc_now, utc_today


def test_utc_now_is_naive_utc():
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    now = utc_now()
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    assert now.tzinfo is None and before <= now <= after
    assert utc_today() in {before.date(), after.date()}


def test_days_between_is_inclusive_and_crosses_months():
    assert days_between(date(2026, 2, 27), date(2026, 3, 2)) == [
        date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)]
    assert days_between(date(2026, 11, 5), date(2026, 11, 5)) == [date(2026, 11, 5)]
    assert days_between(date(2026, 11, 5), date(2026, 11, 4)) == []
    assert len(days_between(date(2024, 1, 1), date(2024, 12, 31))) == 366  # leap year
    assert days_between(date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=9))[::7] == [
        date(2026, 1, 1), date(2026, 1, 8)]


def test_labels():
    assert range_label(date(2026, 11, 1), date(2026, 11, 3)) == "2026-11-01..2026-11-03"
    assert range_label("2026-11-01", "2026-11-01") == "2026-11-01..2026-11-01"
    assert short_label(date(2026, 11, 1), date(2026, 11, 1)) == "2026-11-01"
    assert short_label(date(2026, 11, 1), date(2026, 11, 2)) == "2026-11-01..2026-11-02"


def test_parse_range_reads_back_range_label():
    assert parse_range("2026-11-01..2026-11-03") == ("2026-11-01", "2026-11-03")
    assert parse_range(range_label(date(2026, 1, 31), date(2026, 2, 1))) == ("2026-01-31", "2026-02-01")
    for bad in ("2026-11-01", "2026-11-01..", "..2026-11-01", "a..b..c", ""):
        with pytest.raises(ValueError, match="start..end"):
            parse_range(bad)


def test_ranges_label_and_parse_ranges_read_each_other_back():
    ranges = [(date(2026, 11, 1), date(2026, 11, 1)), (date(2026, 11, 3), date(2026, 11, 9))]
    assert ranges_label(ranges) == "2026-11-01..2026-11-01, 2026-11-03..2026-11-09"
    assert parse_ranges(ranges_label(ranges)) == [("2026-11-01", "2026-11-01"), ("2026-11-03", "2026-11-09")]
    assert ranges_label([]) == "none"
    assert parse_ranges("none") == parse_ranges("") == parse_ranges(None) == []
