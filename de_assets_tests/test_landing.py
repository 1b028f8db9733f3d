import gzip
import json

import duckdb
import pytest

from de_assets.lib import landing


@pytest.mark.parametrize(
    "name, fmt",
    [("a.ndjson", "ndjson"), ("a.JSONL", "ndjson"), ("a.ndjson.gz", "ndjson.gz"), ("a.jsonl.gz", "ndjson.gz"),
     ("a.json", "json"), ("a.csv", "csv"), ("a.parquet", "parquet"), ("a.txt", None), ("a.csv.gz", None)],
)
def test_file_format(name, fmt):
    assert landing.file_format(name) == fmt


def records(tmp_path, name, content: bytes):
    day = tmp_path / "events" / "2026-11-02"
    day.mkdir(parents=True, exist_ok=True)
    (day / name).write_bytes(content)
    [landed] = landing.list_files(tmp_path, "events", __import__("datetime").date(2026, 11, 2))
    con = duckdb.connect()
    return con.execute(landing.records_sql(con, landed) + " ORDER BY line_no").fetchall()


def test_ndjson_lines_keep_numbers_and_skip_blank_lines(tmp_path):
    rows = records(tmp_path, "a.ndjson", b'{"a":1}\n\n{"b":"x,\\"y\\""}\n{broken\n')
    assert [r[1] for r in rows] == ['{"a":1}', '{"b":"x,\\"y\\""}', "{broken"]
    assert [r[0] for r in rows] == [1, 3, 4]  # physical line numbers


def test_gzipped_ndjson(tmp_path):
    rows = records(tmp_path, "a.ndjson.gz", gzip.compress(b'{"a":1}\n{"a":2}\n'))
    assert [json.loads(r[1]) for r in rows] == [{"a": 1}, {"a": 2}]


def test_json_array_and_invalid_json_document(tmp_path):
    assert [json.loads(r[1]) for r in records(tmp_path, "a.json", b'[{"a":1},{"a":2}]')] == [{"a": 1}, {"a": 2}]
    bad = tmp_path / "bad"
    assert [r[1] for r in records(bad, "b.json", b'[{"a":1},')] == ['[{"a":1},']


def test_csv_flattened_columns_become_nested_objects(tmp_path):
    content = b'messageId,properties.revenue,context.page.path,properties\nm1,9.5,/x,\nm2,,,"{""k"":2}"\n'
    rows = [json.loads(r[1]) for r in records(tmp_path, "a.csv", content)]
    assert rows[0] == {"messageId": "m1", "properties": {"revenue": "9.5"}, "context": {"page": {"path": "/x"}}}
    # with both a JSON-text `properties` column and dotted ones, the JSON text wins where present
    assert rows[1]["properties"] == {"k": 2}


def test_list_files_ignores_hidden_and_missing_days(tmp_path):
    day = tmp_path / "events" / "2026-11-02"
    day.mkdir(parents=True)
    (day / ".partial.ndjson").write_text("{}")
    (day / "b.ndjson").write_text("{}")
    (day / "a.csv").write_text("x\n1\n")
    d = __import__("datetime").date(2026, 11, 2)
    assert [f.relative for f in landing.list_files(tmp_path, "events", d)] == [
        "events/2026-11-02/a.csv", "events/2026-11-02/b.ndjson"]
    assert landing.list_files(tmp_path, "events", d.replace(day=3)) == []


def test_scan_day_confines_reads_to_regular_files_inside_the_root(tmp_path):
    import os
    from datetime import date

    root, outside = tmp_path / "landing", tmp_path / "outside"
    folder = root / "events" / "2026-11-01"
    folder.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.ndjson").write_text("{}\n")
    (folder / "a.ndjson").write_text("{}\n")
    (root / "elsewhere.ndjson").write_text("{}\n")
    os.symlink(outside / "secret.ndjson", folder / "b-out.ndjson")
    os.symlink(root / "elsewhere.ndjson", folder / "c-in.ndjson")  # a link that stays inside the root
    os.symlink(outside, folder / "d-dir-out")
    (folder / "e-dir.ndjson").mkdir()
    os.mkfifo(folder / "f-pipe.ndjson")
    for name in (".hidden.ndjson", "_tmp.ndjson", "g.ndjson.part", "h.csv.tmp"):
        (folder / name).write_text("{}\n")
    listing = landing.scan_day(root, "events", date(2026, 11, 1))
    assert [f.relative for f in listing.files] == ["events/2026-11-01/a.ndjson", "events/2026-11-01/c-in.ndjson"]
    assert listing.refused == [
        ("events/2026-11-01/b-out.ndjson", "outside_landing_root"),
        ("events/2026-11-01/d-dir-out", "outside_landing_root"),
        ("events/2026-11-01/e-dir.ndjson", "not_a_regular_file"),
        ("events/2026-11-01/f-pipe.ndjson", "not_a_regular_file"),
    ]
    assert listing.skipped == 4
