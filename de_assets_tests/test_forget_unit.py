"""Unit tests of `lib/forget.py` (GDPR erasure, the suppression list) on small hand-made tables, no Dagster.

The pipeline-level behaviour (CLI, Dagster run, lake, marts) is in test_forget.py; here each function
runs on an in-memory warehouse (`tables.ensure_tables`) holding a few rows written by hand, and every
expected value is counted from the rows listed below.

The warehouse of the erasure tests (P is the subject, Q someone else; lineage day / file / line):

| # | raw (day, file, line) | message | user_id | anonymous_id | fate                                         |
|---|-----------------------|---------|---------|--------------|----------------------------------------------|
| 1 | 11-02 a.ndjson 1      | m1      | P       |              | clean, event day 11-02                       |
| 2 | 11-02 a.ndjson 2      | m2      | Q       |              | clean, event day 11-02                       |
| 3 | 11-02 a.ndjson 3      | m3      |         | P            | clean, event day 11-01 (late event)          |
| 4 | 11-02 b.ndjson 1      | m2      | P       |              | duplicate of Q's m2 (conflicting: other user) |
| 5 | 11-03 a.ndjson 1      | m1      | Q       |              | duplicate of P's m1 (conflicting: other user) |
| 6 | 11-03 a.ndjson 2      |         | P       |              | quarantined (no messageId)                   |
| 7 | 11-03 a.ndjson 3      | m4      | Q       |              | clean, event day 11-03                       |
| 8 | 11-03 a.ndjson 4      |         | Q       |              | quarantined (no messageId)                   |

P's rows: raw 1 3 4 6 (4), clean m1 m3 (2), duplicates row 4 (1), quarantine row 6 (1): 8 rows.
"""

import hashlib
import re
from datetime import date, datetime

import duckdb
import pytest

from de_assets.lib import clean, forget, reconcile
from de_assets_tests.conftest import every_table

P, Q, X = "pseud-carol", "pseud-dave", "pseud-erin"
D0, D1, D2 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
A1, B1, A2 = "events/2026-11-02/a.ndjson", "events/2026-11-02/b.ndjson", "events/2026-11-03/a.ndjson"
INGESTED = datetime(2026, 11, 3, 1, 0)
NOW = datetime(2026, 11, 20, 9, 30)
# (arrival, file, line, message_id, user_id, anonymous_id) of the table in the module docstring
RAW = [
    (D1, A1, 1, "m1", P, None),
    (D1, A1, 2, "m2", Q, None),
    (D1, A1, 3, "m3", None, P),
    (D1, B1, 1, "m2", P, None),
    (D2, A2, 1, "m1", Q, None),
    (D2, A2, 2, None, P, None),
    (D2, A2, 3, "m4", Q, None),
    (D2, A2, 4, None, Q, None),
]
# (raw row number, event_date) of the clean rows; the duplicates and the quarantine, by raw row number
CLEAN = [(1, D1), (2, D1), (3, D0), (7, D2)]
DUPLICATES = [4, 5]
QUARANTINED = [6, 8]


def _raw(con, rows, ingested_at=INGESTED):
    for arrival, file, line, message_id, user_id, anonymous_id in rows:
        con.execute("INSERT INTO raw.events BY NAME SELECT ? AS arrival_date, ? AS source_file, ? AS line_no, "
                    "? AS ingested_at, ? AS message_id, 'track' AS type, ? AS user_id, ? AS anonymous_id",
                    [arrival, file, line, ingested_at, message_id, user_id, anonymous_id])


