"""Group `analytics`: the served marts, partitioned by event day (see contracts.md)."""

import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from de_assets import checks
from de_assets.lib import experiment_readout, marts, report, served, staged, tables
from de_assets.lib.arrivals import contiguous_ranges
from de_assets.lib.alerts import Alert
from de_assets.lib.days import days_between, ranges_label
from de_assets.lib.tables import (
    DAILY_ENGAGEMENT,
    EXPERIMENT_RESULTS,
    FUNNEL_DAILY,
    KPI_ANOMALIES,
    KPI_CHANGES,
    RETENTION_COHORTS,
    REVENUE_DAILY,
    SERVICE_LATENCY,
    Table,
)
from de_assets.metadata import CHANGED_DAYS, definition_metadata
from de_assets.partitions import daily, partition_dates
from de_assets.bookkeeping import Evaluated, check_events, evaluate, finish
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:analytics"]
CLEAN_EVENTS = dg.AssetKey(["clean", "clean_events"])
CLEAN_REQUESTS = dg.AssetKey(["clean", "clean_requests"])


# The lake table behind each asset a mart may read.
_LAKE_TABLE_OF = {CLEAN_EVENTS: tables.CLEAN_EVENTS, CLEAN_REQUESTS: tables.CLEAN_REQUESTS,
                  **{dg.AssetKey(t.name.split(".")): t for t in staged.MARTS}}


def lake_tables_of(deps: list) -> tuple[Table, ...]:
    """The lake tables behind a mart's `deps`: what it reads, pinned while it computes."""
    keys = [d.asset_key if isinstance(d, dg.AssetDep) else dg.AssetDep(d).asset_key for d in deps]
    return tuple(dict.fromkeys(_LAKE_TABLE_OF[key] for key in keys))


def _write_funnels(con, start, end, settings: PipelineSettings) -> None:
    """The funnels are configuration (`PipelineSettings.funnels`), so their SQL is built per run."""
    marts.replace_range(con, FUNNEL_DAILY, marts.funnel_sql(settings.funnels), start, end)


def anomaly_alerts(con, start, end, run_id: str) -> list[tuple[date, Alert]]:
    """One warning per anomaly episode (run of consecutive flagged days of a KPI) with a flagged day
    in [start, end], with the episode's last flagged day of the range (what decides whether it is
    paged: see `Alerting.page`). Only KPIs with enough volume are ever flagged (`is_anomaly`,
    `lib/marts.kpi_anomalies`). The alert's partition is the episode's first day, so the later days
    of the same episode, in this run or the next ones, fall under the same dedupe key: one page each."""
    rows = con.execute(
        f"SELECT kpi, episode_start, max(event_date) AS last_day, count(*) AS days, "
        f"arg_max(value, event_date), arg_max(expected, event_date), arg_max(score, event_date) "
        f"FROM {KPI_ANOMALIES.name} WHERE event_date BETWEEN ? AND ? AND is_anomaly "
        "GROUP BY kpi, episode_start ORDER BY episode_start, kpi",
        [start, end],
    ).fetchall()
    return [
        (last, Alert(
            severity="warning", kind="kpi_anomaly", asset="marts/kpi_anomalies", partition=str(first),
            message=f"{kpi} anomalous since {first}: {value:.4g} on {last}, expected {expected:.4g} "
                    f"(score {score:.1f}; {days} flagged day(s) in this run)",
            run_id=run_id, discriminator=kpi,
        ))
        for kpi, first, last, days, value, expected, score in rows
    ]


