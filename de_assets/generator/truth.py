"""The ground truth the generator returns: per arrival day what the files hold (valid, invalid,
duplicates, late, dirt by kind, orders, revenue), the A/B test's real outcome, and totals."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from de_assets.generator.config import ExperimentSpec, corrected_time_ms
from de_assets.generator.population import UserPool
from de_assets.generator.records import Records, nrows
from de_assets.generator.vocabulary import (
    D_MALFORMED,
    D_NO_TS,
    D_NONE,
    D_TS_NUM,
    DIRT_NAMES,
    K_EXP,
    K_ORDER,
    KIND_EVENT,
    KIND_TYPE,
)


class ExperimentTruth:
    """Collects the valid exposures and orders of every day; ``result()`` is what really happened:
    exposed and converted users per assigned variant, and the counterfactual without the effect.
    A user is keyed ``uidx * 2 + has_uid`` (the anonymous and the identified side are two keys)."""

    def __init__(self, spec: ExperimentSpec, pool: UserPool) -> None:
        self.spec, self.pool = spec, pool
        self.exposures: list[tuple[np.ndarray, ...]] = []  # (user key, variant, time)
        self.orders: list[tuple[np.ndarray, ...]] = []  # (user key, time, caused by the effect)

    def add(self, rec: Records, valid: np.ndarray) -> None:
        kind = rec["kind"]
        user_key = rec["uidx"] * 2 + rec["has_uid"]
        exposed = valid & (kind == K_EXP)
        ordered = valid & (kind == K_ORDER)
        self.exposures.append((user_key[exposed], rec["var"][exposed], rec["T"][exposed]))
        self.orders.append((user_key[ordered], rec["T"][ordered], rec["caused"][ordered]))

    def result(self, srm_dropped_sessions: int) -> dict[str, Any]:
        spec = self.spec
        key, var, t = _columns(self.exposures)
        order_key, order_t, order_caused = _columns(self.orders)
        out: dict[str, Any] = {
            **asdict(spec),
            "variants": list(spec.variants),
            "weights": list(spec.weights),
            "exposures": {v: int((var == i).sum()) for i, v in enumerate(spec.variants)},
        }
        if len(key) == 0:
            zero = {v: 0 for v in spec.variants}
            out.update(exposed_users=zero, converted_users=dict(zero), converted_without_effect=dict(zero),
                       crossover_users=0, srm_dropped_sessions=srm_dropped_sessions)
            return out
        per_user = pd.DataFrame({"key": key, "var": var, "t": t}).groupby("key").agg(
            first_t=("t", "min"), nvar=("var", "nunique"))
        users = per_user.index.to_numpy()
        assigned = self.pool["var"][users // 2]
        o = pd.DataFrame({"key": order_key, "t": order_t, "caused": order_caused})
        o = o.merge(per_user[["first_t"]], left_on="key", right_index=True)
        after = o["t"] > o["first_t"]
        converted = np.isin(users, np.unique(o.loc[after, "key"].to_numpy()))
        # the counterfactual: without the orders that exist only because of the true effect
        untreated = np.isin(users, np.unique(o.loc[after & (o["caused"] == 0), "key"].to_numpy()))

        def per_variant(mask: np.ndarray) -> dict[str, int]:
            return {v: int(((assigned == i) & mask).sum()) for i, v in enumerate(spec.variants)}

        out.update(
            exposed_users=per_variant(np.ones(len(users), bool)),
            converted_users=per_variant(converted),
            converted_without_effect=per_variant(untreated),
            crossover_users=int((per_user["nvar"].to_numpy() > 1).sum()),
            srm_dropped_sessions=srm_dropped_sessions,
        )
        return out


def _columns(parts: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    if not parts:
        return [np.zeros(0, np.int64)] * 3
    return [np.concatenate(x) for x in zip(*parts)]


def events_day_summary(day_start_ms: int, rec: Records, files: list[str], rows: int,
                       experiment: ExperimentTruth) -> dict[str, Any]:
    """The truth of one arrival day of events (see ``generate``); feeds ``experiment``."""
    n = nrows(rec)
    empty = np.zeros(0, np.int8)
    dup = rec.get("dup", empty)
    dirt = rec.get("dirt", empty)
    kind = rec.get("kind", empty)
    pad, pii = rec.get("pad", empty), rec.get("pii", empty)
    late_injected, skew = rec.get("late", empty.astype(bool)), rec.get("skew", empty.astype(bool))
    first = dup == 0
    valid = first & (dirt == D_NONE)

    has_ts = ~np.isin(dirt, [D_MALFORMED, D_NO_TS, D_TS_NUM])
    if n:
        corrected = corrected_time_ms(rec["ts"], rec["sent"], rec["recv"])
        late = first & has_ts & (corrected < day_start_ms)
    else:
        late = np.zeros(0, bool)
    by_type: dict[str, int] = {}
    by_event: dict[str, int] = {}
    orders = revenue_c = 0
    if n:
        valid_kinds = kind[valid]
        for k in range(len(KIND_TYPE)):
            c = int((valid_kinds == k).sum())
            if c:
                by_type[KIND_TYPE[k]] = by_type.get(KIND_TYPE[k], 0) + c
                if KIND_EVENT[k]:
                    by_event[KIND_EVENT[k]] = c
        ordered = valid & (kind == K_ORDER)
        orders = int(ordered.sum())
        revenue_c = int(np.where(rec["has_rev"][ordered] == 1, rec["rev_c"][ordered], rec["tot_c"][ordered]).sum())
        experiment.add(rec, valid)
    dirt_out = {
        "duplicates_same_day": int((dup == 1).sum()),
        "duplicates_from_previous_day": int((dup == 2).sum()),
        "late_injected": int((first & late_injected).sum()),
        "clock_skew": int((first & skew).sum()),
        **{name: int((first & (dirt == code)).sum()) for code, name in DIRT_NAMES.items()},
        "padded_enum": int((first & (pad >= 0)).sum()),
        "pii_email_in_properties": int((first & (pii == 1)).sum()),
        "pii_ip_in_properties": int((first & (pii == 2)).sum()),
    }
    return {
        "files": files,
        "rows": int(rows),
        "first_deliveries": int(first.sum()),
        "valid": int(valid.sum()),
        "invalid": int((first & (dirt != D_NONE)).sum()),
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


def totals(per_day: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every count of ``per_day`` summed over the days (files lists and per-day users left out)."""

    def add(acc: dict[str, Any], x: dict[str, Any]) -> None:
        for k, v in x.items():
            if isinstance(v, bool) or k in ("files", "redelivered_files"):
                continue
            if isinstance(v, (int, float)):
                acc[k] = round(acc.get(k, 0) + v, 2) if isinstance(v, float) else acc.get(k, 0) + v
            elif isinstance(v, dict):
                add(acc.setdefault(k, {}), v)

    out: dict[str, Any] = {"events": {}, "requests": {}}
    for day in per_day.values():
        for source in ("events", "requests"):
            add(out[source], day[source])
    out["events"].pop("users", None)  # not additive over days
    return out
