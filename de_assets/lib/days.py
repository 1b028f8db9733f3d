"""Days and day ranges: the naive-UTC now, inclusive day lists, and the ``start..end`` label.

Every timestamp the pipeline stores is naive UTC; every day range is inclusive at both ends.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone


def utc_now() -> datetime:
    """Now in UTC, without tzinfo (how timestamps are stored)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def utc_today() -> date:
    """Today's date in UTC."""
    return datetime.now(timezone.utc).date()


def days_between(start: date, end: date) -> list[date]:
    """Every day of [start, end], in order (empty when end < start)."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def range_label(start, end) -> str:
    """``start..end`` (dates or ISO strings), the form `parse_range` reads back, even for one day."""
    return f"{start}..{end}"


def short_label(start, end) -> str:
    """``start..end``, or just ``start`` for a one-day range: for people (log lines, metadata)."""
    return str(start) if start == end else range_label(start, end)


def parse_range(text: str) -> tuple[str, str]:
    """``'2026-11-01..2026-11-03'`` -> ``('2026-11-01', '2026-11-03')`` (ISO strings, as written)."""
    first, sep, last = text.partition("..")
    if not sep or not first or not last or ".." in last:
        raise ValueError(f"not a 'start..end' day range: {text!r}")
    return first, last


def ranges_label(ranges) -> str:
    """(first, last) ranges -> ``'a..b, c..d'``, or ``'none'``: the form `parse_ranges` reads back."""
    return ", ".join(range_label(first, last) for first, last in ranges) or "none"


def parse_ranges(text: str | None) -> list[tuple[str, str]]:
    """``'a..b, c..d'`` -> ``[('a', 'b'), ('c', 'd')]``; ``'none'``, empty or None -> ``[]``."""
    if not text or text == "none":
        return []
    return [parse_range(part) for part in text.split(", ")]
