"""Warning-level data-quality rules: drift in volume, source schema and category mix.

These rules are *warnings*: a failure is reported (as a non-blocking Dagster asset check) so that a
person looks at it, but it never stops the pipeline. Unlike the blocking rules of `quality.py`,
nothing here proves the data wrong; it only says that a partition looks different from the recent
past, which may be a real change in the business as well as a broken sender.

Same shape as `quality.py`: ``rule(con, table, start, end) -> (passed, metadata)`` with ``__name__``
the check name and ``__doc__`` its description; a table lists the warnings it runs where it is
declared (`Table.warnings`, in `lib/tables/`). Metadata values are plain scalars (int, float, str,
bool; lists are comma-separated strings, missing numbers are -1) so they can become Dagster metadata.

What each rule measures:

* ``volume_vs_trailing_weeks`` - rows landed per arrival day (from ``raw.source_files``) compared
  with what the trailing weeks predict for that weekday (`de_assets.anomaly.detect`): catches a
  missing or partial delivery, or a sudden flood, without flagging ordinary weekends.
* ``source_schema_change`` - the set of source fields that carry a value (typed columns, plus the
  top-level keys of ``extra`` for events) compared with the previous week: catches a sender that
  adds, renames or stops sending a field.
* ``distribution_drift(expression, label)`` - the Population Stability Index of a categorical
  expression (event type, service, status class...) compared with the previous week: catches a
  shift in the mix, e.g. one platform's events vanishing or 5xx responses surging.

Grouped form. Each rule also has ``rule.by_day(con, table, start, end) -> {day: (passed, metadata)}``,
what ``rule(con, table, day, day)`` gives for every day of the range (each day against ITS baseline),
from one query over the range and its baseline: the per-day figures (rows landed, fields present,
category counts) are read once, grouped by arrival day, and each day's window is assembled in
Python. The volume rule still scores each day with its own call of the detector, on exactly the
series the per-day query builds (the detector's warm-up and scale depend on where that series
starts, so one call over the whole range would not give the same scores).

Why the windows. Every rule is partition-scoped: it reads the range being checked plus a short,
bounded baseline just before it (8 weeks of per-day file counts for volume, 7 arrival days of rows
for schema and distribution), never the whole table. So the cost of a check does not grow with the
history, a backfill of old partitions compares them with *their* past rather than with today, and
re-running a partition gives the same answer however much data arrived later.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import TYPE_CHECKING

from de_assets.lib.days import days_between
from de_assets.lib.quality import with_by_day

if TYPE_CHECKING:  # the tables declare their rules from here: a runtime import would be a cycle
    from de_assets.lib.tables import Table

VOLUME_HISTORY = timedelta(weeks=8)  # trailing window fed to detect() before the range
BASELINE_DAYS = 7  # schema / distribution baseline: the arrival days just before the range
SHARE_FLOOR = 1e-4  # a share of 0 would make ln(p / q) infinite

# Columns that are not fields sent by the source: lineage, ingestion bookkeeping, the fingerprint
# computed at ingestion, and `extra`, whose top-level keys are the fields (reported as "extra.<key>").
NOT_SOURCE_FIELDS = {
    "arrival_date", "source_file", "line_no", "ingested_at", "parse_error", "raw_text", "record_id", "extra",
}


def _rows(con, sql: str, params: dict) -> list[tuple]:
    return con.execute(sql, params).fetchall()


# --------------------------------------------------------------------------------------- volume

def _landing_source(table: Table) -> str:
    """The landing source a raw table is ingested from (`raw.source_files.source`): raw.events -> events."""
    schema, _, source = table.name.partition(".")
    if schema != "raw":
        raise ValueError(f"volume_vs_trailing_weeks: {table.name} is not a raw table (raw.<landing source>)")
    return source


def _volume_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    """Rows landed per arrival day read once for the range and its history; each day is then scored
    on the series `volume_vs_trailing_weeks(con, table, day, day)` builds: the days from the first
    day with files in [day - 8 weeks, day] (or the day itself) to the day, a day without files 0."""
    landed = dict(_rows(
        con,
        """
        SELECT arrival_date, sum(rows) AS rows
        FROM raw.source_files
        WHERE source = $source AND status = 'ingested' AND arrival_date BETWEEN $history_start AND $end
        GROUP BY arrival_date
        """,
        {"source": _landing_source(table), "history_start": start - VOLUME_HISTORY, "end": end},
    ))
    out = {}
    for day in days_between(start, end):
        in_window = [d for d in landed if day - VOLUME_HISTORY <= d <= day]
        first = min(in_window, default=day)
        series = [(d, landed.get(d) or 0) for d in days_between(min(first, day), day)]
        out[day] = _volume_result(series, day)
    return out


@with_by_day(_volume_by_day)
def volume_vs_trailing_weeks(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """Rows landed per arrival day are in line with the same weekday of the trailing 8 weeks (robust,
    seasonality-aware anomaly detection on the ingested file row counts of raw.source_files; a day
    without files counts 0). A day with too little history to be scored is not flagged."""
    # pandas and the detector are imported in `_volume_result`, not at the top: every table declares
    # its rules from this module, and most processes that import the tables (CLI commands, status)
    # never score a volume nor need pandas.
    history_start = start - VOLUME_HISTORY
    # Dense calendar of days: a day without any ingested file counts 0. It starts at the first day
    # with files in the window, so the days before the source existed are not taken as zeros.
    series = _rows(
        con,
        """
        WITH landed AS (
            SELECT arrival_date, sum(rows) AS rows
            FROM raw.source_files
            WHERE source = $source AND status = 'ingested' AND arrival_date BETWEEN $history_start AND $end
            GROUP BY arrival_date
        ),
        calendar AS (
            SELECT d::DATE AS arrival_date
            FROM generate_series(
                (SELECT least(min(arrival_date), $start) FROM landed)::TIMESTAMP,
                $end::TIMESTAMP, INTERVAL 1 DAY) AS t(d)
        )
        SELECT calendar.arrival_date, coalesce(landed.rows, 0) AS rows
        FROM calendar LEFT JOIN landed USING (arrival_date)
        ORDER BY calendar.arrival_date
        """,
        {"source": _landing_source(table), "history_start": history_start, "start": start, "end": end},
    )
    return _volume_result(series, start)


def _volume_result(series: list[tuple], start: date) -> tuple[bool, dict]:
    """Score the dense (arrival day, rows) series and report the days from `start` on."""
    import pandas as pd

    from de_assets.anomaly import detect

    frame = pd.DataFrame(series, columns=["ts", "value"])
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["value"] = frame["value"].astype(float)
    scored = detect(frame)
    in_range = scored[scored["ts"] >= pd.Timestamp(start)]

    rows = int(in_range["value"].sum())
    anomalous = [ts.date().isoformat() for ts in in_range.loc[in_range["is_anomaly"], "ts"]]
    last = in_range.iloc[-1]
    metadata = {
        "rows": rows,
        "expected": -1.0 if math.isnan(last["expected"]) else round(float(last["expected"]), 1),
        "score": 0.0 if math.isnan(last["score"]) else round(float(last["score"]), 2),
        "anomalous_days": ",".join(anomalous),
        "note": "",
    }
    if in_range["score"].isna().any():  # too little history to score a day: it cannot be flagged
        metadata["note"] = "insufficient history"
    return not anomalous, metadata


# --------------------------------------------------------------------------------------- schema

def _source_columns(table: Table) -> list[str]:
    return [c for c in table.column_names if c not in NOT_SOURCE_FIELDS]


def _schema_result(current: set[str], baseline: set[str], days_current: int, days_baseline: int) -> tuple[bool, dict]:
    added, removed = sorted(current - baseline), sorted(baseline - current)
    metadata = {
        "fields_added": ",".join(added),
        "fields_removed": ",".join(removed),
        "baseline_days": days_baseline,
        "fields": len(current),
        "note": "",
    }
    if days_baseline == 0:
        metadata.update(fields_added="", fields_removed="", note="no baseline")
        return True, metadata
    if days_current == 0:  # an empty range is the volume rule's business, not a schema change
        metadata.update(fields_added="", fields_removed="", note="no rows in range")
        return True, metadata
    return not added and not removed, metadata


def _schema_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    """The fields present per arrival day, read once for the range and the week before it; each
    day compared with the union of the 7 days before it."""
    params = {"baseline_start": start - timedelta(days=BASELINE_DAYS), "end": end}
    columns = _source_columns(table)
    non_null = ", ".join(f'count("{c}") > 0' for c in columns)
    fields: dict[date, set[str]] = {}  # one entry per arrival day with rows
    for arrival_date, *present in _rows(
        con,
        f"""
        SELECT arrival_date, {non_null}
        FROM {table.name}
        WHERE arrival_date BETWEEN $baseline_start AND $end
        GROUP BY arrival_date
        """,
        params,
    ):
        fields[arrival_date] = {c for c, p in zip(columns, present) if p}
    if "extra" in table.column_names:
        for arrival_date, key in _rows(
            con,
            f"""
            SELECT DISTINCT arrival_date, unnest(json_keys(extra)) AS key
            FROM {table.name}
            WHERE arrival_date BETWEEN $baseline_start AND $end AND extra IS NOT NULL
            """,
            params,
        ):
            fields[arrival_date].add(f"extra.{key}")
    out = {}
    for day in days_between(start, end):
        before = [d for d in days_between(day - timedelta(days=BASELINE_DAYS), day - timedelta(days=1)) if d in fields]
        baseline = set().union(*(fields[d] for d in before))
        out[day] = _schema_result(fields.get(day, set()), baseline, int(day in fields), len(before))
    return out


@with_by_day(_schema_by_day)
def source_schema_change(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """The source fields carrying a value in the range (typed columns, and the top-level keys of
    `extra` for events) are the same as in the 7 arrival days before it: no field added or dropped."""
    params = {"baseline_start": start - timedelta(days=BASELINE_DAYS), "start": start, "end": end}
    columns = _source_columns(table)
    source = table.name
    non_null = ", ".join(f'count("{c}") > 0' for c in columns)
    # One row per period (baseline / range): how many days have rows, and which columns have a value.
    periods = _rows(
        con,
        f"""
        SELECT arrival_date >= $start AS in_range, count(DISTINCT arrival_date) AS days, {non_null}
        FROM {source}
        WHERE arrival_date BETWEEN $baseline_start AND $end
        GROUP BY in_range
        """,
        params,
    )
    fields = {True: set(), False: set()}
    days = {True: 0, False: 0}
    for in_range, n_days, *present in periods:
        days[in_range] = n_days
        fields[in_range] = {c for c, p in zip(columns, present) if p}
    if "extra" in table.column_names:
        keys = _rows(
            con,
            f"""
            SELECT DISTINCT arrival_date >= $start AS in_range, unnest(json_keys(extra)) AS key
            FROM {source}
            WHERE arrival_date BETWEEN $baseline_start AND $end AND extra IS NOT NULL
            """,
            params,
        )
        for in_range, key in keys:
            fields[in_range].add(f"extra.{key}")
    return _schema_result(fields[True], fields[False], days[True], days[False])


# --------------------------------------------------------------------------------- distribution

def psi(current: dict[str, int], baseline: dict[str, int], floor: float = SHARE_FLOOR) -> tuple[float, str]:
    """Population Stability Index of two category counts, and the category whose share moved most.

    Shares are floored at ``floor`` (a category absent on one side would give ln 0); PSI is
    sum((p - q) * ln(p / q)) over the categories of either side, with p the current and q the
    baseline share. Both counts must be non-empty.
    """
    n_cur, n_base = sum(current.values()), sum(baseline.values())
    total, mover, mover_delta = 0.0, "", -1.0
    for category in sorted(set(current) | set(baseline)):
        p_raw, q_raw = current.get(category, 0) / n_cur, baseline.get(category, 0) / n_base
        p, q = max(p_raw, floor), max(q_raw, floor)
        total += (p - q) * math.log(p / q)
        if abs(p_raw - q_raw) > mover_delta:
            mover, mover_delta = category, abs(p_raw - q_raw)
    return total, mover


def distribution_drift(expression: str, label: str, top: int = 20, threshold: float = 0.2):
    """A rule comparing the category mix of the SQL ``expression`` in the range with the 7 arrival
    days before it (Population Stability Index; warns above ``threshold``)."""

    def result(current: dict[str, int], baseline: dict[str, int]) -> tuple[bool, dict]:
        # The baseline's `top` most frequent categories keep their name (ties: alphabetical); every
        # other category, including any new in the range, is "(other)". "(null)" is always its own.
        ranked = sorted((c for c in baseline if c != "(null)"), key=lambda c: (-baseline[c], c))
        keep = set(ranked[:top]) | {"(null)"}

        def collapse(counts: dict[str, int]) -> dict[str, int]:
            out: dict[str, int] = {}
            for c, n in counts.items():
                bucket = c if c in keep else "(other)"
                out[bucket] = out.get(bucket, 0) + n
            return out

        metadata = {
            "psi": 0.0,
            "rows": sum(current.values()),
            "baseline_rows": sum(baseline.values()),
            "biggest_mover": "",
            "threshold": threshold,
            "note": "",
        }
        if not baseline:
            metadata["note"] = "no baseline rows"
            return True, metadata
        if not current:
            metadata["note"] = "no rows in range"
            return True, metadata
        value, mover = psi(collapse(current), collapse(baseline))
        metadata.update(psi=round(value, 4), biggest_mover=mover)
        return value <= threshold, metadata

    def check(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
        counts = _rows(
            con,
            f"""
            SELECT arrival_date >= $start AS in_range,
                   coalesce(({expression})::VARCHAR, '(null)') AS category,
                   count(*) AS n
            FROM {table.name}
            WHERE arrival_date BETWEEN $baseline_start AND $end
            GROUP BY in_range, category
            """,
            {"baseline_start": start - timedelta(days=BASELINE_DAYS), "start": start, "end": end},
        )
        baseline = {c: n for in_range, c, n in counts if not in_range}
        current = {c: n for in_range, c, n in counts if in_range}
        return result(current, baseline)

    def by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
        """Category counts per arrival day read once for the range and the week before it; each day
        compared with the sum of the 7 days before it."""
        per_day: dict[date, dict[str, int]] = {}
        for arrival_date, category, n in _rows(
            con,
            f"""
            SELECT arrival_date,
                   coalesce(({expression})::VARCHAR, '(null)') AS category,
                   count(*) AS n
            FROM {table.name}
            WHERE arrival_date BETWEEN $baseline_start AND $end
            GROUP BY arrival_date, category
            """,
            {"baseline_start": start - timedelta(days=BASELINE_DAYS), "end": end},
        ):
            per_day.setdefault(arrival_date, {})[category] = n
        out = {}
        for day in days_between(start, end):
            baseline: dict[str, int] = {}
            for d in days_between(day - timedelta(days=BASELINE_DAYS), day - timedelta(days=1)):
                for c, n in per_day.get(d, {}).items():
                    baseline[c] = baseline.get(c, 0) + n
            out[day] = result(dict(per_day.get(day, {})), baseline)
        return out

    check.by_day = by_day
    check.__name__ = f"{label}_distribution_drift"
    check.__doc__ = (
        f"The mix of `{expression}` in the range is close to the 7 arrival days before it: Population "
        f"Stability Index at most {threshold} (top {top} baseline categories, others as (other), NULL as (null))."
    )
    return check

