"""Synthetic landing data: Segment-spec product events and operational request logs.

Pure Python + numpy + DuckDB (no Dagster). ``generate`` writes realistic, deterministic landing
files with configurable dirt and returns a summary dict that is the ground truth a test (or the
pipeline's own reconciliation) can check against.

Layout (the landing contract)::

    <landing_root>/events/<YYYY-MM-DD>/events-<YYYY-MM-DD>-part-NN.{ndjson,ndjson.gz,csv,parquet,json}
    <landing_root>/events/<YYYY-MM-DD>/events-<ORIG-DAY>-part-NN-redelivered.<ext>   (byte-identical copy)
    <landing_root>/requests/<YYYY-MM-DD>/requests-<YYYY-MM-DD>-part-NN.{csv,ndjson,ndjson.gz}

The day folder is the UTC *arrival* day (the receivedAt day), never the event day.

How it works: the whole simulation (users, sessions, funnels, timing, dirt) is numpy arrays of
numbers; DuckDB turns those numbers into JSON/CSV text and writes every file with ``COPY ... TO``
(NDJSON lines are written through the CSV writer with quoting disabled). No Python loop runs per
row; the only loops are per day, per file and per "n-th session of a user" (a handful).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

__all__ = [
    "Dirt",
    "ExperimentSpec",
    "Formats",
    "EVENT_TYPES",
    "assign_variant",
    "variant_bucket",
    "corrected_time_ms",
    "generate",
]

DAY_MS = 86_400_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dirt:
    """Rates of injected dirt. Record-level rates are shares of the records of an arrival day.

    Record-breaking kinds (malformed, missing_field, wrong_type, unknown_type) are mutually
    exclusive and never hit a record that is late, clock-skewed or re-delivered, so the summary
    counts are exact. ``late`` and ``clock_skew`` are drawn per *session* (a device that was
    offline / has a wrong clock affects the whole session), so they are roughly shares of events.
    """

    duplicate: float = 0.02  # share of records delivered a second time (same messageId)
    duplicate_next_day: float = 0.3  # share of those copies that land in the NEXT day's folder
    redelivered_file: float = 0.2  # per day: chance one events file is re-delivered next day
    late: float = 0.01  # share of sessions arriving 1-5 days after they happened
    clock_skew: float = 0.01  # share of sessions from a device whose clock is off
    malformed: float = 0.005  # truncated NDJSON lines
    missing_field: float = 0.006  # split evenly: no messageId / no user ids / no timestamp
    wrong_type: float = 0.004  # timestamp as number / properties as string (+ revenue, see below)
    unknown_type: float = 0.002  # type like "bogus"
    padded_enum: float = 0.01  # type like " Track" (valid after trim + lower)
    pii: float = 0.005  # e-mail (properties.note) or full IP (properties.client_ip) in properties
    # Order Completed events get a non-numeric revenue string at ``wrong_type * revenue_factor``
    # (orders are ~1% of events, so at the plain rate there would be almost none).
    wrong_revenue_factor: float = 4.0
    requests_malformed: float = 0.005
    requests_missing_service: float = 0.005
    requests_bad_latency: float = 0.003  # non-numeric latency_ms
    requests_negative_latency: float = 0.002
    requests_duplicate: float = 0.01

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v < 0 or (f.name != "wrong_revenue_factor" and v > 1):
                raise ValueError(f"Dirt.{f.name} must be a rate in [0, 1], got {v}")
        breaking = self.malformed + self.missing_field + self.wrong_type + self.unknown_type
        req = self.requests_malformed + self.requests_missing_service + self.requests_bad_latency
        if breaking > 1 or req + self.requests_negative_latency > 1:
            raise ValueError("record-breaking dirt rates must sum to <= 1")

    @classmethod
    def none(cls) -> "Dirt":
        """No dirt at all (every rate 0)."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


@dataclass(frozen=True)
class ExperimentSpec:
    """An A/B test whose exposures (``Experiment Viewed``) are written into the events.

    Users are assigned by ``md5(f"{experiment_id}:{user_key}")`` (see :func:`assign_variant`),
    where user_key is userId when known, else anonymousId. Exposure happens when a session adds a
    product to the cart; ``true_effect`` multiplies the probability that such a session goes on
    to ``Order Completed`` for every non-control variant (variants[1:]). ``srm`` is the share of
    non-control users whose exposure events are dropped (sample-ratio mismatch); ``crossover`` is
    the share of users whose exposure is logged once in their arm and once in the next arm.
    """

    experiment_id: str = "checkout-button-color"
    experiment_name: str = "Checkout button color"
    variants: tuple[str, ...] = ("control", "treatment")
    weights: tuple[float, ...] = (0.5, 0.5)
    true_effect: float = 0.0
    srm: float = 0.0
    crossover: float = 0.005

    def __post_init__(self) -> None:
        if len(self.variants) < 2 or len(self.variants) != len(self.weights):
            raise ValueError("need >= 2 variants and one weight per variant")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variant ids must be unique")


@dataclass(frozen=True)
class Formats:
    """How one arrival day of events is split over files (requests: always CSV + 2 NDJSON)."""

    csv: float = 0.10  # share of records in the day's .csv
    parquet: float = 0.10  # share in the day's .parquet
    json: float = 0.0  # share in a .json file holding one JSON array (off by default)
    ndjson_files: int | None = None  # NDJSON parts per day (None: 2..8 by volume)
    gzip: bool = True  # every second NDJSON part is .ndjson.gz

    def __post_init__(self) -> None:
        if min(self.csv, self.parquet, self.json) < 0 or self.csv + self.parquet + self.json > 1:
            raise ValueError("format shares must be >= 0 and sum to <= 1")


# --------------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------------


def variant_bucket(user_key: str, experiment_id: str) -> float:
    """Uniform [0, 1) bucket of a user in an experiment: first 32 bits of md5("exp:user")."""
    digest = hashlib.md5(f"{experiment_id}:{user_key}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def _cum_weights(spec: ExperimentSpec) -> np.ndarray:
    w = np.asarray(spec.weights, dtype=np.float64)
    return np.cumsum(w / w.sum())


def _variant_index(buckets: np.ndarray, spec: ExperimentSpec) -> np.ndarray:
    idx = np.searchsorted(_cum_weights(spec), buckets, side="right")
    return np.minimum(idx, len(spec.variants) - 1)


def assign_variant(user_key: str, experiment: ExperimentSpec | None = None) -> str:
    """Deterministic variant of ``user_key`` (userId, else anonymousId) in ``experiment``."""
    spec = experiment or ExperimentSpec()
    b = variant_bucket(user_key, spec.experiment_id)
    return spec.variants[int(_variant_index(np.array([b]), spec)[0])]


def corrected_time_ms(timestamp_ms: Any, sent_at_ms: Any, received_at_ms: Any) -> Any:
    """Clock-skew corrected event time: receivedAt - (sentAt - timestamp)."""
    return received_at_ms - (sent_at_ms - timestamp_ms)


# --------------------------------------------------------------------------------------------
# vocabularies (all strings are JSON- and SQL-safe: no quotes, no backslashes)
# --------------------------------------------------------------------------------------------

K_PAGE, K_SCREEN, K_IDENTIFY, K_PV, K_ADD, K_CHECKOUT, K_ORDER, K_SIGNUP, K_EXP = range(9)
KIND_TYPE = ["page", "screen", "identify", "track", "track", "track", "track", "track", "track"]
KIND_EVENT = [
    "",
    "",
    "",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Signed Up",
    "Experiment Viewed",
]
BOGUS_TYPES = ["bogus", "unknown", "pageview", "trak"]

# dirt codes (mutually exclusive, per record)
D_NONE, D_MALFORMED, D_NO_MID, D_NO_USER, D_NO_TS, D_TS_NUM, D_PROPS_STR, D_REV_STR, D_UNKNOWN = range(9)
DIRT_NAMES = {
    D_MALFORMED: "malformed",
    D_NO_MID: "missing_message_id",
    D_NO_USER: "missing_user",
    D_NO_TS: "missing_timestamp",
    D_TS_NUM: "wrong_type_timestamp",
    D_PROPS_STR: "wrong_type_properties",
    D_REV_STR: "wrong_type_revenue",
    D_UNKNOWN: "unknown_type",
}

SITE = "https://shop.example.com"
GENERAL_PAGES = [
    ("/", "Shop - Home"),
    ("/search", "Search"),
    ("/c/shoes", "Shoes"),
    ("/c/apparel", "Apparel"),
    ("/c/accessories", "Accessories"),
    ("/c/outdoor", "Outdoor"),
    ("/c/home", "Home and Living"),
    ("/sale", "Sale"),
    ("/blog/spring-lookbook", "Spring lookbook"),
    ("/help/shipping", "Shipping"),
    ("/help/returns", "Returns"),
    ("/about", "About us"),
]
FUNNEL_PAGES = [
    ("/cart", "Cart"),
    ("/checkout", "Checkout"),
    ("/checkout/confirmation", "Thank you"),
    ("/signup", "Create account"),
    ("/account/login", "Log in"),
]
N_GENERAL = len(GENERAL_PAGES)
P_CART, P_CHECKOUT, P_CONFIRM, P_SIGNUP, P_LOGIN = range(N_GENERAL, N_GENERAL + 5)
SCREENS = ["Home", "Search", "Category", "Product", "Cart", "Account"]
REFERRERS = [
    "",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://www.facebook.com/",
    "https://t.co/",
    "https://www.example.org/search?q=runner",
    "https://news.example.net/",
    "https://mail.example.com/",
]
REFERRER_W = np.array([0.35, 0.3, 0.05, 0.04, 0.08, 0.04, 0.06, 0.04, 0.04])
CAMPAIGNS = [  # source, medium, name, referrer index
    ("newsletter", "email", "autumn", 8),
    ("google", "cpc", "brand", 1),
    ("facebook", "social", "spring-sale", 4),
    ("partner", "affiliate", "blog-review", 7),
]
_WEBKIT = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
_BLINK = "AppleWebKit/537.36 (KHTML, like Gecko)"
WEB_UAS = [
    f"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) {_WEBKIT} Version/17.5 Safari/605.1.15",
    f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_BLINK} Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    f"Mozilla/5.0 (X11; Linux x86_64) {_BLINK} Chrome/126.0.0.0 Safari/537.36",
    f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) {_WEBKIT} Version/17.5 Mobile/15E148 Safari/604.1",
    f"Mozilla/5.0 (Linux; Android 14; Pixel 8) {_BLINK} Chrome/126.0.0.0 Mobile Safari/537.36",
]
WEB_UA_W = np.array([0.2, 0.33, 0.1, 0.05, 0.17, 0.15])
APP_UAS = ["Shop/5.2.1 (iPhone; iOS 17.5; Scale/3.00)", "Shop/5.2.0 (Linux; U; Android 14; Pixel 8 Build/AP2A)"]
UAS = WEB_UAS + APP_UAS
APP_CTX = [  # platform 1 = ios, 2 = android: (app+device, library, os)
    (
        '"app":{"build":"521","name":"Shop","namespace":"com.example.shop","version":"5.2.1"},'
        '"device":{"manufacturer":"Apple","model":"iPhone15,2","type":"ios"}',
        '"library":{"name":"analytics-ios","version":"4.1.8"}',
        '"os":{"name":"iOS","version":"17.5"}',
    ),
    (
        '"app":{"build":"520","name":"Shop","namespace":"com.example.shop","version":"5.2.0"},'
        '"device":{"manufacturer":"Google","model":"Pixel 8","type":"android"}',
        '"library":{"name":"analytics-android","version":"4.11.3"}',
        '"os":{"name":"Android","version":"14"}',
    ),
]
LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "nl-NL", "it-IT"]
LOCALE_W = np.array([0.3, 0.15, 0.2, 0.12, 0.1, 0.07, 0.06])
FIRST_NAMES = (
    "Maria Anna Emma Mia Sofia Lena Clara Julia Laura Sara Nina Eva Olivia Chloe Amelie Ines "
    "Lukas Jonas Felix Leon Paul Noah Elias Max Tom David Jan Ben Luca Omar Hugo Mateo Louis Finn"
).split()
LAST_NAMES = (
    "Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Hoffmann Koch Martin Bernard "
    "Dubois Moreau Garcia Lopez Rossi Russo Smith Jones Brown Taylor Wilson Evans Janssen Visser "
    "Novak Kowalski Nielsen Berg"
).split()
EMAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]
PLANS = ["free", "pro", "business"]
SIGNUP_METHODS = ["email", "google", "apple"]
BAD_REVENUE = ["N/A", "12,50 EUR", "", "free"]
FIRST_OCTETS = np.array(
    [23, 31, 37, 46, 62, 77, 78, 80, 81, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 109, 176,
     178, 185, 188, 193, 194, 195, 212, 213, 217], dtype=np.int64)  # fmt: skip
