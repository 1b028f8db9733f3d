"""The pipeline measuring itself: one `pipeline_health.partition_kpis` row per partition x asset x run.

Every step records its rows as it finishes (`Warehouse.record_kpis`: `kpi_rows` measured on the
step's connection, held in the catalog database, `lib/ops_store.py`), so failed, gated and partial runs are
recorded too. The functions here are SQL over DuckDB connections holding the rows they read. A
range run writes one row per day; the step's seconds are shared among the days in proportion to
their input rows, and `rows_per_second` is the step's overall throughput.

Data freshness is "event time -> available": seconds from the newest event of the partition (never
a future-dated one) to the moment the step finished. Raw partitions, whose rows are not typed yet,
use the end of their arrival day instead.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from de_assets.lib.days import days_between, utc_now
from de_assets.lib.sql import insert_rows, transaction
from de_assets.lib.tables import PARTITION_KPIS, SLO_STATUS, Table

# Where a table's event time is read from: (table, timestamp column, day column of the partition).
_EVENT_TIME = {
    "clean.events": ("clean.events", "event_ts", "arrival_date"),
    "clean.requests": ("clean.requests", "request_ts", "arrival_date"),
    "marts.service_latency": ("clean.requests", "request_ts", "event_date"),
}
_MART_EVENTS = ("clean.events", "event_ts", "event_date")


@dataclass
class DayCounts:
    rows_in: int
    rows_out: int
    rows_quarantined: int = 0
    rows_duplicate: int = 0


def rows_per_day(con, table: Table, start: date, end: date) -> dict[date, DayCounts]:
    """Rows of [start, end] per partition day (retention cells count toward each day of their week)."""
    column = table.partition_column
    sql = (f"SELECT d::DATE, count(t.{column}) FROM range($start::DATE, $end::DATE + 1, INTERVAL 1 DAY) r(d) "
           f"LEFT JOIN {table.name} t ON t.{column} = {table.partition_of_day('d')} GROUP BY 1")
    return {day: DayCounts(n, n) for day, n in con.execute(sql, {"start": start, "end": end}).fetchall()}


def freshness_seconds(con, table: Table, start: date, end: date, now: datetime) -> dict[date, float]:
    """Per day: seconds from the newest (non-future) event of the partition to `now`."""
    if table.schema == "raw":
        return {}
    source, ts, day_column = _EVENT_TIME.get(table.name, _MART_EVENTS)
    rows = con.execute(
        f"SELECT {day_column}, max({ts}) FROM {source} WHERE {day_column} BETWEEN $start AND $end "
        f"AND {ts} <= $now GROUP BY 1",
        {"start": start, "end": end, "now": now},
    ).fetchall()
    return {day: (now - newest).total_seconds() for day, newest in rows if newest is not None}


def kpi_rows(
    con, asset: str, run_id: str, table: Table, start: date, end: date, seconds: float,
    counts: dict[date, DayCounts] | None = None,
) -> list[tuple]:
    """This run's KPI rows for the asset's days (columns of `PARTITION_KPIS`), measured in ``con``."""
    now = utc_now()
    counts = counts if counts is not None else rows_per_day(con, table, start, end)
    fresh = freshness_seconds(con, table, start, end, now)
    total_in = sum(c.rows_in for c in counts.values())
    throughput = total_in / seconds if seconds > 0 else 0.0
    rows = []
    for day, c in sorted(counts.items()):
        share = c.rows_in / total_in if total_in else 1 / len(counts)
        freshness = fresh.get(day)
        if freshness is None and table.schema == "raw":
            freshness = (now - (datetime(day.year, day.month, day.day) + timedelta(days=1))).total_seconds()
        rows.append((day, asset, run_id, c.rows_in, c.rows_out, c.rows_quarantined, c.rows_duplicate,
                     seconds * share, throughput, freshness, now))
    return rows


def day_figures(rows: list[tuple]) -> dict[date, dict]:
    """Each day's KPI figures (`kpi_rows`) as numeric metadata for the UI plots: its share of the
    step's seconds, the step's rows/s and its freshness (left out when the day has no event to
    measure it by)."""
    return {
        r[0]: {
            "seconds": round(r[7], 3),
            "rows_per_second": round(r[8], 1),
            **({"freshness_seconds": round(r[9], 1)} if r[9] is not None else {}),
        }
        for r in rows
    }


# Where "was there any data for this day" is read from, per table: (relation, day column) pairs.
_SOURCES = {
    "raw.events": ("raw.events", "arrival_date"),
    "raw.requests": ("raw.requests", "arrival_date"),
    "clean.events": ("raw.events", "arrival_date"),
    "quarantine.events": ("raw.events", "arrival_date"),
    "clean.requests": ("raw.requests", "arrival_date"),
    "quarantine.requests": ("raw.requests", "arrival_date"),
    "marts.service_latency": ("clean.requests", "event_date"),
}
_ANY_EVENTS = (("clean.events", "event_date"), ("clean.requests", "event_date"))
_EVENTS_ONLY = ("marts.daily_engagement", "marts.funnel_daily", "marts.retention_cohorts", "marts.revenue_daily",
                "marts.experiment_results")


def source_rows_per_day(con, table: Table, start: date, end: date) -> dict[date, int]:
    """Per day of [start, end], the rows the table's partition is built from: raw rows of the
    arrival day for raw/clean/quarantine, clean events (and/or requests) of the event day for the
    marts and the pipeline's own tables. 0 means no data landed for the day: whatever the table
    holds for it (a row of zeros, say) is not served data."""
    if table.name in _SOURCES:
        pairs = (_SOURCES[table.name],)
    elif table.name in _EVENTS_ONLY:
        pairs = (_ANY_EVENTS[0],)
    else:
        pairs = _ANY_EVENTS
    counts = dict.fromkeys(days_between(start, end), 0)
    for name, column in pairs:
        for day, n in con.execute(
            f"SELECT {column}, count(*) FROM {name} WHERE {column} BETWEEN $start AND $end GROUP BY 1",
            {"start": start, "end": end},
        ).fetchall():
            counts[day] += n
    return counts


# --- SLOs ------------------------------------------------------------------------------------------

SLO_WINDOW_DAYS = 28


@dataclass(frozen=True)
class SloTargets:
    """Targets per partition; `objective` is the share of partitions in 28 days that must meet each."""

    freshness_hours: float = 36.0  # end of the event day -> every mart available
    completeness: float = 0.8  # rows landed vs the median of the same weekday in the 4 weeks before
    quarantine_rate: float = 0.05
    duplicate_rate: float = 0.10
    objective: float = 0.9
    backfill_after_days: float = 2.0  # first loaded later than this: a backfill, freshness not judged
    # Below this many rows a ratio says little: completeness is judged only against a baseline
    # median of at least `min_volume` rows in, the quarantine and duplicate rates only on days with
    # at least `min_volume` rows in; otherwise their status is `not_applicable` (no breach, no burn).
    min_volume: float = 100.0

    def slos(self) -> list[tuple[str, float, str]]:
        return [
            ("freshness_hours", self.freshness_hours, "<="),
            ("completeness", self.completeness, ">="),
            ("quarantine_rate", self.quarantine_rate, "<="),
            ("duplicate_rate", self.duplicate_rate, "<="),
        ]


# The newest row per partition and asset (a re-run supersedes the earlier runs' rows).
LATEST_KPIS = f"""
    SELECT * FROM {PARTITION_KPIS.name}
    QUALIFY row_number() OVER (PARTITION BY partition, asset ORDER BY recorded_at DESC, run_id DESC) = 1
