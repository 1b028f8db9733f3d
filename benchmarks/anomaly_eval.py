"""Evaluation harness for `de_assets.anomaly.detect` on seeded, labelled synthetic series.

    python benchmarks/anomaly_eval.py [--seeds 10,11,12] [--scale 1.0] [--by-kind] [--before REF]

Generates a fixed mix of realistic metric series (see ``SUITE``), each with labelled anomaly
windows, runs the detector and a plain trailing-window z-score baseline (|z| > 8), and prints one
table: recall of labelled windows, precision of flag episodes and false-alarm episodes per
series-week (definitions in docs/anomaly.md). ``--scale`` multiplies the number of series of each
kind (0.5 for a quick run). ``--before REF`` also scores the detector of a git revision.

Series kinds (each with its own anomaly types; magnitudes are drawn in units of the local noise):
  cpu       5-min, 2 weeks, daily cycle, heteroscedastic Student-t noise (df 2.5-30), AR(1)
            correlation, random-walk drift, unlabelled benign bumps (scheduled jobs, rare
            spikes), missing points and outages; spikes, bursts, level shifts, drops
  latency   5-min, 2 weeks, log-normal multiplicative noise (right-skewed), rare benign blips,
            bursts and level shifts
  requests  5-min, 3 weeks, Poisson counts with daily and weekly cycles, drops and surges
  irregular ~20-70 min random spacing (jittered), 4 weeks, daily cycle, spikes and shifts
  orders    daily, 12 weeks, low Poisson counts (2-30/day) with weekly seasonality and trend
  revenue   daily, 14 weeks, log-normal noise, weekly seasonality, growth, spikes/drops/outages
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from de_assets.anomaly import detect  # noqa: E402

HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
WEEK = pd.Timedelta(weeks=1)
START = pd.Timestamp("2024-03-04")  # a Monday

# kind -> number of series at scale 1 (about 100 series-weeks in all)
SUITE = {"cpu": 10, "latency": 4, "requests": 4, "irregular": 2, "orders": 2, "revenue": 2}


@dataclass
class Series:
    name: str
    kind: str
    frame: pd.DataFrame  # ts, value
    windows: list[tuple[pd.Timestamp, pd.Timestamp]]  # labelled anomaly windows [start, end]
    tolerance: pd.Timedelta  # a flag this long after a window still counts for it
    labels: list[str] = None  # anomaly type of each window (spike, burst, shift, drop, surge)


# --- generators -------------------------------------------------------------------------------

def _daily_shape(ts: pd.DatetimeIndex, rng, weekend_factor: float = 1.0) -> np.ndarray:
    """A smooth daily cycle in [-1, 1]-ish with a random peak hour and a second harmonic."""
    hour = np.asarray(ts.hour + ts.minute / 60 + ts.second / 3600)
    peak, h2 = rng.uniform(10, 20), rng.uniform(0, 0.4)
    shape = np.cos(2 * np.pi * (hour - peak) / 24) + h2 * np.cos(4 * np.pi * (hour - peak - 3) / 24)
    return np.where(np.asarray(ts.dayofweek) >= 5, weekend_factor, 1.0) * shape


def _ar1(rng, n: int, phi: float, draw) -> np.ndarray:
    eps = draw(n)
    if phi == 0:
        return eps
    out = np.empty(n)
    acc = 0.0
    for i in range(n):  # n <= ~6,000: fine
        acc = phi * acc + eps[i]
        out[i] = acc
    return out * np.sqrt(1 - phi**2)


def _heavy(rng, df: float):
    """Student-t draws scaled so their MAD matches a unit normal's."""
    q75 = {2.5: 0.8, 3: 0.765, 5: 0.727, 30: 0.683}.get(df, 0.6745)
    return lambda n: rng.standard_t(df, n) * (0.6745 / q75)