HOUR_W = np.array(
    [0.35, 0.25, 0.2, 0.18, 0.2, 0.3, 0.5, 0.75, 0.95, 1.05, 1.1, 1.15,
     1.2, 1.2, 1.15, 1.15, 1.2, 1.3, 1.45, 1.55, 1.5, 1.25, 0.9, 0.55])  # fmt: skip
HOUR_P = HOUR_W / HOUR_W.sum()

# product catalog (fixed, independent of the seed so product ids mean the same in every run)
_CATALOG_NOUNS = {
    "shoes": ["Runner", "Trail", "Court", "Loafer", "Sneaker"],
    "apparel": ["Hoodie", "Tee", "Jacket", "Chino", "Parka"],
    "accessories": ["Cap", "Backpack", "Belt", "Wallet", "Scarf"],
    "outdoor": ["Tent", "Lantern", "Bottle", "Stove"],
    "home": ["Mug", "Blanket", "Lamp", "Vase"],
}
_COLORS = ["blue", "black", "white", "green", "red", "grey"]


def _build_catalog() -> dict[str, Any]:
    rng = np.random.default_rng(20_240_101)
    rows = []
    for cat, nouns in _CATALOG_NOUNS.items():
        for noun in nouns:
            for gen in range(1, 7):
                rows.append((cat, noun, gen))
    n = len(rows)
    price_c = np.round(np.exp(rng.normal(math.log(45.0), 0.75, n)) * 100).astype(np.int64)
    price_c = np.maximum(price_c - price_c % 100 + 90, 390)  # x.90 prices, >= 3.90
    pop = 1.0 / np.arange(1, n + 1) ** 0.9
    pop = pop[rng.permutation(n)]
    view, line, paths, titles = [], [], [], []
    for i, (cat, noun, gen) in enumerate(rows):
        pid = f"sku-{1001 + i}"
        name = f"{noun} {gen}"
        slug = f"{noun.lower()}-{gen}"
        color = _COLORS[(i * 7) % len(_COLORS)]
        size = "42" if cat == "shoes" else "M"
        price = f"{price_c[i] // 100}.{price_c[i] % 100:02d}"
        view.append(
            f'"product_id":"{pid}","name":"{name}","category":"{cat}","price":{price},'
            f'"currency":"EUR","variant":"{color}/{size}"'
        )
        line.append(
            f'"product_id":"{pid}","sku":"{noun[:3].upper()}-{gen}-{color[:2].upper()}",'
            f'"name":"{name}","price":{price},"category":"{cat}"'
        )
        paths.append(f"/{cat}/{slug}")
        titles.append(name)
    return {
        "n": n,
        "price_c": price_c,
        "pop": pop / pop.sum(),
        "view": view,
        "line": line,
        "paths": paths,
        "titles": titles,
    }


CATALOG = _build_catalog()
PATHS = [p for p, _ in GENERAL_PAGES + FUNNEL_PAGES] + CATALOG["paths"]
TITLES = [t for _, t in GENERAL_PAGES + FUNNEL_PAGES] + CATALOG["titles"]
N_SITE_PAGES = N_GENERAL + len(FUNNEL_PAGES)

# request logs
SERVICES = ["search", "catalog", "checkout", "auth"]
SERVICE_P = np.array([0.35, 0.30, 0.15, 0.20])
SERVICE_MEDIAN_MS = np.array([60.0, 35.0, 140.0, 25.0])
SERVICE_SIGMA = np.array([0.5, 0.45, 0.6, 0.4])
SERVICE_P5XX = np.array([0.010, 0.008, 0.045, 0.006])  # checkout is the bad one
SERVICE_P4XX = np.array([0.03, 0.02, 0.03, 0.08])
ENDPOINTS = [  # service index, method, path
    (0, "GET", "/api/search"),
    (0, "GET", "/api/suggest"),
    (1, "GET", "/api/products"),
    (1, "GET", "/api/products/{id}"),
    (1, "GET", "/api/categories"),
    (2, "POST", "/api/cart"),
    (2, "POST", "/api/checkout"),
    (2, "GET", "/api/orders"),
    (3, "POST", "/api/login"),
    (3, "POST", "/api/token/refresh"),
    (3, "GET", "/api/me"),
]
HOSTS_PER_SERVICE = 3
STATUS_5XX = np.array([500, 502, 503, 504])
STATUS_5XX_P = np.array([0.45, 0.2, 0.2, 0.15])
STATUS_4XX = np.array([400, 401, 403, 404, 409, 429])
STATUS_4XX_P = np.array([0.2, 0.25, 0.05, 0.35, 0.05, 0.1])
BAD_LATENCY = ["timeout", "n/a", "-", "12ms"]
R_NONE, R_MALFORMED, R_NO_SERVICE, R_LAT_STR, R_LAT_NEG = range(5)
REQ_DIRT_NAMES = {
    R_MALFORMED: "malformed",
    R_NO_SERVICE: "missing_service",
    R_LAT_STR: "latency_non_numeric",
    R_LAT_NEG: "latency_negative",
}
# requests files of a day: (part, format, timestamp style, share)
REQ_FILES = [(0, "csv", "iso", 0.4), (1, "ndjson", "ms", 0.3), (2, "ndjson.gz", "s", 0.3)]


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection on uint64 (so distinct inputs give distinct outputs)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _h64(x: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix64(x.astype(np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF)).view(np.int64)


def _lit(s: str) -> str:
    """SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _jlit(s: str) -> str:
    """SQL literal of ``s`` escaped for use inside a JSON string."""
    return _lit(json.dumps(s, ensure_ascii=False)[1:-1])


class _Vocab:
    """Constant string lists for the SQL, held as DuckDB variables (``getvariable``): binding a
    query that inlines big list literals costs ~50 ms per COPY, a variable costs ~nothing."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}

    def __call__(self, items: list[str], json_escape: bool = False) -> str:
        f = _jlit if json_escape else _lit
        literal = "[" + ",".join(f(s) for s in items) + "]"
        for name, lit in self.literals.items():
            if lit == literal:
                return f"getvariable('{name}')"
        name = f"gen_v{len(self.literals)}"
        self.literals[name] = literal
        return f"getvariable('{name}')"

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, literal in self.literals.items():
            con.execute(f"SET VARIABLE {name} = {literal}::VARCHAR[]")


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def _weekday_factor(d: date) -> float:
    return 0.7 if d.weekday() >= 5 else 1.0


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p and len(next(iter(p.values()))) > 0]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(rec: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in rec.items()}


def _nrows(rec: dict[str, np.ndarray]) -> int:
    return len(next(iter(rec.values()))) if rec else 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _finish_file(written: Path, tmp: Path, final: Path, gz: bool) -> tuple[int, str]:
    """Gzip (deterministically: no name, mtime 0) if asked, move into place, return size + sha256."""
    if gz:
        with open(written, "rb") as fi, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as fo:
                shutil.copyfileobj(fi, fo, 1 << 22)
        written.unlink()
    os.replace(tmp, final)
    return final.stat().st_size, _sha256(final)


# NDJSON lines go through the CSV writer: one column, no header, no quoting -> written verbatim.
LINES_COPY_OPTS = "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '')"


# --------------------------------------------------------------------------------------------
# SQL that renders numeric columns into text
# --------------------------------------------------------------------------------------------