def _mart(
    table: Table, deps: list, description: str, *, sql: str | None = None, write=None, kinds=("duckdb", "sql"),
    alerts=None, reads_kpis: bool = False,
) -> dg.AssetsDefinition:
    """The served mart `table` (asset key `marts/<table>`): partitioned by event day, single-run
    backfills, rows of [start, end] replaced by the rows of `sql` (a query over `$start`, `$end`), or
    written by `write(con, start, end, settings)`. Its checks are the table's rules (`table.checks`).
    `alerts(con, start, end, run_id)`, when given, lists the alerts the written rows raise. Each
    materialization records the partitions whose rows changed (`changed_days`). It computes without
    the warehouse file (`Warehouse.computing`) on the lake tables of its `deps`, and, with
    `reads_kpis`, the KPI rows of the health series."""
    if (sql is None) == (write is None):
        raise ValueError(f"_mart({table.name}): give exactly one of sql= and write=")
    if write is None:
        def write(con, start, end, settings: PipelineSettings) -> None:
            marts.replace_range(con, table, sql, start, end)
    key = dg.AssetKey(table.name.split("."))  # marts.daily_engagement -> marts/daily_engagement
    reads = lake_tables_of(deps)

    @dg.asset(
        key=key,
        pool=WAREHOUSE_POOL,
        deps=deps,
        group_name="analytics",
        description=description,
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds=set(kinds),
        owners=OWNERS,
        tags={"layer": "marts", "pii": "none"},
        code_version="1",
        metadata=definition_metadata(table),
        check_specs=checks.check_specs(key, table),
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, settings: PipelineSettings, alerting: Alerting
    ):
        started = time.perf_counter()
        start, end = partition_dates(context)

        def build(con) -> tuple[list[date], Evaluated]:
            """The partitions whose rows changed, and the staged rows' checks and data files."""
            before = served.partition_fingerprints(con, table, start=start, end=end)
            write(con, start, end, settings)
            changed = served.changed_partitions(before, served.partition_fingerprints(con, table, start=start, end=end))
            return changed, evaluate(con, warehouse, context.asset_key, table, start, end, write=True)

        # computed, checked and written as data files in a private connection over pinned snapshots,
        # staged there (lib/staged.py); the file is taken only to commit: `finish` commits the
        # partitions no blocking check failed
        with warehouse.computing(table, reads, kpis=reads_kpis, log=context.log) as step:
            changed, evaluated = build(step.con)
            with step.turn():
                if step.committed_meanwhile:  # an input was committed meanwhile: again, on the new snapshots
                    changed, evaluated = build(step.con)
                metadata, results = finish(context, step.con, alerting, warehouse, context.asset_key, table, start, end,
                                           started, publish=True, evaluated=evaluated)
                # read by the late_data_refresh sensor: later days' marts that read these (layers.LATER_READERS)
                metadata[CHANGED_DAYS] = ranges_label(contiguous_ranges(changed))
                if alerts is not None:
                    metadata.update(alerting.page(alerts(step.con, start, end, context.run.run_id), context.run.tags,
                                                  log=context.log))
                yield dg.MaterializeResult(metadata=metadata)  # recorded while the warehouse is held (cleaning.py)
        yield from check_events(context, results)

    return _asset


# Marts of day d read earlier days: trailing windows of clean events and each user's first day ever,
# earlier days' KPIs (the day, week, month and year before), and the whole KPI history before d (anomaly
# scores). Declared here, these reads are what the late_data_refresh sensor follows when an earlier day
# changes after later days were built.
YEAR_BEFORE = dg.TimeWindowPartitionMapping(start_offset=-366, allow_nonexistent_upstream_partitions=True)
EVERY_DAY_BEFORE = dg.TimeWindowPartitionMapping(start_offset=-marts.HISTORY_DAYS,
                                                 allow_nonexistent_upstream_partitions=True)

daily_engagement = _mart(
    DAILY_ENGAGEMENT,
    [dg.AssetDep(CLEAN_EVENTS, partition_mapping=EVERY_DAY_BEFORE)],  # 30-day windows; first days ever
    "DAU, WAU (7 days), MAU (30 days), stickiness (DAU/MAU), new vs returning users, sessions "
    "(30-minute inactivity) and events per UTC event day. Trailing windows are read from "
    "`clean.events`, so re-running a day after late data arrives picks it up.",
    sql=marts.DAILY_ENGAGEMENT_SQL,
)
funnel_daily = _mart(
    FUNNEL_DAILY,
    [CLEAN_EVENTS],
    "Funnel conversion per day and step (default Product Viewed -> Product Added -> Checkout "
    "Started -> Order Completed; configurable): a user counts at step k when they did steps 1..k "
    "in order that day.",
    write=_write_funnels,
)
retention_cohorts = _mart(
    RETENTION_COHORTS,
    [dg.AssetDep(CLEAN_EVENTS, partition_mapping=EVERY_DAY_BEFORE)],  # cohorts: users' first days ever
    "Weekly cohorts (ISO week of a user's first event) x weeks since: cohort size, retained users, "
    "retention rate. A daily partition rewrites the cells of its activity week.",
    sql=marts.RETENTION_SQL,
)
revenue_daily = _mart(
    REVENUE_DAILY,
    [CLEAN_EVENTS],
    "Orders (Order Completed events), revenue (properties.revenue, else total), paying users, "
    "ARPU (revenue / DAU) and ARPPU (revenue / paying users) per day.",
    sql=marts.REVENUE_DAILY_SQL,
)
service_latency = _mart(
    SERVICE_LATENCY,
    [CLEAN_REQUESTS],
    "Requests, errors (status >= 500), error rate and continuous p50/p90/p99 latency per service "
    "per day, from the request logs.",
    sql=marts.SERVICE_LATENCY_SQL,
)
kpi_changes = _mart(
    KPI_CHANGES,
    [dg.AssetDep(mart, partition_mapping=YEAR_BEFORE) for mart in (daily_engagement, revenue_daily, service_latency)],
    "Every headline KPI per day in long form with relative change vs the day before (dod), 7 days "
    "before (wow), a month before (mom) and a year before (yoy); NULL where there is no base.",
    sql=marts.KPI_CHANGES_SQL,
)

