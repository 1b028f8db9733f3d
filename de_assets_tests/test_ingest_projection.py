"""The events projection against the one before issue 13, on a corpus of every kind of line.

`extra` is built by one `json_merge_patch` of the line (the old projection ran two for alias
records), and a top-level `previousId` is found in `extra`, not in the raw line. The old SQL lives
here only, as the reference: both run on the same staged lines and every column of every row must
be equal, except for the one deliberate difference asserted by hand below.
"""

import json
from datetime import date, datetime

import pytest

from de_assets.lib import ingest, privacy
from de_assets_tests.conftest import memory_warehouse
from de_assets.lib.ingest import _EVENT_SHAPE, _EXTRA_PATCH, _PARSE_ERROR, _PARSED, _UNPARSED_TEXT

# The projection of raw.events before issue 13 (de_assets/lib/ingest.py at 75cf091), verbatim.
OLD_RAW_EVENTS_SELECT = f"""
    WITH parsed AS ({_PARSED.format(shape=_EVENT_SHAPE)}),
    with_ip AS (SELECT *, r.context->>'$.ip' AS ip FROM parsed),
    patched AS (
        SELECT *,
            -- context.ip -> truncated, as a plain string replace of its exact value; an ip written
            -- differently (spacing) is still caught by scrub, which truncates any full address
            CASE WHEN ip IS NULL THEN r.context::VARCHAR
                 ELSE replace(r.context::VARCHAR, '"ip":"' || ip || '"',
                              '"ip":' || coalesce('"' || truncate_ip(ip) || '"', 'null')) END AS context_ip,
            -- Segment alias records carry the user's previous id: pseudonymized like userId
            CASE WHEN ok AND contains(line, '"previousId"')
                 THEN json_merge_patch(json_merge_patch(line, '{_EXTRA_PATCH}'),
                                       json_object('previousId', pseudonym(line->>'$.previousId')))
                 WHEN ok THEN json_merge_patch(line, '{_EXTRA_PATCH}') END AS extra_fields
        FROM with_ip
    )
    SELECT
        $arrival_date::DATE AS arrival_date, source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        r.messageId AS message_id,
        r.type AS type,
        r.event AS event,
        pseudonym(r.userId) AS user_id,
        pseudonym(r.anonymousId) AS anonymous_id,
        r.timestamp AS timestamp,
        r.sentAt AS sent_at,
        r.receivedAt AS received_at,
        r.originalTimestamp AS original_timestamp,
        scrub(r.properties::VARCHAR) AS properties,
        scrub(strip_trait_pii(context_ip::JSON)::VARCHAR) AS context,
        CASE WHEN ok THEN scrub(strip_trait_pii(extra_fields)::VARCHAR) END AS extra,
        {_PARSE_ERROR} AS parse_error,
        CASE WHEN NOT ok THEN {_UNPARSED_TEXT} END AS raw_text
    FROM patched
"""

SEGMENT = ('"messageId":"m1","type":"track","event":"Order Completed","userId":"cus_1","anonymousId":"a-1",'
           '"timestamp":"2025-03-03T00:00:00.757Z","sentAt":"2025-03-03T00:00:01Z","receivedAt":"2025-03-03T00:00:01Z",'
           '"originalTimestamp":"2025-03-03T00:00:00.757Z","properties":{"total":12.5,"note":"to a@b.co"},'
           '"context":{"ip":"95.181.31.193","locale":"en-US","traits":{"email":"x@y.io","plan":"pro"}}')

