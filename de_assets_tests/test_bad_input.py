"""Bad input never costs good data, and no personal data leaks (issue: bad input and PII).

The corpus (`bad_inputs.py`) lands 30+ kinds of bad input on one day next to 400 good events. Through
Dagster and through the CLI: the day is served, every good record is clean exactly once, no bad
record is, every landed row is accounted for per file, every file that was not wholly read is
registered with a reason and alerted on, and none of the plain ids, e-mails or IP addresses of the
input appear anywhere the pipeline writes: the warehouse, the Dagster instance (run and event
storage, compute logs), the reports, and what the CLI prints.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from de_assets_tests import bad_inputs
from de_assets_tests.bad_inputs import DAY, LEAK_TOKENS
from de_assets_tests.conftest import Pipeline, alerts_query, reader

# Hand-derived from bad_inputs.py: what each file that is not wholly readable must be registered as.
EXPECTED_FILES = {
    "b-invalid-utf8.ndjson": ("partial", "invalid_utf8"),
    "b-windows-1252.ndjson": ("partial", "invalid_utf8"),
    "b-truncated.ndjson.gz": ("partial", "truncated_gzip"),
    "c-invalid-utf8.csv": ("partial", "invalid_utf8"),
    "b-not-gzip.ndjson.gz": ("rejected", "truncated_gzip"),
    "b-not-parquet.parquet": ("rejected", "unreadable_file"),
    "g-link-outside.ndjson": ("refused", "outside_landing_root"),
    "g-folder.ndjson": ("refused", "not_a_regular_file"),
    "g-pipe.ndjson": ("refused", "not_a_regular_file"),
    "g-notes.xml": ("refused", "unsupported_format"),
}


@pytest.fixture
def corpus(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    return bad_inputs.build(tmp_path / "landing", outside)


def _text_columns(con) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT table_schema || '.' || table_name, column_name FROM information_schema.columns "
        "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') AND data_type IN ('VARCHAR', 'JSON')"
    ).fetchall()


def leaks_in_warehouse(db: Path) -> list[str]:
    """Every (table.column, token) where a token of the input appears in a text column."""
    hits = []
    with duckdb.connect(str(db), read_only=True) as con:
        for table, column in _text_columns(con):
            for token in LEAK_TOKENS:
                (n,) = con.execute(f'SELECT count(*) FROM {table} WHERE contains("{column}"::VARCHAR, ?)',
                                   [token]).fetchone()
                if n:
                    hits.append(f"{table}.{column}: {token}")
    return hits


def leaks_in_files(root: Path) -> list[str]:
    hits = []
    for path in [root] if root.is_file() else root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {t}" for t in LEAK_TOKENS if t.encode() in data]
    return hits


def assert_day_served_and_accounted(db: Path, corpus) -> None:
    with reader(db) as con:
        clean = [m for (m,) in con.execute("SELECT message_id FROM clean.events").fetchall()]
        assert sorted(clean) == sorted(corpus.good)  # every good record once, no bad record
        files = {Path(p).name: (s, r) for p, s, r in con.execute(
            "SELECT path, status, reason FROM raw.source_files WHERE arrival_date = ?", [DAY]).fetchall()}
        for name, (status, kind) in EXPECTED_FILES.items():
            assert files[name][0] == status, name
            assert kind in files[name][1], name
        others = {n: s for n, (s, _) in files.items() if n not in EXPECTED_FILES}
        assert set(others.values()) == {"ingested"}
        # landed = clean + quarantined + duplicates, file by file
        books = con.execute("""
            SELECT f.path, f.rows,
                   (SELECT count(*) FROM clean.events c WHERE c.source_file = f.path),
                   (SELECT count(*) FROM quarantine.events q WHERE q.source_file = f.path),
                   (SELECT count(*) FROM clean.events_duplicates d WHERE d.source_file = f.path)
            FROM raw.source_files f WHERE f.status <> 'refused'""").fetchall()
        assert len(books) == len(files) - 4
        for path, landed, clean_rows, quarantined, duplicates in books:
            assert landed == clean_rows + quarantined + duplicates, path
        # what the unreadable parts became: quarantined with the reader's reason
        reasons = dict(con.execute(
            "SELECT reason, count(*) FROM quarantine.events WHERE reason IN "
            "('invalid_utf8', 'truncated_gzip', 'unreadable_file') GROUP BY 1").fetchall())
        assert reasons == {"invalid_utf8": 3, "truncated_gzip": 2, "unreadable_file": 1}
        # good-dup landed twice in one file: one clean, one duplicate
        assert con.execute("SELECT count(*) FROM clean.events_duplicates").fetchone()[0] == 1
    alerts = alerts_query(db, "SELECT count(*) AS n FROM pipeline_health.alerts WHERE kind = 'bad_file'")["n"][0]
    assert alerts == len(EXPECTED_FILES)


def test_corpus_has_at_least_30_kinds_of_bad_input(corpus):
    assert len(set(corpus.kinds)) >= 30


def test_bad_input_through_dagster_loses_no_good_record_and_leaks_nothing(tmp_path, corpus):
    pipeline = Pipeline(tmp_path, tmp_path / "landing", max_quarantine_rate=0.2)  # the production gate
    result = pipeline.run(DAY)
    assert result.success
    assert_day_served_and_accounted(pipeline.db, corpus)
    assert pipeline.query("SELECT count(*) AS n FROM marts.daily_engagement")["n"][0] >= 1
    [raw] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["raw", "raw_events"])]
    meta = {k: v.value for k, v in raw.materialization.metadata.items()}
    assert (meta["files_partial"], meta["files_rejected"], meta["files_refused"], meta["files_skipped"]) == (4, 2, 4, 2)
    assert leaks_in_warehouse(pipeline.db) == []
    assert leaks_in_files(tmp_path / "reports") == []
    events = "\n".join(dg.serialize_value(e) for e in pipeline.instance.all_logs(result.run_id))
    assert [t for t in LEAK_TOKENS if t in events] == []
    # a re-run reads nothing again and changes nothing
    assert pipeline.run(DAY).success
    assert_day_served_and_accounted(pipeline.db, corpus)


def test_bad_input_through_the_cli_leaks_nothing_anywhere(tmp_path, corpus):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DE_ASSETS_DUCKDB": str(tmp_path / "w.duckdb"),
           "DE_ASSETS_REPORTS": str(tmp_path / "reports"), "DE_ASSETS_PSEUDONYM_KEY": "k" * 32}
    done = subprocess.run(
        [sys.executable, "-m", "de_assets.cli", "run", "--start", DAY, "--landing", str(tmp_path / "landing")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"daily_pipeline {DAY}..{DAY}: SUCCESS" in done.stdout
    assert_day_served_and_accounted(tmp_path / "w.duckdb", corpus)
    assert [t for t in LEAK_TOKENS if t in done.stdout + done.stderr] == []
    assert leaks_in_warehouse(tmp_path / "w.duckdb") == []
    assert leaks_in_files(tmp_path / "w.duckdb") == []
    assert leaks_in_files(home) == []  # run and event storage, compute logs
    assert leaks_in_files(tmp_path / "reports") == []