kpi_anomalies = _mart(
    KPI_ANOMALIES,
    # and the health series of every earlier arrival day, which the cleanings record (HEALTH_DAY_READERS)
    [dg.AssetDep(dep, partition_mapping=EVERY_DAY_BEFORE) for dep in (kpi_changes, CLEAN_EVENTS, CLEAN_REQUESTS)],
    "Every headline KPI per day, and the pipeline's own health series (`pipeline.rows_in`, "
    "`pipeline.quarantine_rate`, `pipeline.duplicate_rate` per arrival day), scored against its own "
    "history by `de_assets.anomaly.detect`: weekly "
    "seasonality, median/MAD robust (one spike does not poison the baseline), no look-ahead. "
    "`is_anomaly` marks |score| > 3.5 (calibrated higher on noisy sub-hourly series) on a KPI with "
    "enough volume (`volume`, the count it stands on, at least `anomaly_min_volume`, default 100, "
    "DE_ASSETS_ANOMALY_MIN_VOLUME); `status` says why a row is not one (no_history, no_spread, "
    "low_volume, normal). Consecutive flagged days are one episode (`episode_start`), alerted once, "
    "and not paged while backfilling history (docs/quality.md).",
    write=lambda con, start, end, settings: marts.kpi_anomalies(con, start, end, settings.anomaly_min_volume),
    kinds=("duckdb", "pandas"),
    alerts=anomaly_alerts,
    reads_kpis=True,
)

# Marts that read each user's first event day ever, from the whole history: when a cleaning moves users'
# first days (`first_days_moved`: their events of an earlier day were added or removed), daily_engagement
# of those days (new_users) and retention_cohorts from them on (cohort sizes, in every later week) are
# stale. Followed by the late_data_refresh sensor: (reader, how many days after a moved day it reads it).
FIRST_DAY_READERS = {CLEAN_EVENTS: [(daily_engagement.key, 0), (retention_cohorts.key, marts.HISTORY_DAYS)]}

# kpi_anomalies scores the pipeline's own health series (rows in, quarantine and duplicate rates per
# arrival day, from the KPI rows the cleanings record) next to the KPIs: when a cleaning changes a day's
# figures (`health_days`: a re-run that read a file landed late, even one whose rows were all
# quarantined), the scores of that day and of every later day are stale.
HEALTH_DAY_READERS = {key: [(kpi_anomalies.key, marts.HISTORY_DAYS)] for key in (CLEAN_EVENTS, CLEAN_REQUESTS)}


class ExperimentReadoutConfig(dg.Config):
    """How experiments are read out (launchpad: `ops.marts__experiment_results.config`)."""

    metrics: dict[str, str] = experiment_readout.DEFAULT_METRICS
    window_days: int = 7
    alpha: float = 0.05
    control: str = "control"
    cuped: bool = False
    lookback_days: int = experiment_readout.DEFAULT_LOOKBACK_DAYS


# The A/B readout as of day d reads the exposures (and conversions) of d - 89 .. d (default lookback).
LOOKBACK = dg.TimeWindowPartitionMapping(start_offset=-(experiment_readout.DEFAULT_LOOKBACK_DAYS - 1),
                                         allow_nonexistent_upstream_partitions=True)


