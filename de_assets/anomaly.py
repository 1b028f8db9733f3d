"""Seasonality-aware, robust anomaly detection for one metric time series.

``detect(frame)`` takes a DataFrame with columns ``ts, value`` and returns a copy with
``expected``, ``score`` and ``is_anomaly`` added (same row order, index and extra columns).

How it works, in plain words. Everything computed for a point ``t`` uses only values strictly
before ``t``; levels, seasonal offsets and scales are *medians*, so a few wild values (including
past anomalies) cannot drag the baseline.

1. **Slots.** The sampling interval is the median spacing of the timestamps, rounded to a "nice"
   unit (1 h, 1 day...). Time is cut into slots of that width: hour-of-week and hour-of-day for
   hourly data, weekday for daily data. A cycle is only used if it has at least 4 slots (daily
   data has a weekly cycle but no daily one).
2. **Level.** The recent level is the median of the values of the last cycle (one day for hourly
   data, one week for daily data; 5 to 48 intervals) after removing a first rough estimate of the
   seasonal pattern. The window is short, so a sustained level shift is absorbed (no longer
   flagged) after about half a window: ~4 points for daily data, ~12 for hourly data.
3. **Seasonal offset.** Each past point has a deviation from the level at its time. The offset
   of ``t`` is the median deviation in the *same slot* of the last ``cycles`` weeks (or days).
   ``expected = level + offset``. Since past deviations were measured against the same trailing
   level, a slow linear trend cancels out instead of being flagged.
4. **Fallbacks.** Weekly slots are used when the slot has at least ``min_cycles`` weeks of
   history; else the slot and its two neighbours (for sparse, irregular data); else daily slots;
   else the level alone. For irregular timestamps the offset is interpolated between the two
   nearest slot centres.
5. **Score.** ``score = (value - expected) / scale``, where ``scale`` is 1.4826 x the median
   absolute error of the recent past (a robust standard deviation). If that is 0 (constant
   series) the mean absolute error is used, and the scale never goes below
   ``min_rel_scale x |expected|`` (nor 1e-9), so nothing divides by zero.
6. **Warm-up guard.** A more specific baseline that has some but fewer than ``min_cycles`` cycles
   of history (e.g. the weekly one in the second week of hourly data) can veto a flag: the score
   is the smaller one in magnitude. This keeps weekends from being flagged while the weekly
   pattern is still being learnt (the very first weekend of a sub-daily series has nothing to
   compare with; it is rarely flagged only because the scale is still wide then).

7. **Flags** (``is_anomaly``). ``|score| > threshold`` (3.5) is the floor. Series with at least
   200 scored points in the trailing 2 weeks (sampled about hourly or faster) calibrate their own
   cut: a power-law tail through the 99 % and 99.9 % quantiles of their past ``|score|`` (2
   weeks, strictly before the point) is read at the rate of ``alarm_rate`` exceedances a week.
   Series sampled every 15 minutes or faster have two tiers: single points (20 % of the rate)
   and "k of n" (a point 3 of whose last 6 points lie beyond it on the same side, 80 %), so a
   sustained shift is flagged at a lower cut than a lone spike. No flag during the ``warmup``
   (default: the first day, at least 10 intervals).

``episodes(frame)`` merges flags less than an hour apart (1.5 intervals for coarser series:
consecutive flagged days) into episodes and adds ``episode_start``.

Points with a missing value or timestamp, and points with too
little history (fewer than 3 values in the level window, or fewer than ``min_history`` past errors
for the scale) get NaN ``expected`` and/or ``score`` and ``is_anomaly`` False; nothing raises.
Only the *timestamps* of the whole frame are used to choose the slot width; values are never read
ahead of time, so changing future values never changes earlier results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["detect", "episodes"]

CALIBRATION_WEEKS = 2  # thresholds are calibrated on the scores of the trailing 2 weeks...
CALIBRATION_POINTS = 200  # ...once there are this many (so: series sampled about hourly or faster)
TAILS = (0.01, 0.001)  # the exponential tail is fitted through these upper quantiles of past scores
FAST = 15 * 60 * 10**9  # series sampled at least this often also get the k-of-n tier
PERSIST_K, PERSIST_N = 3, 6
VETO_CYCLES = 1
POINT_SHARE = 0.2  # share of the false-alarm budget of the single-point tier on fast series

DAY = 86_400 * 10**9  # nanoseconds
WEEK = 7 * DAY
_MONDAY = pd.Timestamp("1970-01-05").value  # slots are counted from a Monday 00:00 (wall clock)
_NICE = np.array([pd.Timedelta(u).value for u in (
    "1s", "5s", "15s", "30s", "1min", "5min", "10min", "15min", "30min",
    "1h", "2h", "3h", "4h", "6h", "8h", "12h", "1D", "7D",
)])


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
    alarm_rate: float = 1.5,
    warmup: str | pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Return ``frame`` with ``expected``, ``score`` and ``is_anomaly`` added (see module doc).

    threshold: lowest cut on ``|score|`` (a robust z-score; 3.5 ~ 1 in 2,000 for noise).
    min_history: past errors needed in the scale window before a point gets a score.
    cycles / min_cycles: a seasonal slot uses up to ``cycles`` past weeks (or days) and needs at
        least ``min_cycles`` of them; with fewer it falls back (see module doc).
    level_window / scale_window: trailing windows of the level and of the error scale
        (default: one cycle clipped to 5..48 intervals; max(4 x level window, 50 intervals)).
    min_rel_scale: lower bound of the scale relative to ``|expected|`` (constant series).
    alarm_rate: exceedances a week the calibrated thresholds aim at (tiers together; the tail fit
        is conservative, measured false-alarm episodes are ~0.2-0.5 a week, docs/anomaly.md).
    warmup: no flags this long after the first point (default 1 day, at least 10 intervals).
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
    rows = rows[np.argsort(t[rows], kind="stable")]  # time order; results go back by position

    expected = np.full(len(frame), np.nan)
    score = np.full(len(frame), np.nan)
    flagged = np.zeros(len(frame), dtype=bool)
    if len(rows) >= 2:
        expected[rows], score[rows], width = _detect_sorted(
            t[rows], y[rows], min_history=min_history, cycles=cycles, min_cycles=min_cycles,
            level_window=level_window, scale_window=scale_window, min_rel_scale=min_rel_scale,
        )
        if width:
            flagged[rows] = _flags(t[rows], score[rows], width, threshold, alarm_rate, warmup)
    out = frame.copy()
    out["expected"] = expected
    out["score"] = score
    out["is_anomaly"] = flagged
    return out


def _flags(t, score, width, floor, per_week, warmup):
    """Which points to flag, from the scores of points sorted by time (see module doc)."""
    index = pd.DatetimeIndex(t.view("datetime64[ns]"))
    size = np.abs(np.nan_to_num(score))
    fast = width <= FAST
    window = pd.Timedelta(CALIBRATION_WEEKS * WEEK)

    def calibrated(x, share):
        per_point = min(share * per_week * width / WEEK, 0.01)  # target exceedance rate per point
        past = pd.Series(x, index=index).rolling(window, closed="left", min_periods=CALIBRATION_POINTS)
        lo, hi = past.quantile(1 - TAILS[0]).to_numpy(), past.quantile(1 - TAILS[1]).to_numpy()
        # a power-law (Pareto) tail through the two quantiles, read at the target rate
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.maximum(np.log(hi / lo), 0) / np.log(TAILS[0] / TAILS[1])
            thr = hi * np.exp(slope * np.log(TAILS[1] / per_point))
        return np.maximum(np.nan_to_num(thr, nan=floor), floor)

    flagged = size > calibrated(size, POINT_SHARE if fast else 1.0)
    if fast:  # k of n: a sustained deviation is flagged below the single-point cut
        sustained = _k_of_n(np.nan_to_num(score), PERSIST_K, PERSIST_N)
        flagged |= sustained > calibrated(sustained, 1 - POINT_SHARE)
    warm = t >= t[0] + max(_ns(warmup) if warmup is not None else DAY, 10 * width)
    return flagged & warm & np.isfinite(score)


def _k_of_n(score, k, n):
    """Per point: how far it and at least k - 1 others of the last n points lie on the same side
    (the k-th largest signed score of the window, capped by the point's own)."""
    pad = np.r_[np.zeros(n - 1), score]
    win = np.lib.stride_tricks.sliding_window_view(pad, n)
    high = np.partition(win, n - k, axis=1)[:, n - k]  # k-th largest
    low = np.partition(win, k - 1, axis=1)[:, k - 1]  # k-th smallest
    return np.where(score > 0, np.minimum(score, np.maximum(high, 0)), np.minimum(-score, np.maximum(-low, 0)))


def _detect_sorted(t, y, *, min_history, cycles, min_cycles, level_window, scale_window, min_rel_scale):
    """Expected values and scores for valid points sorted by time (``t`` in int64 nanoseconds)."""
    nothing = np.full(len(y), np.nan)
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return nothing, nothing, 0
    step = np.median(gaps)
    width = int(_NICE[np.argmin(np.abs(np.log(_NICE / step)))])
    irregular = np.mean(gaps == step) < 0.5
    periods = [p for p in (WEEK, DAY) if p >= 4 * width]  # most specific first
    lw = _ns(level_window) or int(np.clip(min(periods, default=7 * width), 5 * width, 48 * width))
    sw = _ns(scale_window) or max(4 * lw, 50 * width)
    index = pd.DatetimeIndex(t.view("datetime64[ns]"))

    def trailing_median(values):
        window = pd.Series(values, index=index).rolling(pd.Timedelta(lw), closed="left", min_periods=3)
        return window.median().to_numpy()

    def offsets(level, period, spread):
        return _seasonal(t, y - level, period, width, cycles, spread, irregular)

    # Level, in two passes: the median of the raw window gives rough seasonal offsets (any
    # history, slot +- 1); the level is then the median of the values minus those offsets, far
    # less noisy than the median of a window that spans a whole daily swing.
    level = trailing_median(y)
    rough = np.zeros(len(y))
    for period in reversed(periods):  # the most specific cycle with any history wins
        offset, n = offsets(level, period, 1)
        rough = np.where(n >= 1, offset, rough)
    level = trailing_median(y - rough)
    if np.isnan(level).all():
        return nothing, nothing, width

    # Candidate baselines, most specific first: (expected, number of past cycles behind it).
    candidates = [offsets(level, period, spread) for period in periods for spread in (0, 1)]
    candidates = [(level + offset, n) for offset, n in candidates] + [(level, np.full(len(y), np.inf))]
    expected = nothing.copy()
    for exp, n in reversed(candidates):  # the first candidate with min_cycles cycles wins
        expected = np.where((n >= min_cycles) & np.isfinite(exp), exp, expected)
    scale = _robust_scale(index, y - expected, expected, sw, min_history, min_rel_scale)
    score = (y - expected) / scale

    # Warm-up guard: a baseline with 1..min_cycles-1 cycles of history can veto a flag.
    for exp, n in candidates:
        other = (y - exp) / scale
        milder = (n >= VETO_CYCLES) & (n < min_cycles) & (np.abs(other) < np.abs(score))
        score = np.where(milder, other, score)
    return expected, score, width


def _seasonal(t, deviation, period, width, cycles, spread=0, interpolate=False):
    """Per point: median deviation in its slot over the last ``cycles`` periods, and their count.

    A slot's value is the median deviation of its points. For a point we read the same slot (and
    ``spread`` neighbouring slots on each side) in earlier periods, up to ``2 * cycles`` periods
    back, keeping the ``cycles`` most recent periods that have data. Only earlier periods are
    read (a period has >= 4 slots), so nothing at or after the point is used. With
    ``interpolate`` (irregular timestamps) the result is interpolated between the two nearest
    slot centres, so a point at 10:50 leans on the 11:00 slot rather than the 10:00 one.
    """
    offset, count = np.full(len(deviation), np.nan), np.zeros(len(deviation))
    ok = np.isfinite(deviation)
    if not ok.any():
        return offset, count
    slots, cell_of_point = np.unique((t[ok] - _MONDAY) // width, return_inverse=True)
    slot_value = pd.Series(deviation[ok]).groupby(cell_of_point).median().to_numpy()
    back = np.arange(1, 2 * cycles + 1)[None, :, None] * (period // width)

    def history(query):
        lookup = query[:, None, None] - back + np.arange(-spread, spread + 1)  # (query, back, nbr)
        at = np.minimum(np.searchsorted(slots, lookup), len(slots) - 1)
        values = np.where(slots[at] == lookup, slot_value[at], np.nan)
        has_data = np.isfinite(values).any(axis=2)
        keep = has_data & (np.cumsum(has_data, axis=1) <= cycles)
        values = np.where(keep[:, :, None], values, np.nan).reshape(len(query), -1)
        n = np.isfinite(values).sum(axis=1)
        ordered = np.sort(values, axis=1)  # NaN sorts last; median of the first n values
        lo = np.take_along_axis(ordered, np.maximum(n - 1, 0)[:, None] // 2, axis=1)[:, 0]
        hi = np.take_along_axis(ordered, n[:, None] // 2, axis=1)[:, 0]
        return np.where(n > 0, (lo + hi) / 2, np.nan), keep.sum(axis=1)

    if not interpolate:
        median, n = history(slots)
        offset[ok], count[ok] = median[cell_of_point], n[cell_of_point]
    else:
        u = (t[ok] - _MONDAY) / width - 0.5  # position relative to slot centres
        left = np.floor(u).astype(np.int64)
        a = u - left
        (m0, n0), (m1, n1) = history(left), history(left + 1)
        offset[ok] = np.where(np.isnan(m0), m1, np.where(np.isnan(m1), m0, (1 - a) * m0 + a * m1))
        count[ok] = np.minimum(n0, n1)
    return offset, count


def _robust_scale(index, error, expected, window, min_history, min_rel_scale):
    """1.4826 x median absolute past error over a trailing window, floored (see module doc)."""
    past = pd.Series(np.abs(error), index=index).rolling(pd.Timedelta(window), closed="left", min_periods=min_history)
    scale = 1.4826 * past.median().to_numpy()
    scale = np.where(scale > 0, scale, 1.2533 * past.mean().to_numpy())  # MAD 0: mean abs error
    return np.maximum(scale, np.maximum(min_rel_scale * np.abs(expected), 1e-9))  # NaN stays NaN


def _ns(window) -> int:
    return 0 if window is None else int(pd.Timedelta(window).value)


def episodes(frame: pd.DataFrame, gap: str | pd.Timedelta | None = None) -> pd.DataFrame:
    """Return ``frame`` (columns ``ts, is_anomaly``, e.g. the output of ``detect``) with
    ``episode_start`` added: for a flagged row, the time of the first flag of its episode; NaT
    for other rows. An episode is a run of flags each less than ``gap`` after the previous one
    (default: 1 hour, or 1.5 sampling intervals if longer, so consecutive flagged days of a
    daily series are one episode and a day without a flag ends it)."""
    ts = pd.to_datetime(frame["ts"], errors="coerce")
    flagged = (frame["is_anomaly"].fillna(False).astype(bool) & ts.notna()).to_numpy()
    if gap is None:
        spacing = np.diff(np.unique(ts.dropna().to_numpy()))
        step = pd.Timedelta(np.median(spacing)) if len(spacing) else pd.Timedelta(0)
        gap = max(pd.Timedelta(hours=1), 1.5 * step)
    out = frame.copy()
    start = pd.Series(pd.NaT, index=frame.index, dtype=ts.dtype)
    times = ts[flagged].sort_values(kind="stable")
    if len(times):
        new = times.diff().isna() | (times.diff() >= pd.Timedelta(gap))
        start.loc[times.index] = times.where(new).ffill().to_numpy()
    out["episode_start"] = start
    return out

