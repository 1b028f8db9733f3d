"""Jobs. `daily_pipeline` materializes ingestion -> cleaning -> analytics -> pipeline_health for a day or a range."""

from __future__ import annotations

import dagster as dg

from de_assets import freshness

CONFIG_EXPERIMENTS = ["pipeline_health", "config_experiments"]
EVENTS_API = ["landing", "events_api"]
PIPELINE_GROUPS = ("ingestion", "cleaning", "analytics", "pipeline_health")

daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups(*PIPELINE_GROUPS)
    - dg.AssetSelection.assets(["landing", "landing_events"], ["landing", "landing_requests"], EVENTS_API, CONFIG_EXPERIMENTS)
    - dg.AssetSelection.checks(*freshness.CHECKS),  # evaluated by their sensor, not by the pipeline
    description="Ingest, clean and serve one UTC day (or a range, in one run: every asset has a "
    "single-run backfill policy). Steps run in process: DuckDB has one writer at a time.",
)

pipeline_config_experiment = dg.define_asset_job(
    "pipeline_config_experiment",
    selection=dg.AssetSelection.assets(CONFIG_EXPERIMENTS),
    description="A/B test of two pipeline configurations over the same landed days (R7). Launch with "
    "run config `ops.pipeline_health__config_experiments.config: {start, end, a, b, repetitions}` "
    "or `de-assets experiment`.",
)

refresh_marts = dg.define_asset_job(
    "refresh_marts",
    selection=dg.AssetSelection.groups("analytics"),
    description="Re-serve the marts of earlier event days (launched by the `late_data_refresh` sensor "
    "when late events arrive, as one run over the range from the earliest late day to the day before "
    "the arrival day, so trailing windows (WAU/MAU, day-over-day changes) follow; or, with an asset "
    "selection, a KPI comparison built before the marts of a day it compares with changed).",
)

pull_events_api = dg.define_asset_job(
    "pull_events_api",
    selection=dg.AssetSelection.assets(EVENTS_API),
    description="Pull new pages from the events HTTP API into the landing area; the landing sensor then "
    "starts the daily pipeline for them.",
)