@dg.asset(
    key=["marts", "experiment_results"],
    pool=WAREHOUSE_POOL,
    deps=[dg.AssetDep(CLEAN_EVENTS, partition_mapping=LOOKBACK)],
    group_name="analytics",
    description="A/B readouts from `Experiment Viewed` exposures, as of each day: per experiment, "
    "variant and metric (purchase, add_to_cart, revenue_per_user; configurable), exposed users, "
    "conversions after the first exposure within the attribution window, rate, absolute and "
    "relative lift vs control with a confidence interval and two-sided p-value (z-test; Welch "
    "for revenue; optional CUPED), the sample-ratio-mismatch p-value and the crossover users "
    "(seen in two variants, excluded). The readable readout per experiment, with a verdict only "
    "when SRM and crossover checks pass, is in the materialization metadata.",
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"duckdb", "python"},
    owners=OWNERS,
    tags={"layer": "marts", "pii": "none"},
    code_version="1",
    metadata=definition_metadata(EXPERIMENT_RESULTS),
    check_specs=checks.check_specs(dg.AssetKey(["marts", "experiment_results"]), EXPERIMENT_RESULTS),
)
def experiment_results(
    context: dg.AssetExecutionContext, config: ExperimentReadoutConfig, warehouse: Warehouse, alerting: Alerting
):
    started = time.perf_counter()
    start, end = partition_dates(context)
    plan = experiment_readout.Plan(
        metrics=dict(config.metrics), window_days=config.window_days, alpha=config.alpha, control=config.control,
        cuped=config.cuped, lookback_days=config.lookback_days,
    )
    # as every mart does (_mart)
    def build(con) -> tuple[list[dict], Evaluated]:
        written = experiment_readout.write(con, start, end, plan)
        return written, evaluate(con, warehouse, context.asset_key, EXPERIMENT_RESULTS, start, end, write=True)

    with warehouse.computing(EXPERIMENT_RESULTS, lake_tables_of([CLEAN_EVENTS]), log=context.log) as step:
        written, evaluated = build(step.con)
        with step.turn():
            if step.committed_meanwhile:  # clean events were committed meanwhile: again, on the new snapshot
                written, evaluated = build(step.con)
            metadata, results = finish(context, step.con, alerting, warehouse, context.asset_key, EXPERIMENT_RESULTS,
                                       start, end, started, per_day=_readouts(written, start, end, plan), publish=True,
                                       evaluated=evaluated)
            yield dg.MaterializeResult(metadata=metadata)  # recorded while the warehouse is held (cleaning.py)
    yield from check_events(context, results)


def _readouts(written: list[dict], start: date, end: date, plan: experiment_readout.Plan) -> dict[date, dict]:
    """Per day of [start, end], the readout as of that day (control first), as metadata."""
    per_day: dict[date, dict] = {}
    for day in days_between(start, end):
        by_experiment: dict[str, list[dict]] = {}
        latest = sorted((r for r in written if r["as_of_date"] == day),
                        key=lambda r: (r["experiment_id"], r["metric"], not r["is_control"], r["variant_id"]))
        for row in latest:
            by_experiment.setdefault(row["experiment_id"], []).append(row)
        figures: dict = {"experiments": len(by_experiment)}
        for experiment, rows in by_experiment.items():
            figures[f"readout {experiment}"] = dg.MetadataValue.md(experiment_readout.markdown(experiment, rows, plan))
            figures[f"srm_p_value {experiment}"] = float(rows[0]["srm_p_value"])
        per_day[day] = figures
    return per_day


REPORT_SECTIONS = dg.TableSchema(columns=[
    dg.TableColumn("kpis", "table", description="Headline KPIs: value, % change vs day / week / month / year "
                   "before, expected value and anomaly score (columns with no data are left out, with a note)"),
    dg.TableColumn("engagement", "chart", description="DAU / WAU / MAU over 90 days, anomalies circled"),
    dg.TableColumn("funnel", "chart", description="Users per funnel step on the day, % of the first step"),
    dg.TableColumn("retention", "chart", description="Cohort week x weeks since: retention heatmap, complete weeks "
                   "up to the day"),
    dg.TableColumn("revenue", "chart", description="Revenue per day, orders and paying users on hover"),
    dg.TableColumn("latency", "chart", description="p50 / p90 / p99 latency per service on the day"),
    dg.TableColumn("quarantine", "chart", description="Quarantine rate per arrival day, with the SLO target"),
    dg.TableColumn("throughput", "chart", description="Median rows/s per pipeline step"),
    dg.TableColumn("freshness", "chart", description="Hours from the newest event to cleaned, with the SLO target"),
    dg.TableColumn("experiments", "table", description="A/B readouts as of the day, with a verdict per comparison"),
    dg.TableColumn("slos", "table", description="Pipeline SLO status"),
])


