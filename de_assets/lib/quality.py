"""Data-quality rules on the served tables, as plain SQL functions over a partition range.

Each rule returns ``(passed, metadata)``; the assets report them as Dagster asset checks (blocking:
a failure stops every downstream asset), and tests call them directly on hand-made tables. Which
rules a table runs is declared with the table (`Table.checks`, in `lib/tables/`).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from de_assets.lib.privacy import EMAIL_RE, IPV6_RE, IPV6_SHORT_RE

if TYPE_CHECKING:  # the tables declare their rules from here: a runtime import would be a cycle
    from de_assets.lib.tables import Table

# A full IPv4 address that was not truncated (last octet other than 0).
UNTRUNCATED_IPV4_RE = r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.(?:[1-9]\d{0,2}|0\d+)\b"
PSEUDONYM_RE = r"[0-9a-f]{32}"


def _window(table: Table) -> str:
    return table.range_predicate("$start", "$end")


def _one(con, sql: str, start: date, end: date):
    return con.execute(sql, {"start": start, "end": end}).fetchall()[0]


def unique_key(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """The table's grain (its key columns) identifies every row of the range exactly once."""
    key = ", ".join(table.key)
    dupes, rows = _one(
        con,
        f"SELECT count(*) - count(DISTINCT ({key})), count(*) FROM {table.name} WHERE {_window(table)}",
        start, end,
    )
    return dupes == 0, {"rows": rows, "duplicate_keys": dupes, "key": key}


def keys_not_null(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """No key column is NULL."""
    nulls = " + ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in table.key)
    (bad,) = _one(con, f"SELECT {nulls} FROM {table.name} WHERE {_window(table)}", start, end)
    return bad == 0, {"rows_with_null_key": bad}


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

    check.__doc__ = f"`{column}` lies in [0, 1]."
    check.__name__ = f"{column}_in_unit_interval"
    return check


def no_raw_pii(con, table: Table, start: date, end: date) -> tuple[bool, dict]:
    """No e-mail address or untruncated IPv4/IPv6 address (any written form) in any text/JSON column,
    and user ids are pseudonyms."""
    text_columns = [c.name for c in table.columns if c.type in ("VARCHAR", "JSON")]
    blob = " || ' ' || ".join(f"coalesce({c}::VARCHAR, '')" for c in text_columns)
    emails, ips = _one(
        con,
        f"""SELECT count(*) FILTER (WHERE regexp_matches(t, '{EMAIL_RE}')),
                   count(*) FILTER (WHERE regexp_matches(t, '{UNTRUNCATED_IPV4_RE}')
                                       OR regexp_matches(t, '{IPV6_RE}') OR regexp_matches(t, '{IPV6_SHORT_RE}'))
            FROM (SELECT {blob} AS t FROM {table.name} WHERE {_window(table)})""",
        start, end,
    )
    id_columns = [c for c in ("user_key", "user_id", "anonymous_id") if c in table.column_names]
    plain_ids = 0
    if id_columns:
        cond = " OR ".join(f"({c} IS NOT NULL AND NOT regexp_full_match({c}, '{PSEUDONYM_RE}'))" for c in id_columns)
        (plain_ids,) = _one(con, f"SELECT count(*) FROM {table.name} WHERE {_window(table)} AND ({cond})", start, end)
    return emails + ips + plain_ids == 0, {"rows_with_email": emails, "rows_with_full_ip": ips,
                                           "rows_with_unhashed_user_id": plain_ids}

