"""Operational request logs of one day: service, endpoint, host, status, latency, CPU and memory,
with their own dirt; written as one CSV and two NDJSON files (timestamps in three styles)."""

from __future__ import annotations

from typing import Any

import numpy as np

from de_assets.generator.config import Dirt
from de_assets.generator.files import FileWriter
from de_assets.generator.records import Records, concat, take
from de_assets.generator.vocabulary import (
    ENDPOINTS,
    HOSTS_PER_SERVICE,
    HOUR_W,
    R_LAT_NEG,
    R_LAT_STR,
    R_MALFORMED,
    R_NO_SERVICE,
    R_NONE,
    REQ_DIRT_NAMES,
    REQ_FILES,
    SERVICE_MEDIAN_MS,
    SERVICE_P,
    SERVICE_P4XX,
    SERVICE_P5XX,
    SERVICE_SIGMA,
    SERVICES,
    STATUS_4XX,
    STATUS_4XX_P,
    STATUS_5XX,
    STATUS_5XX_P,
)
from de_assets.generator.window import HOUR_MS, STREAM_HOSTS, STREAM_REQUESTS, Window, time_of_day_ms

TIMESTAMP_FORMATS = {"iso": "iso8601", "ms": "epoch_ms", "s": "epoch_s"}


def simulate_requests(window: Window, dirt: Dirt, d: int, n: int) -> Records:
    """``n`` requests of day d (plus duplicated lines), sorted by file then time."""
    rng = window.rng(STREAM_REQUESTS, d)
    ts = window.day_ms(d) + time_of_day_ms(rng, n)
    svc = rng.choice(len(SERVICES), size=n, p=SERVICE_P)
    endpoint_service = np.array([s for s, _, _ in ENDPOINTS])
    first_endpoint = np.searchsorted(endpoint_service, np.arange(len(SERVICES)))
    n_endpoints = np.bincount(endpoint_service, minlength=len(SERVICES))
    ep = first_endpoint[svc] + (rng.random(n) * n_endpoints[svc]).astype(np.int64)
    host = rng.integers(0, HOSTS_PER_SERVICE, n)
    status, is4, is5 = _status(rng, svc, ep)
    latency_tenths = _latency_tenths(rng, svc, status, is4, is5)
    cpu_tenths, memory_mb = _host_load(window, rng, d, ts, svc * HOSTS_PER_SERVICE + host)
    file_share = np.array([s for _, _, _, s in REQ_FILES])
    file_ = rng.choice(len(REQ_FILES), size=n, p=file_share / file_share.sum())
    rates = [
        dirt.requests_malformed,
        dirt.requests_missing_service,
        dirt.requests_bad_latency,
        dirt.requests_negative_latency,
    ]
    codes = np.array([R_MALFORMED, R_NO_SERVICE, R_LAT_STR, R_LAT_NEG, R_NONE])
    cat = codes[np.searchsorted(np.cumsum(rates), rng.random(n), side="right")]
    is_csv = np.array([fm == "csv" for _, fm, _, _ in REQ_FILES])[file_]
    cat = np.where((cat == R_MALFORMED) & is_csv, R_NONE, cat)  # a CSV row cannot be cut short
    latency_tenths = np.where(cat == R_LAT_NEG, np.where(rng.random(n) < 0.5, -10, -latency_tenths), latency_tenths)
    rec = {
        "ts": ts, "svc": svc.astype(np.int8), "ep": ep.astype(np.int8), "host": host.astype(np.int8),
        "status": status.astype(np.int16), "lat_t": latency_tenths, "cpu_t": cpu_tenths, "mem": memory_mb,
        "dirt": cat.astype(np.int8), "cut": rng.integers(150, 950, n).astype(np.int16),
        "file": file_.astype(np.int8), "dup": np.zeros(n, np.int8),
        "rid": np.arange(n, dtype=np.int64),
    }
    copied = np.nonzero((cat == R_NONE) & (rng.random(n) < dirt.requests_duplicate))[0]
    if len(copied):
        copies = take(rec, copied)
        copies["dup"] = np.ones(len(copied), np.int8)
        rec = concat([rec, copies])
    return take(rec, np.lexsort((rec["dup"], rec["rid"], rec["ts"], rec["file"])))


def _status(rng: np.random.Generator, svc: np.ndarray, ep: np.ndarray) -> tuple[np.ndarray, ...]:
    """HTTP status (per-service 4xx/5xx rates; POSTs answer 201 now and then), is-4xx, is-5xx."""
    n = len(svc)
    r = rng.random(n)
    p5, p4 = SERVICE_P5XX[svc], SERVICE_P4XX[svc]
    is5 = r < p5
    is4 = ~is5 & (r < p5 + p4)
    post = np.array([m == "POST" for _, m, _ in ENDPOINTS])[ep]
    ok_status = np.where(post & (rng.random(n) < 0.3), 201, 200)
    s5 = rng.choice(STATUS_5XX, n, p=STATUS_5XX_P)
    s4 = rng.choice(STATUS_4XX, n, p=STATUS_4XX_P)
    return np.where(is5, s5, np.where(is4, s4, ok_status)), is4, is5