CORPUS = [
    # no extra field, in every written form
    "{" + SEGMENT + "}",
    '{ "messageId" : "m2" ,\t"type" : "page" , "userId" : "u" }',
    "  {" + SEGMENT + "}  ",
    '{"messageId":"m3"}',
    "{}",
    # extra fields with nested objects and arrays, in line order between the Segment fields
    '{"channel":"client","messageId":"m4","integrations":{"All":true,"Mixpanel":{"a":[1,{"b":[[],{}]}]}},'
    '"type":"page","version":2,"arr":[],"obj":{},"deep":[[[["x"]]]]}',
    "{" + SEGMENT + ',"writeKey":"wk","context2":{"ip":"10.1.2.3","mail":"p@q.de"}}',
    # duplicate top-level keys: an extra key, a Segment field, traits
    '{"messageId":"m5","channel":"a","channel":"b","version":1}',
    '{"messageId":"m6","userId":"first","userId":"second","x":1}',
    '{"messageId":"m7","traits":{"email":"e@f.io","plan":"a"},"traits":{"name":"N","plan":"b"}}',
    '{"messageId":"m8","context":{"ip":"1.2.3.4"},"context":{"ip":"5.6.7.8"},"k":[1]}',
    # numbers in every format, as extras and as Segment fields
    '{"messageId":"m9","i":0,"neg":-17,"f":2.50,"f2":0.1,"f3":-0.0,"z":-0,"e1":1e5,"e2":1E-7,"e3":-2.5e+3,'
    '"e4":6.02E23,"big":12345678901234567890123,"u64":18446744073709551615,"i64m":-9223372036854775809,'
    '"huge":1e400,"tiny":5e-400,"list":[1,-0,1.0,100000000000000000000.0]}',
    '{"messageId":1.0,"type":2,"event":1e5,"userId":12345678901234567890123,"anonymousId":-0,"timestamp":1741000000,'
    '"sentAt":1.5e9,"receivedAt":-0.0,"originalTimestamp":true,"properties":{"n":1E2},"context":{"n":-1.50}}',
    '{"messageId":"m10","x":NaN,"y":-Infinity}',
    # unicode and escaped strings, in keys and values, in fields and extras
    r'{"messageId":"m\u00e9\"11","type":"p\u0061ge","event":"caf\u00e9 \ud83d\ude00 \/ \\ \t","userId":"u\u00fc",'
    r'"k\u00e9y":"v\u2028\u2029\u0001\b\f\n\r\"","raw":"é ü 😀 日本","esc\"key":"\\","slash\/":"a\/b",'
    r'"properties":{"q\u00e9":"\u00e9"},"context":{"locale":"\u0064e"}}',
    # null values: fields, extras, the JSON columns
    '{"messageId":null,"type":null,"event":null,"userId":null,"anonymousId":null,"properties":null,"context":null,'
    '"extra":null,"integrations":{"a":null}}',
    '{"messageId":"m12","userId":"","anonymousId":"   ","timestamp":"","n":null}',
    # Segment fields with other JSON types
    '{"messageId":{"a":1},"type":["page"],"event":false,"properties":"text a@b.co","context":[1,"10.0.0.1"]}',
    '{"messageId":"m13","properties":[],"context":"ip 10.9.8.7","userId":{"id":"u"}}',
    # traits with PII keys, non-object traits, traits in context only
    '{"messageId":"m14","type":"identify","userId":"u","traits":{"email":"x@y.io","name":"N","firstName":"F",'
    '"lastName":"L","first_name":"f","last_name":"l","phone":"+1","address":{"city":"c"},"username":"n",'
    '"birthday":"2000-01-01","plan":"pro","createdAt":"2025-01-01"},"channel":"server","version":2}',
    '{"messageId":"m15","traits":"x@y.io is my mail","channel":"c"}',
    '{"messageId":"m16","traits":null}',
    '{"messageId":"m17","traits":["email"],"z":1}',
    '{"messageId":"m18","traits":{}}',
    '{"messageId":"m19","traits":{"email":"a@b.co"}}',
    '{"messageId":"m20","properties":{"traits":{"email":"p@q.io"}},"context":{"traits":{"email":"c@d.io","k":1}}}',
    '{"messageId":"m21","x":"\\"traits\\": {\\"email\\": 1}"}',
    # previousId (Segment alias) in every form
    '{"messageId":"m22","type":"alias","userId":"new","previousId":"old-id","channel":"server"}',
    '{"previousId":"first-key","messageId":"m23","type":"alias","z":0}',
    '{"messageId":"m24","previousId":""}',
    '{"messageId":"m25","previousId":"  "}',
    '{"messageId":"m26","previousId":null}',
    '{"messageId":"m27","previousId":42}',
    '{"messageId":"m28","previousId":{"id":"x"}}',
    '{"messageId":"m29","properties":{"previousId":"nested"},"k":"\\"previousId\\""}',
    '{"messageId":"m30","previousId":"a@b.co","traits":{"email":"x@y.io","plan":"p"}}',
    '{"messageId":"m31","previousId":"one","previousId":"two"}',
    # context.ip forms
    '{"messageId":"m32","context":{"ip":"2001:db8:85a3:8d3:1319:8a2e:370:7348"}}',
    '{"messageId":"m33","context":{"ip":"garbage","ip2":"10.1.2.3"}}',
    '{"messageId":"m34","context":{"ip": "10.1.2.3"}}',
    # only Segment's own top-level fields (the fast path), with every kind of value
    '{"version":1e5,"messageId":"m37","channel":-0,"integrations":{"n":[1,2.50,-0.0,1E-7,12345678901234567890123,'
    '18446744073709551615,-9223372036854775809,1e400]},"name":1.0,"category":null,"groupId":"g\\u00e9\\"",'
    '"writeKey":"é😀\\u2028\\n","_metadata":{"bundled":[]},"traits":{"name":"N","x":{"email":1}}}',
    '{"type":"group","groupId":"g1","traits":{"email":"a@b.co","employees":1E3},"version":2.0,"userId":"u"}',
    '{"messageId":"m38","previousId":"p1","channel":"server","traits":"t","version":NaN}',
    '{"messageId":"m39","channel":"a","version":1,"channel":"b"}',
    # not objects, not JSON
    "[1,2,3]",
    '"just a string"',
    "42",
    "null",
    "true",
    '{"messageId":"m35","userId":"cus_9","context":{"ip":"10.1.2.3"}',
    '{"messageId":"m36",}',
    "not json at all a@b.co",
    '{"a":1} {"b":2}',
]


