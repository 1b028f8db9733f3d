"""The README's main command, `de-assets demo`, on a tiny sample in a temporary folder, and the
rest of the command line: help, version, progress, status, errors."""

import argparse
import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from de_assets import cli
from de_assets_tests.conftest import held_by_another_process, held_query


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """`demo` and `generate` write `.env` into the working directory and export what they write (the
    CLI also exports `.env` and DE_ASSETS_LANDING): keep the file in the test's folder and restore
    the environment afterwards, so no later test (or its subprocesses) inherits a partition start."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DE_ASSETS_START_DATE", raising=False)
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_demo_generates_and_materializes_every_partition(tmp_path, monkeypatch, capsys):
    db = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(db))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    argv = ["demo", "--days", "3", "--events-per-day", "400", "--end", "2026-11-10",
            "--landing", str(tmp_path / "landing")]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "daily_pipeline 2026-11-08..2026-11-10: SUCCESS" in out
    # progress: one line per generated day, one line per finished step (15 steps), no DEBUG event log
    assert "  [1/3] 2026-11-08: " in out and "  [3/3] 2026-11-10: " in out
    assert "raw__events done in " in out and "] " in out and "[15/15]" in out and "[16/" not in out
    assert "reports__insights done in" in out
    assert "DEBUG" not in captured.err and "STEP_START" not in captured.err + out
    # the partitions of `dagster dev` started here begin with the demo's data (DAGSTER_HOME was set)
    assert (tmp_path / ".env").read_text().splitlines()[2:] == ["DE_ASSETS_START_DATE=2026-11-08"]
    assert "check clean/clean_events:rows_reconcile passed" in out
    assert f"report:    {tmp_path / 'reports' / 'latest.html'}" in out
    # clean generated data passes every check, blocking and warning alike
    assert "check " in out and "FAILED" not in out and "WARNING" not in out
    with duckdb.connect(str(db), read_only=True) as con:
        days = con.execute("SELECT count(*), min(event_date), max(event_date) FROM marts.daily_engagement").fetchone()
        assert days[0] == 3 and str(days[1]) == "2026-11-08" and str(days[2]) == "2026-11-10"
        assert con.execute("SELECT min(dau) FROM marts.daily_engagement").fetchone()[0] > 0
        # the pipeline measured itself: 14 assets x 3 partitions, 4 SLOs x 3 partitions
    assert held_query(db, "SELECT count(*) n FROM pipeline_health.partition_kpis").n[0] == 42
    assert held_query(db, "SELECT count(DISTINCT (partition, slo)) n FROM pipeline_health.slo_status").n[0] == 12
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
    # the weekly retention_cohorts counts each activity week once (fixtures/golden/expected: one row of
    # week 10-26, two of week 11-02), not once per day of the week (3 x 1 + 4 x 2 = 11)
    [retention] = [line.split() for line in out.splitlines() if line.strip().startswith("marts/retention_cohorts ")]
    assert retention[1:3] == ["3", "rows"]
    # a day whose files were ingested counts as landed, even once its landing file is deleted
    (golden_landing / "events" / "2026-11-01" / "batch-1.ndjson").unlink()
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    assert "no data landed" not in capsys.readouterr().out
    # and still while another process holds the warehouse file (a run in progress): the registry's
    # copy in the catalog database answers
    with held_by_another_process(tmp_path / "w.duckdb"):
        assert cli._days_without_data(str(golden_landing), date(2026, 10, 31), date(2026, 11, 2)) == [date(2026, 10, 31)]


def _commands() -> dict:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_has_help_and_says_its_default(capsys):
    commands = _commands()
    actions = [(name, command, action) for name, command in commands.items() for action in command._actions
               if not isinstance(action, argparse._HelpAction)]
    for name, command, action in actions:
        assert action.help, f"{name} {action.option_strings} has no help"
        if action.required or action.default is False:
            continue  # required options and flags have no default to state
        text = command._get_formatter()._get_help_string(action) % {"default": action.default}
        assert "default" in text, f"{name} {action.option_strings}: no default in {text!r}"
    assert set(commands) == {"generate", "demo", "run", "experiment", "forget-user", "rollback", "sql", "status"}
    demo = cli.build_parser().parse_args(["demo"])  # parses with the documented defaults
    assert (demo.days, demo.events_per_day, demo.seed) == (7, 20_000, 7)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--days DAYS number of arrival days (default: 7)" in help_text
    assert "--end YYYY-MM-DD last arrival day (default: yesterday, UTC)" in help_text
    assert "--events-per-day N events per weekday (default: 20000)" in help_text
    with pytest.raises(SystemExit):
        cli.main(["experiment", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "fewer than 3 measure but name no winner (default: 3)" in help_text
    assert "flags of arm B (default: ['lake_compression=snappy'])" in help_text


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    import dagster as dg

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"de-assets {version('de_assets')} (dagster {dg.__version__}, duckdb {duckdb.__version__})")


def test_a_missing_dagster_home_is_a_clear_error(tmp_path, monkeypatch, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)])
    assert str(exited.value.code) == (f"DAGSTER_HOME={tmp_path / 'nowhere'} does not exist: create it (mkdir -p) "
                                      "or unset DAGSTER_HOME to use data/dagster_home")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "w.duckdb").exists()


def test_status_on_a_small_run(tmp_path, monkeypatch, capsys, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    monkeypatch.delenv("DE_ASSETS_MAX_QUARANTINE_RATE")  # the production gate: the golden days fail it
    assert cli.main(["status"]) == 1  # nothing has run: says so, creates nothing
    assert "nothing has run yet; `de-assets demo` creates it" in capsys.readouterr().err
    assert not (tmp_path / "home" / "dagster.yaml").exists()
    assert cli.main(["run", "--start", "2026-11-01", "--end", "2026-11-02", "--landing", str(golden_landing)]) == 1
    captured = capsys.readouterr()
    # skipped steps say so once each (no "Dependencies for step ... failed" error per step)
    assert "] " in captured.out and "marts__daily_engagement skipped" in captured.out
    assert "Dependencies for step" not in captured.err
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # golden fixture (fixtures/golden/README.md): events quarantine 28% of 11-01..11-02 and requests 22% of
    # 11-02, above the 20% gate: both days are held back, cleaning is recorded, everything after is skipped
    assert lines[3:7] == ["  ingestion        2026-11-02", "  cleaning         2026-11-02",
                          "  analytics        never materialized", "  pipeline_health  never materialized"]
    assert "Latest runs (newest first, 1 shown):" in out
    [run] = [line for line in lines if " daily_pipeline " in line]
    assert run.split()[1:3] == ["daily_pipeline", "FAILURE"] and run.endswith(" 2026-11-01..2026-11-02")
    checks = lines[lines.index("Failed checks in those runs:") + 1:lines.index("SLOs of the newest evaluated "
                                                                                "partition (none yet):") - 1]
    # checks are per partition: events fail on both days, requests on 11-02 (11-01 has no request
    # file); the 11-02 events bring fields 11-01 did not have (a warning)
    assert [" ".join(c.split()[:3]) for c in checks] == [
        "clean/clean_events:quarantine_rate_within_threshold (error, 2026-11-01)",
        "clean/clean_events:quarantine_rate_within_threshold (error, 2026-11-02)",
        "clean/clean_requests:quarantine_rate_within_threshold (error, 2026-11-02)",
        "raw/raw_events:source_schema_change (warn, 2026-11-02)"]
    assert "SLOs of the newest evaluated partition (none yet):" in out
    assert "Open alerts (seen in the last 7 days: 2):" in out
    assert out.count("  error    check_failed     blocking check quarantine_rate_within_threshold failed on ") == 2
    assert len(lines) < 40  # one screen


def test_status_reads_slos_and_alerts_while_a_writer_holds_the_warehouse(tmp_path, monkeypatch, capsys, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    capsys.readouterr()
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(tmp_path / 'w.duckdb')!r})
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        # a run fails meanwhile: the sensor's alert goes to the catalog database, not the locked file
        from de_assets.lib import ops_store, served
        from de_assets.lib.alerts import Alert, record

        record(ops_store.ensure(served.open_lake(str(tmp_path / "w.duckdb")).engine), [Alert(
            severity="critical", kind="run_failure", asset="daily_pipeline", partition="2026-11-02",
            message="run 1234 of daily_pipeline (2026-11-02) failed")])
        assert cli.main(["status"]) == 0
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    out = capsys.readouterr().out
    # SLOs and alerts are read where they live, the catalog database, never locked: the alert just raised
    # is listed
    assert "Open alerts (seen in the last 7 days: 1):" in out
    assert "  critical run_failure      run 1234 of daily_pipeline (2026-11-02) failed (last " in out
    assert "  ingestion        2026-11-01" in out  # what Dagster knows is still shown
    # the SLOs of 11-01, as the run recorded them
    assert "SLOs of the newest evaluated partition (2026-11-01):" in out
    assert "locked" not in out
    assert [line.split()[0] for line in out.splitlines() if "(target" in line] == [
        "completeness", "duplicate_rate", "freshness_hours", "quarantine_rate"]


def test_experiment_with_fewer_than_three_repetitions_names_no_winner(tmp_path, monkeypatch, capsys, golden_landing):
    _cli_env(tmp_path, monkeypatch)
    assert cli.MIN_REPETITIONS == __import__("de_assets.lib.config_experiment").lib.config_experiment.MIN_REPETITIONS
    assert cli.main(["experiment", "--start", "2026-11-01", "--reps", "1", "--landing", str(golden_landing)]) == 0
    out = capsys.readouterr().out
    assert "1 repetition(s) per arm: the experiment measures" in out
    assert "**Verdict:** no winner named: 1 repetition(s) per arm, at least 3 are needed" in out
    assert "wins on" not in out
    assert "Served tables identical in every run: **yes**" in out


def test_demo_and_generate_make_the_partitions_start_with_the_data(tmp_path, monkeypatch, capsys):
    env = tmp_path / ".env"
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    cli._cover_in_dotenv(date(2026, 11, 8), env)
    assert env.read_text().splitlines()[2:] == [
        "DE_ASSETS_START_DATE=2026-11-08", f"DAGSTER_HOME={(tmp_path / 'data' / 'dagster_home').resolve()}"]
    monkeypatch.setenv("DAGSTER_HOME", "/elsewhere")  # from here on, as if loaded from the file
    cli._cover_in_dotenv(date(2026, 11, 20), env)  # later data: the partitions already cover it
    assert "DE_ASSETS_START_DATE=2026-11-08" in env.read_text()
    cli._cover_in_dotenv(date(2026, 10, 1), env)  # earlier data: the start moves back
    assert "DE_ASSETS_START_DATE=2026-10-01" in env.read_text() and "2026-11-08" not in env.read_text()
    assert "partitions start on 2026-10-01" in capsys.readouterr().out
    # a start set in the shell (not in .env) is the user's: never overridden from .env
    other = tmp_path / "other.env"
    monkeypatch.setenv("DE_ASSETS_START_DATE", "2026-12-01")
    cli._cover_in_dotenv(date(2026, 11, 8), other)
    assert "DE_ASSETS_START_DATE" not in other.read_text()
    # and the CLI reads .env like `dagster dev` does: its values win over the shell's
    monkeypatch.setenv("DE_ASSETS_START_DATE", "2024-01-01")
    assert cli._load_dotenv(env) == {}  # not in the test suite (conftest: DE_ASSETS_DOTENV=off)
    assert os.environ["DE_ASSETS_START_DATE"] == "2024-01-01"
    monkeypatch.setenv("DE_ASSETS_DOTENV", "on")
    assert cli._load_dotenv(env)["DE_ASSETS_START_DATE"] == "2026-10-01"
    assert os.environ["DE_ASSETS_START_DATE"] == "2026-10-01"


DG = Path(sys.executable).with_name("dg")


@pytest.mark.skipif(not DG.exists(), reason="dagster-dg-cli is not installed (pip install -e .)")
def test_dg_check_defs_loads_the_code_location(tmp_path):
    """`dg` (Dagster's newer CLI) finds the project through pyproject.toml [tool.dg], like `dagster dev`
    finds it through workspace.yaml."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(DG), "check", "defs"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout
