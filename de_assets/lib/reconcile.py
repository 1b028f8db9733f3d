"""After a cleaning of arrival days [start, end]: its books, and what else its rows touch.

* `accounting`: where every landed row of the days went, per landed file (landed = clean +
  quarantined + duplicates), counted independently of the clean step's own figures.
* `late_event_days`: event days before the range that its rows count toward (late data).
* `stale_later_days` / `event_days`: later arrival days, already cleaned, that served a re-delivery
  as the original (they were built before these days were ingested); the cleaning asset rebuilds them.
* `marts_to_refresh`: the event-day ranges whose marts the cleaning may have made stale (read by
  the `late_data_refresh` sensor).
* `remember_first_days` / `first_days_moved`: the event days that gained or lost a user's first day
  ever (new users, retention cohorts read it from the whole history, not a trailing window).

The cleaning itself (`clean_range`) is in `de_assets/lib/clean.py`.
"""

from __future__ import annotations

from datetime import date, timedelta

from de_assets.lib.clean import CleanSpec
from de_assets.lib.tables import FORGOTTEN_ROWS, SOURCE_FILES


def stale_later_days(con, spec: CleanSpec, start: date, end: date) -> list[date]:
    """Arrival days after `end`, already cleaned, that serve a row whose key was delivered in
    [start, end]: built before these days were ingested (runs of different days ran in another
    order, or at once), they served a re-delivery as the original. Oldest first."""
    rows = con.execute(
        f"""WITH keys AS (SELECT DISTINCT {spec.key} FROM {spec.raw.name}
                          WHERE arrival_date BETWEEN $start AND $end AND {spec.key} IS NOT NULL AND parse_error IS NULL),
                 served AS (SELECT arrival_date, source_file, line_no FROM {spec.clean.name} WHERE arrival_date > $end
                            UNION ALL
                            SELECT arrival_date, source_file, line_no FROM {spec.quarantine.name}
                            WHERE arrival_date > $end AND status = 'held_back')
            SELECT DISTINCT r.arrival_date FROM {spec.raw.name} r JOIN served s USING (arrival_date, source_file, line_no)
            WHERE r.arrival_date > $end AND r.parse_error IS NULL AND r.{spec.key} IN (SELECT {spec.key} FROM keys)
            ORDER BY 1""",
        {"start": start, "end": end},
    ).fetchall()
    return [d for (d,) in rows]


def event_days(con, spec: CleanSpec, days: list[date]) -> list[date]:
    """Event days of the clean rows of these arrival days."""
    if not days:
        return []
    rows = con.execute(f"SELECT DISTINCT event_date FROM {spec.clean.name} WHERE list_contains(?, arrival_date) "
                       "ORDER BY 1", [days]).fetchall()
    return [d for (d,) in rows]


def marts_to_refresh(start: date, end: date, late_days: list[date], repaired_days: list[date],
                     repaired_event_days: list[date], window_days: int) -> list[tuple[date, date]]:
    """The event days, outside the run's own range [start, end] (its marts are built after cleaning),
    whose marts a cleaning of arrival days [start, end] may have made stale, as (first, last) ranges:

    * from the earliest late event day (or event day of a repaired row) through the range's end: the
      days before the range, and the range's own days, whose comparisons with earlier days read them;
    * after it: the trailing windows that read the range or a repaired day, up to
      max(end, last repaired day) + window_days - 1. They were only built before if runs of later
      days ran first or at once, or the range is re-run in the past; the sensor re-serves only the
      days whose marts were served before this cleaning.
    """
    ranges = []
    first = min([*late_days, *repaired_event_days, start])
    if first < start:
        ranges.append((first, end))
    ranges.append((end + timedelta(days=1), max([end, *repaired_days]) + timedelta(days=window_days - 1)))
    return ranges


_FIRST_DAYS = "_first_days_before_cleaning"


def _first_days_sql(spec: CleanSpec, users: str) -> str:
    return (f"SELECT user_key, min(event_date) AS first_day FROM {spec.clean.name} "
            f"WHERE user_key IN ({users}) GROUP BY user_key")