def _latency_tenths(rng: np.random.Generator, svc: np.ndarray, status: np.ndarray, is4: np.ndarray,
                    is5: np.ndarray) -> np.ndarray:
    """Latency in tenths of a ms: log-normal per service, fast 4xx, slow 5xx, 30 s gateway timeouts."""
    n = len(svc)
    lat = rng.lognormal(np.log(SERVICE_MEDIAN_MS[svc]), SERVICE_SIGMA[svc])
    lat = np.where(is4, lat * 0.4, lat)
    lat = np.where(is5, lat * 3.0, lat)
    lat = np.where(status == 504, 30_000 + rng.normal(0, 50, n), lat)
    lat = np.where(rng.random(n) < 0.003, lat * rng.uniform(10, 60, n), lat)  # big outliers
    return np.maximum(1, np.round(lat * 10)).astype(np.int64)


def _host_load(window: Window, rng: np.random.Generator, d: int, ts: np.ndarray,
               host_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CPU (tenths of a percent, daily curve) and memory (MB, slowly growing) of the answering host;
    -1 where the line omits the field (15%)."""
    n = len(ts)
    hour = ((ts - window.day_ms(d)) // HOUR_MS).astype(np.int64)
    host_rng = window.rng(STREAM_HOSTS)  # per-host baselines, stable across days
    cpu_base = host_rng.uniform(15, 45, len(SERVICES) * HOSTS_PER_SERVICE)
    mem_base = host_rng.uniform(512, 2048, len(SERVICES) * HOSTS_PER_SERVICE)
    cpu = cpu_base[host_key] + 30 * HOUR_W[hour] / HOUR_W.max() + rng.normal(0, 5, n)
    cpu_tenths = np.where(rng.random(n) < 0.85, np.round(np.clip(cpu, 1, 100) * 10), -1).astype(np.int64)
    mem = mem_base[host_key] + 2.0 * d + rng.normal(0, 40, n)
    memory_mb = np.where(rng.random(n) < 0.85, np.round(mem), -1).astype(np.int64)
    return cpu_tenths, memory_mb


def requests_day(window: Window, dirt: Dirt, writer: FileWriter, queries: dict[tuple[str, str], str],
                 d: int, requests_per_day: int) -> dict[str, Any]:
    """Simulate and write day d's request logs; returns the day's request summary. ``queries`` maps
    (timestamp style, csv|ndjson) to the rendering query."""
    n = int(round(requests_per_day * (0.8 if window.day(d).weekday() >= 5 else 1.0)))
    out: dict[str, Any] = {"files": [], "rows": 0}
    if n <= 0:
        zero = {name: 0 for name in REQ_DIRT_NAMES.values()}
        return {**out, "valid": 0, "errors_5xx": 0, "by_service": {}, "dirt": {**zero, "duplicates": 0}}
    rec = simulate_requests(window, dirt, d, n)
    day_iso = window.day(d).isoformat()
    bounds = np.searchsorted(rec["file"], np.arange(len(REQ_FILES) + 1))
    parts, styles = [], []
    for part, fm, style, _ in REQ_FILES:
        lo, hi = int(bounds[part]), int(bounds[part + 1])
        if hi <= lo:
            continue
        fmt, compression = ("csv", None) if fm == "csv" else ("ndjson", "gzip" if fm.endswith(".gz") else None)
        cols = {c: v[lo:hi] for c, v in rec.items() if c not in ("file", "dup")}
        parts.append((f"requests-{day_iso}-part-{part:02d}.{fm}", fmt, compression, (style, fmt), cols))
        styles.append(style)
    for entry, style in zip(writer.write_parts("requests", d, parts, queries), styles):
        entry["timestamp_format"] = TIMESTAMP_FORMATS[style]
        out["files"].append(entry["path"])
        out["rows"] += entry["rows"]
    first = rec["dup"] == 0
    valid = first & (rec["dirt"] == R_NONE)
    return {
        **out,
        "valid": int(valid.sum()),
        "errors_5xx": int((valid & (rec["status"] >= 500)).sum()),
        "by_service": {SERVICES[i]: int((valid & (rec["svc"] == i)).sum()) for i in range(len(SERVICES))},
        "dirt": {
            **{name: int((first & (rec["dirt"] == code)).sum()) for code, name in REQ_DIRT_NAMES.items()},
            "duplicates": int((~first).sum()),
        },
    }