def _logu(rng, lo: float, hi: float) -> float:
    """Log-uniform draw: subtle and gross anomalies alike (real ones span orders of magnitude)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _benign(rng, ts: pd.DatetimeIndex, noise_scale: np.ndarray, step: pd.Timedelta) -> np.ndarray:
    """Unlabelled bumps real metrics have: a scheduled job (same time every day or every 6 h, for
    half the series) and rare random one-point spikes (0-0.5 a day), both 4-30 x the noise."""
    extra = np.zeros(len(ts))
    if rng.random() < 0.5:
        every = rng.choice([6, 24]) * HOUR
        phase = (ts - ts[0]) % every
        at = int(rng.integers(0, every // step)) * step
        length = int(rng.integers(1, 4)) * step
        extra += ((phase >= at) & (phase < at + length)) * _logu(rng, 4, 30) * noise_scale
    days = (ts[-1] - ts[0]) / DAY
    for i in rng.integers(0, len(ts), rng.poisson(rng.uniform(0, 0.5) * days)):
        extra[i] += _logu(rng, 4, 30) * noise_scale[i]
    return extra


def _place(rng, ts: pd.DatetimeIndex, count: int, earliest: float, spacing: pd.Timedelta) -> list[int]:
    """Indices of ``count`` anomaly starts after ``earliest`` of the series, ``spacing`` apart."""
    lo = int(len(ts) * earliest)
    chosen: list[int] = []
    for _ in range(200):
        if len(chosen) == count:
            break
        i = int(rng.integers(lo, len(ts) - max(len(ts) // 30, 2)))
        if all(abs(ts[i] - ts[j]) >= spacing for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def _inject(rng, ts, value, noise_scale, kinds, starts, step, shift_window, labels):
    """Add anomalies at ``starts`` (types drawn from ``kinds``); returns labelled windows (and
    appends their types to ``labels``)."""
    windows = []
    for i in starts:
        kind = rng.choice(kinds)
        sign = 1 if rng.random() < 0.75 else -1
        sd = noise_scale[i]
        if kind == "spike":
            length = int(rng.integers(1, 4))
            value[i:i + length] += sign * _logu(rng, 6, 60) * sd
            end = i + length - 1
        elif kind == "burst":
            length = max(int(rng.uniform(0.5, 3) * HOUR / step), 2)
            value[i:i + length] += sign * _logu(rng, 3, 25) * sd
            end = i + length - 1
        elif kind == "shift":
            value[i:] += sign * _logu(rng, 4, 30) * sd
            end = int(np.searchsorted(ts, ts[i] + shift_window)) - 1
        elif kind == "drop":  # metric falls towards zero (outage of the thing measured)
            length = max(int(rng.uniform(0.25, 2) * HOUR / step), 1)
            value[i:i + length] *= rng.uniform(0.0, 0.3)
            end = i + length - 1
        elif kind == "surge":  # counts multiply
            length = max(int(rng.uniform(0.5, 2) * HOUR / step), 1)
            value[i:i + length] *= rng.uniform(1.6, 3)
            end = i + length - 1
        else:
            raise ValueError(f"unknown anomaly kind {kind}")
        windows.append((ts[i], ts[min(end, len(ts) - 1)]))
        labels.append(str(kind))
    return windows


def _degrade(rng, ts: pd.DatetimeIndex, value: np.ndarray, windows) -> pd.DataFrame:
    """Missing points (random and outages), never inside a labelled window's first point."""
    keep = rng.random(len(ts)) >= rng.uniform(0, 0.02)
    for _ in range(int(rng.integers(0, 3))):  # outages of 1-12 h
        a = ts[int(rng.integers(0, len(ts)))]
        keep &= ~((ts >= a) & (ts < a + rng.uniform(1, 12) * HOUR))
    for a, _b in windows:
        keep[ts.get_loc(a)] = True
    return pd.DataFrame({"ts": ts[keep], "value": value[keep]})


