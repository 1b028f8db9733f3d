"""Group `pipeline_health`: the pipeline's own KPIs per partition, and its SLOs with error budgets."""

import json
from datetime import date, timedelta

import dagster as dg

from de_assets import checks
from de_assets.assets.layers import MEASURED
from de_assets.config_experiment import PipelineRunner
from de_assets.lib import config_experiment, forget, health
from de_assets.lib.alerts import Alert
from de_assets.lib.days import days_between, short_label, utc_now
from de_assets.lib.flags import FLAG_NAMES, parse_flags
from de_assets.lib.tables import CONFIG_EXPERIMENTS, FORGET_REQUESTS, PARTITION_KPIS, SLO_STATUS
from de_assets.metadata import days_metadata, definition_metadata, run_metadata
from de_assets.partitions import daily, partition_dates
from de_assets.bookkeeping import add_day_metadata, check_events
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:data-platform"]
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


def _day_summary(con, run_id: str, day) -> dict:
    """Numeric figures of this run for one day, for the UI's metadata plots (a figure that cannot
    be measured for the day, e.g. the freshness of a day without events, is left out, never -1)."""
    [(seconds, slowest, quarantined, duplicate, rows_in, freshness)] = con.execute(
        f"""SELECT sum(seconds), min(rows_per_second) FILTER (WHERE rows_in > 0),
                   sum(rows_quarantined) FILTER (WHERE asset LIKE 'clean/%'),
                   sum(rows_duplicate) FILTER (WHERE asset LIKE 'clean/%'),
                   sum(rows_in) FILTER (WHERE asset LIKE 'clean/%'),
                   max(freshness_seconds) FILTER (WHERE asset LIKE 'marts/%')
            FROM {PARTITION_KPIS.name} WHERE run_id = ? AND partition = ?""",
        [run_id, day],
    ).fetchall()
    return {
        "run_seconds": round(seconds or 0.0, 3),
        "rows_in": int(rows_in or 0),
        **({"slowest_step_rows_per_second": round(slowest, 1)} if slowest is not None else {}),
        **({"quarantine_rate": round(quarantined / rows_in, 5), "duplicate_rate": round(duplicate / rows_in, 5)}
           if rows_in else {}),
        **({"mart_freshness_hours": round(freshness / 3600, 2)} if freshness is not None else {}),
    }


def _materialized_in_run(context: dg.AssetExecutionContext, day: date) -> set[str]:
    """The measured assets this run materialized. A step materializes every day of its range or
    fails, so the range's last day tells: one lookup per asset, where reading every event of a long
    range run cost seconds (557 days: 9,469 materializations, 4.8 s)."""
    run_id = context.run.run_id
    record = context.instance.get_run_record_by_id(run_id)
    started = record.start_time if record is not None else None
    materialized = set()
    for key in MEASURED:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[str(day)], after_timestamp=started), limit=1000
        ).records
        if any(r.run_id == run_id for r in records):
            materialized.add(key.to_user_string())
    return materialized


@dg.asset(
    key=["pipeline_health", "partition_kpis"],
    deps=MEASURED,
    description="The pipeline's own KPIs, one row per partition x asset x run: rows in/out/quarantined/"
    "duplicate, seconds, rows/s and data freshness (newest event -> available). Every step appends "
    "its rows as it finishes, so failed and partial runs are recorded too; this asset publishes each "
    "day's figures of the run as numeric metadata on that day's partition (plotted in the UI) and "
    "checks that every step of the run reported.",
    metadata=definition_metadata(PARTITION_KPIS),
    check_specs=[
        checks.spec(
            "every_step_reported",
            ["pipeline_health", "partition_kpis"],
            blocking=False,
            description="Every asset materialized in this run has a KPI row for the partition.",
        )
    ],
    **COMMON,
)
def partition_kpis(context: dg.AssetExecutionContext, warehouse: Warehouse):
    start, end = partition_dates(context)
    run_id = context.run.run_id
    key = dg.AssetKey(["pipeline_health", "partition_kpis"])
    materialized = _materialized_in_run(context, end)
    # the KPI rows of the range (every run's), held in the catalog database; published in a turn on the
    # warehouse, so two publishers never overtake each other
    with warehouse.connect(), warehouse.held(PARTITION_KPIS, partition=(start, end)) as con:
        reported = con.execute(
            f"SELECT partition, list(DISTINCT asset) FROM {PARTITION_KPIS.name} "
            "WHERE run_id = ? AND partition BETWEEN ? AND ? GROUP BY partition",
            [run_id, start, end],
        ).fetchall()
        reported = dict(reported)
        results = []
        per_day = {}
        rows = days_metadata(con, PARTITION_KPIS, start, end)
        for day in days_between(start, end):
            missing = sorted(materialized - set(reported.get(day, [])))
            results.append(checks.evaluation(key, "every_step_reported", day, not missing, {
                "assets_in_run": len(materialized), "missing": ", ".join(missing) or "none"}, blocking=False,
                severity=dg.AssetCheckSeverity.ERROR))
            per_day[day] = {**rows[day], **_day_summary(con, run_id, day)}
        add_day_metadata(context, key, per_day)
        metadata = run_metadata(con, PARTITION_KPIS, start, end)
        warehouse.publish_held(PARTITION_KPIS)  # the pipeline's log, served whole (small)
    yield dg.MaterializeResult(metadata=metadata)
    yield from check_events(context, results)


