"""Group `analytics`: the served marts, partitioned by event day (see contracts.md)."""

import time

import dagster as dg

from de_assets import checks
from de_assets.lib import marts
from de_assets.lib.alerts import Alert
from de_assets.lib.tables import KPI_ANOMALIES, Table
from de_assets.metadata import definition_metadata
from de_assets.partitions import daily, partition_dates
from de_assets.reporting import finish
from de_assets.resources import Alerting, PipelineSettings, Warehouse

OWNERS = ["team:analytics"]
CLEAN_EVENTS = dg.AssetKey(["clean", "events"])
CLEAN_REQUESTS = dg.AssetKey(["clean", "requests"])


def _sql_writer(name: str):
    def write(con, start, end, settings: PipelineSettings) -> None:
        table, sql = marts.MARTS[name]
        marts.replace_range(con, table, sql, start, end)

    return write


def _write_funnels(con, start, end, settings: PipelineSettings) -> None:
    """The funnels are configuration (`PipelineSettings.funnels`), so their SQL is built per run."""
    marts.replace_range(con, marts.MARTS["funnel_daily"][0], marts.funnel_sql(settings.funnels), start, end)


def anomaly_alerts(con, start, end, run_id: str) -> list[Alert]:
    """A warning per KPI flagged anomalous in [start, end]."""
    rows = con.execute(
        f"SELECT event_date, kpi, value, expected, score FROM {KPI_ANOMALIES.name} "
        "WHERE event_date BETWEEN ? AND ? AND is_anomaly ORDER BY event_date, kpi",
        [start, end],
    ).fetchall()
    return [
        Alert(
            severity="warning", kind="kpi_anomaly", asset="marts/kpi_anomalies", partition=str(day),
            message=f"{kpi} = {value:.4g} on {day}, expected {expected:.4g} (score {score:.1f})",
            run_id=run_id, discriminator=kpi,
        )
        for day, kpi, value, expected, score in rows
    ]


def _mart(
    name: str, deps: list, description: str, table: Table | None = None, write=None, kinds=("duckdb", "sql")
) -> dg.AssetsDefinition:
    """A served mart: partitioned by event day, single-run backfills, rows of [start, end] replaced."""
    table = table or marts.MARTS[name][0]
    write = write or _sql_writer(name)

    @dg.asset(
        key=["marts", name],
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
        check_specs=checks.check_specs(dg.AssetKey(["marts", name]), table),
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, settings: PipelineSettings, alerting: Alerting
    ):
        started = time.perf_counter()
        start, end = partition_dates(context)
        with warehouse.connect() as con:
            write(con, start, end, settings)
            metadata, results = finish(context, con, alerting, context.asset_key, table, start, end, started)
            if table is KPI_ANOMALIES:
                alerting.send(con, anomaly_alerts(con, start, end, context.run.run_id), log=context.log)
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    return _asset


daily_engagement = _mart(
    "daily_engagement",
    [CLEAN_EVENTS],
    "DAU, WAU (7 days), MAU (30 days), stickiness (DAU/MAU), new vs returning users, sessions "
    "(30-minute inactivity) and events per UTC event day. Trailing windows are read from "
    "`clean.events`, so re-running a day after late data arrives picks it up.",
)
funnel_daily = _mart(
    "funnel_daily",
    [CLEAN_EVENTS],
    "Funnel conversion per day and step (default Product Viewed -> Product Added -> Checkout "
    "Started -> Order Completed; configurable): a user counts at step k when they did steps 1..k "
    "in order that day.",
    write=_write_funnels,
)
retention_cohorts = _mart(
    "retention_cohorts",
    [CLEAN_EVENTS],
    "Weekly cohorts (ISO week of a user's first event) x weeks since: cohort size, retained users, "
    "retention rate. A daily partition rewrites the cells of its activity week.",
)
revenue_daily = _mart(
    "revenue_daily",
    [CLEAN_EVENTS],
    "Orders (Order Completed events), revenue (properties.revenue, else total), paying users, "
    "ARPU (revenue / DAU) and ARPPU (revenue / paying users) per day.",
)
service_latency = _mart(
    "service_latency",
    [CLEAN_REQUESTS],
    "Requests, errors (status >= 500), error rate and continuous p50/p90/p99 latency per service "
    "per day, from the request logs.",
)
kpi_changes = _mart(
    "kpi_changes",
    [dg.AssetKey(["marts", n]) for n in ("daily_engagement", "revenue_daily", "service_latency")],
    "Every headline KPI per day in long form with relative change vs the day before (dod), 7 days "
    "before (wow), a month before (mom) and a year before (yoy); NULL where there is no base.",
)

kpi_anomalies = _mart(
    "kpi_anomalies",
    [dg.AssetKey(["marts", "kpi_changes"])],
    "Every headline KPI per day, and the pipeline's own health series (`pipeline.rows_in`, "
    "`pipeline.quarantine_rate`, `pipeline.duplicate_rate` per arrival day), scored against its own "
    "history by `de_assets.anomaly.detect`: weekly "
    "seasonality, median/MAD robust (one spike does not poison the baseline), no look-ahead. "
    "`is_anomaly` marks |score| > 3.5; `expected` is NULL until a KPI has enough history.",
    table=KPI_ANOMALIES,
    write=lambda con, start, end, settings: marts.kpi_anomalies(con, start, end),
    kinds=("duckdb", "pandas"),
)

ALL: list[dg.AssetsDefinition] = [
    daily_engagement, funnel_daily, retention_cohorts, revenue_daily, service_latency, kpi_changes, kpi_anomalies
]
