"""The README's main command, `de-assets demo`, on a tiny sample in a temporary folder."""

import duckdb

from de_assets import cli


def test_demo_generates_and_materializes_every_partition(tmp_path, monkeypatch, capsys):
    db = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(db))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    argv = ["demo", "--days", "3", "--events-per-day", "400", "--end", "2026-11-10",
            "--landing", str(tmp_path / "landing")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "daily_pipeline 2026-11-08..2026-11-10: SUCCESS" in out
    assert "check clean/events:rows_reconcile passed" in out
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