def _warehouse(con):
    """The eight rows of the module docstring in raw, clean, duplicates and quarantine, and the files
    they landed in, registered as ingested (so `reconcile.accounting` can balance the books)."""
    _raw(con, RAW)
    for n, event_date in CLEAN:
        arrival, file, line, message_id, user_id, anonymous_id = RAW[n - 1]
        con.execute("INSERT INTO clean.events BY NAME SELECT ? AS arrival_date, ? AS source_file, ? AS line_no, "
                    "? AS event_date, ? AS message_id, ? AS user_key, ? AS user_id, ? AS anonymous_id",
                    [arrival, file, line, event_date, message_id, user_id or anonymous_id, user_id, anonymous_id])
    for n in DUPLICATES:
        arrival, file, line, message_id, _, _ = RAW[n - 1]
        con.execute("INSERT INTO clean.events_duplicates BY NAME SELECT ? AS arrival_date, ? AS source_file, "
                    "? AS line_no, ? AS dedupe_key, TRUE AS conflict, 'user_id' AS conflicting_fields",
                    [arrival, file, line, message_id])
    for n in QUARANTINED:
        arrival, file, line, _, user_id, anonymous_id = RAW[n - 1]
        con.execute("INSERT INTO quarantine.events BY NAME SELECT ? AS arrival_date, ? AS source_file, "
                    "? AS line_no, 'message_id:missing' AS reason, "
                    "json_object('user_id', ?::VARCHAR, 'anonymous_id', ?::VARCHAR) AS raw_row, "
                    "? AS ingested_at, 'rejected' AS status",
                    [arrival, file, line, user_id, anonymous_id, INGESTED])
    for arrival, file, rows in ((D1, A1, 3), (D1, B1, 1), (D2, A2, 4)):
        con.execute("INSERT INTO raw.source_files BY NAME SELECT 'events' AS source, ? AS arrival_date, ? AS path, "
                    "? AS rows, 'ingested' AS status", [arrival, file, rows])


def _request(con, pseudonym=P, by="dpo@example.org"):
    return forget.record_request(con, pseudonym, by, forget.key_fingerprint("k"), datetime(2026, 11, 19))


def _lineage(con, table):
    return con.execute(f"SELECT arrival_date, source_file, line_no FROM {table} ORDER BY ALL").fetchall()


def _row(n):
    return RAW[n - 1][:3]


def test_subject_hash_and_key_fingerprint_are_the_documented_digests():
    # printf 'pseud-carol' | sha256sum
    assert forget.subject_hash(P) == "66fef8fbf5452d98e09ca0ad0a40b4ffb744d4c55f3dad14f97d72607d96b767"
    # printf 'de_assets/key-fingerprint/v1' | openssl dgst -sha256 -hmac k   (first 16 hex digits)
    assert forget.key_fingerprint("k") == "07034a5a1b5d67d5"
    assert forget.key_fingerprint("other-key") == "4f4244be228b610f"


def test_record_request_stores_a_pending_request_that_suppresses_at_once(con):
    request_id = _request(con)
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert _request(con, Q) != request_id  # a fresh id per request
    row = con.execute("SELECT requested_at, requested_by, pseudonym, key_fingerprint, status, run_id, completed_at, "
                      "rows_deleted FROM pipeline_health.forget_requests WHERE request_id = ?", [request_id]).fetchone()
    assert row == (datetime(2026, 11, 19), "dpo@example.org", P, "07034a5a1b5d67d5", "pending", None, None, None)
    assert con.execute(f"SELECT pseudonym FROM ({forget.SUPPRESSED}) ORDER BY 1").fetchall() == [(P,), (Q,)]


