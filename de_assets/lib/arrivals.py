"""What the sensors decide before they start work: which landed files are already in the
warehouse, and how a set of days becomes as few runs as possible (one per contiguous range)."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta


def registered_checksums(con, checksums: list[str]) -> set[str]:
    """Those of `checksums` (SHA-256 of landed files) already registered in `raw.source_files`,
    under any name or day (a byte-identical re-delivery counts as registered). A warehouse without
    the table has none."""
    if not checksums:
        return set()
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = 'source_files'"
    ).fetchone()[0]
    if not exists:
        return set()
    rows = con.execute(
        "SELECT DISTINCT sha256 FROM raw.source_files WHERE list_contains($checksums, sha256)",
        {"checksums": sorted(set(checksums))},
    ).fetchall()
    return {sha for (sha,) in rows}


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
