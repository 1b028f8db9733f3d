"""Runs of different days at once (issue: one warehouse that many can read and write at once).

Four `de-assets run` processes for four days start together on a fresh install, latest day first,
while readers query the lake through `de_assets.lake` and `de-assets sql`. Generated data with
cross-day re-deliveries (the same messageId delivered again on a later day, byte-identical files
delivered again) makes the order matter: a day cleaned before the days before it are ingested
serves re-deliveries as originals unless cleaning repairs it.
"""

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from de_assets import lake, sensors
from de_assets.lib.config_experiment import COMPARED, fingerprint
from de_assets.definitions import build_defs
from de_assets.lib import served
from de_assets.generator import generate
from de_assets.resources import build_resources
from de_assets_tests.conftest import held_query
from de_assets_tests.conftest import reader as warehouse_reader

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


def _env(folder: Path, landing: Path) -> dict:
    (folder / "home").mkdir(parents=True)
    return {**os.environ, "DE_ASSETS_DUCKDB": str(folder / "warehouse.duckdb"), "DAGSTER_HOME": str(folder / "home"),
            "DE_ASSETS_REPORTS": str(folder / "reports"), "DE_ASSETS_LANDING": str(landing)}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "de_assets.cli", *args]


def _settle(instance, defs) -> int:
    """What the daemon does: tick late_data_refresh and run what it requests, until it requests nothing."""
    cursor, runs = None, 0
    for _ in range(5):
        with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
            result = sensors.late_data_refresh(context)
        requests = getattr(result, "run_requests", None) or []
        cursor = getattr(result, "cursor", None) or cursor
        if not requests:
            return runs
        for request in requests:
            assert defs.resolve_job_def("refresh_marts").execute_in_process(
                instance=instance, tags=request.tags, asset_selection=request.asset_selection).success
            runs += 1
    raise AssertionError("late_data_refresh kept requesting runs")


def _refresh_until_settled(folder: Path, landing: Path) -> int:
    """`_settle` on the instance and warehouse the CLI runs used."""
    os.environ["DAGSTER_HOME"] = str(folder / "home")
    try:
        defs = build_defs(build_resources(str(folder / "warehouse.duckdb"), str(landing),
                                          reports_root=str(folder / "reports")))
        return _settle(dg.DagsterInstance.get(), defs)
    finally:
        del os.environ["DAGSTER_HOME"]


def _tables(database: Path) -> dict:
    """Every data table, and the file registry and forgotten rows the catalog database holds (`COMPARED`)."""
    with warehouse_reader(database) as con:
        return fingerprint(con, COMPARED)


