"""Group `ingestion`: landed files -> the immutable, pseudonymized raw layer."""

import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import dagster as dg

from de_assets import checks
from de_assets.lib import http_source, ingest, privacy, raw_lake
from de_assets.lib.alerts import Alert
from de_assets.lib.days import days_between, short_label, utc_today
from de_assets.lib.tables import FORGOTTEN_ROWS, RAW_EVENTS, RAW_REQUESTS, SOURCE_FILES, Table
from de_assets.metadata import definition_metadata
from de_assets.partitions import daily, partition_dates
from de_assets.bookkeeping import check_events, finish
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:data-platform"]


class RawConfig(dg.Config):
    reingest: bool = False
    """Delete the partition's raw rows and file registrations and ingest its files again
    (e.g. after rotating the pseudonymization key). Off by default: the raw layer is append-only."""


landing_events = dg.AssetSpec(
    ["landing", "landing_events"],
    group_name="ingestion",
    description="Segment-spec event files landing under `<landing root>/events/<arrival day>/` "
    "(NDJSON, NDJSON.gz, JSON array, CSV, Parquet). Maintained outside Dagster.",
    kinds={"file"},
    owners=OWNERS,
    tags={"layer": "landing", "pii": "raw"},
)
landing_requests = dg.AssetSpec(
    ["landing", "landing_requests"],
    group_name="ingestion",
    description="Request-log / metric-sample files landing under `<landing root>/requests/<arrival day>/` "
    "(NDJSON or CSV). Maintained outside Dagster.",
    kinds={"file"},
    owners=OWNERS,
    tags={"layer": "landing", "pii": "none"},
)


class ApiPullConfig(dg.Config):
    """Timeouts and paging of the pull; `arrival_day` defaults to today (UTC)."""

    arrival_day: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 0.5
    page_size: int = 1000


