"""What every step does after writing: metadata, pipeline-health KPIs, checks and alerts, in one place."""

import time
from datetime import date

import dagster as dg

from de_assets import checks
from de_assets.lib import health
from de_assets.lib.tables import Table
from de_assets.metadata import table_metadata
from de_assets.resources import Alerting, Warehouse


def partition_label(start: date, end: date) -> str:
    return str(start) if start == end else f"{start}..{end}"


def finish(
    context: dg.AssetExecutionContext,
    con,
    alerting: Alerting,
    asset_key: dg.AssetKey,
    table: Table,
    start: date,
    end: date,
    started: float,
    rows_in: int | None = None,
    counts: dict[date, health.DayCounts] | None = None,
    extra_results: tuple[dg.AssetCheckResult, ...] = (),
    publish_to: Warehouse | None = None,
) -> tuple[dict, list[dg.AssetCheckResult]]:
    """Metadata for the materialization, the check results, a `partition_kpis` row per day, an
    alert for every failed blocking check, and (with `publish_to`) the range published to the lake
    for readers when no blocking check failed."""
    metadata = table_metadata(con, table, start, end, started, rows_in=rows_in)
    seconds = time.perf_counter() - started
    metadata.update(health.record_kpis(
        con, asset_key.to_user_string(), context.run.run_id, table, start, end, seconds, counts
    ))
    results = checks.check_results(con, asset_key, table, start, end) + list(extra_results)
    failed = checks.failure_alerts(results, partition_label(start, end), context.run.run_id)
    alerting.send(con, failed, log=context.log)
    if publish_to is not None and not failed:
        snapshot = publish_to.publish(con, table, start, end)
        if snapshot is not None:
            metadata["lake_snapshot_id"] = str(snapshot)
    return metadata, results
