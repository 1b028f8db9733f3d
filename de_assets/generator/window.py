"""The generated time window and its randomness: day index <-> date / epoch ms, and one
independent random stream per (purpose, day) so that every part of the data is reproducible on
its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np

from de_assets.generator.vocabulary import HOUR_P

DAY_MS = 86_400_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

# purposes of the random streams (the first key of ``Window.rng``); values fixed by the output
STREAM_SESSIONS = 1  # per day: the sessions that happen that day
STREAM_ARRIVAL = 2  # per day: dirt, file split and duplicates of an arrival day
STREAM_USERS = 3  # per (day + 1, kind): new users (day key 0: users older than the window)
STREAM_REQUESTS = 4  # per day: request logs
STREAM_REDELIVERY_PICK = 5  # per day: which file is re-delivered
STREAM_HOSTS = 6  # per-host baselines, stable across days
STREAM_REDELIVERY_DAYS = 7  # which days re-deliver a file
SALT_KEY = 999  # the hash salts of anonymousId / messageId


@dataclass
class Window:
    start: date
    days: int
    seed: int
    start_ms: int = field(init=False)

    def __post_init__(self) -> None:
        midnight = datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)
        self.start_ms = int(midnight.timestamp() * 1000)

    def rng(self, *keys: int) -> np.random.Generator:
        """The random stream of ``keys`` (e.g. ``STREAM_SESSIONS, day``) for this seed."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, *keys]))

    def salts(self) -> list[int]:
        drawn = self.rng(SALT_KEY).integers(0, 2**63 - 1, size=8)
        return [int(s) for s in drawn]

    def day(self, d: int) -> date:
        return self.start + timedelta(days=d)

    def day_ms(self, d: int) -> int:
        """Epoch ms of midnight UTC of day index ``d``."""
        return self.start_ms + d * DAY_MS

    def arrival_day(self, ms: np.ndarray) -> np.ndarray:
        """Day index of each epoch-ms time."""
        return (ms - self.start_ms) // DAY_MS


def time_of_day_ms(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` times of day (ms after midnight) following the hourly traffic curve."""
    hour = rng.choice(24, size=n, p=HOUR_P)
    return hour.astype(np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, size=n)


def weekday_factor(d: date) -> float:
    return 0.7 if d.weekday() >= 5 else 1.0
