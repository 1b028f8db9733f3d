"""Sensors: runs for newly landed files, and alerts on run failures and stale partitions."""

import json
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from de_assets.assets.analytics import EVENT_DAY_READERS, FIRST_DAY_READERS, HEALTH_DAY_READERS
from de_assets.assets.layers import CLEANED, LATER_READERS, MARTS, SERVED, downstream_marts
from de_assets.freshness import DEADLINE_HOUR_UTC
from de_assets.instance import sweep_dead_runs
from de_assets.lib import arrivals, landing
from de_assets.maintenance import days_needed_by_runs
from de_assets.metadata import (
    CHANGED_DAYS, DRY_RUN, EVENT_DAYS, FIRST_DAYS_MOVED, HEALTH_DAYS, MARTS_TO_REFRESH, REFRESH_RANGE,
)
from de_assets.lib.alerts import Alert
from de_assets.lib.days import days_between, parse_range, parse_ranges, range_label, utc_today
from de_assets.partitions import daily, partition_range_tags
from de_assets.resources import Alerting, PipelineSettings, Warehouse


def _partition_of(run: dg.DagsterRun) -> str:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return range_label(start, end) if start else ""


def _is_dry_run(run: dg.DagsterRun) -> bool:
    return bool(((run.run_config or {}).get("resources", {}).get("run_mode", {}).get("config", {}) or {}).get("dry_run"))


