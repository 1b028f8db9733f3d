"""Forget-user end to end (issue 11, item 7) and the key rules (item 8).

Golden fixture (README): carol's clean events are m15 m19 m20 m28 on 11-02 and m35 m36 on 11-03;
11-03/redelivered.ndjson is a byte-identical copy of 11-02/a.ndjson (three of her lines in each).
"""

import gzip
import json
import logging
import shutil
from datetime import date, datetime

import dagster as dg
import duckdb
import pytest

from de_assets import cli, lake
from de_assets.definitions import build_defs
from de_assets.lib import forget, ingest, privacy
from de_assets.partitions import partition_range_tags
from de_assets.resources import DEV_PSEUDONYM_KEY, MIN_KEY_BYTES, PipelineSettings
from de_assets_tests.conftest import Pipeline, held_query, record_forget_request
from de_assets_tests.test_pipeline import MARTS, snapshot

CLI_KEY = "k" * MIN_KEY_BYTES
DAU = "SELECT event_date::VARCHAR d, dau FROM marts.daily_engagement ORDER BY d"
GONE = {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}


def lake_files_with(root, value: str) -> list[str]:
    """Files under the lake holding ``value``: Parquet data read column by column, anything else byte-wise."""
    import pyarrow.parquet as pq

    hits = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            found = any(value in str(v) for column in table.columns for v in column.to_pylist())
        else:
            found = value.encode() in path.read_bytes()
        if found:
            hits.append(str(path.relative_to(root)))
    return hits