@dg.asset(
    key=["landing", "events_api"],
    group_name="ingestion",
    description="Events pulled from the JSON HTTP API at `DE_ASSETS_EVENTS_API_URL` (cursor paging, "
    "connect/read timeouts, retries with backoff and jitter on 429/5xx/timeouts/malformed pages, a "
    "circuit breaker, dead letters), landed as NDJSON files under "
    "`events/<today>/api-<content hash>.ndjson`, where `raw/raw_events` ingests them like any landed file. "
    "Cursor, breaker and dead letters are kept in the catalog database (`de_assets_http_*` tables): the pull "
    "never waits for, nor holds, the warehouse file.",
    kinds={"python", "file"},
    owners=OWNERS,
    tags={"layer": "landing", "pii": "raw"},
    code_version="1",
    metadata={"dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn("event", "JSON", description="One Segment event per line, as the API returned it")])},
)
def events_api(
    context: dg.AssetExecutionContext, config: ApiPullConfig, warehouse: Warehouse, settings: PipelineSettings
) -> dg.MaterializeResult:
    if not settings.events_api_url:
        raise dg.Failure("DE_ASSETS_EVENTS_API_URL is not set: there is no events API to pull from.")
    day = date.fromisoformat(config.arrival_day) if config.arrival_day else utc_today()
    policy = http_source.HttpPolicy(
        connect_timeout_s=config.connect_timeout_s, read_timeout_s=config.read_timeout_s, retries=config.retries,
        backoff_s=config.backoff_s, page_size=config.page_size,
    )
    report = http_source.pull(warehouse.ops_engine(), settings.events_api_url, settings.landing_root, day, policy)
    if report.dead_letters or report.breaker_open:
        context.log.warning(f"events API: {report.stopped_because}")
    return dg.MaterializeResult(metadata={
        "pages": report.pages, "records": report.records, "files": len(report.files), "requests": report.requests,
        "retries": report.retries, "dead_letters": report.dead_letters, "breaker_open": report.breaker_open,
        "stopped_because": report.stopped_because, "arrival_day": str(day),
    })


def bad_file_alert(context: dg.AssetExecutionContext, path: str, status: str, reason: str) -> Alert:
    """A landed file that was not (wholly) read: partial and refused files warn, rejected and changed ones are errors."""
    severity = "warning" if status in ("partial", "refused") else "error"
    return Alert(severity=severity, kind="bad_file", asset=context.asset_key.to_user_string(),
                 partition=path.split("/")[1] if path.count("/") >= 2 else "", discriminator=path,
                 message=f"landed file {path} is {status}: {reason}", run_id=context.run.run_id)


INGEST_ATTEMPTS = 3  # tries when another run registers files of the same days meanwhile


def _ingest_files(con, landing_root, key: str, source: str, start: date, end: date, reingest: bool, run_id: str):
    """Read the new files of [start, end] (a re-ingest: every file of those days again) into ``con``'s raw
    table and registry, pseudonymized with ``key``, without the suppressed users (counted in ``con``'s
    copy of `raw.forgotten_rows`); returns the reports per day."""
    privacy.install_macros(con, key)
    if reingest:
        ingest.clear_partition(con, source, start, end)
    return ingest.ingest_days(con, landing_root, source, start, end, run_id)


def _load_held_reads(warehouse: Warehouse, private, source: str, start: date, end: date) -> None:
    """Copy the source's file registry, the suppression list and the days' forgotten-row counts (held in
    the catalog database) into the connection ingestion writes in."""
    for held_table, match in raw_lake.held_reads(source, start, end):
        warehouse.load_held(private, held_table, **match)


def _hand_back_forgotten(warehouse: Warehouse, con, source: str, start: date, end: date) -> None:
    """The days' counts of rows dropped for forget requests, as ``con`` holds them now."""
    warehouse.hand_back(con, FORGOTTEN_ROWS, source=source, arrival_date=(start, end))


def _hand_back_registrations(warehouse: Warehouse, con, source: str, start: date, end: date) -> None:
    """The days' registrations, as ``con`` holds them now (a re-ingest's cleared ones go too)."""
    warehouse.hand_back(con, SOURCE_FILES, source=source, arrival_date=(start, end))


def _ingest_into_lake(context, warehouse: Warehouse, held: ExitStack, landing_root, key: str, source: str,
                      table: Table, start: date, end: date, reingest: bool):
    """Ingest the new files of [start, end] into the lake (`lib/raw_lake.py`); returns the warehouse
    connection (entered on ``held``, for the bookkeeping) and the reports per day.

    The warehouse file is held only twice, briefly: to copy the registry, the suppression list and the
    forgotten-row counts (held in the catalog database) into a private in-memory DuckDB, and, after
    the files were read, projected and written as Parquet without it, to commit them (the
    forgotten-row counts, the lake commit, then the registrations). The turns keep the registry's
    writers (`repair_registry`, the commits) in line. When another run registered files of these
    days in between, or a forget request was recorded or executed (the rows read may hold the user),
    nothing is committed and the step reads again: a figure of those rows is taken before the copy
    and again in the commit turn (`raw_lake.inputs_of`). The counts go first: a step that fails
    before the lake commit leaves counts of files it did not ingest, which the re-run's ingest of
    those files replaces; written after it, a kill in between would lose them for good (the outbox
    restores the registrations, so the files are never read again)."""
    catalog = warehouse.lake_catalog()
    engine = warehouse.ops_engine()
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        with warehouse.private() as private:
            with warehouse.connect():  # a short turn: what ingestion reads
                raw_lake.repair_registry(engine, catalog, table, source)
                before = raw_lake.inputs_of(engine, source, start, end)
                _load_held_reads(warehouse, private, source, start, end)  # after the figure: a change shows
            registered = raw_lake.registered(private, source, start, end)
            reports = _ingest_files(private, landing_root, key, source, start, end, reingest, context.run.run_id)
            files = raw_lake.write_files(private, catalog, table, days_between(start, end),
                                         warehouse.lake_compression)
            turn = held.enter_context(ExitStack())  # a short turn: the commit, then the bookkeeping
            con = turn.enter_context(warehouse.connect())
            raw_lake.repair_registry(engine, catalog, table, source)
            if (now := raw_lake.inputs_of(engine, source, start, end)) != before:
                turn.close()  # ends the turn now (closing it again with `held` does nothing)
                for f in files:
                    Path(f).unlink(missing_ok=True)
                why = ("another run registered files of these days" if now.registry != before.registry
                       else "a forget request was recorded or executed")
                context.log.info(f"{source} on {short_label(start, end)}: {why} meanwhile: "
                                 f"reading again (attempt {attempt + 1} of {INGEST_ATTEMPTS})")
                continue
            added = raw_lake.new_registrations(private, source, start, end, registered)
            _hand_back_forgotten(warehouse, private, source, start, end)
            raw_lake.commit(catalog, table, files, days_between(start, end), reingest, added)
            _hand_back_registrations(warehouse, private, source, start, end)
            raw_lake.attach(con, catalog)  # the bookkeeping reads the new snapshot
            return con, reports
    raise dg.Failure(f"{source} on {short_label(start, end)}: other runs kept registering files of these days, or "
                     f"forget requests kept being recorded, while this one read them ({INGEST_ATTEMPTS} attempts); "
                     "nothing was committed. Re-run it.")


def _ingest_into_overlay(context, warehouse: Warehouse, con, landing_root, key: str, source: str, table: Table,
                         start: date, end: date, reingest: bool):
    """A dry run's ingestion over a lake: read and projected as a real run does (a private DuckDB seeded
    with the registry), then the rows staged in the run's overlay instead of committed to the lake
    (`raw_lake.stage`); the registrations and counts are kept by the run (`Warehouse.hand_back`).
    Returns the reports per day."""
    with warehouse.private() as private:
        _load_held_reads(warehouse, private, source, start, end)
        reports = _ingest_files(private, landing_root, key, source, start, end, reingest, context.run.run_id)
        raw_lake.stage(private, con, table, start, end, reingest)
        _hand_back_registrations(warehouse, private, source, start, end)  # kept by the dry run, not written
        _hand_back_forgotten(warehouse, private, source, start, end)
    return reports


def _raw_asset(source: str, table: Table, upstream: list, description: str) -> dg.AssetsDefinition:
    # Key `raw/raw_<source>`: the UI labels a node with the key's last part only, so it names the layer
    # too. The op keeps its name `raw__<source>` (run config `ops: {raw__events: ...}`).
    key = dg.AssetKey(["raw", f"raw_{source}"])

    @dg.multi_asset(
        name=f"raw__{source}",
        pool=WAREHOUSE_POOL,
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        specs=[dg.AssetSpec(
            key,
            deps=upstream,
            group_name="ingestion",
            description=description,
            kinds={"iceberg", "duckdb"},
            owners=OWNERS,
            tags={"layer": "raw", "pii": "pseudonymized"},
            code_version="1",
            metadata=definition_metadata(table),
        )],
        check_specs=checks.check_specs(key, table),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: RawConfig,
        warehouse: Warehouse,
        settings: PipelineSettings,
        alerting: Alerting,
    ):
        started = time.perf_counter()
        start, end = partition_dates(context)
        key = settings.key(context.log)
        with ExitStack() as held:  # the warehouse connection the bookkeeping below runs in
            if warehouse.raw_in_lake:
                con, reports = _ingest_into_lake(context, warehouse, held, settings.landing_root, key, source,
                                                 table, start, end, config.reingest)
            else:  # a dry run (into its scratch copy), or an in-memory warehouse without a lake
                con = held.enter_context(warehouse.connect())
                if raw_lake.in_lake(con, table):  # a dry run over a lake: the rows go into the run's overlay
                    reports = _ingest_into_overlay(context, warehouse, con, settings.landing_root, key, source,
                                                   table, start, end, config.reingest)
                else:  # the held tables are copied into the (throwaway) warehouse itself
                    _load_held_reads(warehouse, con, source, start, end)
                    reports = _ingest_files(con, settings.landing_root, key, source, start, end, config.reingest,
                                            context.run.run_id)
                    _hand_back_registrations(warehouse, con, source, start, end)
                    _hand_back_forgotten(warehouse, con, source, start, end)
            # the checks read the source's registrations by name (`drift.volume_vs_trailing_weeks`)
            held.enter_context(warehouse.beside(con, SOURCE_FILES, source=source))
            # A bad file costs only itself: the day goes on, the file is named (never its content).
            problems = [p for r in reports.values() for p in r.problems]
            alerting.send([bad_file_alert(context, path, status, reason) for path, status, reason in problems],
                          log=context.log)
            metadata, results = finish(
                context, con, alerting, warehouse, context.asset_key, table, start, end, started,
                per_day={day: r.as_metadata() for day, r in reports.items()},
            )
        yield dg.MaterializeResult(metadata=metadata)
        yield from check_events(context, results)

    return _asset


raw_events = _raw_asset(
    "events",
    RAW_EVENTS,
    [landing_events, events_api],
    "Segment events as landed, one row per record, partitioned by arrival day. User ids are keyed "
    "HMAC pseudonyms, IPs truncated, e-mails and trait PII removed: nothing past this table ever sees "
    "them. Every file is registered with its sha256 and row count in `raw.source_files`; a "
    "byte-identical re-delivery is recognized and not ingested twice. Append-only and replayable. "
    "Stored as the Iceberg table `raw.events` of the lake (read in the warehouse as a view over its "
    "current snapshot); the files are read and projected without holding the warehouse file.",
)
raw_requests = _raw_asset(
    "requests",
    RAW_REQUESTS,
    [landing_requests],
    "Request-log samples as landed, one row per record, partitioned by arrival day, with a "
    "fingerprint per sample for dedupe. Files registered in `raw.source_files`. Append-only. "
    "Stored as the Iceberg table `raw.requests` of the lake.",
)

# This module's assets, in declaration order (assets/layers.py joins the modules' lists).
ALL: list[dg.AssetsDefinition | dg.AssetSpec] = [landing_events, landing_requests, events_api, raw_events, raw_requests]
