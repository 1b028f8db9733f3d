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

Modules: ``config`` (what to generate: Dirt, ExperimentSpec, Formats), ``vocabulary`` (fixed word
lists and the product catalog), ``window`` (days, epoch ms, random streams), ``population`` (the
users), ``simulate`` (sessions and their events), ``arrival`` (dirt, file split, duplicates of an
arrival day), ``render`` (the SQL that turns numbers into text), ``files`` (writing, gzip,
re-delivery), ``requests`` (request logs), ``truth`` (the returned summary), ``run`` (the driver).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from de_assets.generator.config import (
    EVENT_TYPES,
    Dirt,
    ExperimentSpec,
    Formats,
    assign_variant,
    corrected_time_ms,
    variant_bucket,
)
from de_assets.generator.run import Generator
from de_assets.generator.window import Window

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
    generator = Generator(
        root=root,
        window=Window(start=start_date, days=int(days), seed=int(seed)),
        events_per_day=int(events_per_day),
        requests_per_day=int(requests_per_day if requests_per_day is not None else events_per_day // 2),
        dirt=dirt if dirt is not None else Dirt(),
        spec=experiment or ExperimentSpec(),
        formats=formats or Formats(),
    )
    generator.progress = progress
    return generator.run()
