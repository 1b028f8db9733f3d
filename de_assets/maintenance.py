"""Maintenance jobs that change stored data outside the daily flow (R8): retention and forget-user."""

import os
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from de_assets.instance import on_outside_dev
from de_assets.lib import forget, raw_lake, retention, served, staged
from de_assets.lib.days import range_label, utc_now, utc_today
from de_assets.lib.tables import FORGET_AUDIT, FORGET_REQUESTS, FORGOTTEN_ROWS, RAW_EVENTS, RETENTION_LOG
from de_assets.metadata import REFRESH_RANGE
from de_assets.partitions import daily
from de_assets.resources import WAREHOUSE_POOL, Warehouse

ACTIVE = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def days_needed_by_runs(instance: dg.DagsterInstance, exclude_run_id: str,
                        job_names: tuple[str, ...] | None = None) -> set[date]:
    """Every partition day of a queued or running run (single partition or single-run range),
    of any job or only of `job_names`."""
    needed: set[date] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)):
        if run.run_id == exclude_run_id or (job_names is not None and run.job_name not in job_names):
            continue
        tags = run.tags
        if "dagster/partition" in tags:
            needed.add(date.fromisoformat(tags["dagster/partition"][:10]))
        elif "dagster/asset_partition_range_start" in tags:
            day = date.fromisoformat(tags["dagster/asset_partition_range_start"][:10])
            last = date.fromisoformat(tags["dagster/asset_partition_range_end"][:10])
            while day <= last:
                needed.add(day)
                day += timedelta(days=1)
    return needed


class RetentionConfig(dg.Config):
    """Days each layer keeps (null: forever), and the day to count from (default: today, UTC)."""

    raw_days: int | None = 30
    clean_days: int | None = 400
    marts_days: int | None = None
    as_of: str | None = None
    snapshot_days: int = 7  # lake snapshots older than this are expired (time travel this far back)


@dg.op(out=dg.Out(int), pool=WAREHOUSE_POOL, description="Delete partitions older than each layer's retention window (raw 30 days, clean 400, "
       "marts forever), never a day a queued or running run needs; logs every deletion in "
       "pipeline_health.retention_log and reports it.")
def enforce_retention(context: dg.OpExecutionContext, config: RetentionConfig, warehouse: Warehouse):
    today = date.fromisoformat(config.as_of) if config.as_of else utc_today()
    policy = retention.Policy(config.raw_days, config.clean_days, config.marts_days)
    protected = days_needed_by_runs(context.instance, context.run_id)
    now = utc_now()
    with warehouse.connect() as con, warehouse.held(RETENTION_LOG) as audit:
        report = retention.enforce(con, policy, today, protected, context.run_id, now, log=audit)
        lake_files = _retain_in_lake(warehouse, con, report, protected, now - timedelta(days=config.snapshot_days))
        warehouse.hand_back(audit, RETENTION_LOG, run_id=context.run_id)  # the audit: after the deletions
        warehouse.publish_held(RETENTION_LOG)
    deleted = sum(r["rows_deleted"] for r in report)
    table = "| layer | table | cutoff | rows deleted | kept for runs |\n|---|---|---|--:|---|\n" + "\n".join(
        f"| {r['layer']} | {r['table_name']} | {r['cutoff']} | {r['rows_deleted']:,} | {r['days_kept_for_runs'] or '-'} |"
        for r in report
    )
    context.log.info(f"retention: {deleted:,} rows deleted, {lake_files:,} lake files removed\n{table}")
    return dg.Output(deleted, metadata={"rows_deleted": deleted, "lake_files_deleted": lake_files,
                                        "report": dg.MetadataValue.md(table)})


def _retain_in_lake(warehouse: Warehouse, con, report: list[dict], protected: set[date], expire_before: datetime) -> int:
    """The same deletions in the lake's tables (the raw layer's only copy, the served tables), then snapshots older than `expire_before`
    expired and the files only they referenced deleted; returns the files deleted."""
    catalog = warehouse.lake_catalog()
    if catalog is None:  # dry run, or no lake
        return 0
    by_name = {t.name: t for t in (*served.PUBLISHED, *served.RAW_TABLES)}
    for row in report:
        if row["table_name"] in by_name and row["rows_deleted"]:
            served.delete_before(catalog, by_name[row["table_name"]], row["cutoff"], sorted(protected))
    if raw_lake.in_lake(con, RAW_EVENTS):
        raw_lake.attach(con, catalog)  # the warehouse reads the new snapshot before the old files go
    return served.erase_history(catalog, expire_before.replace(tzinfo=timezone.utc))


