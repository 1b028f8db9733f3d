"""The wait between attempts of an HTTP call (the alert webhook, the events API)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, backoff: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds before the next attempt: the server's Retry-After when given in seconds, else
    exponential backoff (``backoff * 2**attempt``) with up to 10 % jitter; never more than ``cap``."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            pass  # an HTTP date: fall back to the backoff
    return min(backoff * 2**attempt * (1 + random.uniform(0, 0.1)), cap)
