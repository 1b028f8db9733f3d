"""Group `pipeline_health`: the pipeline's own KPIs per partition, and its SLOs with error budgets."""

import json
import time
from datetime import date, datetime, timezone

import dagster as dg

from de_assets import config_experiment
from de_assets.lib import forget, health
from de_assets.lib.alerts import Alert
from de_assets.lib.tables import CONFIG_EXPERIMENTS, PARTITION_KPIS, SLO_STATUS
from de_assets.metadata import definition_metadata, table_metadata
from de_assets.partitions import daily, days_between, partition_dates
from de_assets.reporting import partition_label
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:data-platform"]
PIPELINE_ASSETS = [
    dg.AssetKey(k.split("/"))
    for k in (
        "raw/raw_events", "raw/raw_requests", "clean/clean_events", "quarantine/quarantine_events", "clean/clean_requests",
        "quarantine/quarantine_requests", "marts/daily_engagement", "marts/funnel_daily", "marts/retention_cohorts",
        "marts/revenue_daily", "marts/service_latency", "marts/kpi_changes", "marts/kpi_anomalies",
        "marts/experiment_results",
    )
]
COMMON = dict(
    pool=WAREHOUSE_POOL,
    group_name="pipeline_health",
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"duckdb"},
    owners=OWNERS,
    tags={"layer": "pipeline_health", "pii": "none"},
    code_version="1",
)


def _run_summary(con, run_id: str, start, end) -> dict:
    """Numeric figures of this run for the UI's metadata plots."""
    [(seconds, slowest, quarantined, duplicate, rows_in, freshness)] = con.execute(
        f"""SELECT sum(seconds), min(rows_per_second) FILTER (WHERE rows_in > 0),
                   sum(rows_quarantined) FILTER (WHERE asset LIKE 'clean/%'),
                   sum(rows_duplicate) FILTER (WHERE asset LIKE 'clean/%'),
                   sum(rows_in) FILTER (WHERE asset LIKE 'clean/%'),
                   max(freshness_seconds) FILTER (WHERE asset LIKE 'marts/%')
            FROM {PARTITION_KPIS.name} WHERE run_id = ? AND partition BETWEEN ? AND ?""",
        [run_id, start, end],
    ).fetchall()
    return {
        "run_seconds": round(seconds or 0.0, 3),
        "slowest_step_rows_per_second": round(slowest or 0.0, 1),
        "quarantine_rate": round(quarantined / rows_in, 5) if rows_in else 0.0,
        "duplicate_rate": round(duplicate / rows_in, 5) if rows_in else 0.0,
        "mart_freshness_hours": round(freshness / 3600, 2) if freshness is not None else -1.0,
    }


@dg.asset(
    key=["pipeline_health", "partition_kpis"],
    deps=PIPELINE_ASSETS,
    description="The pipeline's own KPIs, one row per partition x asset x run: rows in/out/quarantined/"
    "duplicate, seconds, rows/s and data freshness (newest event -> available). Every step appends "
    "its rows as it finishes, so failed and partial runs are recorded too; this asset publishes the "
    "run's figures as numeric metadata (plotted in the UI) and checks that every step of the run "
    "reported.",
    metadata=definition_metadata(PARTITION_KPIS),
    check_specs=[
        dg.AssetCheckSpec(
            "every_step_reported",
            asset=["pipeline_health", "partition_kpis"],
            description="Every asset materialized in this run has a KPI row for every partition of the run.",
        )
    ],
    **COMMON,
)
def partition_kpis(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    started = time.perf_counter()
    start, end = partition_dates(context)
    run_id = context.run.run_id
    materialized = {
        e.dagster_event.asset_key.to_user_string()
        for e in context.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event.asset_key in PIPELINE_ASSETS
    }
    with warehouse.connect() as con:
        reported = con.execute(
            f"SELECT asset, count(DISTINCT partition) FROM {PARTITION_KPIS.name} "
            "WHERE run_id = ? AND partition BETWEEN ? AND ? GROUP BY asset",
            [run_id, start, end],
        ).fetchall()
        days = len(days_between(start, end))
        missing = sorted(a for a in materialized if dict(reported).get(a, 0) < days)
        metadata = {**table_metadata(con, PARTITION_KPIS, start, end, started), **_run_summary(con, run_id, start, end)}
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="every_step_reported",
                passed=not missing,
                metadata={"assets_in_run": len(materialized), "missing": ", ".join(missing) or "none"},
            )
        ],
    )


class SloConfig(dg.Config):
    """SLO targets; change them in the launchpad (`ops.pipeline_health__slo_status.config`)."""

    freshness_hours: float = health.SloTargets.freshness_hours
    completeness: float = health.SloTargets.completeness
    quarantine_rate: float = health.SloTargets.quarantine_rate
    duplicate_rate: float = health.SloTargets.duplicate_rate
    objective: float = health.SloTargets.objective
    backfill_after_days: float = health.SloTargets.backfill_after_days


