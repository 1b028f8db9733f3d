"""Group `cleaning`: raw rows -> contract-checked, typed, deduplicated clean tables + quarantine."""

import time

import dagster as dg

from de_assets import checks
from de_assets.lib import clean, health
from de_assets.metadata import definition_metadata
from de_assets.partitions import daily, days_between, partition_dates
from de_assets.reporting import finish
from de_assets.resources import WAREHOUSE_POOL, Alerting, PipelineSettings, Warehouse

OWNERS = ["team:data-platform"]


def _clean_asset(source: str, spec: clean.CleanSpec, clean_doc: str) -> dg.AssetsDefinition:
    clean_key = dg.AssetKey(["clean", source])
    quarantine_key = dg.AssetKey(["quarantine", source])
    common = dict(
        deps=[dg.AssetKey(["raw", source])],
        group_name="cleaning",
        partitions_def=daily,
        kinds={"duckdb", "pandera"},
        owners=OWNERS,
        code_version="1",
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
                description=f"Dead-letter table: every {source} row rejected by the contract or unparseable, "
                "with the reason, the source file and line, and the raw-layer row (already pseudonymized). "
                "Nothing is dropped silently.",
                tags={"layer": "quarantine", "pii": "pseudonymized"},
                metadata=definition_metadata(spec.quarantine),
                **common,
            ),
        ],
        check_specs=checks.check_specs(clean_key, spec.clean)
        + checks.check_specs(quarantine_key, spec.quarantine)
        + [
            dg.AssetCheckSpec(
                "quarantine_rate_within_threshold",
                asset=clean_key,
                blocking=True,
                description="At most `max_quarantine_rate` (default 20%, DE_ASSETS_MAX_QUARANTINE_RATE) of a "
                "day's rows fail the contract. A day above it is not written: the clean and quarantine "
                "tables keep the day's previous rows, and everything downstream is skipped.",
            ),
            dg.AssetCheckSpec(
                "rows_reconcile",
                asset=clean_key,
                blocking=True,
                description="Every landed row of the partition is accounted for: rows landed = clean + "
                "quarantined + duplicates (re-delivered rows and rows of re-delivered files). Days held "
                "back by the quarantine-rate gate are left out (they were not written).",
            )
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
        with warehouse.connect() as con:
            # one arrival day at a time: memory stays that of one day however long the backfill
            daily_reports = {
                day: clean.clean_range(
                    con, spec, day, day, limit, settings.dedupe_strategy, settings.late_lookback_days
                )
                for day in days_between(start, end)
            }
            report = clean.CleanReport.total(daily_reports.values())
            written = [day for day, r in daily_reports.items() if not r.gated_days]
            books = clean.accounting(con, spec, source, written)
            gate = dg.AssetCheckResult(
                check_name="quarantine_rate_within_threshold",
                asset_key=clean_key,
                passed=not report.gated_days,
                metadata={
                    "quarantine_rate": round(report.quarantine_rate, 4),
                    "max_quarantine_rate": limit,
                    "days_held_back": ", ".join(report.gated_days) or "none",
                },
            )
            reconcile = dg.AssetCheckResult(
                check_name="rows_reconcile",
                asset_key=clean_key,
                passed=bool(books["balanced"]),
                metadata={k: v for k, v in books.items() if k != "balanced"},
            )
            counts = {
                day: health.DayCounts(r.rows_in, r.rows_clean, r.rows_quarantined, r.rows_duplicate)
                for day, r in daily_reports.items()
            }
            clean_meta, clean_results = finish(
                context, con, alerting, clean_key, spec.clean, start, end, started,
                rows_in=report.rows_in, counts=counts, extra_results=(gate, reconcile),
            )
            # the step's time is on clean/*; the quarantine rows only carry their own reporting time
            late_days = clean.late_event_days(con, spec, start, end)
            quarantine_meta, quarantine_results = finish(
                context, con, alerting, quarantine_key, spec.quarantine, start, end, time.perf_counter()
            )
        reasons = dg.MetadataValue.md(
            "| reason | rows |\n|---|---|\n" + "\n".join(f"| {r} | {n} |" for r, n in report.reasons.items())
        )
        if report.gated_days:
            context.log.error(
                f"{source}: quarantine rate above {limit:.0%} on {', '.join(report.gated_days)}; those days were "
                "not written (previous rows kept) and downstream assets are skipped."
            )
        late = {"late_event_days": ", ".join(str(d) for d in late_days) or "none"}  # read by late_data_refresh
        yield dg.MaterializeResult(asset_key=clean_key, metadata={**clean_meta, **report.as_metadata(), **late})
        yield dg.MaterializeResult(asset_key=quarantine_key, metadata={**quarantine_meta, "reasons": reasons})
        yield from clean_results
        yield from quarantine_results

    return _asset


clean_events = _clean_asset(
    "events",
    clean.EVENTS,
    "Clean Segment events, one row per messageId, partitioned by arrival day. Validated against the "
    "`EventContract` (pandera, lazy); timestamps in UTC and clock-skew corrected "
    "(receivedAt - (sentAt - timestamp)); enums trimmed and lower-cased; revenue typed. "
    "`event_date` is the corrected event day: late events keep their own day, so the marts count "
    "them toward the day they happened. The first delivery of a messageId wins; later ones are "
    "counted in `clean.events_duplicates`.",
)
clean_requests = _clean_asset(
    "requests",
    clean.REQUESTS,
    "Clean request-log samples, partitioned by arrival day. Validated against the `RequestContract`; "
    "ISO-8601 or epoch (s/ms) timestamps to UTC; status and latency typed; exact re-deliveries "
    "(same fingerprint) counted in `clean.requests_duplicates`.",
)
