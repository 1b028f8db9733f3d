"""Group `cleaning`: raw rows -> contract-checked, typed, deduplicated clean tables + quarantine."""

import time

import dagster as dg

from de_assets import checks
from de_assets.lib import clean, health, marts, reconcile, served
from de_assets.lib.arrivals import contiguous_ranges
from de_assets.lib.days import days_between, ranges_label, short_label
from de_assets.lib.tables import FORGOTTEN_ROWS, PARTITION_KPIS, SOURCE_FILES
from de_assets.metadata import (
    EVENT_DAYS,
    FIRST_DAYS_MOVED,
    HEALTH_DAYS,
    LAKE_SNAPSHOT_ID,
    LATE_EVENT_DAYS,
    MARTS_TO_REFRESH,
    REPAIRED_AFTER,
    REPAIRED_DAYS,
    definition_metadata,
)
from de_assets.partitions import daily, partition_dates
from de_assets.bookkeeping import check_events, evaluate, finish
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:data-platform"]
RAW_DAYS_READ = dg.TimeWindowPartitionMapping(start_offset=-7, allow_nonexistent_upstream_partitions=True)


def _fields_table(fields: dict[str, int]) -> str:
    if not fields:
        return "none"
    return "| fields that differ | rows |\n|---|---|\n" + "\n".join(f"| {f} | {n} |" for f, n in fields.items())


def _reasons_table(report: clean.CleanReport) -> dg.MetadataValue:
    """Why the day's rows are in quarantine (rows held back by the gate included)."""
    held_back = {f"{clean.HELD_BACK_REASON} (status held_back)": report.rows_held_back} if report.rows_held_back else {}
    return dg.MetadataValue.md(
        "| reason | rows |\n|---|---|\n" + "\n".join(f"| {r} | {n} |" for r, n in {**report.reasons, **held_back}.items())
    )


def _health_counts(warehouse: Warehouse, clean_key: dg.AssetKey, since) -> dict:
    """What the health series take from this cleaning's KPI rows from arrival day `since` on, as the
    catalog database holds them (`health.series_counts`)."""
    asset = clean_key.to_user_string()
    with warehouse.held(PARTITION_KPIS, asset=asset, partition=(since, None)) as kpis:
        return health.series_counts(kpis, asset, since)


def _clean_later_days(con, spec, start, end, clean_day) -> dict:
    """Rebuild (staged in ``con``) the later arrival days that serve a re-delivery of a key first
    delivered in [start, end] (`reconcile.stale_later_days`: they were built before these days were
    ingested), so the tables equal a sequential build whatever order runs of different days ran in.
    Returns the days, their reports and seconds, and the event days of their rows before and after."""
    days = reconcile.stale_later_days(con, spec, start, end)
    if not days:
        return {"days": [], "event_days": [], "reports": {}}
    before = reconcile.event_days(con, spec, days)
    reports = {}
    for day in days:
        started = time.perf_counter()
        reports[day] = (clean_day(day), time.perf_counter() - started)
    return {"days": days, "reports": reports,
            "event_days": sorted(set(before) | set(reconcile.event_days(con, spec, days)))}


def _commit_later_days(context, con, warehouse, spec, clean_key, quarantine_key, start, end, repaired) -> None:
    """Record the KPIs of the later days `_clean_later_days` rebuilt, publish them, and record each as
    a materialization of its partition, saying why."""
    if not repaired["days"]:
        return
    label = short_label(start, end)
    for day, (r, seconds) in repaired["reports"].items():
        warehouse.record_kpis(con, clean_key.to_user_string(), context.run.run_id, spec.clean, day, day, seconds,
                              {day: health.DayCounts(r.rows_in, r.rows_clean, r.rows_quarantined, r.rows_duplicate)})
    for table in (spec.clean, spec.duplicates, spec.quarantine):  # one lake commit per table
        warehouse.publish(con, table, days=repaired["days"])
    for day, (r, _) in repaired["reports"].items():
        for key, rows in ((clean_key, r.rows_clean), (quarantine_key, r.rows_quarantined + r.rows_held_back)):
            context.log_event(dg.AssetMaterialization(
                asset_key=key, partition=str(day),
                description=f"Rebuilt: arrival days {label}, cleaned after it, first delivered some of its keys.",
                metadata={"dagster/row_count": rows, REPAIRED_AFTER: label, "rows_duplicate": r.rows_duplicate},
            ))
    context.log.info(f"rebuilt {len(repaired['days'])} later arrival day(s) that served re-deliveries of keys "
                     f"first delivered in {label}: {', '.join(map(str, repaired['days']))}")