def test_execute_request_deletes_the_subjects_rows_everywhere_and_only_them(con):
    _warehouse(con)
    assert forget.remaining(con, P) == {"raw.events": 4, "clean.events": 2, "quarantine.events": 1}
    request_id = _request(con)
    erasure = forget.execute_request(con, con, request_id, "run-1", NOW)

    assert erasure.status == "erased"
    assert erasure.counts == {"clean.events_duplicates": 1, "clean.events": 2, "quarantine.events": 1,
                              "raw.events": 4}
    assert erasure.rows_deleted == 8
    assert erasure.affected == [D0, D1]  # event days of m3 (late) and m1: the marts to re-serve
    assert erasure.arrivals == [D1, D2]  # arrival days of raw rows 1 3 4 (11-02) and 6 (11-03)
    assert forget.remaining(con, P) == {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}
    # Q's rows stay, row 5 (Q's conflicting re-delivery of P's m1) included
    assert _lineage(con, "raw.events") == [_row(2), _row(5), _row(7), _row(8)]
    assert con.execute("SELECT message_id FROM clean.events ORDER BY 1").fetchall() == [("m2",), ("m4",)]
    assert _lineage(con, "clean.events_duplicates") == [_row(5)]
    assert _lineage(con, "quarantine.events") == [_row(8)]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_forget_rows'").fetchone() == (0,)


def test_execute_request_keeps_the_books_balanced(con):
    """rows_reconcile: per file, landed - forgotten = clean + quarantined + duplicates = raw rows."""
    _warehouse(con)
    assert reconcile.accounting(con, clean.EVENTS, "events", [D1, D2])["balanced"]
    forget.execute_request(con, con, _request(con), "run-1", NOW)
    books = reconcile.accounting(con, clean.EVENTS, "events", [D1, D2])
    assert books.get("unbalanced_files") is None and books["balanced"]
    # landed 8, forgotten 4; left: clean m2 m4, quarantined row 8, duplicate row 5
    assert (books["rows_landed"], books["rows_forgotten"], books["rows_raw"]) == (4, 4, 4)
    assert (books["rows_clean"], books["rows_quarantined"], books["rows_duplicate"]) == (2, 1, 1)


def test_execute_request_audits_counts_and_marks_the_request_done(con):
    _warehouse(con)
    request_id = _request(con)
    forget.execute_request(con, con, request_id, "run-1", NOW)
    assert con.execute("SELECT status, run_id, completed_at, rows_deleted FROM pipeline_health.forget_requests"
                       ).fetchall() == [("erased", "run-1", NOW, 8)]
    audit = con.execute("SELECT request_id, requested_at, requested_by, subject_hash, table_name, rows_deleted, "
                        "first_event_day, last_event_day FROM pipeline_health.forget_audit ORDER BY table_name"
                        ).fetchall()
    digest = "66fef8fbf5452d98e09ca0ad0a40b4ffb744d4c55f3dad14f97d72607d96b767"  # sha256 of P, as above
    assert audit == [(request_id, NOW, "dpo@example.org", digest, table, rows, D0, D1) for table, rows in (
        ("clean.events", 2), ("clean.events_duplicates", 1), ("quarantine.events", 1), ("raw.events", 4))]
    # the raw rows left the books per arrival day, file and request
    assert con.execute("SELECT source, arrival_date, source_file, rows, request_id FROM raw.forgotten_rows "
                       "ORDER BY ALL").fetchall() == [
        ("events", D1, A1, 2, request_id), ("events", D1, B1, 1, request_id), ("events", D2, A2, 1, request_id)]
    # the audit keeps no identifier: neither the pseudonym nor anything it is part of
    stored = con.execute("SELECT * FROM pipeline_health.forget_audit").fetchall()
    assert not any(P in str(value) for row in stored for value in row)
    assert hashlib.sha256(P.encode()).hexdigest() == digest  # and the digest is checkable given P


def test_an_executed_request_cannot_run_again_and_an_unknown_one_is_an_error(con):
    _warehouse(con)
    request_id = _request(con)
    forget.execute_request(con, con, request_id, "run-1", NOW)
    with pytest.raises(forget.AlreadyExecuted, match=r"already executed \(status erased\)"):
        forget.execute_request(con, con, request_id, "run-2", NOW)
    done = forget.executed(con, request_id)  # what finishing its lake part again works from
    assert (done.status, done.arrivals) == ("erased", [D1, D2]) and done.rows_deleted > 0
    with pytest.raises(forget.RequestError, match="nope is not recorded in pipeline_health.forget_requests"):
        forget.execute_request(con, con, "nope", "run-2", NOW)
    assert con.execute("SELECT run_id FROM pipeline_health.forget_requests").fetchall() == [("run-1",)]