def _iso(col: str) -> str:
    return f"strftime(epoch_ms({col}), '%Y-%m-%dT%H:%M:%S.%gZ')"


def _money(col: str) -> str:
    return f"printf('%d.%02d', {col} // 100, {col} % 100)"


MID_SQL = (
    "printf('ajs-next-%08x%08x%08x%08x', (mid_a >> 32) & 4294967295, mid_a & 4294967295, "
    "(mid_b >> 32) & 4294967295, mid_b & 4294967295)"
)
ANON_SQL = (
    "printf('%08x-%04x-4%03x-%04x-%012x', (a1 >> 32) & 4294967295, (a1 >> 16) & 65535, "
    "a1 & 4095, ((a2 >> 48) & 16383) | 32768, a2 & 281474976710655)"
)
USERID_SQL = "('cus_' || (100000 + uidx)::VARCHAR)"
IP_SQL = (
    "(((ip >> 24) & 255)::VARCHAR || '.' || ((ip >> 16) & 255)::VARCHAR || '.' || "
    "((ip >> 8) & 255)::VARCHAR || '.' || (ip & 255)::VARCHAR)"
)


def _events_sql(spec: ExperimentSpec, L: _Vocab) -> dict[str, str]:
    """SQL fragments for one event row; returns the NDJSON line and the flat (CSV) columns."""
    first_l = L([s.lower() for s in FIRST_NAMES])
    last_l = L([s.lower() for s in LAST_NAMES])
    email = (
        f"({first_l}[first + 1] || '.' || {last_l}[last + 1] || "
        f"CASE WHEN num > 0 THEN num::VARCHAR ELSE '' END || '@' || {L(EMAIL_DOMAINS)}[dom + 1])"
    )
    fullname = f"({L(FIRST_NAMES)}[first + 1] || ' ' || {L(LAST_NAMES)}[last + 1])"
    path = f"{L(PATHS)}[page + 1]"
    title = f"{L(TITLES)}[page + 1]"
    ref = f"{L(REFERRERS)}[ref + 1]"
    camp_qs = L([f"?utm_source={s}&utm_medium={m}&utm_campaign={n}" for s, m, n, _ in CAMPAIGNS])
    camp_json = L([f'{{"medium":"{m}","name":"{n}","source":"{s}"}}' for s, m, n, _ in CAMPAIGNS])
    url = (
        f"('{SITE}' || {path} || CASE WHEN pos0 = 1 AND camp >= 0 "
        f"THEN {camp_qs}[camp + 1] ELSE '' END)"
    )
    variants = L(list(spec.variants), json_escape=True)
    vnames = L([v.replace("_", " ").replace("-", " ").capitalize() for v in spec.variants], True)
    pad_variants = []
    for t in KIND_TYPE:
        cap = t[0].upper() + t[1:]
        pad_variants += [" " + cap, t.upper(), t + " ", "  " + cap + " "]
    type_sql = (
        f"CASE WHEN dirt = {D_UNKNOWN} THEN {L(BOGUS_TYPES)}[(mid_a & 3) + 1] "
        f"WHEN pad >= 0 THEN {L(pad_variants)}[kind * 4 + pad + 1] "
        f"ELSE {L(KIND_TYPE)}[kind + 1] END"
    )
    event_sql = f"{L(KIND_EVENT)}[kind + 1]"
    products = f"'[{{' || {L(CATALOG['line'])}[prod + 1] || ',\"quantity\":' || qty::VARCHAR || '}}]'"
    money_rev, money_tot = _money("rev_c"), _money("tot_c")
    money_ship, money_tax, money_disc = _money("ship_c"), _money("tax_c"), _money("disc_c")
    exp_id, exp_name = _jlit(spec.experiment_id), _jlit(spec.experiment_name)
    page_obj = (
        f"""'"path":"' || {path} || '","referrer":"' || {ref} || '","title":"' || {title}"""
        f""" || '","url":"' || {url} || '"'"""
    )
    props = f"""(CASE kind
        WHEN {K_PAGE} THEN '{{' || {page_obj}
        WHEN {K_SCREEN} THEN '{{"name":"' || {L(SCREENS)}[screen + 1] || '"'
        WHEN {K_PV} THEN '{{' || {L(CATALOG['view'])}[prod + 1]
        WHEN {K_ADD} THEN '{{"cart_id":"cart-' || sess::VARCHAR || '",' || {L(CATALOG['view'])}[prod + 1]
            || ',"quantity":' || qty::VARCHAR
        WHEN {K_CHECKOUT} THEN '{{"order_id":"ord-' || sess::VARCHAR || '","value":' || {money_rev}
            || ',"revenue":' || {money_rev} || ',"currency":"EUR","products":' || {products}
        WHEN {K_ORDER} THEN '{{"order_id":"ord-' || sess::VARCHAR || '","total":' || {money_tot}
            || CASE WHEN has_rev = 0 THEN ''
                    WHEN dirt = {D_REV_STR} THEN ',"revenue":"' || {L(BAD_REVENUE)}[(mid_a & 3) + 1] || '"'
                    ELSE ',"revenue":' || {money_rev} END
            || ',"shipping":' || {money_ship} || ',"tax":' || {money_tax} || ',"discount":' || {money_disc}
            || ',"coupon":' || CASE WHEN coupon = 1 THEN '"SAVE10"' ELSE 'null' END
            || ',"currency":"EUR","products":' || {products}
        WHEN {K_SIGNUP} THEN '{{"method":"' || {L(SIGNUP_METHODS)}[method + 1] || '"'
        WHEN {K_EXP} THEN '{{"experiment_id":"' || {exp_id} || '","experiment_name":"' || {exp_name}
            || '","variant_id":"' || {variants}[var + 1] || '","variant_name":"' || {vnames}[var + 1] || '"'
        ELSE '{{' END
        || CASE pii WHEN 1 THEN ',"note":"contact ' || {email} || '"'
                    WHEN 2 THEN ',"client_ip":"' || {IP_SQL} || '"' ELSE '' END
        || '}}')"""
    app_a = L([a for a, _, _ in APP_CTX])
    app_lib = L([b for _, b, _ in APP_CTX])
    app_os = L([c for _, _, c in APP_CTX])
    locale = f"{L(LOCALES)}[loc + 1]"
    ctx = f"""('{{' || CASE WHEN plat = 0 THEN
            CASE WHEN camp >= 0 THEN '"campaign":' || {camp_json}[camp + 1] || ',' ELSE '' END
            || '"ip":"' || {IP_SQL} || '","library":{{"name":"analytics.js","version":"next-1.70.0"}},"locale":"'
            || {locale} || '","page":{{' || {page_obj} || '}}'
        ELSE {app_a}[plat] || ',"ip":"' || {IP_SQL} || '",' || {app_lib}[plat]
            || ',"locale":"' || {locale} || '",' || {app_os}[plat]
        END
        || CASE WHEN kind = {K_IDENTIFY}
                THEN ',"traits":{{"email":"' || {email} || '","name":"' || {fullname} || '"}}' ELSE '' END
        || ',"userAgent":"' || {L(UAS)}[ua + 1] || '"}}')"""
    traits = (
        f"""('{{"createdAt":"' || strftime(epoch_ms(created), '%Y-%m-%dT%H:%M:%SZ') || '","email":"' || {email}"""
        f""" || '","name":"' || {fullname} || '","plan":"' || {L(PLANS)}[plan + 1] || '"}}')"""
    )
    # inner query: compute each piece once
    inner = f"""SELECT dirt, cut, kind, rn, nrows,
        {MID_SQL} AS mid, {ANON_SQL} AS anon, {USERID_SQL} AS uid, has_uid, plat,
        {_iso('ts')} AS ts_iso, ts, {_iso('sent')} AS sent_iso, {_iso('recv')} AS recv_iso,
        {type_sql} AS type_s, {event_sql} AS event_s, {props} AS props, {ctx} AS ctx,
        CASE WHEN kind = {K_IDENTIFY} THEN {traits} END AS traits
      FROM src"""
    line = f"""('{{'
        || CASE WHEN dirt = {D_NO_USER} THEN '' ELSE '"anonymousId":"' || anon || '",' END
        || '"channel":"' || CASE WHEN plat = 0 THEN 'client' ELSE 'mobile' END || '","context":' || ctx || ','
        || CASE WHEN kind >= {K_PV} THEN '"event":"' || event_s || '",' ELSE '' END
        || '"integrations":{{}},'
        || CASE WHEN dirt = {D_NO_MID} THEN '' ELSE '"messageId":"' || mid || '",' END
        || CASE WHEN dirt = {D_NO_TS} THEN '' WHEN dirt = {D_TS_NUM} THEN '"originalTimestamp":' || ts::VARCHAR || ','
                ELSE '"originalTimestamp":"' || ts_iso || '",' END
        || CASE WHEN kind = {K_IDENTIFY} THEN ''
                WHEN dirt = {D_PROPS_STR} THEN '"properties":' || to_json(props)::VARCHAR || ','
                ELSE '"properties":' || props || ',' END
        || '"receivedAt":"' || recv_iso || '","sentAt":"' || sent_iso || '",'
        || CASE WHEN dirt = {D_NO_TS} THEN '' WHEN dirt = {D_TS_NUM} THEN '"timestamp":' || ts::VARCHAR || ','
                ELSE '"timestamp":"' || ts_iso || '",' END
        || CASE WHEN kind = {K_IDENTIFY} THEN '"traits":' || traits || ',' ELSE '' END
        || '"type":"' || type_s || '","userId":'
        || CASE WHEN has_uid = 1 AND dirt <> {D_NO_USER} THEN '"' || uid || '"' ELSE 'null' END
        || ',"version":2}}')"""
    ndjson = (
        f"SELECT CASE WHEN dirt = {D_MALFORMED} "
        f"THEN left(line, greatest(8, (length(line) * cut) // 1000)) ELSE line END "
        f"FROM (SELECT {line} AS line, dirt, cut FROM ({inner}))"
    )
    json_array = (
        f"SELECT CASE WHEN rn = 0 THEN '[' ELSE ',' END || line "
        f"|| CASE WHEN rn = nrows - 1 THEN ']' ELSE '' END "
        f"FROM (SELECT {line} AS line, rn, nrows FROM ({inner}))"
    )
    flat = f"""SELECT
        CASE WHEN dirt = {D_NO_MID} THEN NULL ELSE mid END AS "messageId",
        type_s AS "type",
        CASE WHEN kind >= {K_PV} THEN event_s END AS "event",
        CASE WHEN has_uid = 1 AND dirt <> {D_NO_USER} THEN uid END AS "userId",
        CASE WHEN dirt = {D_NO_USER} THEN NULL ELSE anon END AS "anonymousId",
        CASE WHEN dirt = {D_NO_TS} THEN NULL ELSE ts_iso END AS "timestamp",
        sent_iso AS "sentAt",
        recv_iso AS "receivedAt",
        CASE WHEN dirt = {D_NO_TS} THEN NULL ELSE ts_iso END AS "originalTimestamp",
        CASE WHEN kind = {K_IDENTIFY} THEN NULL ELSE props END AS "properties",
        ctx AS "context",
        traits AS "traits"
      FROM ({inner})"""
    return {"ndjson": ndjson, "json": json_array, "flat": flat}


