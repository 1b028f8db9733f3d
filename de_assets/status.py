"""`de-assets status`: one screen on the state of the platform, read-only.

From the Dagster instance: the newest materialized partition of every asset group (and the assets
lagging behind it), the latest runs and the asset checks that failed in them. From the catalog database
(`de_assets/lib/status.py`; never locked by a run): the SLOs of the newest evaluated partition and the
open alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from de_assets import lake
from de_assets.lib import status as health_status
from de_assets.lib.days import short_label, utc_now

LATEST_RUNS = 5
MESSAGE_WIDTH = 140  # alert messages name asset, partition and figures; the rest is in pipeline_health.alerts
GROUP_ORDER = ("ingestion", "cleaning", "analytics", "pipeline_health")  # upstream first; others after


@dataclass
class GroupStatus:
    group: str
    latest: str | None  # newest partition any asset of the group has
    behind: list[tuple[str, str | None]]  # (asset, its newest partition) for assets not at `latest`


def groups(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[GroupStatus]:
    """Per asset group (in definition order): the newest materialized partition, and which
    partitioned, materializable assets do not have it. External assets (landing files) are skipped."""
    graph = defs.resolve_asset_graph()
    by_group: dict[str, list[dg.AssetKey]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable and node.partitions_def is not None:
            by_group.setdefault(node.group_name, []).append(key)
    out = []
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    for group, keys in sorted(by_group.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])):
        newest = {key: max(instance.get_materialized_partitions(key), default=None) for key in keys}
        latest = max((p for p in newest.values() if p is not None), default=None)
        behind = sorted((k.to_user_string(), p) for k, p in newest.items() if p != latest)
        out.append(GroupStatus(group, latest, behind))
    return out


def _partition_label(run: dg.DagsterRun) -> str:
    tags = run.tags
    if "dagster/asset_partition_range_start" in tags:
        start, end = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
        return short_label(start, end)
    return tags.get("dagster/partition", "")


def latest_runs(instance: dg.DagsterInstance, limit: int = LATEST_RUNS) -> list[tuple[dg.RunRecord, list[str]]]:
    """The newest runs, each with its failed asset checks as 'asset:check (severity[, partition])'."""
    out = []
    for record_of_run in instance.get_run_records(limit=limit):
        run = record_of_run.dagster_run
        failed = {}
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = record.dagster_event.event_specific_data
            if evaluation.passed:
                continue
            where = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            partition = getattr(evaluation, "partition", None)
            failed[(where, partition)] = (f"{where} ({evaluation.severity.value.lower()}"
                                          f"{', ' + partition if partition else ''})")
        out.append((record_of_run, sorted(failed.values())))
    return out


def render(instance: dg.DagsterInstance, defs: dg.Definitions, database: str, home: str,
           now: datetime | None = None) -> str:
    now = now or utc_now()
    lines = [f"de_assets status  (Dagster instance {home}, warehouse {database})", "",
             "Newest materialized partition per asset group:"]
    for g in groups(instance, defs):
        lines.append(f"  {g.group:<16} {g.latest or 'never materialized'}")
        for asset, partition in g.behind:
            lines.append(f"  {'':<16}   behind: {asset} ({partition or 'never'})")
    runs = latest_runs(instance)
    lines += ["", f"Latest runs (newest first, {len(runs)} shown):"]
    if not runs:
        lines.append("  none yet: `de-assets demo` runs the pipeline on sample data")
    failed_checks = []
    for record, failed in runs:
        run = record.dagster_run
        started = (datetime.fromtimestamp(record.start_time, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                   if record.start_time else "not started")
        lines.append(f"  {run.run_id[:8]}  {run.job_name:<28} {run.status.value:<9} {started}  "
                     f"{_partition_label(run)}")
        failed_checks += [f"  {check}  (run {run.run_id[:8]})" for check in failed]
    lines += ["", "Failed checks in those runs:"] + (failed_checks or ["  none"])
    health = health_status.HealthStatus()
    try:  # SLOs and alerts live in the catalog database, which no run locks (lib/ops_store.py)
        engine = lake.catalog(database).engine
        health_status.read_slos(engine, health)
        health_status.read_alerts(engine, now, health)
    except FileNotFoundError:  # no catalog yet: nothing ran, nothing was raised
        pass
    lines += ["", f"SLOs of the newest evaluated partition ({health.slo_partition or 'none yet'}):"]
    for slo, status, actual, comparison, target, burn in health.slos:
        value = "no data" if actual is None else f"{actual:.4g}"
        budget = f", error budget {burn:.0%} used" if burn is not None else ""
        lines.append(f"  {slo:<18} {status:<9} {value} (target {comparison} {target:g}){budget}")
    shown = f", {len(health.alerts)} shown" if health.open_alerts > len(health.alerts) else ""
    lines += ["", f"Open alerts (seen in the last {health_status.OPEN_DAYS} days: {health.open_alerts}{shown}):"]
    for severity, kind, _asset, _partition, message, last_seen, occurrences in health.alerts:
        text = message if len(message) <= MESSAGE_WIDTH else message[:MESSAGE_WIDTH - 3] + "..."
        lines.append(f"  {severity:<8} {kind:<16} {text} (last {last_seen:%Y-%m-%d %H:%M}, x{occurrences})")
    if not health.alerts:
        lines.append("  none")
    return "\n".join(lines)