def test_a_request_matching_nothing_is_an_error_without_the_subject_and_suppresses_nothing(con):
    _warehouse(con)
    nobody = "pseud-nobody"
    request_id = _request(con, nobody, by="dpo-nobody@example.org")
    with pytest.raises(forget.RequestError) as raised:
        forget.execute_request(con, con, request_id, "run-1", NOW)
    message = str(raised.value)
    assert "matches no row" in message and "Nothing was deleted" in message and request_id in message
    assert nobody not in message and "dpo-nobody" not in message
    assert con.execute("SELECT status, run_id, rows_deleted FROM pipeline_health.forget_requests").fetchall() == [
        ("no_match", "run-1", 0)]
    assert con.execute(f"SELECT count(*) FROM ({forget.SUPPRESSED})").fetchone() == (0,)
    assert forget.suppression_list(con) == []
    # nothing deleted, audited or taken off the books
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (8,)
    assert con.execute("SELECT count(*) FROM pipeline_health.forget_audit").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM raw.forgotten_rows").fetchone() == (0,)


def test_no_match_ok_records_the_suppression_with_an_audit_of_zeros(con):
    _warehouse(con)
    request_id = _request(con, X)
    erasure = forget.execute_request(con, con, request_id, "run-1", NOW, no_match_ok=True)
    assert (erasure.status, erasure.rows_deleted, erasure.affected, erasure.arrivals) == ("suppressed", 0, [], [])
    assert con.execute("SELECT status, rows_deleted FROM pipeline_health.forget_requests").fetchall() == [
        ("suppressed", 0)]
    assert forget.suppression_list(con) == [(request_id, X, "07034a5a1b5d67d5", "suppressed")]
    assert con.execute("SELECT table_name, rows_deleted, first_event_day FROM pipeline_health.forget_audit "
                       "ORDER BY 1").fetchall() == [
        ("clean.events", 0, None), ("clean.events_duplicates", 0, None), ("quarantine.events", 0, None),
        ("raw.events", 0, None)]
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (8,)


def test_a_failing_erasure_changes_nothing(con):
    _warehouse(con)
    request_id = _request(con)
    con.execute("DROP TABLE pipeline_health.forget_audit")  # the audit insert, inside the transaction, fails
    with pytest.raises(duckdb.CatalogException):
        forget.execute_request(con, con, request_id, "run-1", NOW)
    assert forget.remaining(con, P) == {"raw.events": 4, "clean.events": 2, "quarantine.events": 1}
    assert con.execute("SELECT count(*) FROM clean.events_duplicates").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM raw.forgotten_rows").fetchone() == (0,)
    assert con.execute("SELECT status FROM pipeline_health.forget_requests").fetchall() == [("pending",)]
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_forget_rows'").fetchone() == (0,)


NEW, NEW2, OLD = "events/2026-11-02/new.ndjson", "events/2026-11-02/new2.ndjson", "events/2026-11-02/old.ndjson"
NEW3 = "events/2026-11-03/new.ndjson"
BATCH = datetime(2026, 11, 2, 6, 0, 0, 1)


def _suppressing(con):
    """Requests r1 (X, erased), r2 (P, pending), r3 (Q, no_match: a mistake, suppresses nothing)."""
    forget.seed_suppression(con, [("r1", X, "fp", "erased"), ("r2", P, "fp", "pending"),
                                  ("r3", Q, "fp", "no_match")], NOW)


