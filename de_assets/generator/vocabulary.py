"""The fixed vocabularies of the synthetic data: event kinds, dirt codes, pages, user agents,
names, the product catalog and the request-log services. All strings are JSON- and SQL-safe
(no quotes, no backslashes). Nothing here depends on the seed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# event kinds (the simulation's numeric code of an event) and their Segment type / event name

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