def _stage(con, lines):
    con.execute("CREATE OR REPLACE TEMP TABLE _lines (source_file VARCHAR, line_no BIGINT, line VARCHAR, "
                "read_error VARCHAR)")
    con.executemany("INSERT INTO _lines VALUES ('f.ndjson', ?, ?, NULL)", list(enumerate(lines, 1)))
    con.execute("INSERT INTO _lines VALUES ('f.ndjson', 0, NULL, 'unreadable_file')")


PARAMS = {"arrival_date": date(2025, 3, 3), "ingested_at": datetime(2025, 3, 3, 12)}


def _project(con, select_sql):
    sql = select_sql.replace("{records}", "SELECT *, $arrival_date::DATE AS arrival_date FROM _lines")
    cur = con.execute(f"SELECT * FROM ({sql}) ORDER BY line_no", PARAMS)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def test_the_projection_gives_every_line_what_the_old_projection_gave():
    con = memory_warehouse()
    _stage(con, CORPUS)
    old, new = _project(con, OLD_RAW_EVENTS_SELECT), _project(con, ingest.RAW_EVENTS_SELECT)
    assert len(new) == len(CORPUS) + 1
    for before, after in zip(old, new):
        assert after == before, f"line {before['line_no']}"


def test_the_corpus_covers_what_it_claims():
    """Not vacuous: extras, PII traits, previousId pseudonyms, duplicates and parse errors are in the
    corpus and come out as checked by hand."""
    con = memory_warehouse()
    _stage(con, CORPUS)
    rows = {r["line_no"]: r for r in _project(con, ingest.RAW_EVENTS_SELECT)}
    p = lambda value: privacy.pseudonymize("k", value)  # noqa: E731
    assert rows[1]["extra"] == "{}" and rows[5]["extra"] == "{}"
    assert json.loads(rows[6]["extra"]) == {"channel": "client", "integrations": {"All": True, "Mixpanel": {
        "a": [1, {"b": [[], {}]}]}}, "version": 2, "arr": [], "obj": {}, "deep": [[[["x"]]]]}
    assert json.loads(rows[7]["extra"]) == {"writeKey": "wk", "context2": {"ip": "10.1.2.0", "mail": "[email]"}}
    assert rows[8]["extra"] == '{"channel":"a","channel":"b","version":1}'  # duplicates kept as written
    assert rows[9]["user_id"] == p("first") and rows[9]["extra"] == '{"x":1}'
    # stripping trait PII merges the first traits object and drops its duplicates (as it always did)
    assert rows[10]["extra"] == '{"traits":{"plan":"a"}}'
    assert rows[12]["extra"].startswith('{"i":0,"neg":-17,"f":2.5,"f2":0.1,"f3":-0.0,"z":0,"e1":100000.0,"e2":1e-7,')
    assert rows[13]["message_id"] == "1.0" and rows[13]["user_id"] == p("12345678901234567890123")
    assert rows[15]["event"] == "café 😀 / \\ \t" and rows[15]["user_id"] == p("uü")
    assert json.loads(rows[15]["extra"])["kéy"] == "v\u2028\u2029\u0001\b\f\n\r\""
    assert json.loads(rows[16]["extra"]) == {"extra": None, "integrations": {"a": None}}
    assert rows[17]["user_id"] is None and rows[17]["anonymous_id"] is None
    assert json.loads(rows[20]["extra"]) == {"channel": "server", "version": 2, "traits": {
        "plan": "pro", "createdAt": "2025-01-01"}}
    assert json.loads(rows[21]["extra"]) == {"traits": "[email] is my mail", "channel": "c"}
    assert rows[26]["context"] == '{"traits":{"k":1}}'
    assert rows[28]["extra"] == f'{{"channel":"server","previousId":"{p("old-id")}"}}'
    assert rows[29]["extra"] == f'{{"z":0,"previousId":"{p("first-key")}"}}'
    assert [rows[n]["extra"] for n in (30, 31, 32)] == ["{}", "{}", "{}"]
    assert rows[33]["extra"] == f'{{"previousId":"{p("42")}"}}'
    assert rows[34]["extra"] == f'{{"previousId":"{p(json.dumps({"id": "x"}, separators=(",", ":")))}"}}'
    assert rows[36]["extra"] == f'{{"previousId":"{p("a@b.co")}","traits":{{"plan":"p"}}}}'
    assert rows[37]["extra"] == f'{{"previousId":"{p("one")}"}}'  # the first value, the duplicate merged away
    assert rows[38]["context"] == '{"ip":"2001:db8:85a3::"}'
    assert [rows[n]["parse_error"] for n in range(45, len(CORPUS) + 1)] == (
        ["malformed_json"] * 5 + ["malformed_json", None, "malformed_json", "malformed_json"])
    assert json.loads(rows[41]["extra"])["integrations"]["n"][:3] == [1, 2.5, -0.0]
    assert json.loads(rows[42]["extra"]) == {"groupId": "g1", "traits": {"employees": 1000.0}, "version": 2.0}
    assert rows[43]["extra"] == f'{{"channel":"server","traits":"t","version":NaN,"previousId":"{p("p1")}"}}'
    assert rows[44]["extra"] == '{"channel":"a","version":1,"channel":"b"}'
    assert rows[0]["parse_error"] == "unreadable_file" and rows[0]["extra"] is None


