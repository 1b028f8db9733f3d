"""Forget a user (R8, GDPR erasure): delete every row of one pseudonymized user id from raw, clean
and quarantine, keep the user out of every later ingest, and say which marts days must be re-served.

A request is first recorded in `pipeline_health.forget_requests` (`record_request`): the subject's
pseudonym (HMAC of the plain id with the warehouse key, `privacy.pseudonymize`) is stored there and
nowhere else, so the Dagster run that executes it (`execute_request`) carries only the opaque
request id. The audit keeps a SHA-256 of the pseudonym (to answer "was this user forgotten?" given
the id and the key) and row counts per table, never the id.

The requests, the audit and `raw.forgotten_rows` are held in the catalog database
(`lib/ops_store.py`): the functions here compute them with SQL on a DuckDB connection holding copies
(`Warehouse.held`), and the caller hands the rows it owns back in one transaction.

The recorded requests are also the suppression list: `drop_suppressed` removes the rows of every
listed pseudonym from each batch `ingest.ingest_days` writes (new files, `reingest: true`, replays),
so a forgotten user never comes back from the landing files.

`raw.forgotten_rows` counts removed raw rows per arrival day, file and request so `rows_reconcile`
still balances; suppressed rows are counted there the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import date

from de_assets.lib import raw_lake, staged
from de_assets.lib.sql import transaction
from de_assets.lib.tables import (
    CLEAN_EVENTS,
    DUPLICATES_EVENTS,
    FORGET_AUDIT,
    FORGET_REQUESTS,
    FORGOTTEN_ROWS,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    Table,
)

USER_MATCH = "(user_id = $p OR anonymous_id = $p)"
# The suppression list: every recorded request except those that matched nothing by mistake.
SUPPRESSED = f"SELECT pseudonym FROM {FORGET_REQUESTS.name} WHERE status <> 'no_match'"
SUPPRESSED_MATCH = f"(user_id IN ({SUPPRESSED}) OR anonymous_id IN ({SUPPRESSED}))"
_ROW_LINEAGE = "arrival_date, source_file, line_no"  # identifies a raw row, and its clean/quarantine/duplicate row
_LINEAGE_TABLE = "_forget_rows"
# The subject's rows in the tables derived from raw. A duplicates row by lineage: it is the clean step's
# verdict on exactly one raw row (same day, file and line), found in `_LINEAGE_TABLE` (the subject's raw
# rows). Not by message id: another user's re-delivery of the same id is a duplicate too, and deleting it
# would leave that user's raw row without a fate.
_DERIVED: tuple[tuple[Table, str], ...] = (
    (DUPLICATES_EVENTS, f"({_ROW_LINEAGE}) IN (SELECT {_ROW_LINEAGE} FROM {_LINEAGE_TABLE})"),
    (CLEAN_EVENTS, f"user_key = $p OR {USER_MATCH}"),
    (QUARANTINE_EVENTS, "raw_row->>'$.user_id' = $p OR raw_row->>'$.anonymous_id' = $p"),
)


class RequestError(ValueError):
    """A forget request that cannot be executed (unknown, already executed, or matching nothing)."""


class AlreadyExecuted(RequestError):
    """The request's warehouse part is done (`executed` describes it: its lake part can be finished again)."""


@dataclass
class Erasure:
    request_id: str
    status: str  # erased, or suppressed (nothing matched, suppression recorded on purpose)
    counts: dict[str, int]  # rows deleted per table
    affected: list[date]  # event days whose marts must be re-served
    arrivals: list[date]  # arrival days whose raw/clean partitions changed

    @property
    def rows_deleted(self) -> int:
        return sum(self.counts.values())


def subject_hash(pseudonym: str) -> str:
    return hashlib.sha256(pseudonym.encode()).hexdigest()


def key_fingerprint(key: str) -> str:
    """Tells which key a pseudonym was made with (after a rotation), without revealing the key."""
    return hmac.new(key.encode(), b"de_assets/key-fingerprint/v1", hashlib.sha256).hexdigest()[:16]