def make_series(kind: str, seed: int) -> Series:
    rng = np.random.default_rng(seed)
    name = f"{kind}-{seed}"
    if kind in ("cpu", "latency", "requests"):
        weeks = 3 if kind == "requests" else 2
        step = pd.Timedelta(minutes=5)
        ts = pd.date_range(START, periods=int(weeks * WEEK / step), freq=step)
        n = len(ts)
        level = np.exp(rng.uniform(np.log(5), np.log(2000)))
        if kind == "cpu":
            amp = _logu(rng, 0.01, 0.5)
            base = level * (1 + amp * _daily_shape(ts, rng, rng.uniform(0.5, 1)))
            base += np.cumsum(rng.normal(0, level * rng.uniform(0, 0.002), n))  # random-walk drift
            rel = rng.uniform(0.01, 0.06)
            noise_scale = level * rel * (1 + rng.uniform(0, 1) * (base / base.mean() - 1)).clip(0.3)
            df = float(rng.choice([2.5, 3, 5, 30]))
            value = base + noise_scale * _ar1(rng, n, rng.uniform(0, 0.6), _heavy(rng, df))
            value += _benign(rng, ts, noise_scale, step)
            value = np.maximum(value, 0)
            kinds = ["spike", "spike", "burst", "shift", "drop"]
        elif kind == "latency":
            base = level * (1 + rng.uniform(0, 0.3) * _daily_shape(ts, rng))
            sigma = rng.uniform(0.03, 0.12)
            value = base * np.exp(sigma * _ar1(rng, n, rng.uniform(0, 0.5), rng.standard_normal))
            blips = rng.random(n) < 0.002  # benign, short latency blips (GC pauses...)
            value[blips] *= np.exp(rng.uniform(3, 6, blips.sum()) * sigma)
            noise_scale = base * sigma
            kinds = ["spike", "burst", "burst", "shift"]
        else:
            lam = rng.uniform(3, 300)
            shape = np.exp(rng.uniform(0.3, 1.0) * _daily_shape(ts, rng, rng.uniform(0.4, 0.9)))
            shape *= np.where(np.asarray(ts.dayofweek) >= 5, rng.uniform(0.5, 0.9), 1.0)
            base = lam * shape
            value = rng.poisson(base).astype(float)
            noise_scale = np.sqrt(np.maximum(base, 1))
            kinds = ["drop", "surge", "shift", "spike"]
        count = int(rng.integers(1, 4)) + (weeks > 2)
        starts = _place(rng, ts, count, 0.2, DAY)
        labels = []
        windows = _inject(rng, ts, value, noise_scale, kinds, starts, step, 2 * HOUR, labels)
        if kind == "requests":
            value = np.round(np.maximum(value, 0))
        return Series(name, kind, _degrade(rng, ts, value, windows), windows, HOUR, labels)
    if kind == "irregular":
        minutes = np.cumsum(rng.uniform(20, 70, 1300))
        ts = pd.DatetimeIndex(START + pd.to_timedelta(minutes, unit="min")).round("s")
        ts = ts[ts < START + 4 * WEEK]
        level = rng.uniform(50, 500)
        base = level * (1 + rng.uniform(0.1, 0.4) * _daily_shape(ts, rng, 0.6))
        noise_scale = level * rng.uniform(0.02, 0.05) * np.ones(len(ts))
        value = base + noise_scale * _heavy(rng, 5)(len(ts))
        starts = _place(rng, ts, int(rng.integers(2, 5)), 0.25, DAY)
        labels = []
        windows = _inject(rng, ts, value, noise_scale, ["spike", "burst", "shift"], starts,
                          45 * pd.Timedelta("1min"), 3 * HOUR, labels)
        return Series(name, kind, _degrade(rng, ts, value, windows), windows, 2 * HOUR, labels)
    if kind in ("orders", "revenue"):
        weeks = 12 if kind == "orders" else 14
        ts = pd.date_range(START, periods=weeks * 7, freq="D")
        weekly = np.exp(rng.normal(0, 0.15, 7)) * np.where(np.arange(7) >= 5, rng.uniform(0.5, 1.0), 1.0)
        trend = np.exp(rng.uniform(-0.2, 0.6) * np.arange(len(ts)) / len(ts))
        if kind == "orders":
            base = rng.uniform(2, 30) * weekly[ts.dayofweek] * trend
            value = rng.poisson(base).astype(float)
            noise_scale = np.sqrt(np.maximum(base, 1))
            kinds = ["surge", "drop", "shift"]
        else:
            base = rng.uniform(1e3, 1e5) * weekly[ts.dayofweek] * trend
            sigma = rng.uniform(0.05, 0.2)
            value = base * np.exp(sigma * rng.standard_normal(len(ts)))
            noise_scale = base * sigma
            kinds = ["spike", "drop", "shift", "surge"]
        starts = _place(rng, ts, int(rng.integers(2, 5)), 0.3, 7 * DAY)
        windows, labels = [], []
        for i in starts:
            kind_i = rng.choice(kinds)
            labels.append(str(kind_i))
            if kind_i == "spike":
                value[i] += _logu(rng, 4, 20) * noise_scale[i]
                end = i
            elif kind_i == "surge":
                value[i:i + int(rng.integers(1, 3))] = rng.poisson(base[i] * rng.uniform(2.5, 4)) if kind == "orders" \
                    else value[i:i + 1] * rng.uniform(1.8, 3)
                end = i
            elif kind_i == "drop":
                length = int(rng.integers(1, 4))
                value[i:i + length] *= rng.uniform(0, 0.3)
                end = i + length - 1
            else:  # a lasting level change (lost channel, new market)
                value[i:] *= rng.choice([0.5, 1.8])
                end = i + 2
            windows.append((ts[i], ts[min(end, len(ts) - 1)]))
        if kind == "orders":
            value = np.round(value)
        return Series(name, kind, pd.DataFrame({"ts": ts, "value": value}), windows, DAY, labels)
    raise ValueError(f"unknown series kind {kind}")


