"""The code location: assembles assets, checks, jobs and resources. Nothing else lives here."""

from __future__ import annotations

import dagster as dg

from de_assets.assets import analytics, cleaning, ingestion
from de_assets.jobs import daily_pipeline
from de_assets.resources import build_resources

defs = dg.Definitions(
    assets=[
        ingestion.landing_events,
        ingestion.landing_requests,
        ingestion.raw_events,
        ingestion.raw_requests,
        cleaning.clean_events,
        cleaning.clean_requests,
        *analytics.ALL,
    ],
    jobs=[daily_pipeline],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