def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DE_ASSETS_MAX_QUARANTINE_RATE", "0.5")
    monkeypatch.setenv("DE_ASSETS_PSEUDONYM_KEY", CLI_KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()


def _query(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _held(db, sql):
    """`sql` over the tables held in the catalog database (the forget requests, audit, forgotten rows)."""
    return [tuple(row) for row in held_query(db, sql).itertuples(index=False)]


def _without(landing, user: str) -> int:
    """Remove every landed record of `user` (each format rewritten in place); records removed."""
    removed = 0
    for path in sorted(p for p in (landing / "events").rglob("*") if p.is_file()):
        if path.name.endswith((".ndjson", ".ndjson.gz")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt") as f:
                lines = f.readlines()
            kept = [line for line in lines if f'"{user}"' not in line]
            with opener(path, "wt") as f:
                f.writelines(kept)
            removed += len(lines) - len(kept)
        elif path.suffix == ".json":
            records = json.loads(path.read_text())
            kept = [r for r in records if r.get("userId") != user]
            removed += len(records) - len(kept)
            path.write_text(json.dumps(kept)) if kept else path.unlink()
        elif path.suffix in (".parquet", ".csv"):
            reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
            [(hits,)] = duckdb.sql(f"SELECT count(*) FROM {reader}('{path}') WHERE \"userId\" = '{user}'").fetchall()
            assert hits == 0 or path.suffix == ".parquet"
            if hits:
                [(total,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()
                assert total == hits  # c.parquet holds only her m28
                path.unlink()
                removed += hits
    return removed


def test_forget_user_cli_leaves_no_trace_in_dagster_suppresses_reingest_and_serves_consistent_marts(
    tmp_path, monkeypatch, capsys, golden_landing
):
    _env(monkeypatch, tmp_path)
    db, home = tmp_path / "w.duckdb", tmp_path / "home"
    carol = privacy.pseudonymize(CLI_KEY, "carol")
    assert cli.main(["run", "--start", "2026-11-01", "--end", "2026-11-03", "--landing", str(golden_landing)]) == 0
    assert [n for _, n in _query(db, DAU)] == [3, 4, 3]  # README
    capsys.readouterr()

    assert lake_files_with(tmp_path / "lake", carol)  # published: her rows are in the lake's files
    assert cli.main(["forget-user", "--user-id", "carol", "--requested-by", "dpo@example.org"]) == 0
    out = capsys.readouterr().out
    # (e) and gone from every file of the lake (data files, manifests, metadata), not just from its snapshot
    assert lake_files_with(tmp_path / "lake", carol) == []
    assert lake.query("SELECT count(*) AS n FROM clean.events WHERE user_key = '" + carol + "'", "csv") == "n\n0"
    # 6 clean + 6 raw (m15 m19 m20 m28 m35 m36; the re-delivered copy was never ingested) rows
    assert "forgot the user: 12 rows deleted" in out
    assert "marts re-served for 2026-11-02..2026-11-03" in out
    # (d) consistent when the command returns: carol no longer counts on 11-02 and 11-03
    assert [n for _, n in _query(db, DAU)] == [3, 3, 2]
    [(status, run_id, rows)] = _held(db, "SELECT status, run_id, rows_deleted FROM pipeline_health.forget_requests")
    assert (status, rows) == ("erased", 12)

    # (a) neither the plain id nor the pseudonym (nor the requester) is anywhere in Dagster's storage
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert {r.job_name for r in runs} == {"daily_pipeline", "forget_user_job", "refresh_marts"}
        [forget_run] = [r for r in runs if r.job_name == "forget_user_job"]
        assert forget_run.run_id == run_id
        assert set(forget_run.run_config["ops"]["forget_user"]["config"]) == {
            "request_id", "no_match_ok", "caller_refreshes_marts"}
        for run in runs:
            text = repr(run.run_config) + repr(run.tags) + "".join(repr(e) for e in instance.all_logs(run.run_id))
            for secret in ("carol", carol, "dpo@example.org"):
                assert secret not in text, (run.job_name, secret)
    for path in (p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in (b"carol", carol.encode(), b"dpo@example.org"):
            assert secret not in data, (path, secret)

    # (c) re-ingesting both days (landing files unchanged, carol still in them) does not bring her back
    monkeypatch.setenv("DE_ASSETS_LANDING", str(golden_landing))  # the code location's landing (the CLI took --landing)
    defs = build_defs()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rerun = defs.resolve_job_def("daily_pipeline").execute_in_process(
            instance=instance, tags=partition_range_tags("2026-11-02", "2026-11-03"),
            run_config={"ops": {"raw__events": {"config": {"reingest": True}}}},
        )
    assert rerun.success
    with duckdb.connect(str(db), read_only=True) as con:
        assert forget.remaining(con, carol) == GONE
    assert [n for _, n in _query(db, DAU)] == [3, 3, 2]
    # the dropped rows are counted per file and request, replaced (not added to) by the re-ingest
    assert _held(db, "SELECT arrival_date::VARCHAR, source_file, rows FROM raw.forgotten_rows ORDER BY 1, 2") == [
        ("2026-11-02", "events/2026-11-02/a.ndjson", 3), ("2026-11-02", "events/2026-11-02/c.parquet", 1),
        ("2026-11-03", "events/2026-11-03/a.ndjson.gz", 1), ("2026-11-03", "events/2026-11-03/arr.json", 1)]
    checks = [e for e in rerun.get_asset_check_evaluations() if e.check_name == "rows_reconcile"]
    assert checks and all(e.passed for e in checks)

    # (d) the marts equal a fresh pipeline over the landing data with carol's records removed
    fresh_landing = tmp_path / "fresh_landing"
    shutil.copytree(golden_landing, fresh_landing)
    assert _without(fresh_landing, "carol") == 9  # 6 events + 3 in the re-delivered copy
    fresh = Pipeline(tmp_path / "fresh", fresh_landing)
    (tmp_path / "fresh").mkdir()
    assert fresh.run("2026-11-01", "2026-11-03").success
    forgot = Pipeline.__new__(Pipeline)  # only its query() on the CLI's warehouse
    forgot.db = db
    assert snapshot(forgot, MARTS) == snapshot(fresh, MARTS)


def test_forget_user_with_an_unknown_id_is_an_error_without_the_id(tmp_path, monkeypatch, capsys, golden_landing):
    _env(monkeypatch, tmp_path)
    db = tmp_path / "w.duckdb"
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    capsys.readouterr()
    assert cli.main(["forget-user", "--user-id", "cus_nobody_4821", "--requested-by", "dpo"]) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "matches no row" in text and "Nothing was deleted" in text
    nobody = privacy.pseudonymize(CLI_KEY, "cus_nobody_4821")
    assert "cus_nobody_4821" not in text and nobody not in text
    assert _held(db, "SELECT status, rows_deleted FROM pipeline_health.forget_requests") == [("no_match", 0)]
    assert _held(db, f"SELECT count(*) FROM ({forget.SUPPRESSED})") == [(0,)]  # suppresses nothing
    assert _query(db, "SELECT count(*) FROM clean.events") == [(3,)]  # README: m01 m02 m03
    # on purpose (a key rotation, a request ahead of the data): recorded, exit 0
    assert cli.main(["forget-user", "--user-id", "cus_nobody_4821", "--requested-by", "dpo", "--no-match-ok"]) == 0
    assert "suppression is recorded" in capsys.readouterr().out
    assert _held(db, f"SELECT pseudonym FROM ({forget.SUPPRESSED})") == [(nobody,)]


def test_forget_job_refuses_identifying_run_config(pipeline):
    job = pipeline.defs.resolve_job_def("forget_user_job")
    for field in ({"user_id": "carol"}, {"pseudonym": privacy.pseudonymize("k", "carol")}):
        with pytest.raises(dg.DagsterInvalidConfigError):
            job.execute_in_process(instance=pipeline.instance, run_config={"ops": {"forget_user": {"config": field}}})
    assert pipeline.instance.get_runs() == []  # refused before a run (and its config) was stored
    unknown = job.execute_in_process(instance=pipeline.instance, raise_on_error=False,
                                     run_config={"ops": {"forget_user": {"config": {"request_id": "nope"}}}})
    assert not unknown.success
    assert "not recorded" in unknown.failure_data_for_node("forget_user").user_failure_data.description


def test_suppressed_rows_are_dropped_at_ingest_and_counted_once_per_file(con, golden_landing):
    privacy.install_macros(con, "k")
    carol = privacy.pseudonymize("k", "carol")
    forget.record_request(con, carol, "dpo", forget.key_fingerprint("k"), datetime(2026, 11, 5))
    day = date(2026, 11, 2)
    # a stale entry: rows of a.ndjson erased by an older request (e.g. under a rotated key)
    con.execute("INSERT INTO raw.forgotten_rows VALUES ('events', ?, 'events/2026-11-02/a.ndjson', 9, 'old')", [day])
    for _ in range(2):  # an ingest, then a re-ingest of the same day
        ingest.clear_partition(con, "events", day, day)
        report = ingest.ingest_day(con, golden_landing, "events", day, "run", ingest.IngestReport("events"))
        assert report.rows_ingested == 21  # rows read from the files, as registered
        assert con.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 17
        assert con.execute("SELECT count(*) FROM raw.events WHERE user_id = $p OR anonymous_id = $p",
                           {"p": carol}).fetchone()[0] == 0
        # what was dropped now, once per file; the stale entry of the re-read file is gone
        assert con.execute("SELECT source_file, rows FROM raw.forgotten_rows ORDER BY 1").fetchall() == [
            ("events/2026-11-02/a.ndjson", 3), ("events/2026-11-02/c.parquet", 1)]
    # a request that matched nothing by mistake suppresses nothing
    con.execute("UPDATE pipeline_health.forget_requests SET status = 'no_match'")
    ingest.clear_partition(con, "events", day, day)
    ingest.ingest_day(con, golden_landing, "events", day, "run", ingest.IngestReport("events"))
    assert con.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 21
    assert con.execute("SELECT count(*) FROM raw.forgotten_rows").fetchone()[0] == 0  # books: 21 landed, 21 raw


def test_key_rotation_as_documented_keeps_forgotten_users_out_and_the_books_balanced(pipeline):
    """docs/operations.md, "Key rotation": new key, re-record past requests (--no-match-ok), re-ingest."""
    from de_assets.resources import build_resources
    from de_assets_tests.conftest import GOLDEN_MAX_QUARANTINE_RATE, TEST_KEY

    def forget_with(defs, key, user_id, **config):
        request_id = record_forget_request(pipeline.db, privacy.pseudonymize(key, user_id), key)
        return defs.resolve_job_def("forget_user_job").execute_in_process(
            instance=pipeline.instance, raise_on_error=False,
            run_config={"ops": {"forget_user": {"config": {"request_id": request_id, **config}}}})

    days = partition_range_tags("2026-11-01", "2026-11-03")
    assert pipeline.run("2026-11-01", "2026-11-03").success
    assert forget_with(pipeline.defs, TEST_KEY, "carol").success
    new_key = "n" * MIN_KEY_BYTES
    rotated = build_defs(build_resources(str(pipeline.db), str(pipeline.landing), new_key,
                                         max_quarantine_rate=GOLDEN_MAX_QUARANTINE_RATE,
                                         reports_root=str(pipeline.db.parent / "reports")))
    # under the new key carol matches nothing yet: a plain request is an error, --no-match-ok records it
    assert not forget_with(rotated, new_key, "carol").success
    assert forget_with(rotated, new_key, "carol", no_match_ok=True).success
    rerun = rotated.resolve_job_def("daily_pipeline").execute_in_process(
        instance=pipeline.instance, tags=days, run_config={"ops": {"raw__events": {"config": {"reingest": True}}}})
    assert rerun.success
    assert all(e.passed for e in rerun.get_asset_check_evaluations() if e.check_name == "rows_reconcile")
    with duckdb.connect(str(pipeline.db), read_only=True) as con:
        for key in (TEST_KEY, new_key):
            assert forget.remaining(con, privacy.pseudonymize(key, "carol")) == GONE
        users = {u for (u,) in con.execute("SELECT DISTINCT user_id FROM raw.events").fetchall()}
    statuses = _held(pipeline.db, "SELECT status FROM pipeline_health.forget_requests")
    assert privacy.pseudonymize(new_key, "alice") in users and privacy.pseudonymize(TEST_KEY, "alice") not in users
    assert sorted(s for (s,) in statuses) == ["erased", "no_match", "suppressed"]
    assert pipeline.query(DAU).dau.tolist() == [3, 3, 2]  # README without carol (11-02, 11-03)


def test_keys_outside_dev_must_be_long_and_secret(caplog):
    log = logging.getLogger("test")
    short = "s3cret-but-short"
    for key, why in ((short, f"shorter than {MIN_KEY_BYTES} bytes"), (DEV_PSEUDONYM_KEY, "public dev key")):
        with pytest.raises(dg.Failure) as raised:
            PipelineSettings(environment="prod", pseudonym_key=key).key(log)
        message = raised.value.description
        assert "DE_ASSETS_PSEUDONYM_KEY" in message and why in message and key not in message
    with pytest.raises(dg.Failure, match="DE_ASSETS_PSEUDONYM_KEY is not set"):
        PipelineSettings(environment="staging").key(log)
    good = "x" * MIN_KEY_BYTES
    assert PipelineSettings(environment="prod", pseudonym_key=good).key(log) == good
    assert PipelineSettings(environment="prod", pseudonym_key="y" * (MIN_KEY_BYTES - 2) + "é").key(log)  # bytes count
    # dev takes any key, and without one the public key with a warning
    assert PipelineSettings(environment="dev", pseudonym_key=short).key(log) == short
    assert PipelineSettings(environment="dev").key(log) == DEV_PSEUDONYM_KEY
    assert "PUBLIC dev key" in caplog.text


def test_forget_user_cli_refuses_a_weak_key_outside_dev_before_recording_anything(tmp_path, monkeypatch, capsys):
    _env(monkeypatch, tmp_path)
    monkeypatch.setenv("DE_ASSETS_ENV", "prod")
    monkeypatch.setenv("DE_ASSETS_PSEUDONYM_KEY", "tiny")
    assert cli.main(["forget-user", "--user-id", "carol", "--requested-by", "dpo"]) == 1
    err = capsys.readouterr().err
    assert "DE_ASSETS_PSEUDONYM_KEY is shorter than 32 bytes" in err and "tiny" not in err
    assert not (tmp_path / "w.duckdb").exists()


def test_raw_ingest_refuses_the_dev_key_outside_dev(tmp_path, golden_landing):
    from de_assets.resources import build_resources
    from de_assets_tests.test_pipeline import failure_text

    defs = build_defs(build_resources(str(tmp_path / "w.duckdb"), str(golden_landing), DEV_PSEUDONYM_KEY,
                                      environment="prod", reports_root=str(tmp_path / "reports")))
    result = defs.resolve_job_def("daily_pipeline").execute_in_process(
        partition_key="2026-11-01", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "public dev key" in text and DEV_PSEUDONYM_KEY not in text


def test_a_forget_whose_lake_delete_failed_is_finished_by_resume(tmp_path, monkeypatch, capsys, golden_landing):
    """The bookkeeping commits first; when deleting the raw rows from the lake then fails, the
    command fails naming the request, and `--resume` finishes the lake part: no file of the lake
    holds the user, and the warehouse part is not done twice."""
    from de_assets.lib import raw_lake

    _env(monkeypatch, tmp_path)
    db = tmp_path / "w.duckdb"
    carol = privacy.pseudonymize(CLI_KEY, "carol")
    assert cli.main(["run", "--start", "2026-11-01", "--end", "2026-11-03", "--landing", str(golden_landing)]) == 0
    real = raw_lake.delete_user

    def failing(catalog, pseudonym):
        raise OSError(f"commit failed for {pseudonym}")  # a message quoting the filter

    monkeypatch.setattr(raw_lake, "delete_user", failing)
    capsys.readouterr()
    assert cli.main(["forget-user", "--user-id", "carol", "--requested-by", "dpo@example.org"]) == 1
    err = capsys.readouterr().err
    [(request_id, status)] = _held(db, "SELECT request_id, status FROM pipeline_health.forget_requests")
    assert status == "erased" and f"--resume {request_id}" in err and carol not in err and "carol" not in err
    assert lake_files_with(tmp_path / "lake", carol)  # her raw rows are still in the lake

    monkeypatch.setattr(raw_lake, "delete_user", real)
    assert cli.main(["forget-user", "--resume", request_id]) == 0
    assert "12 rows deleted" in capsys.readouterr().out  # as audited by the first run, not deleted again
    assert lake_files_with(tmp_path / "lake", carol) == []
    assert _held(db, "SELECT count(*) FROM pipeline_health.forget_audit") == [(4,)]  # one row per table, once
    assert [n for _, n in _query(db, DAU)] == [3, 3, 2]


def test_forget_erases_clean_rows_whose_raw_rows_retention_already_deleted(pipeline):
    """Raw is kept 30 days, clean 400: the days to rewrite in the lake come from each table's own
    matching rows, not from the user's raw rows (which no longer say that 11-01 held any)."""
    from de_assets.lib import served
    from de_assets_tests.conftest import TEST_KEY

    assert pipeline.run("2026-11-01", "2026-11-03").success
    retention = {"ops": {"enforce_retention": {"config": {"raw_days": 1, "clean_days": None, "as_of": "2026-11-03"}}}}
    assert pipeline.defs.resolve_job_def("retention_job").execute_in_process(
        instance=pipeline.instance, run_config=retention).success
    catalog = served.open_lake(str(pipeline.db), create=False)
    raw_days = catalog.load_table("raw.events").scan(selected_fields=("arrival_date",)).to_arrow()
    assert date(2026, 11, 1) not in set(raw_days["arrival_date"].to_pylist())  # 11-01's raw rows are gone
    user = served.connect(catalog).execute("SELECT min(user_id) FROM clean.events WHERE arrival_date = '2026-11-01'"
                                           ).fetchone()[0]
    assert user is not None
    request_id = record_forget_request(pipeline.db, user, TEST_KEY)
    assert pipeline.defs.resolve_job_def("forget_user_job").execute_in_process(
        instance=pipeline.instance, run_config={"ops": {"forget_user": {"config": {"request_id": request_id}}}}).success
    left = served.connect(catalog).execute(
        "SELECT count(*) FROM clean.events WHERE user_id = $p OR anonymous_id = $p OR user_key = $p", {"p": user})
    assert left.fetchone()[0] == 0
    assert pipeline.query("SELECT count(*) AS n FROM clean.events WHERE user_id = ? OR user_key = ?",
                          [user, user])["n"][0] == 0
