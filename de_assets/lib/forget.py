"""Forget a user (R8, GDPR erasure): delete every row of one pseudonymized user id from raw, clean
and quarantine, and say which marts days must be re-served.

Input is the pseudonym (HMAC of the plain id with the warehouse key, `privacy.pseudonymize`), so
the plain id never reaches storage. The audit keeps a SHA-256 of the pseudonym (to answer "was this
user forgotten?" given the id and the key) and row counts per table, never the id.

Raw rows stored as Parquet (raw_format=parquet) are removed by rewriting the affected batch files.
`raw.forgotten_rows` counts removed raw rows per arrival day so `rows_reconcile` still balances.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from de_assets.lib import rawstore
from de_assets.lib.tables import (
    CLEAN_EVENTS,
    DUPLICATES_EVENTS,
    FORGET_AUDIT,
    FORGOTTEN_ROWS,
    PARQUET_BATCHES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
)

USER_MATCH = "(user_id = $p OR anonymous_id = $p)"


def subject_hash(pseudonym: str) -> str:
    return hashlib.sha256(pseudonym.encode()).hexdigest()


def _rewrite_parquet(con, pseudonym: str) -> int:
    """Rewrite every raw Parquet batch holding the user's rows without them; rows removed."""
    removed = 0
    for path, in con.execute(f"SELECT path FROM {PARQUET_BATCHES.name} WHERE table_name = ?", [RAW_EVENTS.name]).fetchall():
        file = "'" + path.replace("'", "''") + "'"
        [(hits,)] = con.execute(f"SELECT count(*) FROM read_parquet({file}) WHERE {USER_MATCH}", {"p": pseudonym}).fetchall()
        if not hits:
            continue
        tmp = Path(path).with_suffix(".rewrite.parquet")
        target = "'" + str(tmp).replace("'", "''") + "'"
        con.execute(f"COPY (SELECT * FROM read_parquet({file}) WHERE NOT {USER_MATCH}) TO {target} "
                    "(FORMAT parquet, COMPRESSION zstd)", {"p": pseudonym})
        tmp.replace(path)
        con.execute(f"UPDATE {PARQUET_BATCHES.name} SET rows = rows - ?, bytes = ? WHERE path = ?",
                    [hits, Path(path).stat().st_size, path])
        removed += hits
    return removed


def forget(
    con, pseudonym: str, request_id: str, requested_by: str, now
) -> tuple[dict[str, int], list[date], list[date]]:
    """Delete the user's rows everywhere; return rows deleted per table, the event days affected
    (their marts must be re-served) and the arrival days whose raw/clean partitions changed."""
    params = {"p": pseudonym}
    affected = [d for (d,) in con.execute(
        f"SELECT DISTINCT event_date FROM {CLEAN_EVENTS.name} WHERE user_key = $p OR {USER_MATCH} ORDER BY 1", params
    ).fetchall()]
    raw = rawstore.relation(con, RAW_EVENTS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _forget_ids AS SELECT DISTINCT message_id FROM {raw} "
                f"WHERE {USER_MATCH} AND message_id IS NOT NULL", params)
    per_day = con.execute(
        f"SELECT arrival_date, source_file, count(*) FROM {raw} WHERE {USER_MATCH} GROUP BY ALL", params
    ).fetchall()
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        counts[DUPLICATES_EVENTS.name] = _delete(
            con, DUPLICATES_EVENTS.name, "dedupe_key IN (SELECT message_id FROM _forget_ids)", {})
        counts[CLEAN_EVENTS.name] = _delete(con, CLEAN_EVENTS.name, f"user_key = $p OR {USER_MATCH}", params)
        counts[QUARANTINE_EVENTS.name] = _delete(
            con, QUARANTINE_EVENTS.name,
            "raw_row->>'$.user_id' = $p OR raw_row->>'$.anonymous_id' = $p", params)
        counts[RAW_EVENTS.name] = _delete(con, RAW_EVENTS.name, USER_MATCH, params) + _rewrite_parquet(con, pseudonym)
        for arrival, source_file, rows in per_day:
            con.execute(f"INSERT INTO {FORGOTTEN_ROWS.name} VALUES ('events', ?, ?, ?, ?)",
                        [arrival, source_file, rows, request_id])
        for table, rows in counts.items():
            con.execute(f"INSERT INTO {FORGET_AUDIT.name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [request_id, now, requested_by, subject_hash(pseudonym), table, rows,
                         min(affected) if affected else None, max(affected) if affected else None])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _forget_ids")
    return counts, affected, sorted({arrival for arrival, _, _ in per_day})


def _delete(con, table: str, where: str, params: dict) -> int:
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchall()
    con.execute(f"DELETE FROM {table} WHERE {where}", params)
    return rows


def remaining(con, pseudonym: str) -> dict[str, int]:
    """Rows of the user still anywhere (every table with a user column or a raw row); all 0 after forget."""
    params = {"p": pseudonym}
    checks = {
        RAW_EVENTS.name: (rawstore.relation(con, RAW_EVENTS), USER_MATCH),
        CLEAN_EVENTS.name: (CLEAN_EVENTS.name, f"user_key = $p OR {USER_MATCH}"),
        QUARANTINE_EVENTS.name: (QUARANTINE_EVENTS.name, "raw_row::VARCHAR LIKE '%' || $p || '%'"),
    }
    return {name: con.execute(f"SELECT count(*) FROM {rel} WHERE {where}", params).fetchall()[0][0]
            for name, (rel, where) in checks.items()}
