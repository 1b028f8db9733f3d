"""Retention (`lib/retention.py`) on hand-made partitions of an in-memory warehouse, no Dagster."""

from datetime import date, datetime

from de_assets.lib import retention

TODAY = date(2026, 11, 30)  # raw keeps 30 days (from 10-31), clean 400 (from 2025-10-26), marts forever


def _rows(con, table: str, column: str) -> list[str]:
    return [d for (d,) in con.execute(f"SELECT {column}::VARCHAR FROM {table} ORDER BY 1").fetchall()]


def test_partitions_older_than_their_layer_window_go_except_the_days_a_run_needs(con):
    for day in ("2025-10-25", "2026-10-01", "2026-10-30", "2026-10-31", "2026-11-29"):
        con.execute("INSERT INTO raw.events (arrival_date, source_file, line_no) VALUES (?, 'f', 1)", [day])
        con.execute("INSERT INTO clean.events_duplicates (arrival_date, source_file, line_no, dedupe_key) "
                    "VALUES (?, 'f', 1, 'm')", [day])
        con.execute("INSERT INTO marts.daily_engagement (event_date, dau) VALUES (?, 1)", [day])
    report = retention.enforce(con, retention.Policy(), TODAY, protected={date(2026, 10, 1)}, run_id="r",
                               now=datetime(2026, 11, 30, 3, 0))
    # raw: before 10-31 go (2025-10-25, 10-30), 10-01 is kept for a running backfill
    assert _rows(con, "raw.events", "arrival_date") == ["2026-10-01", "2026-10-31", "2026-11-29"]
    # clean layer: only 2025-10-25 is older than 400 days (cutoff 2025-10-26)
    assert _rows(con, "clean.events_duplicates", "arrival_date") == [
        "2026-10-01", "2026-10-30", "2026-10-31", "2026-11-29"]
    # marts: kept forever (no cutoff, not in the report)
    assert len(_rows(con, "marts.daily_engagement", "event_date")) == 5
    by_table = {r["table_name"]: r for r in report}
    assert (by_table["raw.events"]["rows_deleted"], by_table["raw.events"]["days_kept_for_runs"]) == (2, "2026-10-01")
    assert (by_table["clean.events_duplicates"]["rows_deleted"],
            by_table["clean.events_duplicates"]["days_kept_for_runs"]) == (1, "")
    assert "marts.daily_engagement" not in by_table
    logged = con.execute("SELECT table_name, rows_deleted FROM pipeline_health.retention_log "
                         "WHERE table_name IN ('raw.events', 'clean.events_duplicates') ORDER BY 1").fetchall()
    assert logged == [("clean.events_duplicates", 1), ("raw.events", 2)]