def remember_first_days(con, spec: CleanSpec, start: date, end: date) -> bool:
    """Before cleaning arrival days [start, end]: the first event day ever of each user of their clean
    rows and of their raw rows (the users the cleaning can add or remove events of; a temporary table,
    read by `first_days_moved`). False for a source without users."""
    if "user_key" not in spec.clean.column_names:
        return False
    users = (f"SELECT user_key FROM {spec.clean.name} WHERE arrival_date BETWEEN $start AND $end UNION "
             f"SELECT coalesce(user_id, anonymous_id) FROM {spec.raw.name} WHERE arrival_date BETWEEN $start AND $end")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_FIRST_DAYS} AS {_first_days_sql(spec, users)}",
                {"start": start, "end": end})
    return True


def first_days_moved(con, spec: CleanSpec, start: date, end: date, repaired_days: list[date]) -> list[date]:
    """After the cleaning `remember_first_days` saw: the event days that gained or lost a user's first
    day ever (a user's events of an earlier day were added or removed). Their `new_users`, and every
    retention cell of the users' cohorts, changed, however far from the range they are. Oldest first."""
    users = (f"SELECT user_key FROM {_FIRST_DAYS} UNION SELECT user_key FROM {spec.clean.name} "
             "WHERE arrival_date BETWEEN $start AND $end OR list_contains($repaired, arrival_date)")
    rows = con.execute(
        f"""WITH after AS ({_first_days_sql(spec, users)})
            SELECT DISTINCT unnest([b.first_day, a.first_day]) AS d
            FROM {_FIRST_DAYS} b FULL JOIN after a USING (user_key)
            WHERE b.first_day IS DISTINCT FROM a.first_day ORDER BY d""",
        {"start": start, "end": end, "repaired": list(repaired_days)},
    ).fetchall()
    con.execute(f"DROP TABLE {_FIRST_DAYS}")
    return [d for (d,) in rows if d is not None]


def late_event_days(con, spec: CleanSpec, start: date, end: date) -> list[date]:
    """Event days before `start` that rows arriving in [start, end] count toward (late data)."""
    rows = con.execute(
        f"SELECT DISTINCT event_date FROM {spec.clean.name} WHERE arrival_date BETWEEN ? AND ? "
        "AND event_date < ? ORDER BY 1",
        [start, end, start],
    ).fetchall()
    return [d for (d,) in rows]


UNBALANCED_FILES_SHOWN = 20


_KINDS = ("landed", "redelivered", "forgotten", "raw", "clean", "quarantined", "held_back", "duplicate_rows")


def accounting(con, spec: CleanSpec, source: str, days: list[date], forgotten=None, registry=None) -> dict:
    """Count, independently from the clean step's own figures, where every landed row of the
    arrival days went, per landed file (held-back days included: their rows are in the quarantine
    table as rejected or held back, or still served from before).

    The identity that must hold for every file: rows landed = clean + quarantined + duplicates,
    where the duplicates of a re-delivered (byte-identical) file are all its rows; and the raw rows
    of a file = its clean + quarantined + duplicate-table rows. Rows erased by forget-user requests
    left the books on purpose and are subtracted from the landed count. ``forgotten`` holds their
    counts (the rows of `raw.forgotten_rows` of the days) and ``registry`` the landed files (the rows
    of `raw.source_files` of the days), each an Arrow table or a DataFrame: they are kept in the
    catalog database (`Warehouse.held_rows`); None reads ``con``'s own table of that name.
    """
    if not days:
        return {"days_checked": 0, "files_checked": 0, "balanced": True}
    return _books(_files(con, spec, source, days, forgotten, registry), len(days))


def accounting_by_day(con, spec: CleanSpec, source: str, days: list[date], forgotten=None,
                      registry=None) -> dict[date, dict]:
    """`accounting` of each day on its own (one query for all of them)."""
    if not days:
        return {}
    files = _files(con, spec, source, days, forgotten, registry)
    by_day = {day: rows for day, rows in files.groupby(files["arrival_date"].dt.date)} if len(files) else {}
    return {day: _books(by_day.get(day, files.iloc[0:0]), 1) for day in days}


