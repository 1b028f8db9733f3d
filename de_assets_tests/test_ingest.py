"""The raw layer's projection on hand-written records (no Dagster)."""

import json
from datetime import date

import pytest

from de_assets.lib import ingest, privacy
from de_assets_tests.conftest import memory_warehouse

DAY = date(2026, 11, 2)


@pytest.fixture
def raw(tmp_path):
    def ingest_lines(*records) -> list[dict]:
        folder = tmp_path / "events" / DAY.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "a.ndjson").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
        con = memory_warehouse()
        ingest.ingest_day(con, tmp_path, "events", DAY, "run", ingest.IngestReport("events"))
        cur = con.execute("SELECT * FROM raw.events ORDER BY line_no")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    return ingest_lines


def test_context_without_ip_is_kept(raw):
    [row] = raw({"messageId": "m1", "type": "page", "userId": "u", "context": {"locale": "de-DE"}})
    assert json.loads(row["context"]) == {"locale": "de-DE"}


@pytest.mark.parametrize(
    "ip, stored",
    [("198.51.100.23", "198.51.100.0"), ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
     ("2001:db8::1", "2001:db8::"), ("garbage", None)],
)
def test_context_ip_is_truncated_whatever_its_form(raw, ip, stored):
    [row] = raw({"messageId": "m1", "type": "page", "userId": "u", "context": {"ip": ip, "locale": "x"}})
    context = json.loads(row["context"])
    assert context.get("ip") == stored and context["locale"] == "x"


def test_spaced_json_is_scrubbed_too(raw):
    line = '{"messageId": "m1", "type": "page", "userId": "u", "context": {"ip": "10.1.2.3"}, "properties": {"m": "a@b.co"}}'
    [row] = raw(line)
    assert "10.1.2.3" not in row["context"] and "a@b.co" not in row["properties"]


def test_unknown_top_level_fields_are_kept_in_extra_without_pii(raw):
    [row] = raw({"messageId": "m1", "type": "identify", "userId": "u", "writeKey": "wk", "channel": "server",
                 "traits": {"email": "x@y.io", "plan": "pro"}})
    assert json.loads(row["extra"]) == {"writeKey": "wk", "channel": "server", "traits": {"plan": "pro"}}
    assert row["user_id"] == privacy.pseudonymize("k", "u")


def test_malformed_line_keeps_scrubbed_text_without_ids(raw):
    [row] = raw('{"messageId":"m1","userId":"cus_1","context":{"ip":"10.1.2.3"},"note":"a@b.co"')
    assert row["parse_error"] == "malformed_json"
    assert "cus_1" not in row["raw_text"] and "10.1.2.3" not in row["raw_text"] and "a@b.co" not in row["raw_text"]


def test_a_file_the_projection_cannot_process_is_rejected_alone(tmp_path, monkeypatch):
    """The engine fails on one file's records: the other file commits, the bad one is registered as
    rejected with its rows quarantined as unprocessable, and the books balance per file."""
    folder = tmp_path / "events" / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "good.ndjson").write_text('{"messageId":"g1"}\n{"messageId":"g2"}\n')
    (folder / "poison.ndjson").write_text('{"messageId":"p1","userId":"secret-user"}\n')
    table, select_sql = ingest.SOURCES["events"]
    poisoned = select_sql.replace(
        "r.messageId AS message_id", "CASE WHEN read_error IS NULL AND source_file LIKE '%poison%' "
        "THEN error('engine fault at secret-user') ELSE r.messageId END AS message_id")
    assert poisoned != select_sql
    monkeypatch.setitem(ingest.SOURCES, "events", (table, poisoned))
    con = memory_warehouse()
    report = ingest.ingest_day(con, tmp_path, "events", DAY, "run", ingest.IngestReport("events"))
    files = dict(con.execute("SELECT path, status FROM raw.source_files").fetchall())
    assert files == {"events/2026-11-02/good.ndjson": "ingested", "events/2026-11-02/poison.ndjson": "rejected"}
    rows = con.execute("SELECT source_file, message_id, parse_error FROM raw.events ORDER BY 1, line_no").fetchall()
    assert rows == [("events/2026-11-02/good.ndjson", "g1", None), ("events/2026-11-02/good.ndjson", "g2", None),
                    ("events/2026-11-02/poison.ndjson", None, "unprocessable")]
    [(reason,)] = con.execute("SELECT reason FROM raw.source_files WHERE status = 'rejected'").fetchall()
    assert reason.startswith("records could not be processed (") and "secret-user" not in reason
    assert (report.files_ingested, report.files_rejected, report.rows_ingested, report.rows_unreadable) == (1, 1, 3, 1)


def _registry(con) -> list[tuple]:
    return con.execute("SELECT arrival_date::VARCHAR, path, status, rows, duplicate_of FROM raw.source_files "
                       "ORDER BY 1, 2").fetchall()


