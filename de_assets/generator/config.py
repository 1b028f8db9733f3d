"""What to generate: dirt rates, the A/B test written into the events, the file formats; and the
public helpers that reproduce the generator's variant assignment and corrected event time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")


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


def variant_bucket(user_key: str, experiment_id: str) -> float:
    """Uniform [0, 1) bucket of a user in an experiment: first 32 bits of md5("exp:user")."""
    digest = hashlib.md5(f"{experiment_id}:{user_key}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def variant_index(buckets: np.ndarray, spec: ExperimentSpec) -> np.ndarray:
    """Index into ``spec.variants`` of each bucket in [0, 1), by the cumulative weights."""
    weights = np.asarray(spec.weights, dtype=np.float64)
    idx = np.searchsorted(np.cumsum(weights / weights.sum()), buckets, side="right")
    return np.minimum(idx, len(spec.variants) - 1)


def assign_variant(user_key: str, experiment: ExperimentSpec | None = None) -> str:
    """Deterministic variant of ``user_key`` (userId, else anonymousId) in ``experiment``."""
    spec = experiment or ExperimentSpec()
    bucket = variant_bucket(user_key, spec.experiment_id)
    return spec.variants[int(variant_index(np.array([bucket]), spec)[0])]


def corrected_time_ms(timestamp_ms: Any, sent_at_ms: Any, received_at_ms: Any) -> Any:
    """Clock-skew corrected event time: receivedAt - (sentAt - timestamp)."""
    return received_at_ms - (sent_at_ms - timestamp_ms)