@pytest.mark.slow  # ~3 minutes on 2 cores
def test_four_runs_at_once_with_readers_equal_one_sequential_run(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, date(2026, 11, 1), len(DAYS), 1500, seed=11)

    sequential = _env(tmp_path / "sequential", landing)
    done = subprocess.run(_cli("run", "--start", DAYS[0], "--end", DAYS[-1]), env=sequential, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with warehouse_reader(tmp_path / "sequential" / "warehouse.duckdb") as con:
        # the data makes order matter: later days re-deliver keys first delivered on earlier days
        cross_day = con.execute("""SELECT count(*) FROM clean.events_duplicates d JOIN clean.events c
                                   ON c.message_id = d.dedupe_key AND c.arrival_date < d.arrival_date""").fetchone()[0]
        redelivered = con.execute("SELECT count(*) FROM raw.source_files WHERE status = 'redelivered' "
                                  "AND duplicate_of NOT LIKE '%' || arrival_date::VARCHAR || '%'").fetchone()[0]
    assert cross_day > 0 and redelivered > 0

    parallel = _env(tmp_path / "parallel", landing)
    runs = [subprocess.Popen(_cli("run", "--start", day), env=parallel, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for day in reversed(DAYS)]
    os.environ["DE_ASSETS_DUCKDB"] = parallel["DE_ASSETS_DUCKDB"]
    answers, cli_reads = [], []
    try:
        while any(r.poll() is None for r in runs):
            if not (tmp_path / "parallel" / "catalog.db").exists():
                continue  # nothing published yet: a reader is told so (tested in test_served.py)
            answers.append(lake.query("SELECT count(*) AS n FROM clean.events", "csv"))
            if len(answers) % 10 == 1:
                cli_reads.append(subprocess.run(_cli("sql", "SELECT count(*) AS days FROM marts.daily_engagement",
                                                     "--format", "csv"), env=parallel, cwd=tmp_path,
                                                capture_output=True, text=True, timeout=120))
    finally:
        del os.environ["DE_ASSETS_DUCKDB"]
        outputs = [r.communicate(timeout=900)[0] for r in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]
    assert answers and all(a.startswith("n\n") for a in answers)  # every read answered, none failed
    assert cli_reads and all(r.returncode == 0 for r in cli_reads), [r.stderr[-500:] for r in cli_reads]
    print(f"\n{len(answers)} lake reads and {len(cli_reads)} `de-assets sql` reads answered while 4 runs wrote")

    folder = tmp_path / "parallel"
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) - count(DISTINCT message_id) FROM clean.events").fetchone()[0] == 0
    # the four runs wrote their KPI rows and SLOs into the catalog database at once: none was lost
    # (14 pipeline assets and 4 SLOs per day, as one run of the day records)
    assert held_query(folder / "warehouse.duckdb", """
        SELECT partition::VARCHAR d, count(DISTINCT asset) assets FROM pipeline_health.partition_kpis
        GROUP BY 1 ORDER BY 1""").values.tolist() == [[day, 14] for day in DAYS]
    assert held_query(folder / "warehouse.duckdb", """
        SELECT partition::VARCHAR d, count(*) slos FROM pipeline_health.slo_status
        GROUP BY 1 ORDER BY 1""").values.tolist() == [[day, 4] for day in DAYS]
    _refresh_until_settled(folder, landing)  # marts a run built before another day's cleaning are re-served
    assert _tables(folder / "warehouse.duckdb") == _tables(tmp_path / "sequential" / "warehouse.duckdb")
    # readers see what the warehouse holds: every served table of the lake equals its warehouse table
    catalog = served.open_lake(str(folder / "warehouse.duckdb"), create=False)
    reader = served.connect(catalog)
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as con:
        for table in served.PUBLISHED:
            if table.schema == "pipeline_health":
                continue
            assert _rows(reader, table) == _rows(con, table), table.name


def _rows(con, table, where: str = "") -> list:
    columns = ", ".join(f'"{c.name}"::VARCHAR' for c in table.columns if c.name not in ("ingested_at", "run_id"))
    return sorted(map(repr, con.execute(f"SELECT {columns} FROM {table.name}{where}").fetchall()))


def test_days_run_latest_first_equal_one_sequential_run(tmp_path):
    """The order the concurrent test cannot force: each day's run finishes before the day before it
    starts. Later days are cleaned before the earlier days that first delivered some of their keys
    are ingested; cleaning an earlier day rebuilds them, and the late_data_refresh sensor re-serves
    the marts that read them."""
    from de_assets_tests.conftest import Pipeline

    landing = tmp_path / "landing"
    generate(landing, date(2026, 11, 1), len(DAYS), 1500, seed=11)
    sequential = Pipeline(tmp_path / "sequential", landing)
    assert sequential.run(DAYS[0], DAYS[-1]).success

    reversed_runs = Pipeline(tmp_path / "reversed", landing)
    rebuilt = []
    for day in reversed(DAYS):
        result = reversed_runs.run(day)
        assert result.success
        rebuilt += [e.partition for e in result.get_asset_materialization_events()
                    if e.step_materialization_data.materialization.metadata.get("repaired_after")]
    assert rebuilt  # cleaning earlier days rebuilt later ones (their partitions are recorded as materialized)
    with duckdb.connect(str(reversed_runs.db), read_only=True) as con:
        assert con.execute("SELECT count(*) - count(DISTINCT message_id) FROM clean.events").fetchone()[0] == 0
    _settle(reversed_runs.instance, reversed_runs.defs)
    assert _tables(reversed_runs.db) == _tables(sequential.db)


def _lake_matches_warehouse(folder: Path, whole: bool) -> None:
    """Every day of every served table in the lake holds exactly the warehouse's rows of that day
    (no partial partition); with `whole`, the lake also holds every day the warehouse holds."""
    catalog = served.open_lake(str(folder / "warehouse.duckdb"), create=False)
    reader = served.connect(catalog)
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as con:
        for table in served.PUBLISHED:
            column = served.partition_column(table)
            if table.schema == "pipeline_health" or column is None:
                continue
            in_lake = [d for (d,) in reader.execute(f"SELECT DISTINCT {column} FROM {table.name}").fetchall()]
            if whole:
                in_lake = sorted({*in_lake, *[d for (d,) in con.execute(
                    f"SELECT DISTINCT {column} FROM {table.name}").fetchall()]})
            for day in in_lake:
                where = f" WHERE {column} = DATE '{day}'"
                assert _rows(reader, table, where) == _rows(con, table, where), (table.name, day)


@pytest.mark.slow  # ~1.5 minutes on 2 cores
def test_a_run_killed_mid_commit_leaves_no_partial_partition_and_a_rerun_repairs_it(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, date(2026, 11, 1), 3, 1500, seed=5)
    reference = _env(tmp_path / "reference", landing)
    done = subprocess.run(_cli("run", "--start", DAYS[0], "--end", DAYS[2]), env=reference, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]

    killed = _env(tmp_path / "killed", landing)
    run = subprocess.Popen(_cli("run", "--start", DAYS[0], "--end", DAYS[2]), env=killed, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    catalog_db = tmp_path / "killed" / "catalog.db"
    data = tmp_path / "killed" / "lake" / "clean" / "events" / "data"
    try:  # SIGKILL as soon as clean.events is being committed: its data files are written, then the catalog swaps
        while run.poll() is None and not (data.exists() and any(data.rglob("*.parquet"))):
            pass
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL  # killed, not finished
    if catalog_db.exists():
        _lake_matches_warehouse(tmp_path / "killed", whole=False)

    rerun = subprocess.run(_cli("run", "--start", DAYS[0], "--end", DAYS[2]), env=killed, cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert _tables(tmp_path / "killed" / "warehouse.duckdb") == _tables(tmp_path / "reference" / "warehouse.duckdb")
    _lake_matches_warehouse(tmp_path / "killed", whole=True)


def test_cleaning_and_marts_record_their_materialization_while_they_hold_the_warehouse(pipeline, monkeypatch):
    """The late_data_refresh sensor orders a mart against a cleaning by their events' storage ids.
    That is the order their data was written in only if each step records its materialization
    before it lets go of the warehouse (another run's step may write as soon as it does): when a
    clean or mart step closes its warehouse connection, its materialization is already stored."""
    from de_assets.assets.layers import CLEANED, MARTS
    from de_assets.resources import Warehouse

    watched = {*CLEANED, *MARTS}
    seen_at_close: dict[dg.AssetKey, bool] = {}
    real_connect = Warehouse.connect

    def connect(self, *args, **kwargs):
        cm = real_connect(self, *args, **kwargs)

        class Recording:
            def __enter__(self):
                return cm.__enter__()

            def __exit__(self, *exc):
                for key in watched & set(dg.AssetExecutionContext.get().assets_def.keys):
                    seen_at_close[key] = bool(pipeline.instance.fetch_materializations(
                        dg.AssetRecordsFilter(asset_key=key), limit=1).records)
                return cm.__exit__(*exc)

        return Recording()

    monkeypatch.setattr(Warehouse, "connect", connect)
    assert pipeline.run("2026-11-01").success
    assert seen_at_close == {key: True for key in watched}


def test_marts_compute_without_holding_the_warehouse_file(pipeline, monkeypatch):
    """A mart's query runs in a private connection over the lake's snapshots (`Warehouse.computing`),
    and its checks and data files too, so steps of other runs can write meanwhile; the file is taken
    only for the commit."""
    from de_assets import checks
    from de_assets.lib import experiment_readout, marts
    from de_assets.resources import _turns

    held: dict[str, bool] = {}
    checked: dict[str, bool] = {}
    written: dict[str, bool] = {}
    real_replace, real_readout = marts.replace_range, experiment_readout.write
    real_checks, real_write = checks.check_results, served.write_data_files

    def check_results(con, asset_key, table, *args):
        if table.schema == "marts":
            checked[table.name] = checked.get(table.name, False) or os.path.realpath(pipeline.db) in _turns
        return real_checks(con, asset_key, table, *args)

    def write_data_files(con, target, *args):
        name = ".".join(target.name())
        if name.startswith("marts."):
            written[name] = written.get(name, False) or os.path.realpath(pipeline.db) in _turns
        return real_write(con, target, *args)

    def replace_range(con, table, *args, **kwargs):
        held[table.name] = os.path.realpath(pipeline.db) in _turns
        return real_replace(con, table, *args, **kwargs)

    def readout(con, *args, **kwargs):
        held["marts.experiment_results"] = os.path.realpath(pipeline.db) in _turns
        return real_readout(con, *args, **kwargs)

    monkeypatch.setattr(marts, "replace_range", replace_range)
    monkeypatch.setattr(experiment_readout, "write", readout)
    monkeypatch.setattr(checks, "check_results", check_results)
    monkeypatch.setattr(served, "write_data_files", write_data_files)
    assert pipeline.run("2026-11-01").success
    every_mart = {name: False for name in (
        "marts.daily_engagement", "marts.funnel_daily", "marts.retention_cohorts", "marts.revenue_daily",
        "marts.service_latency", "marts.kpi_changes", "marts.kpi_anomalies", "marts.experiment_results")}
    assert held == every_mart and checked == every_mart and written == every_mart


@pytest.mark.parametrize("committed, computes", [
    ("2026-11-01", [False]),  # an earlier day of clean.events: nothing the cleaning of 11-02 read
    ("2026-11-03", [False, True]),  # a later day: the repair's input; computed again, holding the file
])
def test_the_cleaning_computes_without_the_warehouse_file_and_again_only_for_what_it_read(
        pipeline, monkeypatch, committed, computes):
    """The cleaning computes in a private connection over pinned snapshots, checks the staged rows and
    writes their data files there; the file is taken to commit. A commit made meanwhile (here: another
    run's cleaning of one day, the same rows in a new snapshot) makes it compute, check and write
    again, in its turn on the file, only when that commit wrote a day it read: raw up to its range's
    end, or its tables from the range's start on. Either way it serves the rows a cleaning without
    the interruption serves."""
    from pyiceberg.expressions import EqualTo

    from de_assets import checks
    from de_assets.lib import clean, lake as lake_core
    from de_assets.resources import _turns

    assert pipeline.run("2026-11-01", "2026-11-03").success
    compared = ("clean.events", "quarantine.events", "clean.events_duplicates")
    before = {t: pipeline.query(f"SELECT * FROM {t} ORDER BY ALL") for t in compared}
    catalog = served.open_lake(str(pipeline.db))
    real, held, checked, written = clean.clean_days, [], [], []
    real_checks, real_write = checks.check_results, served.write_data_files
    tables = {t.name for t in (clean.EVENTS.clean, clean.EVENTS.quarantine, clean.EVENTS.duplicates)}

    def holding() -> bool:
        return os.path.realpath(pipeline.db) in _turns

    def check_results(con, asset_key, table, *args):
        checked.extend([holding()] if table.name in tables else [])
        return real_checks(con, asset_key, table, *args)

    def write_data_files(con, target, *args):
        written.extend([holding()] if ".".join(target.name()) in tables else [])
        return real_write(con, target, *args)

    def clean_days(con, spec, *args, **kwargs):
        if spec is clean.EVENTS:
            held.append(holding())
            if len(held) == 1:  # while it computes, a cleaning of another day commits
                table = catalog.load_table("clean.events")
                rows = table.scan(row_filter=EqualTo("arrival_date", committed)).to_arrow()
                lake_core.overwrite_partitions(table, rows, "arrival_date", [committed])
        return real(con, spec, *args, **kwargs)

    monkeypatch.setattr(clean, "clean_days", clean_days)
    monkeypatch.setattr(checks, "check_results", check_results)
    monkeypatch.setattr(served, "write_data_files", write_data_files)
    assert pipeline.run("2026-11-02").success
    assert held == computes
    assert checked == [h for h in computes for _ in range(2)]  # clean and quarantine rows, as often as computed
    assert written == [h for h in computes for _ in range(3)]  # the three tables' files: none written in the turn
    for table in compared:
        assert pipeline.query(f"SELECT * FROM {table} ORDER BY ALL").equals(before[table]), table
