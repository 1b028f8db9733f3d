"""One arrival day of events: which file format each record goes to, the record-level dirt
injected into first deliveries, the split over files, and the duplicate copies (same day, or
queued for the next day)."""

from __future__ import annotations

import math

import numpy as np

from de_assets.generator.config import Dirt, Formats
from de_assets.generator.records import Records, concat, nrows, take
from de_assets.generator.vocabulary import (
    D_MALFORMED,
    D_NO_MID,
    D_NO_TS,
    D_NO_USER,
    D_NONE,
    D_PROPS_STR,
    D_REV_STR,
    D_TS_NUM,
    D_UNKNOWN,
    K_IDENTIFY,
    K_ORDER,
)
from de_assets.generator.window import MINUTE_MS, STREAM_ARRIVAL, Window, time_of_day_ms

# record format codes: NDJSON parts, then one file each of CSV, Parquet, JSON array
FMT_NDJSON, FMT_CSV, FMT_PARQUET, FMT_JSON = range(4)
# duplicate codes: 0 first delivery, 1 copy delivered the same day, 2 copy from the previous day
DUP_FIRST, DUP_SAME_DAY, DUP_NEXT_DAY = range(3)


def ndjson_file_count(formats: Formats, n_records: int) -> int:
    if formats.ndjson_files:
        return max(1, int(formats.ndjson_files))
    return int(min(8, max(2, math.ceil(n_records / 250_000))))


