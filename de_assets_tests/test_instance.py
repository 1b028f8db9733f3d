"""The Dagster instance the CLI creates: the same queue, limits and run monitoring as production,
safe when processes start together, quiet when the daemon starts after a demo, and honest about
runs whose process was killed."""

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from de_assets import instance as setup
from de_assets import sensors
from de_assets.lib import processes
from de_assets_tests.conftest import GOLDEN, TEST_KEY, stop_process_group

ROOT = Path(__file__).resolve().parents[1]


def _env(root: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DE_ASSETS_DUCKDB": str(root / "warehouse.duckdb"), "DE_ASSETS_LANDING": str(root / "landing"),
                "DE_ASSETS_REPORTS": str(root / "reports"), "DE_ASSETS_PSEUDONYM_KEY": TEST_KEY,
                "DE_ASSETS_MAX_QUARANTINE_RATE": "0.5", "PYTHONPATH": str(ROOT)}, **extra)
    return env


def _cli(root: Path, *args, env=None, **popen):
    return subprocess.Popen([sys.executable, "-m", "de_assets.cli", *args], cwd=root, env=env or _env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A demo-like install: the golden days run by the CLI, in a folder without DAGSTER_HOME set,
    so the CLI creates data/dagster_home there as it does for a new user."""
    root = tmp_path_factory.mktemp("demo")
    import shutil

    shutil.copytree(GOLDEN / "landing", root / "landing")
    proc = _cli(root, "run", "--start", "2026-11-01", "--end", "2026-11-03", "--landing", str(root / "landing"))
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    return root


def test_prod_profile_is_generated_from_the_shared_settings():
    prod = (ROOT / "deploy" / "prod" / "dagster.yaml").read_text()
    assert prod == setup.render("prod"), "regenerate: python -m de_assets.instance prod > deploy/prod/dagster.yaml"
    dev, prod = yaml.safe_load(setup.render("dev")), yaml.safe_load(prod)
    assert "storage" not in dev  # SQLite files in the home folder, laid out as Dagster's default
    assert dev.pop("instance_class") == {"module": "de_assets.instance", "class": "DevInstance"}
    assert set(prod.pop("storage")) == {"postgres"}
    assert dev == prod  # everything but the storage is shared


def test_the_run_queue_starts_runs_of_different_days_together_but_never_two_runs_of_one_day(tmp_path):
    """The queue daemon's own counter (`TagConcurrencyLimitsCounter`), fed the limits the instance
    parses from our dagster.yaml: a queued run is blocked by an in-progress run of the same day, not
    by runs of other days; range runs (no `dagster/partition` tag) are limited as backfills."""
    from types import SimpleNamespace

    from dagster._utils.tags import TagConcurrencyLimitsCounter

    (tmp_path / "dagster.yaml").write_text(setup.render("dev"))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits

    def run(**tags):
        return SimpleNamespace(tags=tags)

    day = {"dagster/partition": "2026-11-01"}
    running = [run(**day), run(**{"dagster/partition": "2026-11-02"})]
    counter = TagConcurrencyLimitsCounter(limits, running)
    assert counter.is_blocked(run(**day))
    assert not counter.is_blocked(run(**{"dagster/partition": "2026-11-03"}))
    assert not counter.is_blocked(run(**{"dagster/partition": "2026-11-03", "de_assets/kind": "pipeline"}))
    assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(run(**day))
    # two backfills (each a range run) never at once, whatever their days
    assert TagConcurrencyLimitsCounter(limits, [run(**{"dagster/backfill": "a"})]).is_blocked(run(**{"dagster/backfill": "b"}))


def test_the_cli_creates_a_dev_instance_like_production(demo_home):
    home = demo_home / "data" / "dagster_home"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 4}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert isinstance(instance.event_log_storage, setup.KeptConnectionEventLogStorage)
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags[setup.HOST_TAG] == processes.host() and run.tags[setup.PID_TAG].split(":")[0].isdigit()


def _checked_job(n_days: int):
    """A small daily job writing one asset with a per-day check: the events a range run records."""
    daily = dg.DailyPartitionsDefinition(start_date="2026-11-01")

    @dg.asset(partitions_def=daily, check_specs=[dg.AssetCheckSpec("ok", asset="thing")])
    def thing(context: dg.AssetExecutionContext):
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="ok", passed=True)

    return dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def(), daily.get_partition_keys()[:n_days]


def test_the_dev_event_log_keeps_dagsters_layout_so_either_storage_reads_what_the_other_wrote(tmp_path):
    """The dev instance (`DevInstance`) writes its events where Dagster's default storage would, so a
    home created by either reads the same runs, events, materializations and check evaluations."""
    job, days = _checked_job(3)
    (tmp_path / "dagster.yaml").write_text(setup.render("dev"))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance, setup.DevInstance)
        assert isinstance(instance.event_log_storage, setup.KeptConnectionEventLogStorage)
        ours = [job.execute_in_process(partition_key=day, instance=instance).run_id for day in days]
    assert {p.name for p in (tmp_path / "history" / "runs").glob("*.db")} == {"index.db"} | {f"{r}.db" for r in ours}

    plain = tmp_path / "plain"  # the same folder under Dagster's default instance (no instance_class)
    plain.mkdir()
    (plain / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name in ("history", "schedules"):
        (plain / name).symlink_to(tmp_path / name)
    with dg.DagsterInstance.from_config(str(plain)) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert {r.run_id for r in instance.get_runs()} == set(ours)
        records = instance.fetch_materializations(dg.AssetKey("thing"), limit=10).records
        assert sorted(r.partition_key for r in records) == days
        assert all(r.run_id in ours for r in records)
        assert sum(1 for run_id in ours for e in instance.all_logs(run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION") == 3
        theirs = job.execute_in_process(partition_key=days[0], instance=instance).run_id
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        latest = instance.fetch_materializations(dg.AssetKey("thing"), limit=1).records[0]
        assert latest.run_id == theirs and latest.partition_key == days[0]


def test_the_dev_event_log_keeps_a_bounded_number_of_connections_and_none_across_a_fork(tmp_path):
    job, days = _checked_job(1)
    (tmp_path / "dagster.yaml").write_text(setup.render("dev"))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        run_ids = [job.execute_in_process(partition_key=days[0], instance=instance).run_id
                   for _ in range(storage.KEEP + 3)]
        assert len(storage._engines) == storage.KEEP  # the least recently used files are let go
        assert "index" in storage._engines and run_ids[-1] in storage._engines and run_ids[0] not in storage._engines
        assert len(instance.all_logs(run_ids[0])) > 0  # reopened when read again

        kept = dict(storage._engines)
        storage._engines_pid = -1  # as in a child process after a fork
        assert len(instance.all_logs(run_ids[-1])) > 0
        assert storage._engines_pid == os.getpid() and list(storage._engines) == [run_ids[-1]]
        assert storage._engines[run_ids[-1]] is not kept[run_ids[-1]]

        instance.wipe()  # closes the kept connections, then deletes the run files (and empties the index)
        assert list(storage._engines) == ["index"] and not list((tmp_path / "history" / "runs").glob(f"{run_ids[-1]}.db"))
        assert job.execute_in_process(partition_key=days[0], instance=instance).success


def _ticks_by_sensor(instance) -> dict[str, list]:
    from dagster._core.scheduler.instigation import InstigatorType

    out = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        out[state.instigator_name] = list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return out


def test_the_daemon_after_a_demo_starts_no_run(demo_home):
    from dagster._core.scheduler.instigation import TickStatus

    home = demo_home / "data" / "dagster_home"
    # the daily schedule fires at its time of day (that is intended work, not a reaction to the
    # demo): put it twelve hours away so the test window cannot cross it
    away = (datetime.now(timezone.utc) + timedelta(hours=12)).strftime("%H:%M")
    env = _env(demo_home, DAGSTER_HOME=str(home), DE_ASSETS_SCHEDULE_TIME=away)
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(ROOT / "workspace.yaml")],
                              cwd=ROOT, env=env, stdout=open(demo_home / "daemon.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    watched = {"landing_files", "late_data_refresh", "dead_run_sweeper"}
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 150
            while True:
                ticks = _ticks_by_sensor(instance)
                done = {name for name, found in ticks.items()
                        if any(t.status != TickStatus.STARTED for t in found)}
                if watched <= done:
                    break
                assert time.monotonic() < deadline, (
                    f"sensors ticked: {sorted(done)}\n" + (demo_home / "daemon.log").read_text()[-3000:])
                time.sleep(2)
            runs = instance.get_runs()
    finally:
        stop_process_group(daemon)
    for name in watched:
        statuses = {t.status for t in ticks[name]}
        assert statuses <= {TickStatus.SKIPPED, TickStatus.STARTED}, (name, [t.error for t in ticks[name]])
    # only the CLI's run: nothing was launched, queued or requested
    assert [(r.job_name, r.status) for r in runs] == [("daily_pipeline", dg.DagsterRunStatus.SUCCESS)]


WAIT_THEN_CREATE = """
import os, sys, time
from de_assets import instance
print("waiting", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
instance.ensure_home()
print("ready", flush=True)
"""


def test_four_processes_starting_together_on_a_fresh_home_all_succeed(tmp_path):
    go = tmp_path / "go"
    env = _env(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WAIT_THEN_CREATE, str(go)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "waiting"
    go.touch()  # every process is past its imports: they create the instance at the same moment
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0 and "ready" in out, out[-3000:]
    home = tmp_path / "data" / "dagster_home"
    assert (home / "dagster.yaml").read_text() == setup.render("dev")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_run(dg.DagsterRun(job_name="probe", run_id="probe"))
        assert [r.run_id for r in instance.get_runs()] == ["probe"]


def _dead_identity() -> str:
    child = subprocess.Popen([sys.executable, "-c", "from de_assets.lib import processes; print(processes.identity())"],
                             stdout=subprocess.PIPE, text=True, env=_env(Path("/tmp")))
    identity = child.communicate(timeout=60)[0].strip()
    assert not processes.is_alive(identity)
    return identity


def test_sweeper_fails_runs_of_dead_processes_only(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance:
        def add(run_id, identity, host=None):
            instance.add_run(dg.DagsterRun(job_name="daily_pipeline", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                           tags={setup.PID_TAG: identity, setup.HOST_TAG: host or processes.host()}))

        add("dead", _dead_identity())
        add("alive", processes.identity())
        add("elsewhere", _dead_identity(), host="another-host")  # its pid means nothing here
        # a pid reused by another process: same pid, other start time
        add("reused", f"{os.getpid()}:1")
        with dg.build_sensor_context(instance=instance) as context:
            result = sensors.dead_run_sweeper(context)
        assert "2 dead run(s)" in result.skip_message
        status = {r.run_id: r.status for r in instance.get_runs()}
        assert status == {"dead": dg.DagsterRunStatus.FAILURE, "reused": dg.DagsterRunStatus.FAILURE,
                          "alive": dg.DagsterRunStatus.STARTED, "elsewhere": dg.DagsterRunStatus.STARTED}
        [failure] = instance.all_logs("dead", of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "its process" in failure.message and "is gone" in failure.message


def _step_events(instance, run_id):
    started, ended = set(), set()
    for event in instance.all_logs(run_id):
        if event.dagster_event is None:
            continue
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            started.add(event.step_key)
        elif event.dagster_event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ended.add(event.step_key)
    return started, ended


def test_a_run_killed_mid_step_ends_failed_and_the_next_run_proceeds(tmp_path):
    from de_assets.generator import generate

    day = date(2026, 11, 5)
    generate(tmp_path / "landing", day, 1, 30_000, seed=3)
    home = tmp_path / "home"
    home.mkdir()
    env = _env(tmp_path, DAGSTER_HOME=str(home))
    args = ("run", "--start", day.isoformat(), "--landing", str(tmp_path / "landing"))
    victim = _cli(tmp_path, *args, env=env, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 300
            while True:  # wait until a step is running, then kill -9
                runs = instance.get_runs()
                if runs:
                    started, ended = _step_events(instance, runs[0].run_id)
                    if started - ended:
                        break
                assert victim.poll() is None, victim.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "no step started"
                time.sleep(0.05)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            [run] = instance.get_runs()
            started, ended = _step_events(instance, run.run_id)
            assert started - ended, "the kill landed between steps"
            assert run.tags[setup.PID_TAG].split(":")[0] == str(victim.pid)
            # what Dagster alone shows: the run stays STARTED, and it keeps its warehouse pool slot
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            pool = instance.event_log_storage.get_concurrency_info("duckdb_warehouse")
            assert [s.run_id for s in pool.claimed_slots] == [run.run_id]

            # the next CLI command fails it first, frees the slot, and its own run goes through
            again = _cli(tmp_path, *args, env=env)
            out = again.communicate(timeout=600)[0]
            assert again.returncode == 0, out[-3000:]
            assert f"run {run.run_id} was still marked running but its process is gone: marked as failed" in out
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
            assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
            assert instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots == []
    finally:
        if victim.poll() is None:
            stop_process_group(victim)


def test_a_run_launched_without_process_tags_records_its_process(pipeline):
    """What a run started by the daemon or the UI gets: the Warehouse resource tags it in the run worker."""
    result = pipeline.run("2026-11-01")
    tags = pipeline.instance.get_run_by_id(result.run_id).tags
    assert tags[setup.PID_TAG] == processes.identity() and tags[setup.HOST_TAG] == processes.host()