class SloConfig(dg.Config):
    """SLO targets; change them in the launchpad (`ops.pipeline_health__slo_status.config`)."""

    freshness_hours: float = health.SloTargets.freshness_hours
    completeness: float = health.SloTargets.completeness
    quarantine_rate: float = health.SloTargets.quarantine_rate
    duplicate_rate: float = health.SloTargets.duplicate_rate
    objective: float = health.SloTargets.objective
    backfill_after_days: float = health.SloTargets.backfill_after_days
    min_volume: float = health.SloTargets.min_volume


SLO_CHECK_DOCS = {
    "freshness_hours": "Every mart of the day is available within `freshness_hours` (36) of the day's end.",
    "completeness": "Rows landed reach `completeness` (80%) of the median of the same weekday over the 4 "
    "weeks before; judged only when that median is at least `min_volume` (100) rows.",
    "quarantine_rate": "At most `quarantine_rate` (5%) of the day's rows are quarantined; judged from "
    "`min_volume` (100) rows in.",
    "duplicate_rate": "At most `duplicate_rate` (10%) of the day's rows are duplicates; judged from "
    "`min_volume` (100) rows in.",
}
SLO_KEY = dg.AssetKey(["pipeline_health", "slo_status"])


@dg.asset(
    key=["pipeline_health", "slo_status"],
    deps=[partition_kpis],
    description="Service-level objectives per partition: freshness (end of day -> every mart "
    "available), completeness (rows landed vs the median of the same weekday over the 4 weeks "
    "before), quarantine rate and duplicate rate against configurable targets, each met, breached, "
    "not_applicable (too little volume to judge), no_data or backfill, with the 28-day error budget "
    "and how much of it is burnt. Each SLO is an asset check per partition: a breach is a warning, "
    "an error once the budget is exhausted (non-blocking: the report still shows the day). A breach "
    "raises an alert, except while backfilling history.",
    metadata=definition_metadata(SLO_STATUS),
    check_specs=[
        checks.spec(f"slo_{name}", SLO_KEY, blocking=False, description=f"SLO. {doc} A breach warns; an error "
                    "once the 28-day error budget is exhausted.")
        for name, doc in SLO_CHECK_DOCS.items()
    ],
    **COMMON,
)
def slo_status(context: dg.AssetExecutionContext, config: SloConfig, warehouse: Warehouse, alerting: Alerting):
    start, end = partition_dates(context)
    targets = health.SloTargets(**config.model_dump())
    # measured on the KPI rows, written to the SLO rows, both held in the catalog database (the range
    # and the 4 weeks before it: the completeness baseline, the error budget's window); in a turn on
    # the warehouse, so two runs' SLO steps publish one after the other
    window = (start - timedelta(days=health.SLO_WINDOW_DAYS), end)
    with warehouse.connect(), warehouse.held(SLO_STATUS, PARTITION_KPIS, partition=window) as slos:
        evaluated = health.evaluate_slos(slos, start, targets, end)
        warehouse.hand_back(slos, SLO_STATUS, partition=(start, end))
        breaches = [r for r in evaluated if r["status"] == "breached"]
        paging = alerting.page([(r["partition"], _breach_alert(r, context.run.run_id)) for r in breaches],
                               context.run.tags, log=context.log)
        per_day = days_metadata(slos, SLO_STATUS, start, end)
        metadata = {**run_metadata(slos, SLO_STATUS, start, end), **paging}
        warehouse.publish_held(SLO_STATUS)  # inside the turn: two runs' SLO steps publish one after the other
    warehouse.publish_alerts()  # alerts of the whole run (sensors' too), as of its end
    results = []
    for r in evaluated:
        day, name = r["partition"], r["slo"]
        figures = per_day[day]
        if r["actual"] is not None:  # numeric, so the UI plots every SLO over the partitions; never -1
            figures[name] = round(r["actual"], 5)
        figures[f"{name}_status"] = r["status"]
        figures[f"{name}_budget_burn"] = round(r["budget_burn"], 3)
        figures["breaches"] = figures.get("breaches", 0) + (r["status"] == "breached")
        results.append(_slo_check(r))
    for day, figures in per_day.items():
        figures["status"] = dg.MetadataValue.md(_status_table([r for r in evaluated if r["partition"] == day]))
    add_day_metadata(context, SLO_KEY, per_day)
    context.log.info(f"SLOs {short_label(start, end)}: {len(breaches)} breach(es)")
    yield dg.MaterializeResult(metadata=metadata)
    yield from check_events(context, results)


