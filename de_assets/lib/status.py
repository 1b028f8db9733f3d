"""What `de-assets status` reads: the SLOs of the newest evaluated partition (from the warehouse, or
the lake while a run holds it) and the open alerts (from the catalog's SQL database, `lib/ops_store.py`,
where runs and sensors record them: never locked by a run). Read-only; no Dagster.

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
class WarehouseStatus:
    """`error` is set (and the rest empty) when the warehouse cannot be read."""

    error: str | None = None
    locked: bool = False
    slo_partition: str | None = None
    slos: list[tuple] = field(default_factory=list)  # (slo, status, actual, comparison, target, budget_burn)
    open_alerts: int = 0
    alerts: list[tuple] = field(default_factory=list)  # (severity, kind, asset, partition, message, last_seen, n)


def _table_exists(con, name: str) -> bool:
    schema, table = name.split(".")
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                       [schema, table]).fetchone()[0] > 0  # tables and views (the lake serves views)


def read(database: str, now: datetime) -> WarehouseStatus:
    """SLOs of the newest partition in `pipeline_health.slo_status`. Never takes the write lock: a
    warehouse held by a writer (a run in progress) gives `error` (and `locked`), not an exception."""
    try:
        con = duckdb.connect(database, read_only=True)
    except duckdb.Error as error:
        if "lock" in str(error).lower():
            return WarehouseStatus(error=f"{database} is locked by a writer (a run in progress?)", locked=True)
        return WarehouseStatus(error=f"{database} cannot be opened read-only ({type(error).__name__})")
    with con:
        return read_from(con, now)


def read_from(con, now: datetime) -> WarehouseStatus:
    """The same from any connection that has the SLO table (the warehouse, or the lake's views)."""
    status = WarehouseStatus()
    if _table_exists(con, SLO_STATUS.name):
        row = con.execute(f"SELECT max(partition) FROM {SLO_STATUS.name}").fetchone()
        if row[0] is not None:
            status.slo_partition = str(row[0])
            status.slos = con.execute(
                f"SELECT slo, status, actual, comparison, target, budget_burn FROM {SLO_STATUS.name} "
                "WHERE partition = ? ORDER BY slo", [row[0]]).fetchall()
    return status


def read_alerts(engine, now: datetime, status: WarehouseStatus) -> WarehouseStatus:
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
