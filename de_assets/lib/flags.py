"""The pipeline's feature flags, one typed model: their names, types, defaults and allowed values.

The flags change how the pipeline stores and computes, never what it serves (R7; the configuration
experiment, `pipeline_health/config_experiments`, checks that). Everything that names or parses a
flag reads it here: the experiment's arms (`lib/config_experiment.py`, the asset and the CLI's
`--a/--b name=value`) and the allowed values of each flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from de_assets.lib.clean import DEDUPE_STRATEGIES
from de_assets.lib.served import LAKE_CODECS


@dataclass(frozen=True)
class FeatureFlags:
    lake_compression: str = "zstd"  # Parquet codec of the lake's data files: lib/served.py
    dedupe_strategy: str = "window"  # how later deliveries are found: lib/clean.py

    def __post_init__(self) -> None:
        if self.lake_compression not in LAKE_CODECS:
            raise ValueError(f"lake_compression must be one of {LAKE_CODECS}, got {self.lake_compression!r}")
        if self.dedupe_strategy not in DEDUPE_STRATEGIES:
            raise ValueError(f"dedupe_strategy must be one of {DEDUPE_STRATEGIES}, got {self.dedupe_strategy!r}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


FLAG_NAMES = tuple(f.name for f in fields(FeatureFlags))
_TYPES = {f.name: f.type for f in fields(FeatureFlags)}


def parse_flags(values: Mapping[str, object]) -> dict[str, object]:
    """Only the flags given, typed (text such as "0.5" becomes a float) and validated; an unknown
    name or a bad value is a ValueError naming the flag."""
    unknown = set(values) - set(FLAG_NAMES)
    if unknown:
        raise ValueError(f"unknown feature flag(s) {sorted(unknown)}; known: {FLAG_NAMES}")
    typed: dict[str, object] = {}
    for name, value in values.items():
        if _TYPES[name] == "float":
            try:
                typed[name] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"feature flag {name} must be a number, got {value!r}") from None
        else:
            typed[name] = str(value)
    FeatureFlags(**typed)  # validates the values
    return typed


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """`name=value` words (the CLI's --a/--b) as a dict; names are checked, values kept as text."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"flag {pair!r}: expected name=value, e.g. lake_compression=snappy")
        out[name] = value
    parse_flags(out)
    return out