def test_drop_suppressed_removes_listed_subjects_from_the_new_batch_only_and_counts_them_per_file(con):
    _suppressing(con)
    _raw(con, [(D1, OLD, 1, "m0", P, None)], ingested_at=datetime(2026, 11, 2, 6, 0))  # an earlier batch
    _raw(con, [
        (D1, NEW, 1, "m1", P, None),  # r2
        (D1, NEW, 2, "m2", Q, None),  # kept: r3 matched nothing
        (D1, NEW, 3, "m3", Q, X),  # r1, through the anonymous id
        (D1, NEW, 4, "m4", P, X),  # both listed: counted once, for the smallest request id (r1)
        (D1, NEW, 5, "m5", None, Q),  # kept
        (D1, NEW2, 1, "m6", X, None),  # r1
    ], ingested_at=BATCH)
    _raw(con, [(D2, NEW3, 1, "m7", P, None)], ingested_at=BATCH)  # another arrival day
    # earlier erasures: of new.ndjson (re-read whole now: replaced), of old.ndjson and of 11-03 (kept)
    for day, file, rows in ((D1, NEW, 9), (D1, OLD, 5), (D2, NEW3, 7)):
        con.execute("INSERT INTO raw.forgotten_rows VALUES ('events', ?, ?, ?, 'old-request')", [day, file, rows])

    assert forget.drop_suppressed(con, "events", [D1], BATCH) == 4
    assert _lineage(con, "raw.events") == [(D1, NEW, 2), (D1, NEW, 5), (D1, OLD, 1), (D2, NEW3, 1)]
    assert con.execute("SELECT arrival_date, source_file, rows, request_id FROM raw.forgotten_rows "
                       "ORDER BY ALL").fetchall() == [
        (D1, NEW, 1, "r2"), (D1, NEW, 2, "r1"), (D1, NEW2, 1, "r1"), (D1, OLD, 5, "old-request"),
        (D2, NEW3, 7, "old-request")]


def test_drop_suppressed_without_a_suppressing_request_keeps_every_row_but_clears_stale_counts(con):
    forget.seed_suppression(con, [("r3", Q, "fp", "no_match")], NOW)
    _raw(con, [(D1, NEW, 1, "m1", Q, None), (D1, NEW, 2, "m2", P, None)], ingested_at=BATCH)
    con.execute("INSERT INTO raw.forgotten_rows VALUES ('events', ?, ?, 3, 'old-request')", [D1, NEW])
    assert forget.drop_suppressed(con, "events", [D1], BATCH) == 0
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM raw.forgotten_rows").fetchone() == (0,)


def test_drop_suppressed_leaves_request_logs_alone(con):
    _suppressing(con)
    _raw(con, [(D1, NEW, 1, "m1", P, None)], ingested_at=BATCH)
    assert forget.drop_suppressed(con, "requests", [D1], BATCH) == 0
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (1,)


def test_the_suppression_list_copies_into_another_warehouse(con):
    _suppressing(con)
    listed = forget.suppression_list(con)
    assert listed == [("r1", X, "fp", "erased"), ("r2", P, "fp", "pending")]  # r3 (no_match) is not listed
    other = duckdb.connect()
    every_table(other)
    forget.seed_suppression(other, listed, NOW)
    assert forget.suppression_list(other) == listed
    assert other.execute("SELECT DISTINCT requested_by, requested_at FROM pipeline_health.forget_requests"
                         ).fetchall() == [("copied", NOW)]
    # and suppresses there: a batch of P and X rows loses both
    _raw(other, [(D1, NEW, 1, "m1", P, None), (D1, NEW, 2, "m2", X, None), (D1, NEW, 3, "m3", Q, None)],
         ingested_at=BATCH)
    assert forget.drop_suppressed(other, "events", [D1], BATCH) == 2
    assert other.execute("SELECT user_id FROM raw.events").fetchall() == [(Q,)]
    other.close()


def test_remaining_counts_the_subjects_rows_per_table(con):
    _warehouse(con)
    assert forget.remaining(con, Q) == {"raw.events": 4, "clean.events": 2, "quarantine.events": 1}
    assert forget.remaining(con, X) == {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}