def _slo_check(row: dict) -> dg.AssetCheckEvaluation:
    """The SLO of one day as a check: passes unless breached; a breach is a warning, an error once
    the 28-day error budget is exhausted. A status other than met/breached passes, saying why."""
    exhausted = row["budget_burn"] >= 1
    breached = row["status"] == "breached"
    metadata = {
        "status": row["status"],
        "target": f"{row['comparison']} {row['target']:g}",
        "breached_days_28d": row["breached_days_28d"],
        "error_budget_days": round(row["error_budget_days"], 2),
        "budget_burn": round(row["budget_burn"], 3),
        **({"actual": round(row["actual"], 5)} if row["actual"] is not None else {}),
    }
    description = {
        "met": "met",
        "breached": "breached; error budget exhausted" if exhausted else "breached",
        "not_applicable": "not judged: too little volume for this SLO to mean something",
        "no_data": "not judged: nothing to measure yet",
        "backfill": "not judged: the partition was first loaded long after its day (a backfill)",
    }.get(row["status"], row["status"])
    return checks.evaluation(
        SLO_KEY, f"slo_{row['slo']}", row["partition"], not breached, metadata, blocking=False,
        severity=dg.AssetCheckSeverity.ERROR if breached and exhausted else dg.AssetCheckSeverity.WARN,
        description=description,
    )


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
    """Replay arrival days [start, end] with flags A and B (names and values: `lib/flags.py`)."""

    start: str
    end: str
    a: dict[str, str] = {"lake_compression": "zstd"}
    b: dict[str, str] = {"lake_compression": "snappy"}
    repetitions: int = 3
    experiment_id: str = ""


@dg.asset(
    key=["pipeline_health", "config_experiments"],  # no pool: its arms write their own warehouses
    group_name="pipeline_health",
    kinds={"duckdb", "dagster"},
    owners=OWNERS,
    tags={"layer": "pipeline_health", "pii": "none"},
    code_version="1",
    description="A/B test of two pipeline configurations (feature flags such as lake_compression zstd "
    "vs snappy, dedupe_strategy): the landed days [start, end] run through `daily_pipeline` once per "
    "arm and repetition, each into its own isolated warehouse, alternating arms. Records wall time, "
    "stage latency, rows/s, bytes stored and quarantine rate per run, checks that both arms serve "
    "identical tables, and writes a readout (medians, min-max spread, winner only when the ranges "
    "do not overlap).",
    metadata=definition_metadata(CONFIG_EXPERIMENTS),
)
def config_experiments(
    context: dg.AssetExecutionContext, config: ConfigExperimentConfig, warehouse: Warehouse, settings: PipelineSettings,
    pipeline_runner: dg.ResourceParam[PipelineRunner],
) -> dg.MaterializeResult:
    start, end = date.fromisoformat(config.start), date.fromisoformat(config.end)
    flags_a, flags_b = parse_flags(config.a), parse_flags(config.b)
    experiment_id = config.experiment_id or config_experiment.experiment_id(flags_a, flags_b)
    base = {name: getattr(settings, name) for name in type(settings).model_fields if name not in FLAG_NAMES}
    base["pseudonym_key"] = settings.key(context.log)
    with warehouse.held(FORGET_REQUESTS) as held:
        suppressed = forget.suppression_list(held)  # the arms replay the landing: forgotten users stay out

    def run_arm(arm: str, flags: dict, repetition: int, workdir):
        return pipeline_runner.run_arm(arm, flags, repetition, start, end, workdir, base, suppressed)

    results = config_experiment.run_experiment(
        flags_a, flags_b, config.repetitions,
        config_experiment.default_workdir(warehouse.database, context.run.run_id), run_arm, log=context.log,
    )
    summaries = config_experiment.summarize(results)
    identical, differing = config_experiment.identical_tables(results)
    text = config_experiment.readout(flags_a, flags_b, summaries, identical, differing, config.repetitions, start, end)
    now = utc_now()
    rows = [
        (experiment_id, now, r.arm, json.dumps(flags_a if r.arm == "A" else flags_b, sort_keys=True), r.repetition,
         metric, value, identical)
        for r in results for metric, value in r.metrics.items()
    ]
    # in the catalog database; published in a turn on the warehouse, so two publishers never
    # overtake each other (the later commit holds every row handed back before it)
    with warehouse.connect(), warehouse.held(CONFIG_EXPERIMENTS) as held:
        held.execute(f"DELETE FROM {CONFIG_EXPERIMENTS.name} WHERE experiment_id = ?", [experiment_id])
        held.executemany(f"INSERT INTO {CONFIG_EXPERIMENTS.name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        warehouse.hand_back(held, CONFIG_EXPERIMENTS, experiment_id=experiment_id)
        warehouse.publish_held(CONFIG_EXPERIMENTS)
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