def suite(seed: int = 0, scale: float = 1.0) -> list[Series]:
    """The evaluation set: ``SUITE`` kinds x counts (times ``scale``), seeds derived from ``seed``."""
    out = []
    for k, (kind, count) in enumerate(SUITE.items()):
        for j in range(max(1, round(count * scale))):
            out.append(make_series(kind, seed * 1000 + k * 100 + j))
    return out


# --- baseline and metrics ---------------------------------------------------------------------

def zscore_baseline(frame: pd.DataFrame, z: float = 8.0) -> pd.DataFrame:
    """Plain trailing-window z-score: (x - mean) / std of the previous day of points (of the
    previous 28 for daily series), at least 20 points; flag when |z| > ``z``."""
    s = frame.set_index("ts")["value"]
    step = s.index.to_series().diff().median()
    window = pd.Timedelta(days=28) if step >= DAY else DAY
    roll = s.rolling(window, closed="left", min_periods=20)
    score = (s - roll.mean()) / roll.std()
    out = frame.copy()
    out["score"] = score.to_numpy()
    out["is_anomaly"] = np.abs(np.nan_to_num(out["score"].to_numpy(), posinf=0, neginf=0)) > z
    return out


def merge_gap(ts: pd.Series) -> pd.Timedelta:
    """Flags closer than this are one episode: 1 h, or 1.5 sampling intervals if that is longer
    (so consecutive flagged days of a daily series are one episode)."""
    step = pd.Series(ts).diff().median()
    return max(HOUR, 1.5 * step) if pd.notna(step) else HOUR


def _episodes(times: np.ndarray, gap) -> list[tuple]:
    if len(times) == 0:
        return []
    times = np.sort(times)
    cut = np.flatnonzero(np.diff(times) >= np.timedelta64(gap))
    starts = np.r_[0, cut + 1]
    ends = np.r_[cut, len(times) - 1]
    return [(times[a], times[b]) for a, b in zip(starts, ends)]


