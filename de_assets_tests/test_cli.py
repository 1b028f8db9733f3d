"""The README's main command, `de-assets demo`, on a tiny sample in a temporary folder."""

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