def record_request(con, pseudonym: str, requested_by: str, fingerprint: str, now, request_id: str | None = None) -> str:
    """Record a forget request (status `pending`, a new id unless given); it suppresses the subject from
    now on. Its id."""
    request_id = request_id or uuid.uuid4().hex
    con.execute(
        f"INSERT INTO {FORGET_REQUESTS.name} BY NAME SELECT ? AS request_id, ? AS requested_at, "
        "? AS requested_by, ? AS pseudonym, ? AS key_fingerprint, 'pending' AS status",
        [request_id, now, requested_by, pseudonym, fingerprint],
    )
    return request_id


def _count_forgotten(con, source: str, arrival: date, source_file: str, rows: int, request_id: str) -> None:
    """Rows of one landed file removed on behalf of one request. A file is immutable, so the number
    is a fact about (file, request): a re-ingest that drops them again replaces it, never adds."""
    con.execute(f"DELETE FROM {FORGOTTEN_ROWS.name} WHERE source = ? AND arrival_date = ? AND source_file = ? "
                "AND request_id = ?", [source, arrival, source_file, request_id])
    con.execute(f"INSERT INTO {FORGOTTEN_ROWS.name} VALUES (?, ?, ?, ?, ?)",
                [source, arrival, source_file, rows, request_id])


def drop_suppressed(con, source: str, days: list[date], ingested_at) -> int:
    """Remove the rows of every suppressed subject from the raw batch just written (arrival days
    `days`, ingest time `ingested_at`) and count them in `raw.forgotten_rows` per file. Called
    inside the ingest transaction; rows dropped.

    The batch's files were just read whole, so earlier `raw.forgotten_rows` entries of those files
    (erasures of rows that a re-ingest has replaced, possibly under an older key) no longer describe
    anything and are replaced by what is dropped now."""
    if source != "events":  # request logs carry no user
        return 0
    params = {"days": days, "at": ingested_at}
    batch_rows = f"{RAW_EVENTS.name} WHERE list_contains($days::DATE[], arrival_date) AND ingested_at = $at"
    [(stale,)] = con.execute(f"SELECT count(*) FROM {FORGOTTEN_ROWS.name} WHERE source = 'events' "
                             "AND list_contains($days::DATE[], arrival_date)", {"days": days}).fetchall()
    if stale:
        con.execute(f"DELETE FROM {FORGOTTEN_ROWS.name} WHERE source = 'events' "
                    f"AND (arrival_date, source_file) IN (SELECT DISTINCT arrival_date, source_file FROM {batch_rows})",
                    params)
    [(listed,)] = con.execute(f"SELECT count(*) FROM ({SUPPRESSED})").fetchall()
    if not listed:
        return 0
    match = f"list_contains($days::DATE[], arrival_date) AND ingested_at = $at AND {SUPPRESSED_MATCH}"
    # Each row is attributed to one request (the smallest id) even if both of its ids are listed.
    per_file = con.execute(
        f"""SELECT arrival_date, source_file, request_id, count(*) FROM (
                SELECT h.arrival_date, h.source_file, h.line_no, min(s.request_id) AS request_id
                FROM (SELECT arrival_date, source_file, line_no, user_id, anonymous_id FROM {batch_rows}
                      AND {SUPPRESSED_MATCH}) h
                JOIN {FORGET_REQUESTS.name} s ON s.status <> 'no_match'
                     AND (s.pseudonym = h.user_id OR s.pseudonym = h.anonymous_id)
                GROUP BY ALL)
            GROUP BY ALL ORDER BY ALL""",
        params,
    ).fetchall()
    if not per_file:
        return 0
    con.execute(f"DELETE FROM {RAW_EVENTS.name} WHERE {match}", params)
    for arrival, source_file, request_id, rows in per_file:
        _count_forgotten(con, source, arrival, source_file, rows, request_id)
    return sum(rows for *_, rows in per_file)


def suppression_list(con) -> list[tuple]:
    """The suppressing requests (id, pseudonym, key fingerprint, status), to seed a scratch warehouse."""
    return con.execute(f"SELECT request_id, pseudonym, key_fingerprint, status FROM {FORGET_REQUESTS.name} "
                       "WHERE status <> 'no_match' ORDER BY request_id").fetchall()