class EventDelivery:
    """Turns the events arriving on a day into the records of its files (sorted by file, then
    receivedAt); copies meant for the next day wait in ``next_day_copies``."""

    def __init__(self, window: Window, dirt: Dirt, formats: Formats) -> None:
        self.window, self.dirt, self.formats = window, dirt, formats
        self.next_day_copies: dict[int, list[Records]] = {}

    def deliver(self, d: int, arriving: list[Records]) -> tuple[Records, int]:
        """The day's records (first deliveries with their dirt, plus duplicates) and the number
        of NDJSON parts; ({}, 0) when nothing arrives."""
        rng = self.window.rng(STREAM_ARRIVAL, d)
        first = concat(arriving)
        if first:
            n_first = nrows(first)
            first["dup"] = np.zeros(n_first, np.int8)
            first["dirt"] = np.zeros(n_first, np.int8)
            first["pad"] = np.full(n_first, -1, np.int8)
            first["pii"] = np.zeros(n_first, np.int8)
            first["cut"] = np.zeros(n_first, np.int16)
        rec = concat([first] + self.next_day_copies.pop(d, []))
        if not rec:
            return {}, 0
        n = nrows(rec)
        is_first = rec["dup"] == DUP_FIRST
        f = self.formats
        shares = np.array([1.0 - f.csv - f.parquet - f.json, f.csv, f.parquet, f.json])
        fmt = rng.choice(4, size=n, p=np.clip(shares, 0, None) / shares.clip(0).sum()).astype(np.int8)
        to_copy = is_first & (rng.random(n) < self.dirt.duplicate)
        self._inject_dirt(rng, rec, fmt, is_first, to_copy)
        n_ndjson = ndjson_file_count(f, int((fmt == FMT_NDJSON).sum()))
        self._assign_files(rec, fmt, n_ndjson)
        same_day = self._copies(rng, d, rec, np.nonzero(to_copy)[0])
        rec = concat([rec, same_day]) if same_day else rec
        order = np.lexsort((rec["dup"], rec["ev"], rec["recv"], rec["file"]))
        return take(rec, order), n_ndjson

    def _inject_dirt(self, rng: np.random.Generator, rec: Records, fmt: np.ndarray, is_first: np.ndarray,
                     to_copy: np.ndarray) -> None:
        """Record-breaking dirt (exclusive, never on late/skewed/duplicated records, and only where
        the format can carry it), padded enums, PII and the cut point of malformed lines."""
        dirt, n = self.dirt, len(fmt)
        mf = dirt.missing_field / 3
        rates = [dirt.malformed, mf, mf, mf, dirt.wrong_type / 2, dirt.wrong_type / 2, dirt.unknown_type]
        codes = np.array([D_MALFORMED, D_NO_MID, D_NO_USER, D_NO_TS, D_TS_NUM, D_PROPS_STR, D_UNKNOWN, D_NONE], np.int8)
        drawn = codes[np.searchsorted(np.cumsum(rates), rng.random(n), side="right")]
        kind = rec["kind"]
        lines_fmt = (fmt == FMT_NDJSON) | (fmt == FMT_JSON)
        fits = (
            ((drawn != D_MALFORMED) | (fmt == FMT_NDJSON))
            & (((drawn != D_TS_NUM) & (drawn != D_PROPS_STR)) | lines_fmt)
            & ((drawn != D_PROPS_STR) | (kind != K_IDENTIFY))
        )
        eligible = is_first & ~to_copy & ~rec["late"] & ~rec["skew"]
        new_dirt = np.where(eligible & fits, drawn, D_NONE)
        bad_revenue = (
            eligible & (new_dirt == D_NONE) & lines_fmt & (kind == K_ORDER) & (rec["has_rev"] == 1)
            & (rng.random(n) < min(1.0, dirt.wrong_type * dirt.wrong_revenue_factor))
        )
        new_dirt = np.where(bad_revenue, D_REV_STR, new_dirt)
        clean = is_first & (new_dirt == D_NONE)
        new_pad = np.where(clean & (rng.random(n) < dirt.padded_enum), rng.integers(0, 4, n), -1)
        new_pii = np.where(
            clean & (kind != K_IDENTIFY) & (rng.random(n) < dirt.pii),
            np.where(rng.random(n) < 0.7, 1, 2),
            0,
        )
        new_cut = rng.integers(150, 950, n)
        rec["dirt"] = np.where(is_first, new_dirt, rec["dirt"]).astype(np.int8)
        rec["pad"] = np.where(is_first, new_pad, rec["pad"]).astype(np.int8)
        rec["pii"] = np.where(is_first, new_pii, rec["pii"]).astype(np.int8)
        rec["cut"] = np.where(is_first, new_cut, rec["cut"]).astype(np.int16)

    @staticmethod
    def _assign_files(rec: Records, fmt: np.ndarray, n_ndjson: int) -> None:
        """NDJSON records split into ``n_ndjson`` receivedAt windows (files 0..n-1); CSV, Parquet and
        JSON one file each (files n, n+1, n+2)."""
        ndjson = np.nonzero(fmt == FMT_NDJSON)[0]
        part = np.zeros(len(fmt), np.int64)
        if len(ndjson):
            by_time = ndjson[np.lexsort((rec["ev"][ndjson], rec["recv"][ndjson]))]
            part[by_time] = np.arange(len(by_time)) * n_ndjson // len(by_time)
        rec["file"] = np.where(fmt == FMT_NDJSON, part, n_ndjson + fmt - 1).astype(np.int16)
        rec["fmt"] = fmt

    def _copies(self, rng: np.random.Generator, d: int, rec: Records, sources: np.ndarray) -> Records:
        """Duplicates of ``sources``: most later the same day (returned), some in the next day's
        folder (queued)."""
        window = self.window
        next_day = (d + 1 < window.days) & (rng.random(len(sources)) < self.dirt.duplicate_next_day)
        same = take(rec, sources[~next_day])
        n_same = nrows(same) if same else 0
        if n_same:
            shift = np.where(rng.random(n_same) < 0.5, 0, rng.integers(1_000, 10 * MINUTE_MS, n_same))
            shift = np.clip(shift, 0, np.maximum(0, window.day_ms(d + 1) - 1 - same["recv"]))
            same["recv"] = same["recv"] + shift
            same["sent"] = same["sent"] + shift
            same["dup"] = np.full(n_same, DUP_SAME_DAY, np.int8)
        later = take(rec, sources[next_day])
        if later and nrows(later):
            new_recv = window.day_ms(d + 1) + time_of_day_ms(rng, nrows(later))
            later["sent"] = later["sent"] + (new_recv - later["recv"])
            later["recv"] = new_recv
            later["dup"] = np.full(nrows(later), DUP_NEXT_DAY, np.int8)
            self.next_day_copies.setdefault(d + 1, []).append(later)
        return same if n_same else {}