def _cleaning_evaluations(clean_key: dg.AssetKey, reports: dict, books_by_day: dict,
                          limit: float) -> list[dg.AssetCheckEvaluation]:
    """The cleaning's own checks, per day: the quarantine-rate gate, the books (`rows_reconcile`) and
    the duplicates that conflict with their original delivery."""
    evaluations = []
    for day, r in reports.items():
        books = books_by_day[day]
        evaluations += [
            checks.evaluation(clean_key, checks.HOLD_BACK_GATE, day, not r.gated_days, {
                "quarantine_rate": round(r.quarantine_rate, 4),
                "max_quarantine_rate": limit,
                "held_back": bool(r.gated_days),
                "rows_held_back": r.rows_held_back,
            }, blocking=True),
            checks.evaluation(clean_key, "rows_reconcile", day, bool(books["balanced"]), {
                **{k: v for k, v in books.items() if k not in ("balanced", "unbalanced_files")},
                **({"unbalanced_files": dg.MetadataValue.md(books["unbalanced_files"])}
                   if "unbalanced_files" in books else {}),
            }, blocking=True),
            checks.evaluation(clean_key, "conflicting_duplicates", day, r.rows_duplicate_conflicting == 0, {
                "rows_duplicate": r.rows_duplicate,
                "rows_duplicate_conflicting": r.rows_duplicate_conflicting,
                "conflicting_fields": dg.MetadataValue.md(_fields_table(r.conflicting_fields)),
            }, blocking=False),
        ]
    return evaluations


