"""The README's main command, `de-assets demo`, on a tiny sample in a temporary folder."""

from datetime import date, timedelta

import duckdb

from de_assets import cli


def test_demo_generates_and_materializes_every_partition(tmp_path, monkeypatch, capsys):
    db = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(db))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    argv = ["demo", "--days", "3", "--events-per-day", "400", "--end", "2026-11-10",
            "--landing", str(tmp_path / "landing")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "daily_pipeline 2026-11-08..2026-11-10: SUCCESS" in out
    assert "check clean/events:rows_reconcile passed" in out
    assert f"report:    {tmp_path / 'reports' / 'latest.html'}" in out
    # clean generated data passes every check, blocking and warning alike
    assert "check " in out and "FAILED" not in out and "WARNING" not in out
    with duckdb.connect(str(db), read_only=True) as con:
        days = con.execute("SELECT count(*), min(event_date), max(event_date) FROM marts.daily_engagement").fetchone()
        assert days[0] == 3 and str(days[1]) == "2026-11-08" and str(days[2]) == "2026-11-10"
        assert con.execute("SELECT min(dau) FROM marts.daily_engagement").fetchone()[0] > 0
        # the pipeline measured itself: 14 assets x 3 partitions, 4 SLOs x 3 partitions
        assert con.execute("SELECT count(*) FROM pipeline_health.partition_kpis").fetchone()[0] == 42
        assert con.execute("SELECT count(DISTINCT (partition, slo)) FROM pipeline_health.slo_status").fetchone()[0] == 12
    # a second demo reuses the landed files and changes nothing
    assert cli.main(argv) == 0
    assert "already in" in capsys.readouterr().out


def test_forget_user_cli_pseudonymizes_before_dagster_sees_the_id(tmp_path, monkeypatch, capsys, golden_landing):
    import dagster as dg

    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DE_ASSETS_MAX_QUARANTINE_RATE", "0.5")
    monkeypatch.setenv("DE_ASSETS_PSEUDONYM_KEY", "cli-key")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    assert cli.main(["forget-user", "--user-id", "alice", "--requested-by", "dpo"]) == 0
    assert "rows deleted" in capsys.readouterr().out
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        # alice had m01 and m02 on 11-01 (README); bob's m03 remains
        assert con.execute("SELECT list(message_id ORDER BY message_id) FROM clean.events").fetchone()[0] == ["m03"]
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name="forget_user_job"))
        assert "alice" not in str(run.run_config)


def _cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DE_ASSETS_MAX_QUARANTINE_RATE", "0.5")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()


def _runs(tmp_path) -> int:
    import dagster as dg

    if not (tmp_path / "home" / "history").exists():
        return 0
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        return len(instance.get_runs())


def test_bad_ranges_and_dates_are_cli_errors_before_any_run(tmp_path, monkeypatch, capsys, golden_landing):
    import pytest

    from de_assets.partitions import daily

    _cli_env(tmp_path, monkeypatch)
    first, last = daily.get_first_partition_key(), daily.get_last_partition_key()  # 2024-01-01, yesterday
    after_last = (date.fromisoformat(last) + timedelta(days=1)).isoformat()
    cases = [
        (["--start", "2026-11-03", "--end", "2026-11-01"], "--end 2026-11-01 is before --start 2026-11-03"),
        (["--start", "2023-12-31", "--end", "2024-01-02"], f"--start 2023-12-31 is before the first partition {first}"),
        (["--start", after_last], f"--end {after_last} is after the last partition {last}"),
        (["--start", "2026-11-01", "--end", after_last], f"--end {after_last} is after the last partition"),
        (["--start", "2026-11-31"], "'2026-11-31' is not a date: use YYYY-MM-DD"),
        (["--start", "11/01/2026"], "'11/01/2026' is not a date: use YYYY-MM-DD"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exited:
            cli.main(["run", *args, "--landing", str(golden_landing)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err and "IndexError" not in err and "CheckError" not in err
    assert _runs(tmp_path) == 0  # none of them started a run
    assert not (tmp_path / "w.duckdb").exists()


def test_a_range_where_nothing_landed_runs_nothing_and_says_so(tmp_path, monkeypatch, capsys, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    assert cli.main(["run", "--start", "2026-10-01", "--end", "2026-10-07", "--landing", str(golden_landing)]) == 1
    captured = capsys.readouterr()
    assert "no data landed for 2026-10-01..2026-10-07" in captured.err
    assert "Nothing was run, nothing is served" in captured.err
    assert "SUCCESS" not in captured.out + captured.err
    assert _runs(tmp_path) == 0 and not (tmp_path / "w.duckdb").exists()


def test_a_range_with_some_empty_days_names_them(tmp_path, monkeypatch, capsys, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    # golden: events on 11-01, 11-02, 11-03 (requests on 11-02, 11-03); nothing on 10-30, 10-31, 11-04, 11-05
    assert cli.main(["run", "--start", "2026-10-30", "--end", "2026-11-05", "--landing", str(golden_landing)]) == 0
    out = capsys.readouterr().out
    assert "daily_pipeline 2026-10-30..2026-11-05: SUCCESS" in out
    assert "no data landed for 2026-10-30..2026-10-31, 2026-11-04..2026-11-05 (no file under" in out
    # a day whose files were ingested counts as landed, even once its landing file is deleted
    (golden_landing / "events" / "2026-11-01" / "batch-1.ndjson").unlink()
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    assert "no data landed" not in capsys.readouterr().out