@dg.job(tags={"de_assets/kind": "maintenance"}, description="Enforce per-layer retention (see docs/operations.md). Scheduled daily at 03:00 UTC.")
def retention_job():
    enforce_retention()


def retention_enabled(environ=os.environ) -> bool:
    """Whether the retention schedule starts RUNNING: `DE_ASSETS_RETENTION=on|off`; by default on
    outside dev and off in dev (`DE_ASSETS_ENV=dev`, the default), where it would delete the sample
    data of a laptop install."""
    return on_outside_dev("DE_ASSETS_RETENTION", environ)


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING if retention_enabled() else dg.DefaultScheduleStatus.STOPPED,
    description="Daily at 03:00 UTC: delete raw partitions older than 30 days and clean ones older than 400. "
    "Starts stopped in dev (DE_ASSETS_ENV=dev) unless DE_ASSETS_RETENTION=on; running elsewhere unless "
    "DE_ASSETS_RETENTION=off.",
)


class ForgetUserConfig(dg.Config):
    """Which recorded forget request to execute (`de-assets forget-user` records it first). The
    subject's pseudonym is read from `pipeline_health.forget_requests`: Dagster stores run config,
    so it carries only the opaque request id, never an id or a pseudonym (unknown keys are refused)."""

    request_id: str
    no_match_ok: bool = False
    """Keep the suppression even if no row matches (re-recording requests after a key rotation)."""
    caller_refreshes_marts: bool = False
    """The launcher re-serves the marts itself (the CLI does, in process); otherwise the
    late_data_refresh sensor does it from this run's clean/clean_events materializations."""


@dg.op(out=dg.Out(dict), pool=WAREHOUSE_POOL, description="Execute one recorded forget request (GDPR): delete "
       "the user's rows from raw, clean, duplicates and quarantine (warehouse and lake files), write an audit "
       "row per table without the id, keep the user on the suppression list of every later ingest, and return "
       "the marts day range to re-serve. Fails when the request matches no row. Run again for a request "
       "executed before, it does the lake part again (finishes an erasure whose lake part failed).")
def forget_user(context: dg.OpExecutionContext, config: ForgetUserConfig, warehouse: Warehouse):
    now = utc_now()
    bookkeeping = (FORGET_REQUESTS, FORGET_AUDIT, FORGOTTEN_ROWS)  # held in the catalog database
    mine = {"request_id": config.request_id}
    with warehouse.connect() as con, warehouse.held(*bookkeeping, **mine) as held:
        refused = None
        try:
            erasure = forget.execute_request(con, held, config.request_id, context.run_id, now, config.no_match_ok)
        except forget.AlreadyExecuted:  # its lake part may have failed: done again (idempotent)
            erasure = forget.executed(held, config.request_id)
            context.log.info(f"forget request {config.request_id} was executed before ({erasure.status}): "
                             "erasing it from the lake again")
        except forget.RequestError as error:  # a request matching nothing is marked no_match
            refused = str(error)
        # the audit, the counts and the status in one transaction, before the lake is erased
        warehouse.hand_back(held, *bookkeeping, **mine)
        if refused:
            raise dg.Failure(refused)
        [(pseudonym,)] = held.execute(f"SELECT pseudonym FROM {FORGET_REQUESTS.name} WHERE request_id = ?",
                                      [config.request_id]).fetchall()
        [(last_served,)] = con.execute("SELECT max(event_date) FROM marts.daily_engagement").fetchall()
        lake_files = _forget_in_lake(warehouse, con, config.request_id, pseudonym, erasure.arrivals, now)
    deleted = erasure.rows_deleted
    table = "| table | rows deleted |\n|---|--:|\n" + "\n".join(f"| {t} | {n:,} |" for t, n in erasure.counts.items())
    context.log.info(f"forget request {config.request_id} ({erasure.status}): {deleted:,} rows deleted\n{table}")
    refresh = _refresh_range(erasure.affected, last_served)
    if refresh and not warehouse.dry_run:
        for day in erasure.arrivals:  # these clean/clean_events partitions changed
            meta = {"forget_request": config.request_id, "rows_deleted": deleted}
            if not config.caller_refreshes_marts:  # the late_data_refresh sensor re-serves the marts
                meta[REFRESH_RANGE] = range_label(*refresh)
            context.log_event(dg.AssetMaterialization(asset_key=["clean", "clean_events"], partition=str(day), metadata=meta))
    result = {"request_id": config.request_id, "status": erasure.status, "rows_deleted": deleted,
              "refresh_start": refresh[0] if refresh else None, "refresh_end": refresh[1] if refresh else None}
    return dg.Output(result, metadata={"rows_deleted": deleted, "report": dg.MetadataValue.md(table),
                                       "affected_event_days": len(erasure.affected), "status": erasure.status,
                                       "lake_files_deleted": lake_files})