def _clean_asset(source: str, spec: clean.CleanSpec, clean_doc: str) -> dg.AssetsDefinition:
    # Keys `<layer>/<layer>_<source>`: the UI labels a node with the key's last part only.
    clean_key = dg.AssetKey(["clean", f"clean_{source}"])
    quarantine_key = dg.AssetKey(["quarantine", f"quarantine_{source}"])
    common = dict(
        # the arrival day and the days before it: a key delivered on an earlier day makes this day's
        # delivery a duplicate (the graph shows the late-data lookback; dedupe reads every earlier day)
        deps=[dg.AssetDep(dg.AssetKey(["raw", f"raw_{source}"]), partition_mapping=RAW_DAYS_READ)],
        group_name="cleaning",
        partitions_def=daily,
        kinds={"duckdb", "pandera"},
        owners=OWNERS,
        code_version="2",
    )

    @dg.multi_asset(
        name=f"clean_{source}",
        pool=WAREHOUSE_POOL,
        specs=[
            dg.AssetSpec(
                clean_key, description=clean_doc, tags={"layer": "clean", "pii": "pseudonymized"},
                metadata=definition_metadata(spec.clean), **common,
            ),
            dg.AssetSpec(
                quarantine_key,
                description=f"Dead-letter table: every {source} row rejected by the contract or unparseable "
                "(status `rejected`), and every row of a day held back by the quarantine-rate gate that passed "
                "the contract but is not served (status `held_back`), with the reason, the source file and line, "
                "and the raw-layer row (already pseudonymized). Nothing is dropped silently.",
                tags={"layer": "quarantine", "pii": "pseudonymized"},
                metadata=definition_metadata(spec.quarantine),
                **common,
            ),
        ],
        check_specs=checks.check_specs(clean_key, spec.clean)
        + checks.check_specs(quarantine_key, spec.quarantine)
        + [
            checks.spec(
                checks.HOLD_BACK_GATE,
                clean_key,
                blocking=True,
                description="At most `max_quarantine_rate` (default 20%, DE_ASSETS_MAX_QUARANTINE_RATE) of a "
                "day's rows fail the contract. A day above it is held back: its clean rows are not replaced "
                "(the previously served rows stay served), its rejected rows and the rows that passed but are "
                "not served are written to the quarantine table (status `rejected` / `held_back`), and "
                "everything downstream is skipped.",
            ),
            checks.spec(
                "rows_reconcile",
                clean_key,
                blocking=True,
                description="Every landed row of the partition is accounted for, per landed file: rows landed = "
                "clean + quarantined + duplicates (re-delivered rows and rows of re-delivered files). On a "
                "held-back day, quarantined includes the held-back rows and clean the rows still served.",
            ),
            checks.spec(
                "conflicting_duplicates",
                clean_key,
                blocking=False,
                description="Warning. No duplicate of the partition conflicts with its original delivery: same "
                f"{spec.key}, different content (a different user or payload; see `conflict` and "
                f"`conflicting_fields` in `{spec.duplicates.name}`). Counts only, never ids or content.",
            ),
        ],
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, settings: PipelineSettings, alerting: Alerting
    ):
        started = time.perf_counter()
        start, end = partition_dates(context)
        limit = settings.max_quarantine_rate
        lookback = settings.late_lookback_days
        earliest = settings.earliest_event_ts()

        def compute(con) -> tuple:
            """Everything the step writes, staged in ``con`` (lib/staged.py), from what ``con`` reads."""
            has_users = reconcile.remember_first_days(con, spec, start, end)
            served_before = served.partition_fingerprints(con, spec.clean, start=start, end=end, by="event_date")
            # in batches of whole days (lib/clean.py): memory stays bounded however long the backfill
            reports = clean.clean_days(con, spec, start, end, limit, settings.dedupe_strategy, lookback, earliest)
            repaired = _clean_later_days(con, spec, start, end, lambda day: clean.clean_range(
                con, spec, day, day, limit, settings.dedupe_strategy, lookback, earliest))
            return has_users, served_before, reports, repaired

        def reads_again(table, days) -> bool:
            """The verdicts on [start, end] read raw of the days up to `end` (first deliveries), the
            clean rows of [start, end] (a held-back day's), and the later days (their repair)."""
            return min(days, default=end) <= end if table is spec.raw else max(days, default=start) >= start

        def ahead(con) -> dict:
            """What the commit reads of the staged rows (the checks, the metadata) and the data files
            of the range's partitions, evaluated and written before the turn (bookkeeping.evaluate)."""
            duplicates = spec.duplicates
            return {"clean": evaluate(con, warehouse, clean_key, spec.clean, start, end, write=True),
                    "quarantine": evaluate(con, warehouse, quarantine_key, spec.quarantine, start, end, write=True),
                    "duplicates": warehouse.write_ahead(con, duplicates, duplicates.partition_values(start, end))}

        # Computed in a private connection over pinned snapshots, staged there (lib/staged.py), checked
        # and written as data files without holding the warehouse file; the file is taken to commit:
        # computed again there when raw of a day up to `end`, or the cleaning's tables from `start` on,
        # were committed meanwhile (the cleanings of other days, in runs at once); then `finish`
        # commits the days whose blocking checks passed, and the materializations are recorded while
        # the file is held.
        reads = (spec.raw, spec.clean, spec.quarantine, spec.duplicates)
        with warehouse.computing(spec.clean, reads, log=context.log, reads_again=reads_again) as step:
            computed, evaluated = compute(step.con), ahead(step.con)
            with step.turn():
                if step.committed_meanwhile:  # again, on the new snapshots
                    computed, evaluated = compute(step.con), ahead(step.con)
                con = step.con
                has_users, served_before, daily_reports, repaired = computed
                health_before = _health_counts(warehouse, clean_key, start)  # before this step's KPI rows
                _commit_later_days(context, con, warehouse, spec, clean_key, quarantine_key, start, end, repaired)
                days_rows = {"source": source, "arrival_date": (start, end)}  # kept in the catalog database
                books_by_day = reconcile.accounting_by_day(con, spec, source, list(daily_reports),
                                                           forgotten=warehouse.held_rows(FORGOTTEN_ROWS, **days_rows),
                                                           registry=warehouse.held_rows(SOURCE_FILES, **days_rows))
                extra = _cleaning_evaluations(clean_key, daily_reports, books_by_day, limit)
                counts = {
                    day: health.DayCounts(r.rows_in, r.rows_clean, r.rows_quarantined, r.rows_duplicate)
                    for day, r in daily_reports.items()
                }
                clean_meta, clean_results = finish(
                    context, con, alerting, warehouse, clean_key, spec.clean, start, end, started, counts=counts,
                    extra_results=tuple(extra), per_day={day: r.as_metadata() for day, r in daily_reports.items()},
                    publish=True, evaluated=evaluated["clean"],
                )
                if LAKE_SNAPSHOT_ID in clean_meta:  # duplicates are served with the clean rows they were told from
                    blocked = checks.blocked_days(clean_results)
                    served_days = [d for d in days_between(start, end) if d not in blocked]
                    warehouse.publish(con, spec.duplicates, days=served_days, written=evaluated["duplicates"])
                # the step's time is on clean/*; the quarantine rows only carry their own reporting time
                late_days = reconcile.late_event_days(con, spec, start, end)
                quarantine_meta, quarantine_results = finish(
                    context, con, alerting, warehouse, quarantine_key, spec.quarantine, start, end, time.perf_counter(),
                    per_day={day: {"reasons": _reasons_table(r)} for day, r in daily_reports.items()},
                    publish=True, evaluated=evaluated["quarantine"],
                )
                # of the run, read by the late_data_refresh sensor: the event days whose clean rows changed
                # (a re-run that serves the same rows changes nothing downstream), and the marts they made stale
                if served_before:
                    after = served.partition_fingerprints(con, spec.clean, start=start, end=end, by="event_date")
                    changed = served.changed_partitions(served_before, after)
                else:  # first cleaning of these days: every event day of their rows
                    changed = reconcile.event_days(con, spec, list(days_between(start, end)))
                changed = sorted({*changed, *repaired["event_days"]})
                refresh = reconcile.marts_to_refresh(start, end, [d for d in changed if d < start], repaired["days"],
                                                 repaired["event_days"], marts.TRAILING_WINDOW_DAYS) if changed else []
                moved = reconcile.first_days_moved(con, spec, start, end, repaired["days"]) if has_users else []
                health_moved = served.changed_partitions(health_before, _health_counts(warehouse, clean_key, start))
                late = {
                    LATE_EVENT_DAYS: ", ".join(str(d) for d in late_days) or "none",
                    REPAIRED_DAYS: ", ".join(str(d) for d in repaired["days"]) or "none",
                    MARTS_TO_REFRESH: ranges_label(refresh),
                    FIRST_DAYS_MOVED: ranges_label(contiguous_ranges(moved)),
                    EVENT_DAYS: ranges_label(contiguous_ranges(changed)),
                    HEALTH_DAYS: ranges_label(contiguous_ranges(health_moved)),
                }
                # Recorded while this step still holds the warehouse, like every served asset's materialization:
                # the event log's order is then the order the data was written in, which is what the
                # late_data_refresh sensor compares (a mart recorded before this cleaning read the data before it).
                yield dg.MaterializeResult(asset_key=clean_key, metadata={**clean_meta, **late})
                yield dg.MaterializeResult(asset_key=quarantine_key, metadata=quarantine_meta)
        report = clean.CleanReport.total(daily_reports.values())
        if report.gated_days:
            context.log.error(
                f"{source}: quarantine rate above {limit:.0%} on {', '.join(report.gated_days)}; those days are "
                f"held back: their served clean rows were not replaced, {report.rows_quarantined:,} rejected and "
                f"{report.rows_held_back:,} held-back rows are in {spec.quarantine.name} (status rejected / "
                "held_back), and downstream assets are skipped."
            )
        if report.rows_duplicate_conflicting:
            context.log.warning(
                f"{source}: {report.rows_duplicate_conflicting:,} duplicate rows conflict with their original "
                f"delivery (same {spec.key}, different content); see {spec.duplicates.name}.conflicting_fields."
            )
        yield from check_events(context, clean_results + quarantine_results)

    return _asset


