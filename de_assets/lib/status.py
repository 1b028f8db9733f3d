"""What `de-assets status` reads: the SLOs of the newest evaluated partition and the open alerts, both
from the catalog's SQL database (`lib/ops_store.py`), where runs and sensors record them: never
locked by a run, whatever holds the warehouse file. Read-only; no Dagster.

An alert is "open" while it keeps being raised: its `last_seen` is within `OPEN_DAYS` days of now
(an alert is raised once per dedupe key and refreshed each time the problem is seen again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from de_assets.lib import ops_store
from de_assets.lib.tables import ALERTS, SLO_STATUS

OPEN_DAYS = 7
MAX_ALERTS = 8
SEVERITY_ORDER = "CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END"


@dataclass
class HealthStatus:
    """What `de-assets status` shows of the pipeline's health: the newest partition's SLOs and the open alerts,
    as the catalog database holds them."""

    slo_partition: str | None = None
    slos: list[tuple] = field(default_factory=list)  # (slo, status, actual, comparison, target, budget_burn)
    open_alerts: int = 0
    alerts: list[tuple] = field(default_factory=list)  # (severity, kind, asset, partition, message, last_seen, n)


def read_slos(engine, status: HealthStatus) -> HealthStatus:
    """Fill `status` with the SLOs of the newest partition in `pipeline_health.slo_status`, as the
    catalog database (``engine``) holds them now."""
    with duckdb.connect() as con:
        ops_store.load(engine, con, SLO_STATUS)
        row = con.execute(f"SELECT max(partition) FROM {SLO_STATUS.name}").fetchone()
        if row[0] is not None:
            status.slo_partition = str(row[0])
            status.slos = con.execute(
                f"SELECT slo, status, actual, comparison, target, budget_burn FROM {SLO_STATUS.name} "
                "WHERE partition = ? ORDER BY slo", [row[0]]).fetchall()
    return status


def read_alerts(engine, now: datetime, status: HealthStatus) -> HealthStatus:
    """Fill `status` with the alerts seen in the `OPEN_DAYS` days before `now` (naive UTC), most
    severe first, as the catalog database (``engine``) holds them now."""
    since = now - timedelta(days=OPEN_DAYS)
    with duckdb.connect() as con:
        ops_store.load_alerts(engine, con)
        status.open_alerts = con.execute(
            f"SELECT count(*) FROM {ALERTS.name} WHERE last_seen >= ?", [since]).fetchone()[0]
        status.alerts = con.execute(
            f"SELECT severity, kind, asset, partition, message, last_seen, occurrences FROM {ALERTS.name} "
            f"WHERE last_seen >= ? ORDER BY {SEVERITY_ORDER}, last_seen DESC LIMIT ?",
            [since, MAX_ALERTS]).fetchall()
    return status