def _requests_sql(ts_style: str, L: _Vocab) -> dict[str, str]:
    svc = f"{L(SERVICES)}[svc + 1]"
    host = f"({svc} || '-' || printf('%02d', host + 1) || '.prod.internal')"
    method = f"{L([m for _, m, _ in ENDPOINTS])}[ep + 1]"
    endpoint = f"{L([p for _, _, p in ENDPOINTS])}[ep + 1]"
    lat_num = "((lat_t / 10.0)::DECIMAL(12, 1))::VARCHAR"
    bad_lat = f"{L(BAD_LATENCY)}[(rid & 3) + 1]"
    ts_iso = _iso("ts")
    ts_json = {
        "iso": f"('\"' || {ts_iso} || '\"')",
        "ms": "ts::VARCHAR",
        "s": "printf('%d.%03d', ts // 1000, ts % 1000)",
    }[ts_style]
    line = f"""('{{"timestamp":' || {ts_json}
        || CASE WHEN dirt = {R_NO_SERVICE} THEN '' ELSE ',"service":"' || {svc} || '"' END
        || ',"method":"' || {method} || '","endpoint":"' || {endpoint} || '","host":"' || {host}
        || '","status":' || status::VARCHAR
        || ',"latency_ms":' || CASE WHEN dirt = {R_LAT_STR} THEN '"' || {bad_lat} || '"' ELSE {lat_num} END
        || CASE WHEN cpu_t >= 0 THEN ',"cpu_pct":' || ((cpu_t / 10.0)::DECIMAL(5, 1))::VARCHAR ELSE '' END
        || CASE WHEN mem >= 0 THEN ',"memory_mb":' || mem::VARCHAR ELSE '' END
        || '}}')"""
    ndjson = (
        f"SELECT CASE WHEN dirt = {R_MALFORMED} "
        f"THEN left(line, greatest(8, (length(line) * cut) // 1000)) ELSE line END "
        f"FROM (SELECT {line} AS line, dirt, cut FROM src)"
    )
    csv = f"""SELECT {ts_iso} AS "timestamp",
        CASE WHEN dirt = {R_NO_SERVICE} THEN NULL ELSE {svc} END AS service,
        {method} AS method, {endpoint} AS endpoint, {host} AS host, status,
        CASE WHEN dirt = {R_LAT_STR} THEN {bad_lat} ELSE {lat_num} END AS latency_ms,
        CASE WHEN cpu_t >= 0 THEN (cpu_t / 10.0)::DECIMAL(5, 1) END AS cpu_pct,
        CASE WHEN mem >= 0 THEN mem END AS memory_mb
      FROM src"""
    return {"ndjson": ndjson, "csv": csv}


# --------------------------------------------------------------------------------------------
# user population
# --------------------------------------------------------------------------------------------

_POOL_DTYPES = {
    "kind": np.int8,  # 1 registered (has a userId), 0 anonymous visitor
    "w": np.float64,  # activity weight
    "tau": np.float64,  # engagement decay (days)
    "born": np.int32,  # day index the user was created (negative: before the window)
    "plat": np.int8,  # 0 web, 1 ios, 2 android
    "var": np.int8,  # assigned variant index
    "cross": np.bool_,  # crossover user (logged in two arms)
    "srm": np.bool_,  # exposures dropped (sample-ratio mismatch)
    "created": np.int64,  # account creation time, ms
    "a1": np.int64,
    "a2": np.int64,  # anonymousId hash bits
    "ua": np.int16,
    "ip": np.int64,
    "loc": np.int8,
    "first": np.int16,
    "last": np.int16,
    "dom": np.int8,
    "num": np.int16,
    "plan": np.int8,
}


