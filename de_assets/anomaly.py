"""Seasonality-aware, robust anomaly detection for one metric time series.

``detect(frame)`` takes a DataFrame with columns ``ts, value`` and returns a copy with
``expected``, ``score`` and ``is_anomaly`` added (same row order, index and extra columns).

How it works, in plain words (everything for a point ``t`` uses only points strictly before ``t``):

1. **Level.** The recent level is the *median* of the values in a trailing window (one daily cycle
   for sub-daily data, one week for daily data). A median ignores single spikes, and the window
   is short, so a sustained level shift is absorbed after about half a window.
2. **Seasonal offset.** For every past point we keep its deviation from the level at that time,
   ``value - level``. The seasonal offset of ``t`` is the median of those deviations in the *same
   slot* (same hour-of-week, weekday, hour-of-day, ...) of the last ``cycles`` weeks or days.
   ``expected = level + offset``. Because the offsets were measured against the same lagging
   level, a slow linear trend cancels out instead of being flagged.
3. **Which cycle.** Weekly slots are used when the sampling interval allows them and the slot has
   at least ``min_cycles`` past weeks of history, else daily slots, else the level alone.
   Irregular series are bucketed: the median spacing is rounded to a "nice" unit (1 h, 1 day...)
   that is the slot width.
4. **Score.** ``score = (value - expected) / scale`` where ``scale`` is 1.4826 x the median
   absolute error of the same baseline over a trailing window (a robust standard deviation).
   If that is 0 (a constant series) the mean absolute error is used, and the scale never goes
   below ``min_rel_scale x |expected|`` (and 1e-9), so nothing divides by zero.
5. **Warm-up guard.** While a more specific baseline has some but fewer than ``min_cycles``
   cycles of history (e.g. hourly data in its second week), a point is only flagged when it is
   also unusual against that baseline: the reported score is the smaller one in magnitude. This
   stops weekends from being flagged before the weekly pattern has been learnt.

``is_anomaly = |score| > threshold``. Points with a missing value or timestamp, and points with too
little history (fewer than 3 values in the level window or fewer than ``min_history`` past errors
for the scale), get ``expected``/``score`` NaN (or only ``expected``) and ``is_anomaly`` False.
Only the *timestamps* of the whole frame are looked at to infer the sampling interval; values are
never used ahead of time, so changing future values never changes earlier results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["detect"]
_DBG = {}

_NS = 10**9
DAY = 86_400 * _NS
WEEK = 7 * DAY
_MONDAY = pd.Timestamp("1970-01-05").value  # weekly slots start on Monday 00:00 (wall clock)
_NICE = np.array(
    [pd.Timedelta(u).value for u in (
        "1s", "5s", "15s", "30s", "1min", "5min", "10min", "15min", "30min",
        "1h", "2h", "3h", "4h", "6h", "8h", "12h", "1D",
    )],
    dtype=np.int64,
)


def detect(
    frame: pd.DataFrame,
    *,
    threshold: float = 3.5,
    min_history: int = 10,
    cycles: int = 5,
    min_cycles: int = 3,
    level_window: str | pd.Timedelta | None = None,
    scale_window: str | pd.Timedelta | None = None,
    min_rel_scale: float = 1e-3,
) -> pd.DataFrame:
    """Add ``expected``, ``score`` and ``is_anomaly`` to a ``ts, value`` frame (see module doc).

    threshold: flag when ``|score|`` exceeds it (a robust z-score; 3.5 ~ 1 in 2,000 for noise).
    min_history: past errors needed in the scale window before a point gets a score.
    cycles / min_cycles: seasonal slots use up to ``cycles`` past weeks (or days) and need at
        least ``min_cycles`` of them; fewer falls back to a shorter cycle or the level alone.
    level_window / scale_window: trailing windows for the level median and the error scale
        (default: one cycle, clipped to 5..48 intervals; max(4 x level window, 50 intervals)).
    min_rel_scale: lower bound of the scale relative to ``|expected|`` (constant series).
    """
    missing = {"ts", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"detect() needs columns ts and value; missing: {sorted(missing)}")
    ts = pd.to_datetime(frame["ts"], errors="coerce")
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_localize(None)  # seasonality follows the local wall clock
    t = ts.to_numpy("datetime64[ns]").astype(np.int64)
    y = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    rows = np.flatnonzero(ts.notna().to_numpy() & np.isfinite(y))
    rows = rows[np.argsort(t[rows], kind="stable")]

    expected = np.full(len(frame), np.nan)
    score = np.full(len(frame), np.nan)
    if len(rows) >= 2:
        expected[rows], score[rows] = _detect_sorted(
            t[rows], y[rows], min_history=min_history, cycles=cycles, min_cycles=min_cycles,
            level_window=level_window, scale_window=scale_window, min_rel_scale=min_rel_scale,
        )
    out = frame.copy()
    out["expected"] = expected
    out["score"] = score
    out["is_anomaly"] = np.abs(np.nan_to_num(score)) > threshold
    return out


def _detect_sorted(t, y, *, min_history, cycles, min_cycles, level_window, scale_window, min_rel_scale):
    """Expected values and scores for time-sorted, valid points (``t`` in int64 nanoseconds)."""
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return np.full(len(y), np.nan), np.full(len(y), np.nan)
    width = int(_NICE[np.argmin(np.abs(np.log(_NICE / np.median(gaps))))])  # slot width ~ interval
    periods = [p for p in (WEEK, DAY) if p >= 2 * width]  # most specific first
    # Seasonal baselines to try, in order: weekly slots, weekly slots twice as wide (sparse
    # irregular data), then the same for daily slots.
    seasons = [(p, spread) for p in periods for spread in (0, 1)]
    irregular = np.mean(gaps == np.median(gaps)) < 0.5
    lw = _ns(level_window) or int(np.clip(min(periods, default=7 * width), 5 * width, 48 * width))
    sw = _ns(scale_window) or max(4 * lw, 50 * width)
    index = pd.DatetimeIndex(t.view("datetime64[ns]"))

    def rolling_median(values):
        return pd.Series(values, index=index).rolling(pd.Timedelta(lw), closed="left", min_periods=3).median().to_numpy()

    # Pass 1: a rough level (median of the raw window) gives rough seasonal offsets, from the most
    # specific cycle with any history. Pass 2: the level is the median of the values minus those
    # offsets, which is far less noisy than the median of a window spanning a daily or weekly swing.
    level = rolling_median(y)
    rough_offset = np.zeros(len(y))
    found = np.zeros(len(y), dtype=bool)
    for p, spread in seasons:
        offset, n = _seasonal(t, y - level, p, width, cycles, spread, irregular)
        rough_offset[~found & (n >= 1)] = offset[~found & (n >= 1)]
        found |= n >= 1
    level = rolling_median(y - rough_offset)

    # Candidate baselines, most specific first: (expected, number of past cycles behind it).
    candidates = [_seasonal(t, y - level, p, width, cycles, spread, irregular) for p, spread in seasons]
    candidates = [(level + offset, n) for offset, n in candidates] + [(level, np.full(len(y), np.inf))]

    # Per point, the first candidate with at least min_cycles cycles of history.
    expected = np.full(len(y), np.nan)
    pick = np.full(len(y), -1)
    for i, (exp, n) in enumerate(candidates):
        take = (pick == -1) & (n >= min_cycles) & np.isfinite(exp)
        expected[take], pick[take] = exp[take], i
    scale = _robust_scale(index, y - expected, expected, sw, min_history, min_rel_scale)
    score = (y - expected) / scale
    _DBG["pick"] = pick; _DBG["cands"] = candidates

    # Warm-up guard: a baseline with 1..min_cycles-1 cycles of history can veto a flag.
    for exp, n in candidates:
        other = (y - exp) / scale
        milder = (n >= 1) & (n < min_cycles) & np.isfinite(other) & (np.abs(other) < np.abs(score))
        score[milder] = other[milder]
    return expected, score


def _seasonal(t, deviation, period, width, cycles, spread=0, interpolate=False):
    """Median deviation in the same slot of the last ``cycles`` periods, and how many there were.

    Time is cut into slots of ``width`` (hour, day...); a slot's value is the median deviation of
    its points. For a point, we look at the same slot (and ``spread`` neighbouring slots on each
    side) in earlier periods, up to ``2 * cycles`` periods back, and keep the ``cycles`` most
    recent periods that have data. Only earlier periods are read, so nothing at or after the
    point is used. Returns the median of those slot values and the number of periods used.
    """
    ok = np.isfinite(deviation)
    slot = (t[ok] - _MONDAY) // width  # slot number since a Monday midnight
    slots, cell_of_point = np.unique(slot, return_inverse=True)
    cell_value = pd.Series(deviation[ok]).groupby(cell_of_point).median().to_numpy()
    per_period = period // width

    def history(query):
        lookup = query[:, None, None] - np.arange(1, 2 * cycles + 1)[None, :, None] * per_period
        lookup = lookup + np.arange(-spread, spread + 1)
        found = np.minimum(np.searchsorted(slots, lookup), len(slots) - 1)
        values = np.where(slots[found] == lookup, cell_value[found], np.nan)  # (query, period back, offset)
        has_data = np.isfinite(values).any(axis=2)
        keep = has_data & (np.cumsum(has_data, axis=1) <= cycles)
        values = np.where(keep[:, :, None], values, np.nan).reshape(len(query), -1)
        count = np.isfinite(values).sum(axis=1)
        ordered = np.sort(values, axis=1)  # NaN sorts last
        lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
        return np.where(count > 0, (lo + hi) / 2, np.nan), keep.sum(axis=1)

    offset = np.full(len(deviation), np.nan)
    n = np.zeros(len(deviation))
    if not interpolate:
        median, count = history(slots)
        offset[ok], n[ok] = median[cell_of_point], count[cell_of_point]
    else:  # irregular: interpolate between the two nearest slot centres
        u = (t[ok] - _MONDAY) / width - 0.5
        left = np.floor(u).astype(np.int64)
        a = u - left
        (m0, c0), (m1, c1) = history(left), history(left + 1)
        offset[ok] = np.where(np.isnan(m0), m1, np.where(np.isnan(m1), m0, (1 - a) * m0 + a * m1))
        n[ok] = np.minimum(c0, c1)
    return offset, n


def _robust_scale(index, error, expected, window, min_history, min_rel_scale):
    """Robust scale of the past errors (1.4826 x median absolute error over a trailing window)."""
    past = pd.Series(np.abs(error), index=index).rolling(pd.Timedelta(window), closed="left", min_periods=min_history)
    scale = 1.4826 * past.median().to_numpy()
    scale = np.where(scale > 0, scale, 1.2533 * past.mean().to_numpy())  # MAD 0: mean abs error
    return np.maximum(scale, np.maximum(min_rel_scale * np.abs(expected), 1e-9))  # NaN stays NaN


def _ns(window) -> int:
    return 0 if window is None else int(pd.Timedelta(window).value)
