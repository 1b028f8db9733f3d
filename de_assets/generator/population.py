"""The user population: one row per user (registered or anonymous), grown as new users arrive,
with the fixed traits every event of that user carries (platform, browser, IP, name, variant)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from de_assets.generator.config import ExperimentSpec, variant_index
from de_assets.generator.records import hash64
from de_assets.generator.render import ANON_SQL, USERID_SQL
from de_assets.generator.vocabulary import (
    EMAIL_DOMAINS,
    FIRST_NAMES,
    FIRST_OCTETS,
    LAST_NAMES,
    LOCALE_W,
    LOCALES,
    WEB_UA_W,
    WEB_UAS,
)
from de_assets.generator.window import DAY_MS

USER_COLUMNS = {
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


class UserPool:
    """Growable columns (``USER_COLUMNS``) of every user so far; ``pool["w"]`` is a view of the
    live rows, ``pool.columns[...]`` the backing arrays (writable)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: ExperimentSpec, start_ms: int,
                 anon_salts: tuple[int, int]) -> None:
        self.con, self.spec, self.start_ms, self.anon_salts = con, spec, start_ms, anon_salts
        self.n = 0
        self.columns = {k: np.empty(0, dt) for k, dt in USER_COLUMNS.items()}

    def __getitem__(self, k: str) -> np.ndarray:
        return self.columns[k][: self.n]

    def _append(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        m = len(cols["kind"])
        need = self.n + m
        cap = len(self.columns["kind"])
        if need > cap:
            new_cap = max(need, 2 * cap, 1024)
            for k, dt in USER_COLUMNS.items():
                arr = np.zeros(new_cap, dt)
                arr[: self.n] = self.columns[k][: self.n]
                self.columns[k] = arr
        for k in USER_COLUMNS:
            self.columns[k][self.n : need] = cols[k]
        idx = np.arange(self.n, need, dtype=np.int64)
        self.n = need
        return idx

    def add_users(self, rng: np.random.Generator, kind: np.ndarray, born: np.ndarray) -> np.ndarray:
        """Draw the traits of ``len(kind)`` new users (``kind`` 1 registered, 0 anonymous; ``born``
        their day index); returns their indexes in the pool."""
        n = len(kind)
        if n == 0:
            return np.empty(0, np.int64)
        uidx = np.arange(self.n, self.n + n, dtype=np.int64)
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
        created = self.start_ms + born.astype(np.int64) * DAY_MS + rng.integers(0, DAY_MS, n)
        a1 = hash64(uidx, self.anon_salts[0])
        a2 = hash64(uidx, self.anon_salts[1])
        var = self._variants(uidx, kind, a1, a2)
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
        return self._append(cols)

    def _variants(self, uidx: np.ndarray, kind: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
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
        return variant_index(buckets, self.spec).astype(np.int8)