def seed_suppression(con, rows: list[tuple], now) -> None:
    """Copy a suppression list into another warehouse (e.g. an experiment arm replaying the landing)."""
    for request_id, pseudonym, fingerprint, status in rows:
        con.execute(f"INSERT INTO {FORGET_REQUESTS.name} BY NAME SELECT ? AS request_id, ? AS requested_at, "
                    "'copied' AS requested_by, ? AS pseudonym, ? AS key_fingerprint, ? AS status",
                    [request_id, now, pseudonym, fingerprint, status])


def execute_request(con, held, request_id: str, run_id: str, now, no_match_ok: bool = False) -> Erasure:
    """Delete the recorded subject's rows everywhere, audit it and mark the request done.

    ``con`` holds the data tables: those kept in the lake are only counted here (the caller erases
    them there afterwards, `erase_derived_in_lake`, `raw_lake.delete_user`), the others are deleted
    from in one transaction. ``held`` holds copies of the request (`pipeline_health.forget_requests`),
    its audit and its `raw.forgotten_rows` (``con`` itself in a unit test): they are written there,
    for the caller to hand back in one transaction before erasing the lake.

    Raises `RequestError` when the request is unknown or was executed before, and when nothing
    matches (unless `no_match_ok`: then the suppression alone is kept, status `suppressed`); the
    request is then marked `no_match` and suppresses nothing. No message names the subject.
    """
    row = held.execute(
        f"SELECT pseudonym, requested_by, status FROM {FORGET_REQUESTS.name} WHERE request_id = ?", [request_id]
    ).fetchone()
    if row is None:
        raise RequestError(f"forget request {request_id} is not recorded in {FORGET_REQUESTS.name}: "
                           "record requests with `de-assets forget-user`")
    pseudonym, requested_by, status = row
    if status != "pending":
        error = AlreadyExecuted if status in ("erased", "suppressed") else RequestError
        raise error(f"forget request {request_id} was already executed (status {status}); "
                    "record a new request to run it again")
    params = {"p": pseudonym}
    affected = [d for (d,) in con.execute(
        f"SELECT DISTINCT event_date FROM {CLEAN_EVENTS.name} WHERE user_key = $p OR {USER_MATCH} ORDER BY 1", params
    ).fetchall()]
    raw = RAW_EVENTS.name
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_LINEAGE_TABLE} AS SELECT {_ROW_LINEAGE} FROM {raw} WHERE {USER_MATCH}",
                params)
    per_day = con.execute(
        f"SELECT arrival_date, source_file, count(*) FROM {raw} WHERE {USER_MATCH} GROUP BY ALL", params
    ).fetchall()
    checks = [*((table, where, _params(where, params)) for table, where in _DERIVED), (RAW_EVENTS, USER_MATCH, params)]
    try:
        counts = {table.name: _count(con, table.name, where, p) for table, where, p in checks}
        deleted = sum(counts.values())
        status = "erased" if deleted else ("suppressed" if no_match_ok else "no_match")
        with transaction(held):  # the bookkeeping first: when it fails, nothing was deleted
            if status != "no_match":
                for arrival, source_file, rows in per_day:
                    _count_forgotten(held, "events", arrival, source_file, rows, request_id)
                for table, rows in counts.items():
                    held.execute(f"INSERT INTO {FORGET_AUDIT.name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 [request_id, now, requested_by, subject_hash(pseudonym), table, rows,
                                  min(affected) if affected else None, max(affected) if affected else None])
            held.execute(
                f"UPDATE {FORGET_REQUESTS.name} SET status = ?, run_id = ?, completed_at = ?, rows_deleted = ? "
                "WHERE request_id = ?", [status, run_id, now, deleted, request_id])
        # tables kept in the lake (raw, clean, duplicates, quarantine, whenever there is a lake) are only
        # counted here: the caller erases them there after handing the bookkeeping back (`erase_derived_in_lake`);
        # the others (an in-memory warehouse without a lake) are deleted from now, raw last (the lineage)
        with transaction(con):
            for table, where, p in checks:
                if deleted and not raw_lake.in_lake(con, table):
                    con.execute(f"DELETE FROM {table.name} WHERE {where}", p)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_LINEAGE_TABLE}")
    if status == "no_match":
        raise RequestError(
            f"forget request {request_id}: the user id matches no row in raw, clean, duplicates or quarantine "
            "(a mistyped id, rows already erased or expired, or rows pseudonymized under another "
            "DE_ASSETS_PSEUDONYM_KEY). Nothing was deleted and nothing will be suppressed; to record the "
            "suppression anyway (e.g. re-recording requests after a key rotation), use --no-match-ok."
        )
    return Erasure(request_id, status, counts, affected, sorted({arrival for arrival, _, _ in per_day}))