@dg.run_failure_sensor(
    name="run_failure_alerts",
    description="Raises a critical alert (log, the alerts in the catalog database, webhook) when a run fails. "
    "One alert per job and partition: a retry that fails again does not page twice. Dry runs are ignored.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerting: Alerting):
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
    alerting.send([alert], log=context.log)


@dg.sensor(
    name="stale_partition_alerts",
    description=f"Every 15 minutes: once yesterday's partition is due ({DEADLINE_HOUR_UTC:02d}:00 UTC), "
    "raises an alert for every served asset in operation (materialized at least once) that does not "
    "have it. One alert per asset and partition.",
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def stale_partition_alerts(context: dg.SensorEvaluationContext, alerting: Alerting):
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
    new = alerting.send(alerts, log=context.log)
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
DAILY_JOBS = ("daily_pipeline",)


@dg.sensor(
    name="landing_files",
    job_name="daily_pipeline",
    description="Every 30 s: starts `daily_pipeline` for files newly landed under "
    "`<landing root>/<source>/<day>/` that the warehouse does not hold yet (their SHA-256 is not in "
    "`raw.source_files`, under any name or day): one run per contiguous range of arrival days, not "
    "one per file. The registry is read from the catalog database, so a run writing the "
    "warehouse never delays a tick. Files of days a queued or running daily_pipeline run covers wait "
    "for the next tick. The cursor (newest modification "
    "time seen) keeps each tick to the day folders that changed.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_files(context: dg.SensorEvaluationContext, settings: PipelineSettings, warehouse: Warehouse):
    cursor = json.loads(context.cursor) if context.cursor else {"mtime_ns": 0, "seen_at": []}
    pending = set(cursor.get("pending", []))
    new = landing.landed_since(settings.landing_root, LANDING_SOURCES, cursor["mtime_ns"], set(cursor["seen_at"]))
    if not new and not pending:
        return dg.SkipReason("no new landed files")
    newest = max([mtime for _, mtime in new], default=cursor["mtime_ns"])
    at_newest = {f.relative for f, mtime in new if mtime == newest}
    if newest == cursor["mtime_ns"]:
        at_newest |= set(cursor["seen_at"])
    next_cursor = {"mtime_ns": newest, "seen_at": sorted(at_newest)}

    first = daily.get_first_partition_key()
    candidates = {}
    for f in [f for f, _ in new] + _still_landed(settings.landing_root, pending):
        day = f.arrival_date.isoformat()
        if f.format is None or day < first:
            context.log.warning(f"ignoring {f.relative}: " + ("unsupported format" if f.format is None
                                                               else f"before the first partition {first}"))
            continue
        candidates[f.relative] = (f, landing.sha256_of(f.path))
    if not candidates:
        return dg.SensorResult(skip_reason="no new file to ingest", cursor=json.dumps(next_cursor))
    # from the registry held in the catalog database: no wait for a run holding the warehouse
    registered = warehouse.registered_checksums([sha for _, sha in candidates.values()])
    if registered is None:
        # the registry of an earlier version is not moved out of the file yet and a run holds it:
        # decide next tick, from the same cursor
        return dg.SkipReason("the warehouse is being written; checking the new files next tick")
    busy = days_needed_by_runs(context.instance, exclude_run_id="", job_names=DAILY_JOBS)
    to_run, waiting = {}, []
    for relative, (f, sha) in sorted(candidates.items()):
        if sha in registered:
            continue  # already ingested (or a byte-identical re-delivery of an ingested file)
        if f.arrival_date in busy:
            waiting.append(relative)  # a running or queued run covers the day: look again next tick
            continue
        to_run.setdefault(sha, f)  # two identical new files: one ingest, the other is a re-delivery
    next_cursor["pending"] = sorted(waiting)
    requests = []
    for start, end in arrivals.contiguous_ranges(f.arrival_date for f in to_run.values()):
        files = {sha: f for sha, f in to_run.items() if start <= f.arrival_date <= end}
        run_key = arrivals.batch_key("landed", [f"{f.source}:{sha}" for sha, f in files.items()])
        tags = {"de_assets/landed_files": str(len(files))}
        if start == end:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=start.isoformat(), tags=tags))
        else:
            requests.append(dg.RunRequest(run_key=run_key, tags={**tags, **partition_range_tags(str(start), str(end))}))
        context.log.info(f"{len(files)} new file(s) landed for {start}..{end}: starting daily_pipeline")
    skipped = len(candidates) - len(to_run) - len(waiting)
    if not requests:
        return dg.SensorResult(
            skip_reason=f"{skipped} landed file(s) already in the warehouse, {len(waiting)} waiting for a running run",
            cursor=json.dumps(next_cursor),
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(next_cursor))


def _still_landed(root: str, relatives: set[str]) -> list[landing.LandedFile]:
    """The pending files of an earlier tick that are still there."""
    found = []
    for relative in sorted(relatives):
        source, day, _ = relative.split("/", 2)
        found += [f for f in landing.list_files(root, source, date.fromisoformat(day)) if f.relative == relative]
    return found


def late_refresh_ranges(records) -> dict[str, tuple[str, str]]:
    """From clean/* materializations: run key -> (first, last) event day whose marts must be re-served.

    A cleaning of arrival days [start, end] records in `marts_to_refresh` the days outside its
    range whose marts it may have made stale (`reconcile.marts_to_refresh`): late events of earlier
    days, and the trailing windows after the range (built before only when runs of later days ran
    first or at once, or when a past range is re-run); none when its clean rows did not change (a
    re-run that serves the same rows). A forget-user request records
    `refresh_range` itself. Dry-run materializations are ignored.
    """
    ranges: dict[str, tuple[str, str]] = {}
    for record in records:
        meta = record.asset_materialization.metadata
        key = f"late:{record.run_id}:{record.asset_key.to_user_string()}"
        if meta.get(DRY_RUN) and meta[DRY_RUN].value:
            continue
        if REFRESH_RANGE in meta:  # recorded by forget-user: the exact days to re-serve
            first, last = parse_range(meta[REFRESH_RANGE].value)
            ranges[key] = (first, last)
            continue
        refresh = meta.get(MARTS_TO_REFRESH)
        for i, (first, last) in enumerate(parse_ranges(refresh.value if refresh is not None else None)):
            ranges[f"{key}:{i}"] = (first, last)
    return ranges


def days_to_refresh(instance: dg.DagsterInstance, records) -> dict[str, int]:
    """Each event day whose marts must be re-served -> the newest cleaning materialization that
    made it stale (its storage id).

    In each range a cleaning recorded, a day is stale when its marts were served before that
    materialization and not since; the served days after the first stale one are re-served too,
    because their comparisons with earlier days (`marts.kpi_changes`, `marts.kpi_anomalies`) read
    it. A day never served is not re-served (late data before the history starts).
    """
    ranges: dict[tuple[str, str], int] = {}  # a range run records the same ranges on every partition
    for record in records:
        for first_last in late_refresh_ranges([record]).values():
            ranges[first_last] = max(ranges.get(first_last, 0), record.storage_id)
    need: dict[str, int] = {}
    for (first, last), storage_id in ranges.items():
        days = [d.isoformat() for d in days_between(date.fromisoformat(first), date.fromisoformat(last))]
        latest: dict[str, int] = {}  # per day: the oldest of its marts' latest materializations
        for key in MARTS:
            found = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                                set(days))
            for d, mart_id in found.items():
                latest[d] = min(latest.get(d, mart_id), mart_id)
        stale = [d for d in days if d in latest and latest[d] < storage_id]
        for d in days:
            if stale and d >= stale[0] and d in latest:
                need[d] = max(need.get(d, 0), storage_id)
    return need


