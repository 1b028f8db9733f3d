"""Schedules: the daily run of yesterday's partition, shortly after midnight UTC."""

import os

import dagster as dg

from de_assets.jobs import daily_pipeline, pull_events_api

# `DE_ASSETS_SCHEDULE_TIME` (HH:MM, UTC, default 00:30): when yesterday's partition is run.
HOUR, MINUTE = (int(part) for part in os.getenv("DE_ASSETS_SCHEDULE_TIME", "00:30").split(":"))

daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline,
    name="daily_pipeline_schedule",
    hour_of_day=HOUR,
    minute_of_hour=MINUTE,
    description=f"Every day at {HOUR:02d}:{MINUTE:02d} UTC: ingest, clean and serve yesterday's partition "
    "(the newest complete day). Late files of earlier days are picked up by the landing sensor.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

pull_events_api_schedule = dg.ScheduleDefinition(
    name="pull_events_api_schedule",
    job=pull_events_api,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    description="Every 15 minutes: pull new events from the HTTP API (turn on once DE_ASSETS_EVENTS_API_URL is set).",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
