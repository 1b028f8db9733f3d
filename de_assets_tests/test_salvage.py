"""`lib/salvage.py`: what is kept of files DuckDB refuses whole, with line numbers of the fast path."""

import gzip
import random

import duckdb
import pytest

from de_assets.lib import salvage


def test_ndjson_keeps_good_lines_numbers_physical_lines_and_flags_invalid_utf8():
    data = b'\xef\xbb\xbf{"a":1}\r\n\n  \n{"b":"\xff"}\n{"c":3}\n'
    assert list(salvage.ndjson_records(data, compressed=False)) == [
        (1, '{"a":1}', None),            # BOM and CR removed
        (4, '{"b":"\ufffd"}', "invalid_utf8"),  # lines 2 and 3 are blank: not records
        (5, '{"c":3}', None),
    ]


def test_gzip_cut_between_members_keeps_the_first_member_whole():
    first = gzip.compress(b'{"a":1}\n{"b":2}\n')
    second = b"\x1f\x8b\x08\x00garbage"  # a second member whose header is all there is
    assert list(salvage.ndjson_records(first + second, compressed=True)) == [
        (1, '{"a":1}', None), (2, '{"b":2}', None), (3, None, "truncated_gzip"),
    ]


def test_gzip_cut_inside_a_line_flags_that_line():
    noise = random.Random(1).randbytes(10_000).hex().encode()  # does not compress
    whole = gzip.compress(b'{"a":1}\n' + b'{"b":"' + noise + b'"}\n')
    cut = whole[: len(whole) // 2]  # the stream ends inside line 2
    records = list(salvage.ndjson_records(cut, compressed=True))
    assert records[0] == (1, '{"a":1}', None)
    assert [(n, e) for n, _, e in records[1:]] == [(2, "truncated_gzip")]


def test_not_gzip_at_all_is_one_unreadable_record():
    assert list(salvage.ndjson_records(b'{"a":1}\n', compressed=True)) == [(1, None, "truncated_gzip")]


def test_json_array_elements_and_non_arrays():
    assert list(salvage.json_array_records(b'[{"a":1}, {"b":"\xc3\xa9"}]')) == [
        (1, '{"a":1}', None), (2, '{"b":"\u00e9"}', None)]
    assert list(salvage.json_array_records(b'[{"a":1},')) == [(1, '[{"a":1},', None)]  # malformed downstream
    assert list(salvage.json_array_records(b'[{"a":"\xe9"}]'))[0][2] == "invalid_utf8"


def test_csv_rows_allow_quoted_newlines_and_flag_field_count_and_encoding():
    header, rows = salvage.csv_rows(b'id,note\n1,"two\nlines"\n2,x,extra\n\n3,caf\xe9\n4,ok\n')
    assert header == ["id", "note"]
    assert rows == [(1, ["1", "two\nlines"], None), (2, None, "csv_field_count"), (3, None, "invalid_utf8"),
                    (4, ["4", "ok"], None)]


@pytest.mark.parametrize("message", [
    'Invalid Input Error: CSV Error on Line: 2\nOriginal Line: {"userId":"alice@example.com"}',
    "Invalid Input Error: Malformed JSON at byte 3 of input: unexpected character.  Input: {\"u\": \"alice\"}",
    "IO Error: No magic bytes found at end of file '/data/alice/x.parquet'",
])
def test_safe_error_keeps_the_kind_and_drops_the_data(message):
    text = salvage.safe_error(duckdb.InvalidInputException(message))
    assert text.startswith("InvalidInputException: ")
    assert "alice" not in text and "userId" not in text


def test_safe_error_of_a_real_duckdb_decode_error_quotes_nothing(tmp_path):
    path = tmp_path / "x.ndjson"
    path.write_bytes(b'{"userId":"secret-id-1"}\n{"userId":"secret-id-2\xff"}\n')
    with pytest.raises(duckdb.Error) as error:
        duckdb.sql(f"FROM read_csv('{path}', columns={{'l': 'VARCHAR'}}, header=false, delim='\\x1f', quote='')").fetchall()
    assert "secret-id" in str(error.value)  # DuckDB quotes the line...
    assert "secret-id" not in salvage.safe_error(error.value)  # ...the pipeline's message does not
