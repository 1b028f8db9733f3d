"""Materialization metadata shared by every asset: per partition its rows and a preview
(`day_metadata`), per run the table, schema, range and dry-run diff (`run_metadata`)."""

from __future__ import annotations

from datetime import date

import dagster as dg

from de_assets.lib.days import days_between, range_label
from de_assets.lib.privacy import PSEUDONYM_COLUMNS
from de_assets.lib.sql import ident
from de_assets.lib.tables import Table

PREVIEW_ROWS = 10

# Metadata keys that one part of the code location writes and another reads (sensors, the CLI).
DRY_RUN = "dry_run"  # on every materialization of a dry run
PARTITION_RANGE = "partition_range"  # the run's arrival-day range, `start..end`
LAKE_SNAPSHOT_ID = "lake_snapshot_id"  # the lake commit that published the range
LATE_EVENT_DAYS = "late_event_days"  # clean/*: event days before the range that it saw rows of
REPAIRED_DAYS = "repaired_days"  # clean/*: later arrival days it rebuilt
REPAIRED_AFTER = "repaired_after"  # clean/* of a rebuilt day: the range whose cleaning rebuilt it
MARTS_TO_REFRESH = "marts_to_refresh"  # clean/*: event-day ranges whose marts it made stale (a..b, c..d, or none)
REFRESH_RANGE = "refresh_range"  # forget-user: the event days whose marts must be re-served
EVENT_DAYS = "event_days"  # clean/*: the event days whose clean rows it changed (a..b, c..d, or none)
FIRST_DAYS_MOVED = "first_days_moved"  # clean/*: event days that gained or lost a user's first day (a..b, or none)
HEALTH_DAYS = "health_days"  # clean/*: arrival days whose pipeline-health figures it changed (a..b, or none)
CHANGED_DAYS = "changed_days"  # marts/*: the partitions whose rows the step changed (a..b, c..d, or none)
WEEK = "week"  # a weekly table's day: the Monday of the week whose rows its row count and preview show


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in table.columns]
    )


def definition_metadata(table: Table) -> dict:
    """Static metadata on the asset definition (shown in the catalog before any run)."""
    return {
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": f"warehouse.{table.name}",
        "partitioned_by": table.partition_column or "-",
    }


def _markdown(columns: list[str], rows: list[tuple]) -> str:
    def cell(value) -> str:
        text = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "..."

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _dry_run_diff(con, table: Table, where: str, start: date, end: date, rows: int) -> dict:
    """In a dry run (the stored warehouse attached as `stored`), what this step would change."""
    if not con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'stored'").fetchall()[0][0]:
        return {}
    schema, name = table.name.split(".")
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'stored' AND table_schema = ? "
        "AND table_name = ?",  # a table, or a view over the lake (raw, clean, quarantine)
        [schema, name],
    ).fetchall()[0][0]
    stored = con.execute(f"SELECT count(*) FROM stored.{table.name} WHERE {where}", [start, end]).fetchall()[0][0] if exists else 0
    diff = {DRY_RUN: True, "stored_rows": stored, "would_write_rows": rows, "row_diff": rows - stored}
    if exists and table.schema == "marts":  # small tables: also count the rows whose values would change
        [(new, gone)] = con.execute(
            f"""SELECT (SELECT count(*) FROM (SELECT * FROM {table.name} WHERE {where}
                                              EXCEPT ALL SELECT * FROM stored.{table.name} WHERE {where})),
                       (SELECT count(*) FROM (SELECT * FROM stored.{table.name} WHERE {where}
                                              EXCEPT ALL SELECT * FROM {table.name} WHERE {where}))""",
            [start, end] * 4,
        ).fetchall()
        diff.update(rows_added_or_changed=new, rows_removed_or_changed=gone)
    return diff


def _where(table: Table) -> str:
    return table.range_predicate("?", "?")


def run_metadata(con, table: Table, start: date, end: date) -> dict:
    """What describes the run rather than a day, shown on every partition it materialized: the
    table, its schema, the run's partition range and, in a dry run, what the run would change."""
    rows = None
    if con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'stored'").fetchall()[0][0]:
        source = table.name
        rows = con.execute(f"SELECT count(*) FROM {source} WHERE {_where(table)}", [start, end]).fetchone()[0]
    return {
        **(_dry_run_diff(con, table, _where(table), start, end, rows) if rows is not None else {}),
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": f"warehouse.{table.name}",
        PARTITION_RANGE: range_label(start, end),
    }


def day_metadata(con, table: Table, day: date) -> dict:
    """The rows of one partition: their count and a preview."""
    return days_metadata(con, table, day, day)[day]


GROUPED_PREVIEW_MAX_ROWS = 200_000


def days_metadata(con, table: Table, start: date, end: date,
                  grouped_preview_max_rows: int = GROUPED_PREVIEW_MAX_ROWS) -> dict[date, dict]:
    """Per day of [start, end], the rows of its partition (a weekly table: its week's): their count
    and a preview of the first PREVIEW_ROWS rows. One query for the counts of every partition; the
    previews (ordered by the first three preview columns, the others breaking ties) in one query
    over every partition (row_number() per partition) while the range holds at most
    GROUPED_PREVIEW_MAX_ROWS rows, else one top-N query per partition: numbering every row of a
    big day sorts all of it, a LIMIT keeps only the first rows. Same previews either way."""
    where = _where(table)
    source = table.name
    p = ident(table.partition_column)  # e.g. pipeline_health.partition_kpis.partition: a keyword
    counts = dict(con.execute(
        f"SELECT {p}, count(*) FROM {source} WHERE {where} GROUP BY {p}", [start, end]
    ).fetchall())
    # pseudonyms are personal data: they stay out of Dagster's event storage, where forget-user
    # cannot reach them (the preview shows every other plain column)
    preview_cols = [c.name for c in table.columns if c.type != "JSON" and c.name not in PSEUDONYM_COLUMNS]
    cols = ", ".join(preview_cols)
    # ordered by the first three columns, as a single day's preview always was; the other columns
    # only break ties, so rows equal on the first three (experiment_results: one per metric) come
    # in the same order every run instead of whichever order the sort left them in
    order = ", ".join(preview_cols)
    previews: dict[date, list[tuple]] = {}
    if sum(counts.values()) <= grouped_preview_max_rows:
        for partition, *row in con.execute(
            f"""SELECT _partition, {cols} FROM (
                    SELECT {cols}, {p} AS _partition, row_number() OVER (PARTITION BY {p} ORDER BY {order}) AS _n
                    FROM {source} WHERE {where})
                WHERE _n <= {PREVIEW_ROWS}
                ORDER BY _partition, _n""",
            [start, end],
        ).fetchall():
            previews.setdefault(partition, []).append(tuple(row))
    else:
        for partition in sorted(counts):
            previews[partition] = [tuple(row) for row in con.execute(
                f"SELECT {cols} FROM {source} WHERE {p} = ? ORDER BY {order} LIMIT {PREVIEW_ROWS}", [partition]
            ).fetchall()]
    out = {}
    for day in days_between(start, end):
        partition = table.partition_value(day)
        out[day] = {
            "dagster/row_count": counts.get(partition, 0),
            "preview": dg.MetadataValue.md(_markdown(preview_cols, previews.get(partition, []))),
            **({WEEK: str(partition)} if table.weekly else {}),
        }
    return out
