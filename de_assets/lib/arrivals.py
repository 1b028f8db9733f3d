"""What the sensors decide before they start work: how a set of days becomes as few runs as possible
(one per contiguous range), and the run keys that make a request of the same work start it once."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta


def contiguous_ranges(days) -> list[tuple[date, date]]:
    """Sorted, merged (first, last) ranges of consecutive days: {1, 2, 3, 5} -> [(1, 3), (5, 5)]."""
    ranges: list[list[date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(first, last) for first, last in ranges]


def batch_key(prefix: str, members: list[str]) -> str:
    """A stable run key for a batch: the prefix and a digest of its sorted members."""
    digest = hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:32]
    return f"{prefix}:{digest}"