class _Pool:
    def __init__(self) -> None:
        self.n = 0
        self.a = {k: np.empty(0, dt) for k, dt in _POOL_DTYPES.items()}

    def add(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        m = len(cols["kind"])
        need = self.n + m
        cap = len(self.a["kind"])
        if need > cap:
            new_cap = max(need, 2 * cap, 1024)
            for k, dt in _POOL_DTYPES.items():
                arr = np.zeros(new_cap, dt)
                arr[: self.n] = self.a[k][: self.n]
                self.a[k] = arr
        for k in _POOL_DTYPES:
            self.a[k][self.n : need] = cols[k]
        idx = np.arange(self.n, need, dtype=np.int64)
        self.n = need
        return idx

    def __getitem__(self, k: str) -> np.ndarray:
        return self.a[k][: self.n]


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


class _Generator:
    def __init__(
        self,
        root: Path,
        start: date,
        days: int,
        events_per_day: int,
        seed: int,
        dirt: Dirt,
        requests_per_day: int,
        spec: ExperimentSpec,
        formats: Formats,
    ) -> None:
        self.root, self.start, self.days, self.E = root, start, days, events_per_day
        self.seed, self.dirt, self.R, self.spec, self.fmt = seed, dirt, requests_per_day, spec, formats
        self.day0_ms = _day_ms(start)
        self.progress: Callable[[date, dict[str, Any]], None] | None = None
        salts = np.random.default_rng(np.random.SeedSequence([seed, 999])).integers(
            0, 2**63 - 1, size=8
        )
        self.salt = [int(s) for s in salts]
        self.pool = _Pool()
        self.next_ev = 0
        self.next_sess = 1000
        self.pending_ev: dict[int, list[dict[str, np.ndarray]]] = {}
        self.pending_dup: dict[int, list[dict[str, np.ndarray]]] = {}
        self.exposures: list[tuple[np.ndarray, ...]] = []
        self.orders: list[tuple[np.ndarray, ...]] = []
        self.srm_dropped_sessions = 0
        self.con = duckdb.connect(config={"memory_limit": "768MB", "threads": 1, "preserve_insertion_order": True})
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gen-finish")
        vocab = _Vocab()
        self.ev_sql = _events_sql(spec, vocab)
        self.req_sql = {style: _requests_sql(style, vocab) for _, _, style, _ in REQ_FILES}
        vocab.install(self.con)
        self.files: list[dict[str, Any]] = []
        self.per_day: dict[str, dict[str, Any]] = {}
        self.redelivery_day: set[int] = set()

    # ---- randomness ------------------------------------------------------------------------
    def rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *keys]))

    def day(self, d: int) -> date:
        return self.start + timedelta(days=d)

    def dms(self, d: int) -> int:
        return self.day0_ms + d * DAY_MS

    def daytime_ms(self, rng: np.random.Generator, n: int) -> np.ndarray:
        hour = rng.choice(24, size=n, p=HOUR_P)
        return hour.astype(np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, size=n)

    # ---- users ---------------------------------------------------------------------------------
    def new_users(self, rng: np.random.Generator, kind: np.ndarray, born: np.ndarray) -> np.ndarray:
        n = len(kind)
        if n == 0:
            return np.empty(0, np.int64)
        start_idx = self.pool.n
        gidx = np.arange(start_idx, start_idx + n, dtype=np.int64)
        plat = rng.choice(3, size=n, p=[0.92, 0.05, 0.03]).astype(np.int8)
        ua = np.where(
            plat == 0,
            rng.choice(len(WEB_UAS), size=n, p=WEB_UA_W / WEB_UA_W.sum()),
            len(WEB_UAS) + plat - 1,
        )
        ip = (
            (FIRST_OCTETS[rng.integers(0, len(FIRST_OCTETS), n)] << 24)
            | (rng.integers(0, 256, n) << 16)
            | (rng.integers(0, 256, n) << 8)
            | rng.integers(1, 255, n)
        )
        loyal = rng.random(n) < 0.3
        tau = np.where(loyal, 400.0, 1.0 + rng.exponential(10.0, n))
        w = rng.lognormal(0.0, 0.7, n) * np.where(kind == 1, 1.0, 0.12)
        created = self.day0_ms + born.astype(np.int64) * DAY_MS + rng.integers(0, DAY_MS, n)
        a1 = _h64(gidx, self.salt[0])
        a2 = _h64(gidx, self.salt[1])
        var = self.assign(gidx, kind, a1, a2)
        cols = {
            "kind": kind.astype(np.int8),
            "w": w,
            "tau": tau,
            "born": born.astype(np.int32),
            "plat": plat,
            "var": var,
            "cross": rng.random(n) < self.spec.crossover,
            "srm": (var >= 1) & (rng.random(n) < self.spec.srm),
            "created": created,
            "a1": a1,
            "a2": a2,
            "ua": ua.astype(np.int16),
            "ip": ip.astype(np.int64),
            "loc": rng.choice(len(LOCALES), size=n, p=LOCALE_W / LOCALE_W.sum()).astype(np.int8),
            "first": rng.integers(0, len(FIRST_NAMES), n).astype(np.int16),
            "last": rng.integers(0, len(LAST_NAMES), n).astype(np.int16),
            "dom": rng.integers(0, len(EMAIL_DOMAINS), n).astype(np.int8),
            "num": np.where(rng.random(n) < 0.5, 0, rng.integers(1, 100, n)).astype(np.int16),
            "plan": rng.choice(3, size=n, p=[0.7, 0.25, 0.05]).astype(np.int8),
        }
        return self.pool.add(cols)

    def assign(self, uidx: np.ndarray, kind: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
        """Variant index by md5(experiment_id:user_key), computed in DuckDB (== assign_variant)."""
        df = pd.DataFrame({"uidx": uidx, "kind": kind.astype(np.int8), "a1": a1, "a2": a2})
        self.con.register("usr", df)
        try:
            res = self.con.execute(
                f"SELECT ('0x' || substr(md5(? || CASE WHEN kind = 1 THEN {USERID_SQL} "
                f"ELSE {ANON_SQL} END), 1, 8))::UBIGINT AS b FROM usr ORDER BY uidx",
                [self.spec.experiment_id + ":"],
            ).fetchnumpy()
        finally:
            self.con.unregister("usr")
        buckets = np.asarray(res["b"], dtype=np.float64) / 2**32
        return _variant_index(buckets, self.spec).astype(np.int8)

    # ---- event simulation ----------------------------------------------------------------------
    def simulate_events(self, d: int) -> None:
        """Simulate the sessions that happen on day d; route their events to arrival days."""
        rng = self.rng(1, d)
        n_target = int(round(self.E * _weekday_factor(self.day(d))))
        if n_target <= 0:
            return
        day_ms = self.dms(d)
        S = int(math.ceil(n_target / 3.6)) + 20  # mean session length is ~4.6 events
        if self.pool.n == 0:  # users who existed before the window
            p0 = max(50, int(2.5 * (self.E / 3.6 + 20)))
            self.new_users(
                self.rng(3, 0),
                kind=(rng.random(p0) < 0.75).astype(np.int8),
                born=-rng.integers(1, 400, p0),
            )
        n_new_reg = int(rng.binomial(S, 0.09))
        n_new_anon = int(rng.binomial(S, 0.12))
        s_ret = S - n_new_reg - n_new_anon
        # returning users: weighted sample without replacement, then extra sessions for some
        age = d - self.pool["born"]
        w_eff = self.pool["w"] * (np.exp(-age / self.pool["tau"]) + 0.02)
        u_ret = max(1, min(int(s_ret / 1.3), self.pool.n))
        keys = rng.exponential(size=self.pool.n) / w_eff
        chosen = np.sort(np.argpartition(keys, u_ret - 1)[:u_ret]) if u_ret < self.pool.n else np.arange(self.pool.n)
        pc = w_eff[chosen] / w_eff[chosen].sum()
        extra = chosen[rng.choice(len(chosen), size=max(0, s_ret - u_ret), p=pc)]
        new_reg = self.new_users(self.rng(3, d + 1, 1), np.ones(n_new_reg, np.int8), np.full(n_new_reg, d))
        new_anon = self.new_users(self.rng(3, d + 1, 2), np.zeros(n_new_anon, np.int8), np.full(n_new_anon, d))
        su = np.concatenate([chosen, extra, new_reg, new_anon]).astype(np.int64)
        signup = np.concatenate(
            [np.zeros(len(chosen) + len(extra), bool), np.ones(n_new_reg, bool), np.zeros(n_new_anon, bool)]
        )
        perm = rng.permutation(len(su))
        su, signup = su[perm], signup[perm]
        S = len(su)

        P = self.pool
        kind_u = P["kind"][su]
        plat = P["plat"][su]
        login = (~signup) & (kind_u == 1) & (rng.random(S) < 0.04)
        blk = np.where(signup, 2, np.where(login, 1, 0))
        B = rng.geometric(0.25, S) - 1
        add = rng.random(S) < np.where(kind_u == 1, 0.20, 0.08)
        B = np.where(add & (B == 0), 1, B)
        B1 = rng.integers(0, np.where(add, B, B + 1))  # browse events before the signup block
        var_u = P["var"][su]
        n_exp = np.where(add & ~P["srm"][su], np.where(P["cross"][su], 2, 1), 0)
        self.srm_dropped_sessions += int((add & P["srm"][su]).sum())
        mult = np.where(var_u >= 1, 1.0 + self.spec.true_effect, 1.0)
        p_order = np.clip(0.35 * mult, 0.0, 0.98)
        p_chk = np.maximum(0.55, p_order)
        r = rng.random(S)
        # sessions that end in an order only because of the effect (r between the untreated and the
        # treated probability): the counterfactual "same user, same draws, no effect" has no order there
        caused = add & (var_u >= 1) & (r >= 0.35) & (r < p_order)
        depth = np.where(add, np.where(r < p_order, 4, np.where(r < p_chk, 3, 2)), 0)
        T = np.where(add, 1 + n_exp + (depth >= 3) + (depth >= 4), 0)
        L = 1 + B + blk + T
        prod_s = rng.choice(CATALOG["n"], size=S, p=CATALOG["pop"])
        qty = 1 + (rng.random(S) < 0.2).astype(np.int64) + (rng.random(S) < 0.05)
        camp = np.where(rng.random(S) < 0.3, rng.integers(0, len(CAMPAIGNS), S), -1)
        camp_ref = np.array([c[3] for c in CAMPAIGNS])
        organic_ref = rng.choice(len(REFERRERS), size=S, p=REFERRER_W / REFERRER_W.sum())
        ref = np.where(camp >= 0, camp_ref[np.maximum(camp, 0)], organic_ref)
        coupon = rng.random(S) < 0.1
        rev_c = CATALOG["price_c"][prod_s] * qty
        disc_c = np.where(coupon, np.round(rev_c * 0.1), 0).astype(np.int64)
        ship_c = np.where(rev_c >= 5000, 0, 495)
        tax_c = np.round((rev_c - disc_c) * 19 / 119).astype(np.int64)
        tot_c = rev_c - disc_c + ship_c
        has_rev = rng.random(S) >= 0.10  # ~10% of orders carry only `total`
        method = rng.integers(0, len(SIGNUP_METHODS), S)
        late_k = np.where(rng.random(S) < self.dirt.late, rng.integers(1, 6, S), 0)
        late_k = np.where(d + late_k < self.days, late_k, 0)
        skew = (late_k == 0) & (rng.random(S) < self.dirt.clock_skew)
        skew_off = np.where(
            skew,
            np.where(rng.random(S) < 0.5, -1, 1)
            * np.exp(rng.uniform(math.log(2 * MINUTE_MS), math.log(6 * HOUR_MS), S)),
            0,
        ).astype(np.int64)
        start = day_ms + self.daytime_ms(rng, S)

        # event level
        N = int(L.sum())
        sidx = np.repeat(np.arange(S), L)
        first_pos = np.cumsum(L) - L
        pos = np.arange(N) - first_pos[sidx]
        gaps = np.clip(rng.lognormal(math.log(18_000), 1.0, N), 300, 25 * MINUTE_MS).astype(np.int64)
        gaps[first_pos] = 0
        cg = np.cumsum(gaps)
        off = cg - cg[first_pos][sidx]
        dur = off[first_pos + L - 1]
        # sessions of the same user are separated by more than 30 minutes
        order = np.lexsort((start, su))
        s_sorted = su[order]
        new_grp = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        grp_first = np.maximum.accumulate(np.where(new_grp, np.arange(S), 0))
        rank = np.arange(S) - grp_first
        st, du = start[order].copy(), dur[order]
        pause = (31 * MINUTE_MS + rng.exponential(60 * MINUTE_MS, S)).astype(np.int64)
        for k in range(1, int(rank.max()) + 1 if S else 1):
            i = np.nonzero(rank == k)[0]
            st[i] = np.maximum(st[i], st[i - 1] + du[i - 1] + pause[i])
        start[order] = st

        Ls, Ts, blk_s = L[sidx], T[sidx], blk[sidx]
        tail_start = Ls - Ts
        blk_start = 1 + B1[sidx]
        is_tail = pos >= tail_start
        tail_i = pos - tail_start
        is_blk = (pos >= blk_start) & (pos < blk_start + blk_s)
        landing = pos == 0
        mobile = plat[sidx] > 0
        add_e = add[sidx]
        forced_pv = add_e & (pos == tail_start - 1)
        pv = (~landing & ~is_tail & ~is_blk) & ((rng.random(N) < 0.5) | forced_pv)
        nexp_e = n_exp[sidx]
        pagelike = np.where(mobile, K_SCREEN, K_PAGE)
        kind = np.select(
            [
                landing,
                is_blk & (blk_s == 2) & (pos == blk_start),
                is_blk,
                is_tail & (tail_i == 0),
                is_tail & (tail_i <= nexp_e),
                is_tail & (tail_i == nexp_e + 1) & (depth[sidx] >= 3),
                is_tail,
                pv,
            ],
            [pagelike, K_SIGNUP, K_IDENTIFY, K_ADD, K_EXP, K_CHECKOUT, K_ORDER, K_PV],
            default=pagelike,
        ).astype(np.int8)
        has_uid = (kind_u[sidx] == 1) & ~(signup[sidx] & (pos < blk_start))
        prod = np.where(is_tail | forced_pv, prod_s[sidx], rng.choice(CATALOG["n"], size=N, p=CATALOG["pop"]))
        gen_page = np.minimum(rng.zipf(1.6, N) - 1, N_GENERAL - 1)
        page = np.select(
            [
                (kind == K_PAGE) & landing & (camp[sidx] >= 0),
                kind == K_PAGE,
                (kind == K_PV) | (kind == K_ADD),
                kind == K_EXP,
                kind == K_CHECKOUT,
                kind == K_ORDER,
                signup[sidx],
            ],
            [N_SITE_PAGES + prod, gen_page, N_SITE_PAGES + prod, P_CART, P_CHECKOUT, P_CONFIRM, P_SIGNUP],
            default=P_LOGIN,
        )
        screen = np.where(landing, 0, np.where(kind == K_PV, 3, rng.integers(0, len(SCREENS), N)))
        var_e = np.where((kind == K_EXP) & (tail_i == 2), (var_u[sidx] + 1) % len(self.spec.variants), var_u[sidx])
        T_ms = start[sidx] + off
        so = skew_off[sidx]
        sent_delay = rng.integers(50, 1500, N)
        net = rng.integers(20, 800, N)
        ts = T_ms + so
        sent = T_ms + sent_delay + so
        recv = T_ms + sent_delay + net
        late_e = late_k[sidx] > 0
        if late_e.any():  # offline device: the session is delivered in one burst k days later
            arr = self.day0_ms + (d + late_k) * DAY_MS + self.daytime_ms(rng, S)
            recv_l = arr[sidx] + pos * 40 + rng.integers(0, 30, N)
            sent_l = recv_l - rng.integers(20, 800, N)
            recv = np.where(late_e, recv_l, recv)
            sent = np.where(late_e, sent_l, sent)
        # signup time becomes the account creation time
        m = kind == K_SIGNUP
        P.a["created"][su[sidx[m]]] = T_ms[m]

        rec = {
            "uidx": su[sidx],
            "has_uid": has_uid.astype(np.int8),
            "kind": kind,
            "T": T_ms,
            "ts": ts,
            "sent": sent,
            "recv": recv,
            "page": page.astype(np.int16),
            "prod": prod.astype(np.int16),
            "qty": qty[sidx].astype(np.int8),
            "camp": camp[sidx].astype(np.int8),
            "ref": ref[sidx].astype(np.int8),
            "pos0": landing.astype(np.int8),
            "sess": (self.next_sess + sidx).astype(np.int64),
            "rev_c": rev_c[sidx],
            "ship_c": ship_c[sidx].astype(np.int64),
            "tax_c": tax_c[sidx],
            "disc_c": disc_c[sidx],
            "tot_c": tot_c[sidx],
            "coupon": coupon[sidx].astype(np.int8),
            "has_rev": has_rev[sidx].astype(np.int8),
            "caused": caused[sidx].astype(np.int8),
            "var": var_e.astype(np.int8),
            "screen": screen.astype(np.int8),
            "method": method[sidx].astype(np.int8),
            "late": late_e,
            "skew": skew[sidx],
        }
        # keep exactly n_target events (sessions are in random order; the last one is cut)
        keep = min(n_target, N)
        rec = {k: v[:keep] for k, v in rec.items()}
        rec["ev"] = np.arange(self.next_ev, self.next_ev + keep, dtype=np.int64)
        self.next_ev += keep
        self.next_sess += S
        arrival = (rec["recv"] - self.day0_ms) // DAY_MS
        for a in np.unique(arrival):
            if a >= self.days:
                continue  # would arrive after the last day: not delivered in this window
            self.pending_ev.setdefault(int(a), []).append(_take(rec, np.nonzero(arrival == a)[0]))

    # ---- arrival day -------------------------------------------------------------------------
    def n_ndjson_files(self, n: int) -> int:
        if self.fmt.ndjson_files:
            return max(1, int(self.fmt.ndjson_files))
        return int(min(8, max(2, math.ceil(n / 250_000))))

    def events_day(self, d: int) -> dict[str, Any]:
        rng = self.rng(2, d)
        dirt = self.dirt
        first = _concat(self.pending_ev.pop(d, []))
        if first:
            n1 = _nrows(first)
            first["dup"] = np.zeros(n1, np.int8)
            first["dirt"] = np.zeros(n1, np.int8)
            first["pad"] = np.full(n1, -1, np.int8)
            first["pii"] = np.zeros(n1, np.int8)
            first["cut"] = np.zeros(n1, np.int16)
        rec = _concat([first] + self.pending_dup.pop(d, []))
        out: dict[str, Any] = {"files": [], "rows": 0}
        if not rec:
            return self.events_summary(d, {}, out)
        n = _nrows(rec)
        is_first = rec["dup"] == 0
        f = self.fmt
        shares = np.array([1.0 - f.csv - f.parquet - f.json, f.csv, f.parquet, f.json])
        fmt = rng.choice(4, size=n, p=np.clip(shares, 0, None) / shares.clip(0).sum()).astype(np.int8)
        src = is_first & (rng.random(n) < dirt.duplicate)
        # record-breaking dirt: exclusive, never on late/skewed/re-delivered records
        mf = dirt.missing_field / 3
        rates = [dirt.malformed, mf, mf, mf, dirt.wrong_type / 2, dirt.wrong_type / 2, dirt.unknown_type]
        codes = np.array([D_MALFORMED, D_NO_MID, D_NO_USER, D_NO_TS, D_TS_NUM, D_PROPS_STR, D_UNKNOWN, D_NONE], np.int8)
        cat = codes[np.searchsorted(np.cumsum(rates), rng.random(n), side="right")]
        kind = rec["kind"]
        lines_fmt = (fmt == 0) | (fmt == 3)
        ok = (
            ((cat != D_MALFORMED) | (fmt == 0))
            & (((cat != D_TS_NUM) & (cat != D_PROPS_STR)) | lines_fmt)
            & ((cat != D_PROPS_STR) | (kind != K_IDENTIFY))
        )
        elig = is_first & ~src & ~rec["late"] & ~rec["skew"]
        new_dirt = np.where(elig & ok, cat, D_NONE)
        rev_bad = (
            elig & (new_dirt == D_NONE) & lines_fmt & (kind == K_ORDER) & (rec["has_rev"] == 1)
            & (rng.random(n) < min(1.0, dirt.wrong_type * dirt.wrong_revenue_factor))
        )
        new_dirt = np.where(rev_bad, D_REV_STR, new_dirt)
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
        # files: NDJSON split into time windows; csv / parquet / json one file each
        k = self.n_ndjson_files(int((fmt == 0).sum()))
        nd = np.nonzero(fmt == 0)[0]
        chunk = np.zeros(n, np.int64)
        if len(nd):
            o = nd[np.lexsort((rec["ev"][nd], rec["recv"][nd]))]
            chunk[o] = np.arange(len(o)) * k // len(o)
        rec["file"] = np.where(fmt == 0, chunk, k + fmt - 1).astype(np.int16)
        rec["fmt"] = fmt
        # duplicates
        si = np.nonzero(src)[0]
        nxt = (d + 1 < self.days) & (rng.random(len(si)) < dirt.duplicate_next_day)
        same = _take(rec, si[~nxt])
        ns = _nrows(same) if same else 0
        if ns:
            shift = np.where(rng.random(ns) < 0.5, 0, rng.integers(1_000, 10 * MINUTE_MS, ns))
            shift = np.clip(shift, 0, np.maximum(0, self.dms(d + 1) - 1 - same["recv"]))
            same["recv"] = same["recv"] + shift
            same["sent"] = same["sent"] + shift
            same["dup"] = np.ones(ns, np.int8)
        nx = _take(rec, si[nxt])
        if nx and _nrows(nx):
            new_recv = self.dms(d + 1) + self.daytime_ms(rng, _nrows(nx))
            nx["sent"] = nx["sent"] + (new_recv - nx["recv"])
            nx["recv"] = new_recv
            nx["dup"] = np.full(_nrows(nx), 2, np.int8)
            self.pending_dup.setdefault(d + 1, []).append(nx)
        rec = _concat([rec, same]) if ns else rec
        order = np.lexsort((rec["dup"], rec["ev"], rec["recv"], rec["file"]))
        rec = _take(rec, order)
        self.write_events(d, rec, k, out)
        return self.events_summary(d, rec, out)

    def write_events(self, d: int, rec: dict[str, np.ndarray], k: int, out: dict[str, Any]) -> None:
        day_iso = self.day(d).isoformat()
        folder = self.root / "events" / day_iso
        folder.mkdir(parents=True, exist_ok=True)
        P = self.pool
        u = rec["uidx"]
        cols = {
            "mid_a": _h64(rec["ev"], self.salt[2]),
            "mid_b": _h64(rec["ev"], self.salt[3]),
            "a1": P["a1"][u],
            "a2": P["a2"][u],
            "plat": P["plat"][u],
            "ua": P["ua"][u],
            "ip": P["ip"][u],
            "loc": P["loc"][u],
            "first": P["first"][u],
            "last": P["last"][u],
            "dom": P["dom"][u],
            "num": P["num"][u],
            "plan": P["plan"][u],
            "created": P["created"][u],
        }
        skip = {"T", "late", "skew", "fmt", "file"}
        cols.update({c: v for c, v in rec.items() if c not in skip})
        file_ids = rec["file"]
        bounds = np.searchsorted(file_ids, np.arange(k + 4))
        pending: list[tuple[Path, str, bool, int, Future]] = []
        for f in range(k + 3):
            lo, hi = int(bounds[f]), int(bounds[f + 1])
            if hi <= lo:
                continue
            if f < k:
                gz = self.fmt.gzip and f % 2 == 1
                ext, kind_ = ("ndjson.gz" if gz else "ndjson"), "ndjson"
            else:
                kind_ = ["csv", "parquet", "json"][f - k]
                ext, gz = kind_, False
            path = folder / f"events-{day_iso}-part-{f:02d}.{ext}"
            df = pd.DataFrame({c: v[lo:hi] for c, v in cols.items()})
            df["rn"] = np.arange(hi - lo, dtype=np.int64)
            df["nrows"] = np.int64(hi - lo)
            query = self.ev_sql["flat" if kind_ in ("csv", "parquet") else kind_]
            mode = "lines_gz" if gz else ("lines" if kind_ in ("ndjson", "json") else kind_)
            pending.append((path, kind_, gz, hi - lo, self.copy_to(df, query, path, mode)))
            del df
        for path, kind_, gz, rows, fut in pending:
            entry = self.file_entry("events", d, path, kind_, "gzip" if gz else None, rows, fut=fut)
            out["files"].append(entry["path"])
            out["rows"] += rows

    def copy_to(self, df: pd.DataFrame, query: str, path: Path, mode: str) -> Future:
        """COPY ``query`` over ``df`` (as table ``src``) to ``path``; returns a future of
        (bytes, sha256). Files appear atomically (hidden temp name, then rename); gzip runs in a
        worker thread (zlib releases the GIL) while DuckDB writes the next file."""
        tmp = path.with_name(f".{path.name}.tmp")
        opts = {
            "lines": LINES_COPY_OPTS,
            "lines_gz": LINES_COPY_OPTS,
            "csv": "(FORMAT csv, HEADER true)",
            "parquet": "(FORMAT parquet)",
        }[mode]
        target = path.with_name(f".{path.name}.plain.tmp") if mode == "lines_gz" else tmp
        self.con.register("src", df)
        try:
            self.con.execute(f"COPY ({query}) TO {_lit(str(target))} {opts}")
        finally:
            self.con.unregister("src")
        return self.executor.submit(_finish_file, target, tmp, path, mode == "lines_gz")

    def file_entry(self, source: str, d: int, path: Path, fmt: str, comp: str | None, rows: int,
                   redelivery_of: str | None = None, fut: Future | None = None) -> dict[str, Any]:
        size, digest = fut.result() if fut is not None else (path.stat().st_size, _sha256(path))
        entry = {
            "source": source,
            "day": self.day(d).isoformat(),
            "path": path.relative_to(self.root).as_posix(),
            "format": fmt,
            "compression": comp,
            "rows": int(rows),
            "bytes": size,
            "sha256": digest,
            "redelivery_of": redelivery_of,
        }
        self.files.append(entry)
        return entry

    def events_summary(self, d: int, rec: dict[str, np.ndarray], out: dict[str, Any]) -> dict[str, Any]:
        n = _nrows(rec)
        z = np.zeros(0, np.int8)
        dup = rec.get("dup", z)
        dirt_c = rec.get("dirt", z)
        kind = rec.get("kind", z)
        first = dup == 0
        valid = first & (dirt_c == D_NONE)
        folder_start = self.dms(d)
        has_ts = ~np.isin(dirt_c, [D_MALFORMED, D_NO_TS, D_TS_NUM])
        if n:
            corr = corrected_time_ms(rec["ts"], rec["sent"], rec["recv"])
            late = first & has_ts & (corr < folder_start)
        else:
            late = np.zeros(0, bool)
        counts = {name: int((first & (dirt_c == code)).sum()) for code, name in DIRT_NAMES.items()}
        by_type: dict[str, int] = {}
        by_event: dict[str, int] = {}
        orders = revenue_c = 0
        if n:
            kv = kind[valid]
            for kk in range(9):
                c = int((kv == kk).sum())
                if c:
                    by_type[KIND_TYPE[kk]] = by_type.get(KIND_TYPE[kk], 0) + c
                    if KIND_EVENT[kk]:
                        by_event[KIND_EVENT[kk]] = c
            om = valid & (kind == K_ORDER)
            orders = int(om.sum())
            revenue_c = int(np.where(rec["has_rev"][om] == 1, rec["rev_c"][om], rec["tot_c"][om]).sum())
            em = valid & (kind == K_EXP)
            self.exposures.append((rec["uidx"][em] * 2 + rec["has_uid"][em], rec["var"][em], rec["T"][em]))
            self.orders.append((rec["uidx"][om] * 2 + rec["has_uid"][om], rec["T"][om], rec["caused"][om]))
        dirt_out = {
            "duplicates_same_day": int((dup == 1).sum()),
            "duplicates_from_previous_day": int((dup == 2).sum()),
            "late_injected": int((first & rec["late"]).sum()) if n else 0,
            "clock_skew": int((first & rec["skew"]).sum()) if n else 0,
            **counts,
            "padded_enum": int((first & (rec["pad"] >= 0)).sum()) if n else 0,
            "pii_email_in_properties": int((first & (rec["pii"] == 1)).sum()) if n else 0,
            "pii_ip_in_properties": int((first & (rec["pii"] == 2)).sum()) if n else 0,
        }
        invalid = int((first & (dirt_c != D_NONE)).sum())
        return {
            "files": out["files"],
            "rows": int(out["rows"]),
            "first_deliveries": int(first.sum()),
            "valid": int(valid.sum()),
            "invalid": invalid,
            "duplicates": int((~first).sum()),
            "late": int(late.sum()),
            "anonymous_only": int((valid & (rec["has_uid"] == 0)).sum()) if n else 0,
            "users": int(len(np.unique(rec["uidx"][valid] * 2 + rec["has_uid"][valid]))) if n else 0,
            "by_type": by_type,
            "by_event": by_event,
            "orders": orders,
            "revenue": round(revenue_c / 100, 2),
            "dirt": dirt_out,
            "redelivered_files": [],
            "redelivered_rows": 0,
        }

    def redeliver(self, d: int, summary_next: dict[str, Any]) -> None:
        """Copy one NDJSON file of day d byte-identically into day d+1's folder (another name)."""
        cands = [f for f in self.files if f["source"] == "events" and f["day"] == self.day(d).isoformat()
                 and f["format"] == "ndjson" and f["redelivery_of"] is None]
        if not cands:
            return
        pick = cands[int(self.rng(5, d).integers(0, len(cands)))]
        src = self.root / pick["path"]
        name = src.name.replace(".ndjson", "-redelivered.ndjson")
        folder = self.root / "events" / self.day(d + 1).isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / name
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        entry = self.file_entry("events", d + 1, dst, "ndjson", pick["compression"], pick["rows"], pick["path"])
        summary_next["redelivered_files"].append(
            {"path": entry["path"], "original": pick["path"], "rows": pick["rows"], "sha256": entry["sha256"]}
        )
        summary_next["redelivered_rows"] += pick["rows"]

    # ---- requests ------------------------------------------------------------------------------
    def requests_day(self, d: int) -> dict[str, Any]:
        rng = self.rng(4, d)
        dirt = self.dirt
        n = int(round(self.R * (0.8 if self.day(d).weekday() >= 5 else 1.0)))
        day_iso = self.day(d).isoformat()
        out = {"files": [], "rows": 0}
        zero = {name: 0 for name in REQ_DIRT_NAMES.values()}
        if n <= 0:
            return {**out, "valid": 0, "errors_5xx": 0, "by_service": {}, "dirt": {**zero, "duplicates": 0}}
        ts = self.dms(d) + self.daytime_ms(rng, n)
        svc = rng.choice(len(SERVICES), size=n, p=SERVICE_P)
        ep_svc = np.array([s for s, _, _ in ENDPOINTS])
        ep_first = np.searchsorted(ep_svc, np.arange(len(SERVICES)))
        ep_cnt = np.bincount(ep_svc, minlength=len(SERVICES))
        ep = ep_first[svc] + (rng.random(n) * ep_cnt[svc]).astype(np.int64)
        host = rng.integers(0, HOSTS_PER_SERVICE, n)
        r = rng.random(n)
        p5, p4 = SERVICE_P5XX[svc], SERVICE_P4XX[svc]
        is5 = r < p5
        is4 = ~is5 & (r < p5 + p4)
        post = np.array([m == "POST" for _, m, _ in ENDPOINTS])[ep]
        ok_status = np.where(post & (rng.random(n) < 0.3), 201, 200)
        s5 = rng.choice(STATUS_5XX, n, p=STATUS_5XX_P)
        s4 = rng.choice(STATUS_4XX, n, p=STATUS_4XX_P)
        status = np.where(is5, s5, np.where(is4, s4, ok_status))
        lat = rng.lognormal(np.log(SERVICE_MEDIAN_MS[svc]), SERVICE_SIGMA[svc])
        lat = np.where(is4, lat * 0.4, lat)
        lat = np.where(is5, lat * 3.0, lat)
        lat = np.where(status == 504, 30_000 + rng.normal(0, 50, n), lat)
        lat = np.where(rng.random(n) < 0.003, lat * rng.uniform(10, 60, n), lat)  # big outliers
        lat_t = np.maximum(1, np.round(lat * 10)).astype(np.int64)
        hour = ((ts - self.dms(d)) // HOUR_MS).astype(np.int64)
        host_key = svc * HOSTS_PER_SERVICE + host
        hrng = self.rng(6)  # per-host baselines, stable across days
        cpu_base = hrng.uniform(15, 45, len(SERVICES) * HOSTS_PER_SERVICE)
        mem_base = hrng.uniform(512, 2048, len(SERVICES) * HOSTS_PER_SERVICE)
        cpu = cpu_base[host_key] + 30 * HOUR_W[hour] / HOUR_W.max() + rng.normal(0, 5, n)
        cpu_t = np.where(rng.random(n) < 0.85, np.round(np.clip(cpu, 1, 100) * 10), -1).astype(np.int64)
        mem = mem_base[host_key] + 2.0 * d + rng.normal(0, 40, n)
        mem_i = np.where(rng.random(n) < 0.85, np.round(mem), -1).astype(np.int64)
        file_p = np.array([s for _, _, _, s in REQ_FILES])
        file_ = rng.choice(len(REQ_FILES), size=n, p=file_p / file_p.sum())
        rates = [
            dirt.requests_malformed,
            dirt.requests_missing_service,
            dirt.requests_bad_latency,
            dirt.requests_negative_latency,
        ]
        codes = np.array([R_MALFORMED, R_NO_SERVICE, R_LAT_STR, R_LAT_NEG, R_NONE])
        cat = codes[np.searchsorted(np.cumsum(rates), rng.random(n), side="right")]
        is_csv = np.array([fm == "csv" for _, fm, _, _ in REQ_FILES])[file_]
        cat = np.where((cat == R_MALFORMED) & is_csv, R_NONE, cat)
        lat_t = np.where(cat == R_LAT_NEG, np.where(rng.random(n) < 0.5, -10, -lat_t), lat_t)
        rec = {
            "ts": ts, "svc": svc.astype(np.int8), "ep": ep.astype(np.int8), "host": host.astype(np.int8),
            "status": status.astype(np.int16), "lat_t": lat_t, "cpu_t": cpu_t, "mem": mem_i,
            "dirt": cat.astype(np.int8), "cut": rng.integers(150, 950, n).astype(np.int16),
            "file": file_.astype(np.int8), "dup": np.zeros(n, np.int8),
            "rid": np.arange(n, dtype=np.int64),
        }
        dsrc = np.nonzero((cat == R_NONE) & (rng.random(n) < dirt.requests_duplicate))[0]
        if len(dsrc):
            cp = _take(rec, dsrc)
            cp["dup"] = np.ones(len(dsrc), np.int8)
            rec = _concat([rec, cp])
        rec = _take(rec, np.lexsort((rec["dup"], rec["rid"], rec["ts"], rec["file"])))
        folder = self.root / "requests" / day_iso
        folder.mkdir(parents=True, exist_ok=True)
        bounds = np.searchsorted(rec["file"], np.arange(len(REQ_FILES) + 1))
        pending: list[tuple[Path, str, str, int, Future]] = []
        for part, fm, style, _ in REQ_FILES:
            lo, hi = int(bounds[part]), int(bounds[part + 1])
            if hi <= lo:
                continue
            path = folder / f"requests-{day_iso}-part-{part:02d}.{fm}"
            df = pd.DataFrame({c: v[lo:hi] for c, v in rec.items() if c not in ("file", "dup")})
            mode = "csv" if fm == "csv" else ("lines_gz" if fm.endswith(".gz") else "lines")
            query = self.req_sql[style]["csv" if fm == "csv" else "ndjson"]
            pending.append((path, fm, style, hi - lo, self.copy_to(df, query, path, mode)))
            del df
        for path, fm, style, rows, fut in pending:
            entry = self.file_entry("requests", d, path, "csv" if fm == "csv" else "ndjson",
                                    "gzip" if fm.endswith(".gz") else None, rows, fut=fut)
            entry["timestamp_format"] = {"iso": "iso8601", "ms": "epoch_ms", "s": "epoch_s"}[style]
            out["files"].append(entry["path"])
            out["rows"] += rows
        first = rec["dup"] == 0
        valid = first & (rec["dirt"] == R_NONE)
        by_service = {SERVICES[i]: int((valid & (rec["svc"] == i)).sum()) for i in range(len(SERVICES))}
        return {
            **out,
            "valid": int(valid.sum()),
            "errors_5xx": int((valid & (rec["status"] >= 500)).sum()),
            "by_service": by_service,
            "dirt": {
                **{name: int((first & (rec["dirt"] == code)).sum()) for code, name in REQ_DIRT_NAMES.items()},
                "duplicates": int((~first).sum()),
            },
        }

    # ---- experiment truth ----------------------------------------------------------------------
    def experiment_truth(self) -> dict[str, Any]:
        spec = self.spec
        ex = [np.concatenate(x) for x in zip(*self.exposures)] if self.exposures else [np.zeros(0, np.int64)] * 3
        od = [np.concatenate(x) for x in zip(*self.orders)] if self.orders else [np.zeros(0, np.int64)] * 3
        key, var, t = ex
        out: dict[str, Any] = {
            **asdict(spec),
            "variants": list(spec.variants),
            "weights": list(spec.weights),
            "exposures": {v: int((var == i).sum()) for i, v in enumerate(spec.variants)},
        }
        if len(key) == 0:
            out.update(exposed_users={v: 0 for v in spec.variants}, converted_users={v: 0 for v in spec.variants},
                       converted_without_effect={v: 0 for v in spec.variants},
                       crossover_users=0, srm_dropped_sessions=self.srm_dropped_sessions)
            return out
        e = pd.DataFrame({"key": key, "var": var, "t": t})
        g = e.groupby("key").agg(first_t=("t", "min"), nvar=("var", "nunique"))
        assigned = self.pool["var"][g.index.to_numpy() // 2]
        o = pd.DataFrame({"key": od[0], "t": od[1], "caused": od[2]})
        o = o.merge(g[["first_t"]], left_on="key", right_index=True)
        after = o["t"] > o["first_t"]
        conv_keys = np.unique(o.loc[after, "key"].to_numpy())
        converted = np.isin(g.index.to_numpy(), conv_keys)
        # the counterfactual: without the orders that exist only because of the true effect
        untreated = np.isin(g.index.to_numpy(), np.unique(o.loc[after & (o["caused"] == 0), "key"].to_numpy()))
        out.update(
            exposed_users={v: int((assigned == i).sum()) for i, v in enumerate(spec.variants)},
            converted_users={v: int(((assigned == i) & converted).sum()) for i, v in enumerate(spec.variants)},
            converted_without_effect={v: int(((assigned == i) & untreated).sum()) for i, v in enumerate(spec.variants)},
            crossover_users=int((g["nvar"].to_numpy() > 1).sum()),
            srm_dropped_sessions=self.srm_dropped_sessions,
        )
        return out

    # ---- driver ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        rd_rng = self.rng(7)
        if self.dirt.redelivered_file > 0 and self.days > 1:
            self.redelivery_day = {d for d in range(self.days - 1) if rd_rng.random() < self.dirt.redelivered_file}
            if not self.redelivery_day:
                self.redelivery_day = {int(rd_rng.integers(0, self.days - 1))}
        try:
            for d in range(self.days):
                self.simulate_events(d)
                ev = self.events_day(d)
                if d - 1 in self.redelivery_day:
                    self.redeliver(d - 1, ev)
                self.per_day[self.day(d).isoformat()] = {"events": ev, "requests": self.requests_day(d)}
                if self.progress is not None:
                    self.progress(self.day(d), self.per_day[self.day(d).isoformat()])
        finally:
            self.con.close()
            self.executor.shutdown(wait=True)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        def add(acc: dict[str, Any], x: dict[str, Any]) -> None:
            for k, v in x.items():
                if isinstance(v, bool) or k in ("files", "redelivered_files"):
                    continue
                if isinstance(v, (int, float)):
                    acc[k] = round(acc.get(k, 0) + v, 2) if isinstance(v, float) else acc.get(k, 0) + v
                elif isinstance(v, dict):
                    add(acc.setdefault(k, {}), v)

        totals: dict[str, Any] = {"events": {}, "requests": {}}
        for day in self.per_day.values():
            for src in ("events", "requests"):
                add(totals[src], day[src])
        totals["events"].pop("users", None)  # not additive over days
        return {
            "landing_root": str(self.root),
            "seed": self.seed,
            "start_date": self.start.isoformat(),
            "days": self.days,
            "events_per_day": self.E,
            "requests_per_day": self.R,
            "dirt": asdict(self.dirt),
            "formats": asdict(self.fmt),
            "experiment": self.experiment_truth(),
            "files": self.files,
            "per_day": self.per_day,
            "totals": totals,
        }


def generate(
    landing_root: str | Path,
    start_date: date,
    days: int,
    events_per_day: int,
    seed: int = 7,
    dirt: Dirt | None = None,
    requests_per_day: int | None = None,
    experiment: ExperimentSpec | None = None,
    formats: Formats | None = None,
    progress: Callable[[date, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Write ``days`` arrival days of events and request logs under ``landing_root``.

    ``progress(day, per_day[day])`` is called once each arrival day is written (the CLI prints a line).

    ``events_per_day`` is the weekday volume (weekends are 30% lower): the events that *happen*
    that day. They arrive that day, or later (late sessions, sessions running past midnight), plus
    re-delivered copies. Same arguments -> byte-identical files. Files with the same names are
    overwritten; nothing else in ``landing_root`` is touched. Files appear atomically (written
    under a hidden ``.<name>.tmp`` name, then renamed), so a sensor never sees half a file.

    Returns the truth to reconcile against::

        {
          "landing_root", "seed", "start_date", "days", "events_per_day", "requests_per_day",
          "dirt": {...}, "formats": {...},            # the configuration used (asdict)
          "experiment": {experiment_id, variants, weights, true_effect, srm, crossover,
                         "exposures": {variant: n events}, "exposed_users": {variant: n},
                         "converted_users": {variant: n ordered after first exposure},
                         "converted_without_effect": {variant: n that would have ordered without
                                                      the true effect (same draws)},
                         "crossover_users": n, "srm_dropped_sessions": n},
          "files": [{"source", "day", "path" (relative, posix), "format" (ndjson|csv|parquet|json),
                     "compression" (gzip|None), "rows", "bytes", "sha256",
                     "redelivery_of" (original path|None), ["timestamp_format" for requests]}],
          "per_day": {"YYYY-MM-DD": {
              "events": {"files", "rows" (lines/rows in the folder, excl. re-delivered files),
                         "first_deliveries", "valid", "invalid", "duplicates",
                         "late" (first deliveries whose receivedAt-(sentAt-timestamp) is before the
                                 folder day; includes events sent a second before midnight),
                         "anonymous_only", "users", "by_type", "by_event", "orders", "revenue",
                         "dirt": {duplicates_same_day, duplicates_from_previous_day, late_injected,
                                  clock_skew, malformed, missing_message_id, missing_user,
                                  missing_timestamp, wrong_type_timestamp, wrong_type_properties,
                                  wrong_type_revenue, unknown_type, padded_enum,
                                  pii_email_in_properties, pii_ip_in_properties},
                         "redelivered_files": [{"path", "original", "rows", "sha256"}],
                         "redelivered_rows"},
              "requests": {"files", "rows", "valid", "errors_5xx", "by_service",
                           "dirt": {malformed, missing_service, latency_non_numeric,
                                    latency_negative, duplicates}}}},
          "totals": {"events": {...summed over days}, "requests": {...}},
        }

    Identities per day: ``rows == valid + invalid + duplicates``; ``invalid`` is the sum of the
    record-breaking kinds (malformed .. unknown_type); dirt kinds count first deliveries only
    (a duplicate is a copy of a valid record). valid/orders/revenue/by_* count valid first
    deliveries (padded enums and PII are valid: they are fixable).
    """
    if days < 0 or events_per_day < 0:
        raise ValueError("days and events_per_day must be >= 0")
    if isinstance(start_date, datetime):
        start_date = start_date.date()
    root = Path(landing_root)
    root.mkdir(parents=True, exist_ok=True)
    gen = _Generator(
        root=root,
        start=start_date,
        days=int(days),
        events_per_day=int(events_per_day),
        seed=int(seed),
        dirt=dirt if dirt is not None else Dirt(),
        requests_per_day=int(requests_per_day if requests_per_day is not None else events_per_day // 2),
        spec=experiment or ExperimentSpec(),
        formats=formats or Formats(),
    )
    gen.progress = progress
    return gen.run()
