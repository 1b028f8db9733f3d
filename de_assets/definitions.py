"""The code location: assembles assets, checks, jobs, sensors and resources. Nothing else lives here."""

import dagster as dg

from de_assets import freshness, maintenance, schedules, sensors
from de_assets.assets import layers, pipeline_health
from de_assets.config_experiment import PipelineRunner
from de_assets.jobs import daily_pipeline, pipeline_config_experiment, pull_events_api, refresh_marts
from de_assets.resources import build_resources

ASSETS = dg.map_asset_specs(
    freshness.with_policy,
    [*layers.DATA_ASSETS, *pipeline_health.ALL],
)


def build_defs(resources: dict | None = None) -> dg.Definitions:
    """The Definitions, with resources from the environment unless given (tests pass their own).
    The configuration experiment gets its runner here (`pipeline_runner`): its arms run this very
    code location, built again with their own warehouse and flags."""
    resources = resources if resources is not None else build_resources()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=freshness.CHECKS,
        jobs=[
            daily_pipeline,
            refresh_marts,
            pull_events_api,
            pipeline_config_experiment,
            maintenance.retention_job,
            maintenance.forget_user_job,
            maintenance.rollback_job,
        ],
        schedules=[schedules.daily_pipeline_schedule, schedules.pull_events_api_schedule,
                   maintenance.retention_schedule],
        sensors=[
            sensors.landing_files,
            sensors.late_data_refresh,
            freshness.CHECKS_SENSOR,
            sensors.run_failure_alerts,
            sensors.stale_partition_alerts,
            sensors.dead_run_sweeper,
        ],
        resources={**resources, "pipeline_runner": PipelineRunner(build_defs)},
        # DuckDB allows one writer per file: steps run one after another in the run's process.
        executor=dg.in_process_executor,
    )


defs = build_defs()