# Marts that read clean events of event days further back than the 30-day windows whose marts a
# cleaning's `marts_to_refresh` covers: followed by the late_data_refresh sensor from a cleaning's
# `event_days` (reader, how many days after an event day it reads it; a larger `lookback_days` in the
# run config reads further than this default).
EVENT_DAY_READERS = {CLEAN_EVENTS: [(experiment_results.key, experiment_readout.DEFAULT_LOOKBACK_DAYS - 1)]}


@dg.asset(
    key=["reports", "insights"],
    deps=[daily_engagement, funnel_daily, retention_cohorts, revenue_daily, service_latency, kpi_changes,
          kpi_anomalies, experiment_results, dg.AssetKey(["pipeline_health", "slo_status"])],
    group_name="analytics",
    description="The insights report: one HTML page per day under `data/reports/` (`insights-<day>.html`, "
    "and `latest.html`) with interactive plotly charts (values on hover), loading the one `plotly.min.js` "
    "written beside the pages, so it works offline: KPI changes, active users with anomalies, funnel, "
    "retention heatmap, revenue, latency percentiles, pipeline health (quarantine rate, throughput, "
    "freshness), experiment readouts with verdicts and SLOs. Every page shows only what was known at the "
    "end of its day.",
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"html", "duckdb"},
    owners=OWNERS,
    tags={"layer": "reports", "pii": "none"},
    code_version="2",
    metadata={"dagster/column_schema": REPORT_SECTIONS},
)
def insights(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: PipelineSettings):
    start, end = partition_dates(context)
    # held until the materialization is recorded (see cleaning.py); the SLOs and KPIs of the pages'
    # windows from the catalog database
    window = (start - timedelta(days=report.DAYS - 1), end)
    with warehouse.connect() as con, warehouse.held(tables.SLO_STATUS, tables.PARTITION_KPIS, partition=window) as own:
        pages = report.build_pages(con, start, end, own=own)
        yield _write_pages(context, warehouse.dry_run, Path(settings.reports_root), pages)


def _write_pages(context: dg.AssetExecutionContext, dry_run: bool, folder: Path, pages) -> dg.MaterializeResult:
    if dry_run:  # a dry run writes nothing anywhere
        for page in pages:
            context.add_asset_metadata({"would_write": str(folder / f"insights-{page.day}.html")},
                                       partition_key=str(page.day))
        return dg.MaterializeResult(metadata={"dry_run": True})
    folder.mkdir(parents=True, exist_ok=True)
    script_written = report.write_plotly_js(folder)
    for page in pages:  # each partition's materialization points at its own page
        path = folder / f"insights-{page.day}.html"
        path.write_text(page.html, encoding="utf-8")
        context.add_asset_metadata({"path": dg.MetadataValue.path(str(path.resolve())),
                                    "bytes": path.stat().st_size, "charts": page.chart_count},
                                   partition_key=str(page.day))
    latest = folder / "latest.html"
    newest = max(folder.glob("insights-*.html"))
    latest.write_text(newest.read_text(encoding="utf-8"), encoding="utf-8")
    return dg.MaterializeResult(metadata={
        "latest": dg.MetadataValue.path(str(latest.resolve())),
        "reports_written": len(pages),
        "plotly_js": dg.MetadataValue.path(str((folder / report.PLOTLY_JS).resolve())),
        "plotly_js_written": script_written,
    })


# This module's assets, in declaration order (assets/layers.py joins the modules' lists).
ALL: list[dg.AssetsDefinition] = [
    daily_engagement, funnel_daily, retention_cohorts, revenue_daily, service_latency, kpi_changes, kpi_anomalies,
    experiment_results,
    insights,
]
