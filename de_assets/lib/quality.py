"""Data-quality rules on the served tables, as plain SQL functions over a partition range.

Each rule returns ``(passed, metadata)``; the assets report them as Dagster asset checks (blocking:
a failure stops every downstream asset), and tests call them directly on hand-made tables. Which
rules a table runs is declared with the table (`Table.checks`, in `lib/tables/`).

Each rule also has a grouped form, ``rule.by_day(con, table, start, end) -> {day: (passed, metadata)}``:
the same SQL aggregates in ONE query over the whole range, grouped by the table's partition column,
giving every day exactly what ``rule(con, table, day, day)`` gives (a day of a weekly table gets its
week's result; a day without rows gets the zero counts of an empty partition). A range run checks
every day with one query per rule instead of one per rule and day.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from de_assets.lib.days import days_between
from de_assets.lib.privacy import EMAIL_RE, IPV6_RE, IPV6_SHORT_RE
from de_assets.lib.sql import ident

if TYPE_CHECKING:  # the tables declare their rules from here: a runtime import would be a cycle
    from de_assets.lib.tables import Table

# A full IPv4 address that was not truncated (last octet other than 0).
UNTRUNCATED_IPV4_RE = r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.(?:[1-9]\d{0,2}|0\d+)\b"
PSEUDONYM_RE = r"[0-9a-f]{32}"


def _window(table: Table) -> str:
    return table.range_predicate("$start", "$end")


def _one(con, sql: str, start: date, end: date):
    return con.execute(sql, {"start": start, "end": end}).fetchall()[0]


def _per_day(con, table: Table, sql: str, start: date, end: date, empty: tuple) -> dict[date, tuple]:
    """Run `sql` once over [start, end]; it returns one row per partition: (partition value, figures...).
    Per day of [start, end], the figures of the partition holding it, or `empty` when it has no rows."""
    figures = {row[0]: tuple(row[1:]) for row in con.execute(sql, {"start": start, "end": end}).fetchall()}
    return {day: figures.get(table.partition_value(day), empty) for day in days_between(start, end)}


def _grouped(con, table: Table, aggregates: str, start: date, end: date, empty: tuple,
             source: str | None = None) -> dict[date, tuple]:
    """`aggregates` per partition of the range (over `source`, a subquery exposing the partition
    column, or the table itself)."""
    p = ident(table.partition_column)
    sql = f"SELECT {p}, {aggregates} FROM {source or table.name} WHERE {_window(table)} GROUP BY {p}"
    return _per_day(con, table, sql, start, end, empty)


def with_by_day(by_day):
    """Attach the grouped form `by_day` to a rule."""
    def attach(rule):
        rule.by_day = by_day
        return rule
    return attach


def _unique_key_result(table: Table, dupes: int, rows: int) -> tuple[bool, dict]:
    return dupes == 0, {"rows": rows, "duplicate_keys": dupes, "key": ", ".join(table.key)}


def _unique_key_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    key = ", ".join(table.key)
    figures = _grouped(con, table, f"count(*) - count(DISTINCT ({key})), count(*)", start, end, (0, 0))
    return {day: _unique_key_result(table, *f) for day, f in figures.items()}


@with_by_day(_unique_key_by_day)
def unique_key(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """The table's grain (its key columns) identifies every row of the range exactly once."""
    key = ", ".join(table.key)
    dupes, rows = _one(
        con,
        f"SELECT count(*) - count(DISTINCT ({key})), count(*) FROM {table.name} WHERE {_window(table)}",
        start, end,
    )
    return _unique_key_result(table, dupes, rows)


def _null_keys(table: Table) -> str:
    return " + ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in table.key)


def _keys_not_null_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    figures = _grouped(con, table, _null_keys(table), start, end, (0,))
    return {day: (bad == 0, {"rows_with_null_key": bad}) for day, (bad,) in figures.items()}