def erase_derived_in_lake(con, pseudonym: str) -> dict[Table, list[date]]:
    """Delete the subject's rows from the derived tables kept in the lake, in the connection's
    staging overlay (`staged.overlay`); returns, per table, the arrival days staged, which the caller
    publishes. The days are those of the table's matching rows, not of the subject's raw rows: raw
    is kept 30 days, clean 400. Reads the subject's raw rows (duplicates are found by lineage), so it
    runs before they are deleted; done again after a failure, it finds nothing left to delete."""
    params = {"p": pseudonym}
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_LINEAGE_TABLE} AS SELECT {_ROW_LINEAGE} FROM {RAW_EVENTS.name} "
                f"WHERE {USER_MATCH}", params)
    staged_days: dict[Table, list[date]] = {}
    try:
        for table, where in _DERIVED:
            if not raw_lake.in_lake(con, table):
                continue
            days = [d for (d,) in con.execute(f"SELECT DISTINCT arrival_date FROM {table.name} WHERE {where} "
                                              "ORDER BY 1", _params(where, params)).fetchall()]
            if days:
                con.execute(f"DELETE FROM {staged.target(con, table, days)} WHERE {where}", _params(where, params))
                staged_days[table] = days
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_LINEAGE_TABLE}")
    return staged_days


def executed(con, request_id: str) -> Erasure:
    """An executed request as its bookkeeping recorded it (``con`` holds copies of the request, its
    audit and its `raw.forgotten_rows`): status, rows deleted per table and the event days they
    spanned (the audit), the arrival days they came from. What is needed to finish its lake part
    again when it failed after the bookkeeping was written."""
    [(status,)] = con.execute(f"SELECT status FROM {FORGET_REQUESTS.name} WHERE request_id = ?",
                              [request_id]).fetchall()
    audit = con.execute(f"SELECT table_name, rows_deleted, first_event_day, last_event_day FROM {FORGET_AUDIT.name} "
                        "WHERE request_id = ? ORDER BY table_name", [request_id]).fetchall()
    affected = sorted({d for _, _, first, last in audit for d in (first, last) if d is not None})
    arrivals = [d for (d,) in con.execute(f"SELECT DISTINCT arrival_date FROM {FORGOTTEN_ROWS.name} "
                                          "WHERE request_id = ? ORDER BY 1", [request_id]).fetchall()]
    return Erasure(request_id, status, {t: n for t, n, _, _ in audit}, affected, arrivals)


def _params(where: str, params: dict) -> dict:
    """The parameters a `_DERIVED` condition uses (DuckDB refuses unused ones)."""
    return {k: v for k, v in params.items() if f"${k}" in where}


def _count(con, table: str, where: str, params: dict) -> int:
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchall()
    return rows


def remaining(con, pseudonym: str) -> dict[str, int]:
    """Rows of the user still anywhere (every table with a user column or a raw row); all 0 after forget."""
    params = {"p": pseudonym}
    checks = {
        RAW_EVENTS.name: (RAW_EVENTS.name, USER_MATCH),
        CLEAN_EVENTS.name: (CLEAN_EVENTS.name, f"user_key = $p OR {USER_MATCH}"),
        QUARANTINE_EVENTS.name: (QUARANTINE_EVENTS.name, "raw_row::VARCHAR LIKE '%' || $p || '%'"),
    }
    return {name: con.execute(f"SELECT count(*) FROM {rel} WHERE {where}", params).fetchall()[0][0]
            for name, (rel, where) in checks.items()}
