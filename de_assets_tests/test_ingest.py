"""The raw layer's projection on hand-written records (no Dagster)."""

import json
from datetime import date

import duckdb
import pytest

from de_assets.lib import ingest, privacy, tables

DAY = date(2026, 11, 2)


@pytest.fixture
def raw(tmp_path):
    def ingest_lines(*records) -> list[dict]:
        folder = tmp_path / "events" / DAY.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "a.ndjson").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
        con = duckdb.connect()
        tables.ensure_tables(con)
        privacy.install_macros(con, "k")
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