"""


# Pipeline-health series scored for anomalies next to the product KPIs (deterministic for a given
# input, so re-running a day gives the same scores; timings are plotted in the UI instead).
HEALTH_SERIES_SQL = f"""
    SELECT partition AS event_date, 'pipeline.' || metric AS kpi, value FROM (
        SELECT partition, sum(rows_in)::DOUBLE AS rows_in,
               sum(rows_quarantined) / nullif(sum(rows_in), 0) AS quarantine_rate,
               sum(rows_duplicate) / nullif(sum(rows_in), 0) AS duplicate_rate
        FROM ({LATEST_KPIS}) WHERE asset LIKE 'clean/%' GROUP BY partition)
    UNPIVOT INCLUDE NULLS (value FOR metric IN (rows_in, quarantine_rate, duplicate_rate))
"""


def series_counts(con, asset: str, since: date) -> dict[date, tuple[int, int, int]]:
    """Per arrival day from `since` on, what the health series (`HEALTH_SERIES_SQL`) take from the
    latest KPI row of the cleaning `asset`: (rows in, quarantined, duplicate). Taken before and
    after a cleaning, the days whose health figures it changed."""
    return {day: (rows_in, quarantined, duplicate) for day, rows_in, quarantined, duplicate in con.execute(
        f"SELECT partition, rows_in, rows_quarantined, rows_duplicate FROM ({LATEST_KPIS}) "
        "WHERE asset = ? AND partition >= ?", [asset, since]).fetchall()}


def measure(con, start: date, end: date, targets: SloTargets) -> dict[date, dict[str, tuple[float | None, str | None]]]:
    """The measured value of every SLO for each day of [start, end] from `partition_kpis`, with an
    optional status override; three grouped queries for the whole range."""
    bounds = {"start": start, "end": end}
    counts = {day: (rows_in, quarantined, duplicate) for day, rows_in, quarantined, duplicate in con.execute(
        f"SELECT partition, sum(rows_in), sum(rows_quarantined), sum(rows_duplicate) FROM ({LATEST_KPIS}) "
        "WHERE partition BETWEEN $start AND $end AND asset LIKE 'clean/%' GROUP BY partition",
        bounds,
    ).fetchall()}
    # the completeness baseline: the median of the same weekday's rows in the 4 weeks before
    baselines = dict(con.execute(
        f"""WITH daily AS (
                SELECT partition, sum(rows_in) AS n FROM ({LATEST_KPIS})
                WHERE asset LIKE 'clean/%' AND partition BETWEEN $start - 28 AND $end - 7
                GROUP BY partition)
            SELECT d.day, median(daily.n)
            FROM (SELECT unnest($days::DATE[]) AS day) d
            JOIN daily ON daily.partition IN (d.day - 7, d.day - 14, d.day - 21, d.day - 28)
            GROUP BY d.day""",
        {**bounds, "days": days_between(start, end)},
    ).fetchall())
    marts_of = {day: (first_available, marts) for day, first_available, marts in con.execute(
        f"""SELECT partition, max(first_seen), count(*) FROM (
                SELECT partition, asset, min(recorded_at) AS first_seen FROM {PARTITION_KPIS.name}
                WHERE partition BETWEEN $start AND $end AND asset LIKE 'marts/%' GROUP BY partition, asset)
            GROUP BY partition""",
        bounds,
    ).fetchall()}
    measured = {}
    for day in days_between(start, end):
        rows_in, quarantined, duplicate = counts.get(day, (None, None, None))
        baseline = baselines.get(day)
        first_available, marts = marts_of.get(day, (None, 0))
        day_end = datetime(day.year, day.month, day.day) + timedelta(days=1)
        freshness = (first_available - day_end).total_seconds() / 3600 if marts else None
        late_load = freshness is not None and freshness > targets.backfill_after_days * 24
        sparse_baseline = baseline is not None and baseline < targets.min_volume
        sparse_day = rows_in is not None and rows_in < targets.min_volume
        measured[day] = {
            "freshness_hours": (freshness, "backfill" if late_load else None),
            "completeness": (rows_in / baseline if rows_in is not None and baseline else None,
                             "not_applicable" if sparse_baseline else None),
            "quarantine_rate": (quarantined / rows_in if rows_in else None, "not_applicable" if sparse_day else None),
            "duplicate_rate": (duplicate / rows_in if rows_in else None, "not_applicable" if sparse_day else None),
        }
    return measured


def evaluate_slos(con, start: date, targets: SloTargets, end: date | None = None) -> list[dict]:
    """Evaluate every SLO for each day of [start, end] (one day: ``start``), measured on ``con``'s
    KPI rows, store them in its `pipeline_health.slo_status` (the step's copies of the tables held
    in the catalog database, `Warehouse.held`), return the rows.

    Status is met, breached, no_data (nothing to measure yet), not_applicable (too little volume
    for the ratio to mean something: see `SloTargets.min_volume`) or backfill (freshness of a
    partition first loaded long after its day is not judged; missing partitions are the
    stale-partition sensor's job). The error budget: 28 x (1 - objective) breaches allowed per SLO
    in 28 days: a day's breaches are counted over the 27 days before it, the range's own days as
    evaluated here (in day order, as one run per day would), the days before it as stored.
    """
    end = end or start
    now = utc_now()
    budget = SLO_WINDOW_DAYS * (1 - targets.objective)
    measured = measure(con, start, end, targets)
    breached_on: dict[str, list[date]] = {}
    for name, day in con.execute(
        f"SELECT slo, partition FROM {SLO_STATUS.name} "
        "WHERE status = 'breached' AND partition BETWEEN ? - 27 AND ? - 1",
        [start, start],
    ).fetchall():
        breached_on.setdefault(name, []).append(day)
    rows = []
    for day in days_between(start, end):
        for name, target, comparison in targets.slos():
            actual, override = measured[day][name]
            if override:
                status = override
            elif actual is None:
                status = "no_data"
            else:
                met = actual <= target if comparison == "<=" else actual >= target
                status = "met" if met else "breached"
            if status == "breached":
                breached_on.setdefault(name, []).append(day)
            breached = sum(day - timedelta(days=27) <= d <= day for d in breached_on.get(name, []))
            rows.append(dict(partition=day, slo=name, target=target, comparison=comparison, actual=actual,
                             status=status, breached_days_28d=breached, error_budget_days=budget,
                             budget_burn=breached / budget if budget else float(breached > 0), evaluated_at=now))
    with transaction(con):
        con.execute(f"DELETE FROM {SLO_STATUS.name} WHERE partition BETWEEN ? AND ?", [start, end])
        insert_rows(con, SLO_STATUS.name, list(rows[0]), [list(r.values()) for r in rows])
    return rows
