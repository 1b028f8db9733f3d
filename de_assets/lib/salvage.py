"""Reading what can be read of a landed file that DuckDB refuses as a whole.

The fast path (`landing.records_sql`) reads a file in one DuckDB scan. When that scan fails (one
line of invalid UTF-8, a truncated `.gz`, a CSV with a quoted newline, a `.parquet` that is not
Parquet), the file is read here instead, line by line, so that its readable records are kept and
only what cannot be read is lost, each with a reason:

* ``invalid_utf8``       a line (or CSV record) that is not valid UTF-8
* ``truncated_gzip``     the compressed stream ends early or is corrupt: the line it ends in (or,
                         when it ends between lines, one record for the unread rest)
* ``csv_field_count``    a CSV record with more or fewer fields than the header
* ``unreadable_file``    nothing of the file can be read (e.g. a `.parquet` that is not Parquet)

Every function yields ``(line_no, line, read_error)``: ``line`` is the record as JSON text (or the
text as landed, for a bad record) and ``read_error`` is None for a readable record. Line numbers
are those of the fast path (physical lines of NDJSON, blank lines skipped; records of CSV and
Parquet; elements of a JSON array), so a record keeps its number whichever path read it.

Nothing here puts file content into an error message: ``safe_error`` describes a failure by its
kind only, because DuckDB's messages quote the offending line.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zlib
from collections.abc import Iterator

Record = tuple[int, str | None, str | None]

_BLANK = re.compile(rb"[ \t\n\r\f]*")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_NO_DATA_AFTER = ("Original Line", "Input:", "LINE ", "\n")


def safe_error(error: BaseException, detail: bool = True) -> str:
    """A one-line description of a reader error without any of the data it may quote.

    With ``detail`` the message's first line is kept, cut before the places where DuckDB's reader
    messages quote data, with quoted text, paths and long numbers removed; without it (errors
    whose message format is not known, e.g. from an arbitrary expression), only the error's type.
    """
    if not detail:
        return type(error).__name__
    text = str(error)
    for marker in _NO_DATA_AFTER:
        text = text.split(marker, 1)[0]
    text = _QUOTED.sub("<...>", text)
    text = re.sub(r"\S*/\S*", "<path>", text)  # we name the file ourselves, relative to the landing root
    text = re.sub(r"\d{4,}", "<n>", text).strip(" :|")
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def _decode(raw: bytes) -> tuple[str, bool]:
    """The text of a line and whether it was valid UTF-8 (invalid bytes become U+FFFD)."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def _gunzip(data: bytes) -> tuple[bytes, bool]:
    """Decompress as much of a (multi-member) gzip stream as can be; returns (bytes, complete)."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data)
        except zlib.error:
            return bytes(out), False
        if not inflater.eof:
            return bytes(out), False
        data = inflater.unused_data.lstrip(b"\0")
    return bytes(out), True


def ndjson_records(data: bytes, compressed: bool) -> Iterator[Record]:
    """Physical lines of an NDJSON file (blank lines skipped); a corrupt tail is one bad record."""
    complete = True
    if compressed:
        data, complete = _gunzip(data)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    last = len(lines)
    cut_mid_line = not complete and data != b"" and not data.endswith(b"\n")
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if _BLANK.fullmatch(raw):
            continue
        text, valid = _decode(raw)
        if cut_mid_line and number == last:  # the corrupt stream ended inside this line
            yield number, text, "truncated_gzip"
        else:
            yield number, text, None if valid else "invalid_utf8"
    if not complete and not cut_mid_line:  # the unread rest of the file, after its last whole line
        yield last + 1, None, "truncated_gzip"


def json_array_records(data: bytes) -> Iterator[Record]:
    """Elements of a JSON array; any other document is one bad record (as the fast path does)."""
    text, valid = _decode(data.removeprefix(b"\xef\xbb\xbf"))
    if not valid:
        yield 1, text, "invalid_utf8"
        return
    try:
        document = json.loads(text)
    except ValueError:
        yield 1, text, None  # not JSON: the raw layer marks it malformed_json, like the fast path
        return
    if not isinstance(document, list):
        yield 1, text, None
        return
    for number, element in enumerate(document, start=1):
        yield number, json.dumps(element, ensure_ascii=False, separators=(",", ":")), None


def csv_rows(data: bytes) -> tuple[list[str], list[tuple[int, list[str] | None, str | None]]]:
    """Header and records of a CSV file read by Python's csv module (quoted newlines allowed).

    Returns ``(header, [(record_no, fields or None, read_error)])``; a record whose field count
    differs from the header's, or that is not valid UTF-8, carries its error and no fields.
    """
    text, _ = _decode(data.removeprefix(b"\xef\xbb\xbf"))
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return [], []
    rows: list[tuple[int, list[str] | None, str | None]] = []
    number = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error:
            number += 1
            rows.append((number, None, "csv_field_count"))
            continue
        if not fields or all(not f.strip() for f in fields) and len(fields) <= 1:
            continue  # a blank line is not a record
        number += 1
        if any("\ufffd" in f for f in fields):
            rows.append((number, None, "invalid_utf8"))
        elif len(fields) != len(header):
            rows.append((number, None, "csv_field_count"))
        else:
            rows.append((number, fields, None))
    return header, rows