clean_events = _clean_asset(
    "events",
    clean.EVENTS,
    "Clean Segment events, one row per messageId, partitioned by arrival day. Validated against the "
    "`EventContract` (pandera, lazy); timestamps in UTC and clock-skew corrected "
    "(receivedAt - (sentAt - timestamp)); enums trimmed and lower-cased; revenue typed. "
    "`event_date` is the corrected event day: late events keep their own day, so the marts count "
    "them toward the day they happened. Events before `earliest_event_time` (default 1970-01-02, "
    "DE_ASSETS_EARLIEST_EVENT_TIME) are quarantined as `event_ts:implausibly_old`. The first delivery of a "
    "messageId wins; later ones are counted in `clean.events_duplicates`, flagged `conflict` when their "
    "content differs from the original's.",
)
clean_requests = _clean_asset(
    "requests",
    clean.REQUESTS,
    "Clean request-log samples, partitioned by arrival day. Validated against the `RequestContract`; "
    "ISO-8601 or epoch (s/ms) timestamps to UTC; status and latency typed; exact re-deliveries "
    "(same fingerprint) counted in `clean.requests_duplicates`.",
)

# This module's assets, in declaration order (assets/layers.py joins the modules' lists).
ALL: list[dg.AssetsDefinition] = [clean_events, clean_requests]