@dg.asset(
    key=["pipeline_health", "slo_status"],
    deps=[partition_kpis],
    description="Service-level objectives per partition: freshness (end of day -> every mart "
    "available), completeness (rows landed vs the median of the same weekday over the 4 weeks "
    "before), quarantine rate and duplicate rate against configurable targets, each met or breached, "
    "with the 28-day error budget and how much of it is burnt. A breach raises an alert (error once "
    "the budget is exhausted).",
    metadata=definition_metadata(SLO_STATUS),
    **COMMON,
)
def slo_status(
    context: dg.AssetExecutionContext, config: SloConfig, warehouse: Warehouse, alerting: Alerting
) -> dg.MaterializeResult:
    started = time.perf_counter()
    start, end = partition_dates(context)
    targets = health.SloTargets(**config.model_dump())
    with warehouse.connect() as con:
        evaluated = [row for day in days_between(start, end) for row in health.evaluate_slos(con, day, targets)]
        breaches = [r for r in evaluated if r["status"] == "breached"]
        alerting.send(con, [_breach_alert(r, context.run.run_id) for r in breaches], log=context.log)
        metadata = table_metadata(con, SLO_STATUS, start, end, started)
    latest = {r["slo"]: r for r in evaluated if r["partition"] == end}
    for name, row in latest.items():  # numeric, so the UI plots every SLO over the partitions
        metadata[name] = round(row["actual"], 5) if row["actual"] is not None else -1.0
        metadata[f"{name}_budget_burn"] = round(row["budget_burn"], 3)
    metadata["breaches"] = len(breaches)
    metadata["status"] = dg.MetadataValue.md(_status_table(evaluated))
    context.log.info(f"SLOs {partition_label(start, end)}: {len(breaches)} breach(es)")
    return dg.MaterializeResult(metadata=metadata)


def _status_table(rows: list[dict]) -> str:
    lines = ["| day | slo | target | actual | status | budget burn |", "|---|---|---|---|---|---|"]
    for r in rows:
        actual = "-" if r["actual"] is None else f"{r['actual']:.4g}"
        lines.append(f"| {r['partition']} | {r['slo']} | {r['comparison']} {r['target']:g} | {actual} | "
                     f"{r['status']} | {r['budget_burn']:.2f} |")
    return "\n".join(lines)


def _breach_alert(row: dict, run_id: str) -> Alert:
    exhausted = row["budget_burn"] >= 1
    return Alert(
        severity="error" if exhausted else "warning",
        kind="slo_breach",
        asset="pipeline_health/slo_status",
        partition=str(row["partition"]),
        message=f"SLO {row['slo']} breached on {row['partition']}: {row['actual']:.4g} vs target "
        f"{row['comparison']} {row['target']:g}; 28-day error budget {row['budget_burn']:.0%} burnt"
        + (" (exhausted)" if exhausted else ""),
        run_id=run_id,
        discriminator=row["slo"],
    )


class ConfigExperimentConfig(dg.Config):
    """Replay arrival days [start, end] with flags A and B (see `PipelineSettings` for the flags)."""

    start: str
    end: str
    a: dict[str, str] = {"raw_format": "json"}
    b: dict[str, str] = {"raw_format": "parquet"}
    repetitions: int = 3
    experiment_id: str = ""


def _typed_flags(flags: dict[str, str]) -> dict:
    return {k: float(v) if k == "raw_format_rollout" else v for k, v in flags.items()}


@dg.asset(
    key=["pipeline_health", "config_experiments"],  # no pool: its arms write their own warehouses
    group_name="pipeline_health",
    kinds={"duckdb", "dagster"},
    owners=OWNERS,
    tags={"layer": "pipeline_health", "pii": "none"},
    code_version="1",
    description="A/B test of two pipeline configurations (feature flags such as raw_format json vs "
    "parquet, dedupe_strategy): the landed days [start, end] run through `daily_pipeline` once per "
    "arm and repetition, each into its own isolated warehouse, alternating arms. Records wall time, "
    "stage latency, rows/s, bytes stored and quarantine rate per run, checks that both arms serve "
    "identical tables, and writes a readout (medians, min-max spread, winner only when the ranges "
    "do not overlap).",
    metadata=definition_metadata(CONFIG_EXPERIMENTS),
)
def config_experiments(
    context: dg.AssetExecutionContext, config: ConfigExperimentConfig, warehouse: Warehouse, settings: PipelineSettings
) -> dg.MaterializeResult:
    start, end = date.fromisoformat(config.start), date.fromisoformat(config.end)
    flags_a, flags_b = _typed_flags(config.a), _typed_flags(config.b)
    experiment_id = config.experiment_id or "-vs-".join(
        ",".join(f"{k}={v}" for k, v in sorted(f.items())) or "defaults" for f in (flags_a, flags_b)
    )
    base = {name: getattr(settings, name) for name in type(settings).model_fields if name not in config_experiment.FLAGS}
    base["pseudonym_key"] = settings.key(context.log)
    with warehouse.connect() as con:
        suppressed = forget.suppression_list(con)  # the arms replay the landing: forgotten users stay out
    results = config_experiment.run_experiment(
        flags_a, flags_b, start, end, config.repetitions,
        config_experiment.default_workdir(warehouse.database, context.run.run_id), base, log=context.log,
        suppressed=suppressed,
    )
    summaries = config_experiment.summarize(results)
    identical, differing = config_experiment.identical_tables(results)
    text = config_experiment.readout(flags_a, flags_b, summaries, identical, differing, config.repetitions, start, end)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [
        (experiment_id, now, r.arm, json.dumps(flags_a if r.arm == "A" else flags_b, sort_keys=True), r.repetition,
         metric, value, identical)
        for r in results for metric, value in r.metrics.items()
    ]
    with warehouse.connect() as con:
        con.execute(f"DELETE FROM {CONFIG_EXPERIMENTS.name} WHERE experiment_id = ?", [experiment_id])
        con.executemany(f"INSERT INTO {CONFIG_EXPERIMENTS.name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    context.log.info(text)
    metadata = {
        "readout": dg.MetadataValue.md(text),
        "experiment_id": experiment_id,
        "identical_tables": identical,
        "dagster/row_count": len(rows),
    }
    for s in summaries:
        metadata[f"{s.metric}_change"] = round(s.change, 4)
    return dg.MaterializeResult(metadata=metadata)


ALL = [partition_kpis, slo_status, config_experiments]
