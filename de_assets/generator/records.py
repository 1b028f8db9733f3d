"""Records are dicts of equally long numpy columns; these helpers slice and join them, and hash
integers into identifiers."""

from __future__ import annotations

import numpy as np

Records = dict[str, np.ndarray]


def concat(parts: list[Records]) -> Records:
    """Row-wise concatenation of the non-empty parts ({} when all are empty)."""
    parts = [p for p in parts if p and len(next(iter(p.values()))) > 0]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def take(records: Records, idx: np.ndarray) -> Records:
    return {k: v[idx] for k, v in records.items()}


def nrows(records: Records) -> int:
    return len(next(iter(records.values()))) if records else 0


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection on uint64 (so distinct inputs give distinct outputs)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash64(x: np.ndarray, salt: int) -> np.ndarray:
    """Salted 64-bit hash of each integer, as int64 (distinct inputs -> distinct outputs)."""
    with np.errstate(over="ignore"):
        return mix64(x.astype(np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF)).view(np.int64)
