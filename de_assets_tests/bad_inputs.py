"""A corpus of bad input landed on one day, with what must become of every record.

Every record that should end up clean has a messageId starting with ``good-``; every other record
(malformed, failing the contract, in a file that must not be read) has one starting with ``bad-`` or
none at all. User ids, e-mails and IP addresses are plain, distinctive tokens (``LEAK_TOKENS``), so
a scan of everything the pipeline writes can prove that none of them got past the raw layer.

`build(landing, outside)` writes the files and returns the kinds of bad input it landed (one entry
per kind; the test asserts there are at least 30) and the messageIds that must be clean.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAY = "2026-11-01"
EMAIL = "leak.person@example.com"
IPV4 = "203.0.113.77"
IPV6_COMPRESSED = "2001:db8:85a3::8a2e:370:7334"
IPV4_MAPPED = "::ffff:198.51.100.23"
NUMERIC_ID = "98765432101"
# What must appear nowhere downstream of the landing folder (plain ids all start with LEAKUSER).
LEAK_TOKENS = ("LEAKUSER", EMAIL, IPV4, "8a2e:370:7334", "198.51.100.23", NUMERIC_ID)


def event(message_id: str | None, n: int = 0, **overrides) -> dict:
    """A valid Segment track event on DAY, full of personal data that the raw layer must remove."""
    record = {
        "messageId": message_id,
        "type": "track",
        "event": "Product Viewed",
        "userId": f"LEAKUSER-{n:04d}",
        "anonymousId": f"LEAKUSER-anon-{n:04d}",
        "timestamp": f"{DAY}T10:{n % 60:02d}:00Z",
        "properties": {"product_id": f"p{n % 7}", "note": f"mail {EMAIL} from {IPV6_COMPRESSED}"},
        "context": {"ip": IPV4, "traits": {"email": EMAIL, "name": "Leak Person", "plan": "pro"}},
    }
    if message_id is None:
        del record["messageId"]
    record.update(overrides)
    return record


def line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class Corpus:
    def __init__(self, landing: Path):
        self.folder = landing / "events" / DAY
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kinds: list[str] = []
        self.good: set[str] = set()
        self._n = 0

    def good_event(self, **overrides) -> dict:
        self._n += 1
        message_id = f"good-{self._n:04d}"
        self.good.add(message_id)
        return event(message_id, self._n, **overrides)

    def bad_event(self, tag: str, **overrides) -> dict:
        self._n += 1
        return event(f"bad-{tag}", self._n, **overrides)

    def write(self, name: str, content: bytes | str, *kinds: str) -> Path:
        path = self.folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        self.kinds += kinds
        return path

    def ndjson(self, records) -> str:
        return "".join(line(r) + "\n" for r in records)


def build(landing: Path, outside: Path) -> Corpus:
    c = Corpus(landing)
    # Plenty of good rows: the day's quarantine rate must stay under the gate's 20%.
    c.write("a-good.ndjson", c.ndjson(c.good_event() for _ in range(400)))

    # Files that cannot be read whole
    c.write("b-not-parquet.parquet", "this is not parquet\n", "text file named .parquet")
    c.write("b-not-gzip.ndjson.gz", c.ndjson([c.bad_event("plain-as-gz")]), "plain text named .gz")
    member = gzip.compress(c.ndjson(c.good_event() for _ in range(5)).encode())
    broken = gzip.compress(c.ndjson([c.bad_event("in-corrupt-member")]).encode())[:25]
    c.write("b-truncated.ndjson.gz", member + broken, "gzip stream corrupt after a good member")
    c.write("b-concatenated.ndjson.gz",
            gzip.compress(c.ndjson([c.good_event()]).encode()) + gzip.compress(c.ndjson([c.good_event()]).encode()),
            "multi-member gzip (valid)")
    utf = c.ndjson([c.good_event()]).encode() + line(c.bad_event("latin1")).encode().replace(b"Leak", b"L\xe9ak") + b"\n"
    c.write("b-invalid-utf8.ndjson", utf + c.ndjson([c.good_event()]).encode(), "one invalid UTF-8 line between good lines")
    cp1252 = "\n".join([line(c.bad_event("cp1252", event="Caf\u00e9 Viewed")), line(c.good_event())]) + "\n"
    c.write("b-windows-1252.ndjson", cp1252.encode("cp1252"), "windows-1252 encoded file")
    c.write("b-nul-byte.ndjson", c.ndjson([c.good_event()]) + line(c.bad_event("nul"))[:-1] + "\x00}\n",
            "NUL byte inside a line")

    # CSV
    header = "messageId,type,event,userId,timestamp,properties.note\n"
    g1, g2 = c.good_event(), c.good_event()
    c.write("c-quoted-newline.csv",
            header + f'{g1["messageId"]},track,Product Viewed,{g1["userId"]},{g1["timestamp"]},"two\nlines"\n'
            + f'{g2["messageId"]},track,Product Viewed,{g2["userId"]},{g2["timestamp"]},one line\n',
            "CSV with a quoted newline (valid CSV)")
    g3 = c.good_event()
    c.write("c-field-count.csv",
            header + f'{g3["messageId"]},track,Product Viewed,{g3["userId"]},{g3["timestamp"]},ok\n'
            + "bad-extra-fields,track,Product Viewed,LEAKUSER-x,not-a-time,x,y,z\n",
            "CSV record with too many fields")
    g4 = c.good_event()
    c.write("c-invalid-utf8.csv",
            header.encode() + f'{g4["messageId"]},track,Product Viewed,{g4["userId"]},{g4["timestamp"]},ok\n'.encode()
            + b"bad-csv-latin1,track,Caf\xe9,LEAKUSER-y,not-a-time,x\n",
            "CSV with an invalid UTF-8 record")
    c.write("c-header-only.csv", header, "CSV with a header and no rows")

    # JSON documents
    c.write("d-truncated-array.json", "[" + line(c.bad_event("in-cut-array")) + ",{\"messageId\":", "truncated JSON array")
    c.write("d-scalar.json", '"just text, not an array"', "JSON document that is a scalar, not an array")
    c.write("d-one-object.json", line(c.good_event()), "")  # one object: accepted as one record
    c.write("d-good-array.json", json.dumps([c.good_event(), c.good_event()]), "")

    # Lines that are not events
    c.write("e-bad-lines.ndjson", "".join([
        line(c.good_event()) + "\n",
        '{"messageId":"bad-cut-json","userId":"LEAKUSER-cut","context":{"ip":"' + IPV4 + '"\n',
        "[1, 2, 3]\n",
        '"just a string"\n',
        "42\n",
        '{"messageId":"bad-numeric-id","userId": ' + NUMERIC_ID + ', "note": "' + EMAIL + ' ' + IPV6_COMPRESSED
        + ' ' + IPV4_MAPPED + '"\n',
        "[" * 5000 + "\n",
        "   \n",
        line(c.good_event()) + "\n",
    ]), "truncated JSON line", "JSON array line", "bare string line", "bare number line",
        "malformed line with a numeric user id", "malformed line with e-mail, compressed IPv6 and IPv4-mapped IPv6",
        "deeply nested brackets", "whitespace-only line")
    c.write("e-empty.ndjson", "", "empty file")
    c.write("e-blank-lines.ndjson", "\n\n  \n", "file of blank lines")
    c.write("e-bom-crlf.ndjson", "\ufeff" + line(c.good_event()) + "\r\n" + line(c.good_event()) + "\r\n",
            "BOM and CRLF line endings")
    c.write("e-long-line.ndjson", line(c.good_event(properties={"blob": "x" * 2_000_000})) + "\n",
            "2 MB line")

    # Records that parse but break the contract
    c.write("f-contract.ndjson", c.ndjson([
        c.bad_event("x", type="track") | {"messageId": None},
        c.bad_event("bad-type", type="launch"),
        c.bad_event("bad-ts", timestamp="yesterday-ish"),
        c.bad_event("bad-revenue", event="Order Completed", properties={"revenue": "lots"}),
        c.bad_event("no-user", userId="  ", anonymousId=None),
        c.bad_event("future", timestamp="2090-01-01T00:00:00Z"),
        c.bad_event("track-no-name", event=None),
    ]) + line(event("good-dup", 998)) + "\n" + line(event("good-dup", 998)) + "\n",
        "missing messageId", "type outside the enum", "unparseable timestamp", "non-numeric revenue",
        "no user id at all", "timestamp in the far future", "track without an event name",
        "same messageId twice in a file")
    c.good.add("good-dup")
    table = pa.table({"messageId": [1, 2], "userId": ["LEAKUSER-pq1", "LEAKUSER-pq2"], "weird": [b"\x00\x01", b"\xff"]})
    pq.write_table(table, c.folder / "f-wrong-schema.parquet")
    c.kinds.append("Parquet with a wrong schema (numeric messageId, no type, binary column)")

    # What must not be read at all
    secret = outside / "secret.ndjson"
    secret.write_text(line(event("bad-outside-root", 1)) + "\n")
    os.symlink(secret, c.folder / "g-link-outside.ndjson")
    c.kinds.append("symlink to a file outside the landing root")
    (c.folder / ".g-hidden.ndjson").write_text(line(event("bad-hidden", 1)) + "\n")
    c.kinds.append("hidden file")
    (c.folder / "g-upload.ndjson.part").write_text(line(event("bad-in-flight", 1)) + "\n")
    c.kinds.append("in-flight temp file")
    c.write("g-notes.xml", "<x>" + EMAIL + "</x>", "unsupported extension")
    (c.folder / "g-folder.ndjson").mkdir()
    c.kinds.append("folder named like a file")
    os.mkfifo(c.folder / "g-pipe.ndjson")
    c.kinds.append("FIFO named like a file")
    c.kinds = [k for k in c.kinds if k]
    return c
