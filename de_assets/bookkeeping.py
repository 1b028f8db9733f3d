"""What every step does after writing: metadata, pipeline-health KPIs, checks and alerts, in one place.

Truth per partition. A range run (single-run backfill) materializes every day of its range in one
step, and Dagster records one materialization per day with the metadata the step returns. So what
the step returns (`MaterializeResult.metadata`) holds only what describes the run (table, schema,
the run's range); each day's own figures (rows, preview, seconds, freshness, `no_data`, and the
asset's per-day counts) are attached to that day's materialization with
`context.add_asset_metadata(..., partition_key=day)`, which Dagster merges into the event of that
partition only: one event per partition, no duplicates, no range totals on a single day.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from de_assets import checks
from de_assets.lib import health
from de_assets.lib.days import days_between
from de_assets.lib.served import Written
from de_assets.lib.tables import Table
from de_assets.metadata import LAKE_SNAPSHOT_ID, days_metadata, run_metadata
from de_assets.resources import Alerting, Warehouse


def add_day_metadata(context: dg.AssetExecutionContext, asset_key: dg.AssetKey, per_day: dict[date, dict]) -> None:
    """Attach each day's figures to the materialization of that day's partition only."""
    for day, metadata in per_day.items():
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=str(day))


@dataclass
class Evaluated:
    """What `finish` reads of the step's connection (`evaluate`)."""

    rows: dict[date, dict]  # each day's rows, preview, ... (`days_metadata`)
    landed: dict[date, int]  # each day's landed source rows
    results: list[dg.AssetCheckEvaluation]  # the table's checks, per day
    metadata: dict  # the run-level metadata (`run_metadata`)
    written: Written | None = None  # the range's data files, written ahead of the commit


def evaluate(con, warehouse: Warehouse, asset_key: dg.AssetKey, table: Table, start: date, end: date,
             write: bool = False) -> Evaluated:
    """Everything `finish` reads of ``con`` (metadata, the checks per day) and, with ``write``, the
    data files of the range's partitions (`Warehouse.write_ahead`). A step whose rows are staged in
    a private connection evaluates them before its turn on the warehouse, so the turn holds only the
    bookkeeping and the commits; `finish` then publishes the files of the partitions that passed."""
    return Evaluated(
        rows=days_metadata(con, table, start, end),
        landed=health.source_rows_per_day(con, table, start, end),
        results=checks.check_results(con, asset_key, table, start, end),
        metadata=run_metadata(con, table, start, end),
        written=warehouse.write_ahead(con, table, table.partition_values(start, end)) if write else None,
    )


def finish(
    context: dg.AssetExecutionContext,
    con,
    alerting: Alerting,
    warehouse: Warehouse,
    asset_key: dg.AssetKey,
    table: Table,
    start: date,
    end: date,
    started: float,
    counts: dict[date, health.DayCounts] | None = None,
    extra_results: tuple[dg.AssetCheckEvaluation, ...] = (),
    per_day: dict[date, dict] | None = None,
    publish: bool = False,
    evaluated: Evaluated | None = None,
) -> tuple[dict, list[dg.AssetCheckEvaluation]]:
    """Record a `partition_kpis` row per day (measured on ``con``, held in the catalog database:
    `Warehouse.record_kpis`), attach each day's metadata to its partition (rows, preview, seconds,
    rows/s, freshness, `no_data`, plus `per_day`), evaluate the checks per day and alert on failed
    blocking ones; with `publish`, publish to the lake for readers the partitions of the range on
    which no blocking check failed. ``evaluated``: what `evaluate` read of ``con`` before (the
    metadata, the checks and the data files written ahead), else it is read now. Returns the
    run-level metadata and the evaluations."""
    seconds = time.perf_counter() - started
    kpis = warehouse.record_kpis(con, asset_key.to_user_string(), context.run.run_id, table, start, end, seconds,
                                 counts)
    read = evaluated or evaluate(con, warehouse, asset_key, table, start, end)
    add_day_metadata(context, asset_key, {
        day: {**read.rows[day], **kpis.get(day, {}), "no_data": read.landed[day] == 0,
              **(per_day or {}).get(day, {})}
        for day in days_between(start, end)
    })
    results = read.results + list(extra_results)
    failed = checks.failure_alerts(results, context.run.run_id)
    alerting.send(failed, log=context.log)
    metadata = dict(read.metadata)
    if publish:
        # per partition: one holding a day that failed a blocking check keeps what was served before
        # (its staged rows are dropped with the overlay, lib/staged.py), the others are served; a day
        # the cleaning's quarantine-rate gate held back is served too (its clean rows are the ones
        # served before, its evidence in quarantine is new)
        blocked = {table.partition_value(d) for d in checks.blocked_days(results)}
        values = [p for p in table.partition_values(start, end) if p not in blocked]
        snapshot = warehouse.publish(con, table, days=values, written=read.written) if values else None
        if snapshot is not None:
            metadata[LAKE_SNAPSHOT_ID] = str(snapshot)
    return metadata, results


def check_events(context: dg.AssetExecutionContext, evaluations: list[dg.AssetCheckEvaluation]) -> Iterator:
    """The events that record per-partition check evaluations: the check's output once (what an
    `AssetCheckResult` yields, so blocking checks gate downstream steps) and one evaluation per
    partition, pointing at this run's materialization of that partition. Yield them after the
    asset's `MaterializeResult`. Checks not selected in this run are left out."""
    selected = context.selected_asset_check_keys
    keep = [e for e in evaluations if e.asset_check_key in selected]
    for key in dict.fromkeys(e.asset_check_key for e in keep):
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    targets: dict[tuple[dg.AssetKey, str], AssetCheckEvaluationTargetMaterializationData] = {}
    for asset_key in dict.fromkeys(e.asset_key for e in keep):
        days = sorted({str(e.partition) for e in keep if e.asset_key == asset_key})
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=days), limit=len(days)
        ).records
        for record in records:  # newest first: this run's materialization of each day
            if record.run_id == context.run.run_id and (asset_key, record.partition_key) not in targets:
                targets[(asset_key, record.partition_key)] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                )
    for e in keep:
        target = targets.get((e.asset_key, e.partition))
        yield e if target is None else dg.AssetCheckEvaluation(
            asset_key=e.asset_key, check_name=e.check_name, passed=e.passed, metadata=e.metadata,
            target_materialization_data=target, severity=e.severity, description=e.description,
            blocking=e.blocking, partition=e.partition,
        )