def score_series(series: Series, flagged: np.ndarray) -> dict:
    ts = series.frame["ts"].to_numpy()
    flags = ts[flagged]
    gap = merge_gap(series.frame["ts"])
    inside = np.zeros(len(flags), dtype=bool)
    caught = 0
    for a, b in series.windows:
        hit = (flags >= np.datetime64(a)) & (flags <= np.datetime64(b + series.tolerance))
        caught += bool(hit.any())
        inside |= hit
    episodes = _episodes(flags, gap)
    true_eps = sum(any(np.datetime64(a) <= e and s <= np.datetime64(b + series.tolerance) for a, b in series.windows)
                   for s, e in episodes)
    false_eps = len(_episodes(flags[~inside], gap))
    weeks = (series.frame["ts"].max() - series.frame["ts"].min()) / WEEK
    return {"windows": len(series.windows), "caught": caught, "episodes": len(episodes),
            "true_episodes": true_eps, "false_episodes": false_eps, "weeks": weeks}


def evaluate(series_list: list[Series], method) -> dict:
    rows = []
    for s in series_list:
        result = method(s.frame)
        rows.append({"kind": s.kind, "name": s.name, **score_series(s, result["is_anomaly"].to_numpy())})
    return summarise(pd.DataFrame(rows))


def summarise(rows: pd.DataFrame) -> dict:
    total = rows[["windows", "caught", "episodes", "true_episodes", "false_episodes", "weeks"]].sum()
    return {
        "recall": total.caught / total.windows,
        "precision": total.true_episodes / total.episodes if total.episodes else float("nan"),
        "false_per_week": total.false_episodes / total.weeks,
        "worst_false_per_week": (rows.false_episodes / rows.weeks).max(),
        "windows": int(total.windows), "caught": int(total.caught), "weeks": float(total.weeks),
        "series": len(rows), "rows": rows,
    }


def _detector_at(ref: str):
    """`detect` as of git revision ``ref`` (for the before/after table), loaded from a temp file."""
    import importlib.util

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:de_assets/anomaly.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "anomaly_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("anomaly_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.detect


def table(results: dict[str, dict]) -> str:
    lines = ["| method | recall | precision (episodes) | false-alarm episodes / series-week | worst series |",
             "|---|--:|--:|--:|--:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['recall']:.2f} ({r['caught']}/{r['windows']}) | {r['precision']:.2f} "
                     f"| {r['false_per_week']:.2f} | {r['worst_false_per_week']:.1f} |")
    return "\n".join(lines)


def by_kind(results: dict[str, dict]) -> str:
    lines = ["| method | kind | recall | false / week |", "|---|---|--:|--:|"]
    for name, r in results.items():
        g = r["rows"].groupby("kind")[["windows", "caught", "false_episodes", "weeks"]].sum()
        for kind, row in g.iterrows():
            lines.append(f"| {name} | {kind} | {row.caught / row.windows:.2f} | {row.false_episodes / row.weeks:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="10,11,12", help="comma-separated; 0-2 were used for tuning")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--before", default=None, help="git revision whose detector is scored too")
    parser.add_argument("--by-kind", action="store_true")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    seeds = [int(x) for x in args.seeds.split(",")]
    data = [s for seed in seeds for s in suite(seed, args.scale)]
    methods = {"detect (this tree)": detect}
    if args.before:
        methods[f"detect ({args.before})"] = _detector_at(args.before)
    methods["z-score baseline, z = 8"] = zscore_baseline
    results = {name: evaluate(data, m) for name, m in methods.items()}
    r0 = next(iter(results.values()))
    print(f"{r0['series']} series, {r0['weeks']:.1f} series-weeks, {r0['windows']} labelled windows "
          f"(seeds {args.seeds}, scale {args.scale})\n")
    print(table(results))
    if args.by_kind:
        print()
        print(by_kind(results))
    print(f"\n({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
