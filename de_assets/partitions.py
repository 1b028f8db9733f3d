"""The one partitioning scheme: UTC days, from a configurable start date.

`DE_ASSETS_START_DATE` (YYYY-MM-DD, default 2024-01-01) moves the first partition back so history
from any year can be loaded. The last partition is yesterday (a day is processed once it is over).
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import dagster as dg

START_DATE = os.getenv("DE_ASSETS_START_DATE", "2024-01-01")

daily = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")


def partition_dates(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """Inclusive first and last day of the partition or partition range being materialized."""
    window = context.partition_time_window
    return window.start.date(), (window.end - timedelta(days=1)).date()


def partition_range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make one run cover the partition range [start, end] (single-run backfill)."""
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