def _forget_in_lake(warehouse: Warehouse, con, request_id: str, pseudonym: str, arrivals: list[date],
                    now: datetime) -> int:
    """Delete the user's rows from the lake's tables: the derived ones (clean, quarantine, duplicates:
    their changed arrival days staged without the user and published, one commit per table), then
    raw (a delete by filter; last, because the derived rows' lineage is read there), then expire
    every older snapshot and delete the files only they referenced: the user's rows are gone from
    every data file of the lake (time travel before the erasure goes with them)."""
    catalog = warehouse.lake_catalog()
    if catalog is None:
        return 0
    try:
        with staged.overlay(con):
            changed = forget.erase_derived_in_lake(con, pseudonym)
            for table, days in changed.items():
                served.publish(con, catalog, table, days=days, compression=warehouse.lake_compression)
        if not changed and not arrivals:  # nothing of the user anywhere (a suppression recorded on purpose)
            return 0
        raw_lake.delete_user(catalog, pseudonym)
    except Exception as error:  # the message may quote the filter, so the pseudonym: not passed on
        raise dg.Failure(f"forget request {request_id}: the request is recorded and audited, but erasing the "
                         f"user's rows from the lake failed ({type(error).__name__}); some are still there. Run it "
                         f"again: `de-assets forget-user --resume {request_id}` (or forget_user_job with the same "
                         "request_id) finishes the lake part") from None
    raw_lake.attach(con, catalog)
    return served.erase_history(catalog, now.replace(tzinfo=timezone.utc))


def _refresh_range(affected: list[date], last_served: date | None) -> tuple[str, str] | None:
    """Marts days to re-serve: the user's first event day to the newest served day (trailing windows
    follow), within the partitions; None when no marts day is affected."""
    if not affected or last_served is None:
        return None
    first = max(min(affected).isoformat(), daily.get_first_partition_key())
    last = min(max(max(affected), last_served).isoformat(), daily.get_last_partition_key())
    return (first, last) if first <= last else None


@dg.job(tags={"de_assets/kind": "maintenance"}, description="Execute a recorded forget request "
        "(`de-assets forget-user --user-id ...` records it, runs this job with only the request id, then "
        "re-serves the affected marts in process); launched elsewhere, the late_data_refresh sensor re-serves them.")
def forget_user_job():
    forget_user()


class RollbackConfig(dg.Config):
    """What to roll back, and to when. `to`: a UTC time (YYYY-MM-DDTHH:MM:SS) or a snapshot id
    (`de-assets sql --as-of` reads the same state first); `start`/`end`: only the partitions a run
    over those days writes (default: every partition that changed since); `tables`: `schema.table`
    names (default: every served data table)."""

    to: str
    start: str | None = None
    end: str | None = None
    tables: list[str] = []


def asset_key_of(table_name: str) -> dg.AssetKey:
    """The asset that writes a served table: `clean.events` and `clean.events_duplicates` ->
    clean/clean_events, `quarantine.events` -> quarantine/quarantine_events, `marts.x` -> marts/x."""
    schema, name = table_name.split(".")
    if schema == "marts":
        return dg.AssetKey(["marts", name])
    return dg.AssetKey([schema, f"{schema}_{name.removesuffix('_duplicates')}"])


