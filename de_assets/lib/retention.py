"""Retention (R8): how long each layer keeps its partitions, and the deletion that enforces it.

Defaults: raw 30 days, clean (with quarantine and duplicates) 400 days, marts forever. A partition
older than its layer's window is deleted, except days that a running or queued run still needs
(`protected`): a backfill that is about to read raw day d must find it. The file registry
(`raw.source_files`) is kept: it holds no user data and still recognizes a re-delivered file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from de_assets.lib import raw_lake, staged
from de_assets.lib.sql import transaction
from de_assets.lib.tables import (
    DAILY_ENGAGEMENT,
    EXPERIMENT_RESULTS,
    FUNNEL_DAILY,
    KPI_ANOMALIES,
    KPI_CHANGES,
    RAW_EVENTS,
    RAW_REQUESTS,
    RETENTION_LOG,
    REVENUE_DAILY,
    SERVICE_LATENCY,
    Table,
)

LAYERS: dict[str, tuple[Table, ...]] = {
    "raw": (RAW_EVENTS, RAW_REQUESTS),
    "clean": staged.CLEANING,  # clean, quarantine and duplicates
    # retention_cohorts is keyed by cohort week, not a day: it is kept with the marts' window off
    "marts": (DAILY_ENGAGEMENT, FUNNEL_DAILY, REVENUE_DAILY, SERVICE_LATENCY, KPI_CHANGES, KPI_ANOMALIES,
              EXPERIMENT_RESULTS),
}


@dataclass(frozen=True)
class Policy:
    raw_days: int | None = 30
    clean_days: int | None = 400
    marts_days: int | None = None  # None: keep forever

    def cutoffs(self, today: date) -> dict[str, date]:
        """Per layer, the first day kept: partitions before it are deleted."""
        days = {"raw": self.raw_days, "clean": self.clean_days, "marts": self.marts_days}
        return {layer: today - timedelta(days=n) for layer, n in days.items() if n is not None}


def enforce(con, policy: Policy, today: date, protected: set[date], run_id: str, now, log=None) -> list[dict]:
    """Delete every partition older than its layer's window, except protected days; log (in
    `pipeline_health.retention_log` of ``log``, default ``con``: the step's copy of the audit held in
    the catalog database, `Warehouse.held`) and return one row per table: what was deleted and what
    was kept for a running backfill."""
    log = con if log is None else log
    report = []
    kept = sorted(protected)
    with transaction(con):
        for layer, cutoff in policy.cutoffs(today).items():
            for table in LAYERS[layer]:
                column = table.partition_column
                guard = f"AND {column} NOT IN ({', '.join('?' * len(kept))})" if kept else ""
                [(rows,)] = con.execute(
                    f"SELECT count(*) FROM {table.name} "
                    f"WHERE {column} < ? {guard}", [cutoff, *kept],
                ).fetchall()
                if not raw_lake.in_lake(con, table):  # a table kept in the lake: deleted there by the caller
                    con.execute(f"DELETE FROM {table.name} WHERE {column} < ? {guard}", [cutoff, *kept])
                held = [d for d in kept if d < cutoff]
                row = dict(run_id=run_id, run_at=now, layer=layer, table_name=table.name, cutoff=cutoff,
                           rows_deleted=rows, days_kept_for_runs=", ".join(map(str, held)))
                log.execute(f"INSERT INTO {RETENTION_LOG.name} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))
                report.append(row)
    return report