# What later days read, per metadata key of the materialization that records the change:
# asset -> [(the mart that reads it, how many days after a changed day it reads it)].
_READERS = {CHANGED_DAYS: LATER_READERS, FIRST_DAYS_MOVED: FIRST_DAY_READERS, EVENT_DAYS: EVENT_DAY_READERS,
            HEALTH_DAYS: HEALTH_DAY_READERS}


def stale_readers(instance: dg.DagsterInstance, records, today: date) -> dict[dg.AssetKey, dict[str, int]]:
    """Each mart that read what these materializations changed -> the event days it must re-serve ->
    the newest materialization that made the day stale (its storage id).

    Four kinds of change, each with the marts that read it (`_READERS`):
    * a mart's `changed_days` (the partitions whose rows changed), read by later days' marts
      (`LATER_READERS`, from the partition mappings: daily_engagement by kpi_changes of the next day,
      week, month and year; kpi_changes by kpi_anomalies of every later day);
    * a cleaning's `first_days_moved` (days that gained or lost a user's first day ever), read by
      `FIRST_DAY_READERS` (new_users on the day, retention cohorts from it on);
    * a cleaning's `event_days`, read further back than its `marts_to_refresh` window by
      `EVENT_DAY_READERS` (the A/B readouts of the next 89 days);
    * a cleaning's `health_days` (arrival days whose rows in, quarantined or duplicate counts changed),
      read by `HEALTH_DAY_READERS` (the anomaly scores of that day and every later day).
    A day is stale when the reading mart's latest materialization of it is older than the change:
    runs of different days at once, runs in reverse order or a past day re-run built it first. A day
    never served is not re-served; dry-run materializations are ignored.
    """
    changes: dict[tuple[str, dg.AssetKey, str], int] = {}  # a range run records the same value on every partition
    for record in records:
        meta = record.asset_materialization.metadata
        if meta.get(DRY_RUN) and meta[DRY_RUN].value:
            continue
        for meta_key in _READERS:
            changed = meta.get(meta_key)
            if changed is not None and parse_ranges(changed.value):
                key = (meta_key, record.asset_key, changed.value)
                changes[key] = max(changes.get(key, 0), record.storage_id)
    need: dict[dg.AssetKey, dict[str, int]] = {}
    for (meta_key, key, changed), storage_id in changes.items():
        for reader, reach in _READERS[meta_key].get(key, []):
            days = set()
            for first, last in parse_ranges(changed):
                last_read = min(date.fromisoformat(last) + timedelta(days=reach), today)
                days |= {d.isoformat() for d in days_between(date.fromisoformat(first), last_read)}
            latest = instance.get_latest_storage_id_by_partition(reader, dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                                 days)
            for d, reader_id in latest.items():
                if reader_id < storage_id:
                    need.setdefault(reader, {})[d] = max(need.get(reader, {}).get(d, 0), storage_id)
    return need