@dg.op(out=dg.Out(list), pool=WAREHOUSE_POOL, description="Roll back a bad load: restore the partitions "
       "of the served data tables that changed since an earlier lake snapshot (or time), in the warehouse and "
       "the lake (one new commit per table: history is kept), and record a materialization for each restored "
       "partition. Refuses while a run that writes those days is queued or running. Dry run: reports only.")
def roll_back_served(context: dg.OpExecutionContext, config: RollbackConfig, warehouse: Warehouse):
    by_name = {t.name: t for t in served.ROLLBACK_TABLES}
    unknown = sorted(set(config.tables) - set(by_name))
    if unknown:
        raise dg.Failure(f"not a served data table: {', '.join(unknown)} (one of: {', '.join(by_name)})")
    if (config.start is None) != (config.end is None):
        raise dg.Failure("give both start and end, or neither (every partition that changed)")
    start = date.fromisoformat(config.start) if config.start else None
    end = date.fromisoformat(config.end) if config.end else None
    if start is not None and start > end:
        raise dg.Failure(f"start {start} is after end {end}")
    busy = days_needed_by_runs(context.instance, context.run_id)
    if start is not None:
        busy = {d for d in busy if start <= d <= end}
    if busy:
        raise dg.Failure(f"runs writing {range_label(min(busy), max(busy))} are queued or running: roll back "
                         "when they have finished (they would publish over the restored partitions)")
    try:
        catalog = served.open_lake(warehouse.database, warehouse.catalog_uri, warehouse.lake_uri, create=False)
    except FileNotFoundError as error:
        raise dg.Failure(str(error)) from None
    tables = [by_name[name] for name in config.tables] if config.tables else list(served.ROLLBACK_TABLES)
    with warehouse.connect() as con:
        try:
            restored = served.rollback(con, catalog, config.to, tables, start, end, commit=not warehouse.dry_run)
        except ValueError as error:  # a time before any snapshot, an unknown or expired snapshot id
            raise dg.Failure(f"cannot roll back to {config.to}: {error}") from None
        if restored and not warehouse.dry_run:
            raw_lake.attach(con, catalog)  # the warehouse's views of the clean tables read the restored snapshot
    report = "| table | partition | rows before | rows after |\n|---|---|--:|--:|\n" + "\n".join(
        f"| {r.table} | {r.partition} | {r.rows_before:,} | {r.rows_after:,} |" for r in restored)
    verb = "would restore" if warehouse.dry_run else "restored"
    context.log.info(f"rollback to {config.to}: {verb} {len(restored)} partition(s)\n{report}")
    if not warehouse.dry_run:
        _record_restored(context, restored, config.to)
    rows = [{"table": r.table, "partition": str(r.partition), "rows_before": r.rows_before, "rows_after": r.rows_after}
            for r in restored]
    return dg.Output(rows, metadata={"partitions": len(restored), "dry_run": warehouse.dry_run,
                                     "report": dg.MetadataValue.md(report)})


def _record_restored(context: dg.OpExecutionContext, restored: list[served.Restored], to: str) -> None:
    """One materialization per asset and partition restored, with the rows of each table it writes
    (clean/clean_events writes clean.events and clean.events_duplicates) and `dagster/row_count` of
    its own table; cleaning assets first, so the marts' materializations stay the newer ones."""
    by_partition: dict[tuple[dg.AssetKey, str], dict] = {}
    for r in restored:
        meta = by_partition.setdefault((asset_key_of(r.table), str(r.partition)), {"rolled_back_to": to})
        meta[f"rows {r.table}"] = r.rows_after
    cleaning_first = sorted(by_partition, key=lambda k: (k[0].path[0] == "marts", k[0].to_user_string(), k[1]))
    for key, partition in cleaning_first:
        meta = by_partition[(key, partition)]
        schema, name = key.path
        own = f"rows {schema}.{name.removeprefix(schema + '_')}"  # clean/clean_events -> clean.events
        if own in meta:
            meta["dagster/row_count"] = meta[own]
        context.log_event(dg.AssetMaterialization(asset_key=key, partition=partition, metadata=meta))


@dg.job(tags={"de_assets/kind": "maintenance"}, description="Roll back a bad load of the served tables to an "
        "earlier lake snapshot (`de-assets rollback --to ...`; docs/operations.md).")
def rollback_job():
    roll_back_served()