@with_by_day(_keys_not_null_by_day)
def keys_not_null(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """No key column is NULL."""
    (bad,) = _one(con, f"SELECT {_null_keys(table)} FROM {table.name} WHERE {_window(table)}", start, end)
    return bad == 0, {"rows_with_null_key": bad}


def _funnel_monotonic_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    p = ident(table.partition_column)
    # the window is also cut by partition, as the per-day query (which reads one partition) sees it
    figures = _grouped(
        con, table, "count(*) FILTER (WHERE grew)", start, end, (0,),
        source=f"""(SELECT {p}, users > lag(users) OVER (PARTITION BY {p}, event_date, funnel ORDER BY step_order) AS grew
                    FROM {table.name} WHERE {_window(table)})""",
    )
    return {day: (bad == 0, {"steps_above_previous": bad}) for day, (bad,) in figures.items()}


@with_by_day(_funnel_monotonic_by_day)
def funnel_monotonic(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """Users at step k never exceed users at step k-1 (same day, same funnel)."""
    (bad,) = _one(
        con,
        f"""SELECT count(*) FROM (
                SELECT users > lag(users) OVER (PARTITION BY event_date, funnel ORDER BY step_order) AS grew
                FROM {table.name} WHERE {_window(table)}) WHERE grew""",
        start, end,
    )
    return bad == 0, {"steps_above_previous": bad}


def rate_in_unit_interval(column: str):
    def check(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
        (bad,) = _one(
            con,
            f"SELECT count(*) FROM {table.name} WHERE {_window(table)} AND NOT ({column} BETWEEN 0 AND 1)",
            start, end,
        )
        return bad == 0, {f"{column}_outside_0_1": bad}

    def by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
        figures = _grouped(con, table, f"count(*) FILTER (WHERE NOT ({column} BETWEEN 0 AND 1))", start, end, (0,))
        return {day: (bad == 0, {f"{column}_outside_0_1": bad}) for day, (bad,) in figures.items()}

    check.by_day = by_day
    check.__doc__ = f"`{column}` lies in [0, 1]."
    check.__name__ = f"{column}_in_unit_interval"
    return check


def _text_blob(table: Table) -> str:
    text_columns = [c.name for c in table.columns if c.type in ("VARCHAR", "JSON")]
    return " || ' ' || ".join(f"coalesce({c}::VARCHAR, '')" for c in text_columns)


def _plain_id_condition(table: Table) -> str | None:
    id_columns = [c for c in ("user_key", "user_id", "anonymous_id") if c in table.column_names]
    if not id_columns:
        return None
    return " OR ".join(f"({c} IS NOT NULL AND NOT regexp_full_match({c}, '{PSEUDONYM_RE}'))" for c in id_columns)


def _no_raw_pii_result(emails: int, ips: int, plain_ids: int) -> tuple[bool, dict]:
    return emails + ips + plain_ids == 0, {"rows_with_email": emails, "rows_with_full_ip": ips,
                                           "rows_with_unhashed_user_id": plain_ids}


# Rows of text `t` with an e-mail address, and with an untruncated IP address. Each regex costs about
# a second per million rows, so a cheap necessary condition guards the ones that have one (an e-mail
# has an `@`, a compressed IPv6 address a `::`; CASE evaluates the regex only where it holds) and the
# IPv4 and full IPv6 patterns are one alternation (one scan instead of two).
_PII_COUNTS = f"""count(*) FILTER (WHERE CASE WHEN contains(t, '@') THEN regexp_matches(t, '{EMAIL_RE}') ELSE false END),
    count(*) FILTER (WHERE regexp_matches(t, '({UNTRUNCATED_IPV4_RE})|({IPV6_RE})')
                        OR CASE WHEN contains(t, '::') THEN regexp_matches(t, '{IPV6_SHORT_RE}') ELSE false END)"""


def _no_raw_pii_by_day(con, table: Table, start: date, end: date) -> dict[date, tuple[bool, dict]]:
    p = ident(table.partition_column)
    plain = _plain_id_condition(table)
    figures = _grouped(
        con, table,
        f"""{_PII_COUNTS},
            count(*) FILTER (WHERE plain_id)""",
        start, end, (0, 0, 0),
        source=f"""(SELECT {p}, {_text_blob(table)} AS t, {plain or 'false'} AS plain_id
                    FROM {table.name} WHERE {_window(table)})""",
    )
    return {day: _no_raw_pii_result(*f) for day, f in figures.items()}


@with_by_day(_no_raw_pii_by_day)
def no_raw_pii(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """No e-mail address or untruncated IPv4/IPv6 address (any written form) in any text/JSON column,
    and user ids are pseudonyms."""
    blob = _text_blob(table)
    emails, ips = _one(
        con,
        f"""SELECT {_PII_COUNTS}
            FROM (SELECT {blob} AS t FROM {table.name} WHERE {_window(table)})""",
        start, end,
    )
    cond = _plain_id_condition(table)
    plain_ids = 0
    if cond:
        (plain_ids,) = _one(con, f"SELECT count(*) FROM {table.name} WHERE {_window(table)} AND ({cond})", start, end)
    return _no_raw_pii_result(emails, ips, plain_ids)

