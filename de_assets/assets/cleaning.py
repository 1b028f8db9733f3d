"""Group `cleaning`: raw rows -> contract-checked, typed, deduplicated clean tables + quarantine."""

import time

import dagster as dg

from de_assets import checks
from de_assets.lib import clean
from de_assets.metadata import definition_metadata, table_metadata
from de_assets.partitions import daily, days_between, partition_dates
from de_assets.resources import Warehouse

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
                "rows_reconcile",
                asset=clean_key,
                blocking=True,
                description="Every landed row of the partition is accounted for: rows landed = clean + "
                "quarantined + duplicates (re-delivered rows and rows of re-delivered files).",
            )
        ],
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        start, end = partition_dates(context)
        with warehouse.connect() as con:
            # one arrival day at a time: memory stays that of one day however long the backfill
            report = clean.CleanReport.total(clean.clean_range(con, spec, day, day) for day in days_between(start, end))
            books = clean.accounting(con, spec, source, start, end)
            clean_meta = table_metadata(con, spec.clean, start, end, started, rows_in=report.rows_in)
            quarantine_meta = table_metadata(con, spec.quarantine, start, end, started)
            rule_results = checks.check_results(con, clean_key, spec.clean, start, end) + checks.check_results(
                con, quarantine_key, spec.quarantine, start, end
            )
        reasons = dg.MetadataValue.md(
            "| reason | rows |\n|---|---|\n" + "\n".join(f"| {r} | {n} |" for r, n in report.reasons.items())
        )
        yield dg.MaterializeResult(asset_key=clean_key, metadata={**clean_meta, **report.as_metadata()})
        yield dg.MaterializeResult(
            asset_key=quarantine_key, metadata={**quarantine_meta, "reasons": reasons}
        )
        yield from rule_results
        yield dg.AssetCheckResult(
            check_name="rows_reconcile",
            asset_key=clean_key,
            passed=bool(books["balanced"]),
            metadata={k: v for k, v in books.items() if k != "balanced"},
        )

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
