"""Sensors: runs for newly landed files, and alerts on run failures and stale partitions."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from de_assets.freshness import DEADLINE_HOUR_UTC, SERVED
from de_assets.lib import landing
from de_assets.lib.alerts import Alert
from de_assets.partitions import daily, partition_range_tags
from de_assets.resources import Alerting, PipelineSettings, Warehouse


def _partition_of(run: dg.DagsterRun) -> str:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}..{end}" if start else ""


def _is_dry_run(run: dg.DagsterRun) -> bool:
    return bool(((run.run_config or {}).get("resources", {}).get("run_mode", {}).get("config", {}) or {}).get("dry_run"))


@dg.run_failure_sensor(
    name="run_failure_alerts",
    description="Raises a critical alert (log, pipeline_health.alerts, webhook) when a run fails. "
    "One alert per job and partition: a retry that fails again does not page twice. Dry runs are ignored.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alerts(context: dg.RunFailureSensorContext, warehouse: Warehouse, alerting: Alerting):
    run = context.dagster_run
    if _is_dry_run(run):
        return
    partition = _partition_of(run)
    alert = Alert(
        severity="critical",
        kind="run_failure",
        asset=run.job_name,
        partition=partition,
        message=f"run {run.run_id} of {run.job_name} ({partition or 'unpartitioned'}) failed: "
        f"{context.failure_event.message}",
        run_id=run.run_id,
    )
    with warehouse.connect() as con:
        alerting.send(con, [alert], log=context.log)


@dg.sensor(
    name="stale_partition_alerts",
    description=f"Every 15 minutes: once yesterday's partition is due ({DEADLINE_HOUR_UTC:02d}:00 UTC), "
    "raises an alert for every served asset in operation (materialized at least once) that does not "
    "have it. One alert per asset and partition.",
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def stale_partition_alerts(context: dg.SensorEvaluationContext, warehouse: Warehouse, alerting: Alerting):
    now = datetime.now(timezone.utc)
    stale = stale_assets(context.instance, SERVED, now)
    if not stale:
        return dg.SkipReason("every served asset has its latest due partition")
    due = _due_partition(now)
    alerts = [
        Alert(
            severity="error", kind="stale_partition", asset=key.to_user_string(), partition=due,
            message=f"{key.to_user_string()} has no materialization of {due}, due by "
            f"{DEADLINE_HOUR_UTC:02d}:00 UTC the day after",
        )
        for key in stale
    ]
    with warehouse.connect() as con:
        new = alerting.send(con, alerts, log=context.log)
    return dg.SkipReason(f"{len(stale)} stale asset(s), {len(new)} new alert(s)")


def _due_partition(now: datetime) -> str:
    """The newest daily partition that should exist at `now`."""
    days_back = 1 if now.hour >= DEADLINE_HOUR_UTC else 2
    return (now.date() - timedelta(days=days_back)).isoformat()


def stale_assets(instance: dg.DagsterInstance, served: list[dg.AssetKey], now: datetime) -> list[dg.AssetKey]:
    """Served assets that have been materialized before but not for the partition due at `now`."""
    due = _due_partition(now)
    stale = []
    for key in served:
        if instance.get_latest_materialization_event(key) is None:
            continue  # not in operation yet
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[due]), limit=1
        ).records
        if not found:
            stale.append(key)
    return stale


LANDING_SOURCES = ("events", "requests")


@dg.sensor(
    name="landing_files",
    job_name="daily_pipeline",
    description="Every 30 s: for each file newly landed under `<landing root>/<source>/<day>/`, starts "
    "`daily_pipeline` for that arrival day. The run key is the file's SHA-256, so a byte-identical "
    "re-delivery (any name, any day) starts nothing; the cursor (newest modification time seen) "
    "keeps each tick to the day folders that changed.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_files(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    cursor = json.loads(context.cursor) if context.cursor else {"mtime_ns": 0, "seen_at": []}
    new = landing.landed_since(settings.landing_root, LANDING_SOURCES, cursor["mtime_ns"], set(cursor["seen_at"]))
    if not new:
        return dg.SkipReason("no new landed files")
    newest = max(mtime for _, mtime in new)
    at_newest = {f.relative for f, mtime in new if mtime == newest}
    if newest == cursor["mtime_ns"]:
        at_newest |= set(cursor["seen_at"])
    first = daily.get_first_partition_key()
    requests = []
    for f, _ in new:
        day = f.arrival_date.isoformat()
        if f.format is None or day < first:
            context.log.warning(f"ignoring {f.relative}: " + ("unsupported format" if f.format is None
                                                               else f"before the first partition {first}"))
            continue
        checksum = landing.sha256_of(f.path)
        requests.append(dg.RunRequest(
            run_key=f"{f.source}:{checksum}", partition_key=day, tags={"de_assets/landed_file": f.relative},
        ))
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({"mtime_ns": newest, "seen_at": sorted(at_newest)})
    )


CLEANED = [dg.AssetKey(["clean", "events"]), dg.AssetKey(["clean", "requests"])]


def late_refresh_ranges(records) -> dict[str, tuple[str, str]]:
    """From clean/* materializations: run key -> (first, last) event day whose marts must be re-served.

    A materialization of arrival days [start, end] that saw events of earlier days d1 < ... lists
    them in `late_event_days`; the marts of [d1, start - 1] are stale (the day itself and the trailing
    windows after it). A forget-user request records `refresh_range` itself. Dry-run
    materializations are ignored.
    """
    ranges: dict[str, tuple[str, str]] = {}
    for record in records:
        meta = record.asset_materialization.metadata
        key = f"late:{record.run_id}:{record.asset_key.to_user_string()}"
        if "refresh_range" in meta:  # recorded by forget-user: the exact days to re-serve
            first, last = meta["refresh_range"].value.split("..")
            ranges[key] = (first, last)
            continue
        late = meta.get("late_event_days")
        if late is None or late.value == "none" or (meta.get("dry_run") and meta["dry_run"].value):
            continue
        start = meta["partition_range"].value.split("..")[0]
        first = min(late.value.split(", "))
        last = (datetime.fromisoformat(start).date() - timedelta(days=1)).isoformat()
        ranges[key] = (first, last)
    return ranges


@dg.sensor(
    name="late_data_refresh",
    job_name="refresh_marts",
    description="Every minute: when cleaning found events of earlier days (within the late-data "
    "lookback; older ones are quarantined as too_late), re-serves the marts from the earliest such "
    "day to the day before arrival, in one run. One run per cleaning run.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def late_data_refresh(context: dg.SensorEvaluationContext):
    after = int(context.cursor) if context.cursor else None
    records = []
    for key in CLEANED:
        records += context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000
        ).records
    if not records:
        return dg.SkipReason("no new cleaning materializations")
    requests = [
        dg.RunRequest(run_key=key, tags=partition_range_tags(first, last))
        for key, (first, last) in sorted(late_refresh_ranges(records).items())
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(max(r.storage_id for r in records)))