def test_a_previous_id_key_written_with_escapes_is_pseudonymized_too():
    """The one difference to the old projection, deliberately: it looked for `"previousId"` in the
    raw line, so a key written `"previous\\u0049d"` kept the raw id in `extra` (a leak). Now the key
    is looked for in `extra`, where it is written unescaped: the id is pseudonymized like any other."""
    con = memory_warehouse()
    _stage(con, [r'{"messageId":"m","type":"alias","previous\u0049d":"old-id"}'])
    [(_, old), (_, new)] = [(r["line_no"], r) for r in (_project(con, OLD_RAW_EVENTS_SELECT)[1],
                                                         _project(con, ingest.RAW_EVENTS_SELECT)[1])]
    assert old["extra"] == '{"previousId":"old-id"}'
    assert new["extra"] == f'{{"previousId":"{privacy.pseudonymize("k", "old-id")}"}}'
    assert {k: v for k, v in new.items() if k != "extra"} == {k: v for k, v in old.items() if k != "extra"}


@pytest.mark.parametrize("line", CORPUS[:3])
def test_the_events_projection_still_runs_through_ingest_day(tmp_path, line):
    folder = tmp_path / "events" / "2025-03-03"
    folder.mkdir(parents=True)
    (folder / "a.ndjson").write_text(line + "\n")
    con = memory_warehouse()
    ingest.ingest_day(con, tmp_path, "events", date(2025, 3, 3), "run", ingest.IngestReport("events"))
    [(message_id, extra)] = con.execute("SELECT message_id, extra FROM raw.events").fetchall()
    assert message_id in ("m1", "m2") and extra == "{}"