@dg.sensor(
    name="late_data_refresh",
    job_name="refresh_marts",
    description="Every minute: re-serves the marts that a cleaning made stale outside its own range: "
    "days of late events (within the late-data lookback; older ones are quarantined as too_late), and "
    "the trailing windows after the range when they were built before it (runs of later days that ran "
    "first or at once, a past range re-run, later days rebuilt by cleaning). Only days whose marts were "
    "served before and not since; all such days in one run per contiguous range. Likewise, when a mart "
    "that later days read changed (daily_engagement, revenue_daily, service_latency read by kpi_changes; "
    "kpi_changes read by kpi_anomalies), or a cleaning moved users' first day ever (read by new_users "
    "and retention cohorts), wrote events that A/B readouts up to 89 days later read, or changed a "
    "day's pipeline-health figures (read by the anomaly scores of every later day), after those days were "
    "built, it re-serves the reading marts and the marts built from them for those days.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def late_data_refresh(context: dg.SensorEvaluationContext):
    after = int(context.cursor) if context.cursor else None
    limit = 1000
    records, complete_to = [], None
    for key in [*CLEANED, *LATER_READERS]:
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=limit, ascending=True
        ).records
        records += found
        if len(found) == limit:  # more to read: this tick goes no further than this key got
            complete_to = min(complete_to or found[-1].storage_id, found[-1].storage_id)
    if complete_to is not None:
        records = [r for r in records if r.storage_id <= complete_to]
    if not records:
        return dg.SkipReason("no new cleaning or mart materializations")
    cursor = str(max(r.storage_id for r in records))
    cleaned = [r for r in records if r.asset_key in CLEANED]
    need = days_to_refresh(context.instance, cleaned)
    requests = _range_requests("late", need, None)
    # the marts that read a change re-serve the days they read it on, with the marts built from them
    # (a day the requests above re-serve whole is left out); one run per selection and contiguous range
    selections: dict[str, set[dg.AssetKey]] = {}
    newest: dict[str, int] = {}
    for reader, days in stale_readers(context.instance, records, utc_today()).items():
        built_from = downstream_marts(reader)
        for d, storage_id in days.items():
            if d not in need:
                selections.setdefault(d, set()).update(built_from)
                newest[d] = max(newest.get(d, 0), storage_id)
    for ordered in sorted({tuple(k for k in MARTS if k in s) for s in selections.values()}):
        days = {d: newest[d] for d, s in selections.items() if s == set(ordered)}
        requests += _range_requests("stale:" + "+".join(k.path[-1] for k in ordered), days, list(ordered))
    if not requests:
        return dg.SensorResult(skip_reason="no served marts are stale", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _range_requests(prefix: str, need: dict[str, int], selection: list[dg.AssetKey] | None) -> list[dg.RunRequest]:
    """One refresh_marts run per contiguous range of the days in `need` (day -> storage id of what made
    it stale; the newest one keys the run), of `selection` (None: every mart)."""
    requests = []
    stale = sorted(need)
    for first, last in arrivals.contiguous_ranges(date.fromisoformat(d) for d in stale):
        newest = max(need[d] for d in stale if first.isoformat() <= d <= last.isoformat())
        requests.append(dg.RunRequest(run_key=f"{prefix}:{range_label(first, last)}:{newest}",
                                      tags=partition_range_tags(str(first), str(last)), asset_selection=selection))
    return requests


@dg.sensor(
    name="dead_run_sweeper",
    description="Every minute: marks as failed the runs of this host whose process is gone (killed, "
    "crashed) while Dagster still shows them running, and frees their concurrency slots. Each run "
    "records its process in the tags `de_assets/pid` and `de_assets/host` (de_assets/instance.py).",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def dead_run_sweeper(context: dg.SensorEvaluationContext):
    failed = sweep_dead_runs(context.instance, log=context.log)
    return dg.SkipReason(f"{len(failed)} dead run(s) marked as failed" if failed else "no dead runs")