@pytest.mark.parametrize("order", [[1, 2, 3], [3, 2, 1], [2, 3, 1]])
def test_which_copy_is_the_original_does_not_depend_on_the_order_days_are_ingested(tmp_path, order):
    """11-01/a and 11-02/b are byte-identical (b is a re-delivery, whichever day is ingested first),
    11-03/c.ndjson is a third copy and 11-03/d.ndjson differs by one byte: the registry and the raw
    rows are those of ingesting the days in order (checked by hand: 3 rows from a, 1 from d)."""
    lines = '{"messageId":"m1"}\n{"messageId":"m2"}\n{"messageId":"m3"}\n'
    for day, name, text in [(1, "a", lines), (2, "b", lines), (3, "c", lines), (3, "d", '{"messageId":"m4"}\n')]:
        folder = tmp_path / "events" / f"2026-11-0{day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.ndjson").write_text(text)
    con = memory_warehouse()
    for day in order:
        ingest.ingest_day(con, tmp_path, "events", date(2026, 11, day), "run", ingest.IngestReport("events"))
    a = "events/2026-11-01/a.ndjson"
    assert _registry(con) == [
        ("2026-11-01", a, "ingested", 3, None),
        ("2026-11-02", "events/2026-11-02/b.ndjson", "redelivered", 3, a),
        ("2026-11-03", "events/2026-11-03/c.ndjson", "redelivered", 3, a),
        ("2026-11-03", "events/2026-11-03/d.ndjson", "ingested", 1, None),
    ]
    assert con.execute("SELECT source_file, count(*) FROM raw.events GROUP BY 1 ORDER BY 1").fetchall() == [
        (a, 3), ("events/2026-11-03/d.ndjson", 1)]


@pytest.mark.parametrize("batch_bytes", [1, 10**9])
def test_a_range_ingested_in_one_batch_equals_day_by_day(tmp_path, batch_bytes):
    """Three days read and committed together (batch_bytes 10**9) or one by one (1): the same raw
    rows, registry and per-day reports. 11-01: a (2 rows) and p (1 good line, 1 line that is not JSON:
    the file reads, the line lands with a parse error);
    11-02: b, a byte-identical re-delivery of a, and an unsupported file; 11-03: nothing; 11-04: d."""
    a_lines = '{"messageId":"m1","userId":"u1"}\n{"messageId":"m2","userId":"u2"}\n'
    for day, name, text in [(1, "a.ndjson", a_lines), (1, "p.ndjson", '{"messageId":"m5"}\n{"messageId": "m6", "ty\n'),
                            (2, "b.ndjson", a_lines), (2, "notes.txt", "hello"), (4, "d.ndjson", '{"messageId":"m4"}\n')]:
        folder = tmp_path / "events" / f"2026-11-0{day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    days = [date(2026, 11, d) for d in (1, 2, 3, 4)]
    by_day, batched = memory_warehouse(), memory_warehouse()
    expected = {d: ingest.ingest_day(by_day, tmp_path, "events", d, "run", ingest.IngestReport("events")) for d in days}
    reports = ingest.ingest_days(batched, tmp_path, "events", days[0], days[-1], "run", batch_bytes=batch_bytes)
    assert reports == expected
    rows = "SELECT * EXCLUDE (ingested_at) FROM raw.events ORDER BY ALL"
    assert batched.execute(rows).fetchall() == by_day.execute(rows).fetchall()
    assert _registry(batched) == _registry(by_day) == [  # by hand
        ("2026-11-01", "events/2026-11-01/a.ndjson", "ingested", 2, None),
        ("2026-11-01", "events/2026-11-01/p.ndjson", "ingested", 2, None),
        ("2026-11-02", "events/2026-11-02/b.ndjson", "redelivered", 2, "events/2026-11-01/a.ndjson"),
        ("2026-11-02", "events/2026-11-02/notes.txt", "refused", 0, None),
        ("2026-11-04", "events/2026-11-04/d.ndjson", "ingested", 1, None),
    ]
    assert batched.execute("SELECT arrival_date::VARCHAR, source_file, count(*), count(parse_error) FROM raw.events "
                           "GROUP BY ALL ORDER BY ALL").fetchall() == [
        ("2026-11-01", "events/2026-11-01/a.ndjson", 2, 0), ("2026-11-01", "events/2026-11-01/p.ndjson", 2, 1),
        ("2026-11-04", "events/2026-11-04/d.ndjson", 1, 0)]
    assert [(r.files_ingested, r.files_partial, r.files_redelivered, r.files_refused, r.rows_ingested)
            for r in reports.values()] == [(2, 0, 0, 0, 4), (0, 0, 1, 1, 0), (0, 0, 0, 0, 0), (1, 0, 0, 0, 1)]
    # one commit per batch: every row of a batch has the same ingestion time
    [(times,)] = batched.execute("SELECT count(DISTINCT ingested_at) FROM raw.events").fetchall()
    assert times == (1 if batch_bytes > 1 else 2)