def _files(con, spec: CleanSpec, source: str, days: list[date], forgotten=None, registry=None):
    """Per landed file of the days: rows landed, re-delivered, forgotten, in raw, clean, quarantined,
    held back and in the duplicates table, and whether its books balance."""
    window = "list_contains($days, arrival_date)"

    def per_file(label: str, relation: str, count: str = "count(*)", where: str = "TRUE", file: str = "source_file"):
        return (f"SELECT '{label}' AS k, arrival_date, {file} AS source_file, {count} AS n FROM {relation} "
                f"WHERE {window} AND {where} GROUP BY ALL")

    # the rows given are read under names of their own, the others from ``con``'s tables
    files_in = SOURCE_FILES.name if registry is None else "_accounting_source_files"
    forgotten_in = FORGOTTEN_ROWS.name if forgotten is None else "_accounting_forgotten_rows"
    given = {name: rows for name, rows in ((files_in, registry), (forgotten_in, forgotten)) if rows is not None}
    parts = [
        per_file("landed", files_in, "sum(rows)", "source = $source AND status <> 'redelivered'", "path"),
        per_file("redelivered", files_in, "sum(rows)", "source = $source AND status = 'redelivered'", "path"),
        per_file("forgotten", forgotten_in, "sum(rows)", "source = $source"),
        per_file("raw", spec.raw.name),
        per_file("clean", spec.clean.name),
        per_file("quarantined", spec.quarantine.name),
        per_file("held_back", spec.quarantine.name, where="status = 'held_back'"),
        per_file("duplicate_rows", spec.duplicates.name),
    ]
    pivot = ", ".join(f"coalesce(sum(n) FILTER (WHERE k = '{k}'), 0)::BIGINT AS {k}" for k in _KINDS)
    for name, rows in given.items():
        con.register(name, rows)
    try:
        files = con.execute(
            f"SELECT arrival_date, source_file, {pivot} FROM ({' UNION ALL '.join(parts)}) "
            "GROUP BY ALL ORDER BY arrival_date, source_file",
            {"days": days, "source": source},
        ).df()
    finally:
        for name in given:
            con.unregister(name)
    files["landed_net"] = files["landed"] + files["redelivered"] - files["forgotten"]
    files["duplicate"] = files["duplicate_rows"] + files["redelivered"]
    files["balanced"] = (files["landed_net"] == files["clean"] + files["quarantined"] + files["duplicate"]) & (
        files["raw"] == files["clean"] + files["quarantined"] + files["duplicate_rows"]
    )
    return files


def _books(files, days_checked: int) -> dict:
    unbalanced = files[~files["balanced"]]
    total = {k: int(files[k].sum()) for k in (*_KINDS, "duplicate", "landed_net")}
    books = {
        "days_checked": days_checked,
        "files_checked": len(files),
        "files_unbalanced": len(unbalanced),
        "rows_landed": total["landed_net"],
        "rows_raw": total["raw"],
        "rows_clean": total["clean"],
        "rows_quarantined": total["quarantined"],
        "rows_held_back": total["held_back"],
        "rows_duplicate": total["duplicate"],
        "rows_in_redelivered_files": total["redelivered"],
        "rows_forgotten": total["forgotten"],
        "balanced": unbalanced.empty,
    }
    if not unbalanced.empty:  # which files, with their counts (file paths and numbers only, never rows)
        shown = unbalanced.head(UNBALANCED_FILES_SHOWN)
        header = "| day | file | landed | clean | quarantined | duplicate | raw |\n|---|---|---|---|---|---|---|\n"
        books["unbalanced_files"] = header + "\n".join(
            f"| {r.arrival_date:%Y-%m-%d} | {r.source_file} | {r.landed_net} | {r.clean} | {r.quarantined} | "
            f"{r.duplicate} | {r.raw} |" for r in shown.itertuples()
        )
    return books
