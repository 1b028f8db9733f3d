"""Operations: the daily schedule and the landing-file sensor, exercised through Dagster."""

import json
import os
import shutil
from datetime import date, datetime, timezone

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from de_assets import sensors
from de_assets.definitions import defs
from de_assets.lib import arrivals, landing
from de_assets.resources import build_resources
from de_assets_tests.conftest import held_by_another_process, reader


def test_schedule_runs_yesterdays_partition_after_midnight():
    schedule = defs.get_schedule_def("daily_pipeline_schedule")
    assert schedule.cron_schedule == "30 0 * * *" and schedule.execution_timezone in (None, "UTC")
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 22, 0, 30, tzinfo=timezone.utc)) as ctx:
        [request] = schedule.evaluate_tick(ctx).run_requests
    assert request.partition_key == "2026-11-21"


def _tick(landing_root, cursor=None, pipeline=None, instance=None):
    """One evaluation of the landing sensor: against `pipeline`'s warehouse and instance, or an
    empty warehouse (no file yet) and a fresh instance."""
    if pipeline is not None:
        resources, instance = pipeline.defs.resources, pipeline.instance
    else:
        resources = build_resources(str(landing_root.parent / "none.duckdb"), str(landing_root), "k")
    with dg.build_sensor_context(cursor=cursor, instance=instance or dg.DagsterInstance.ephemeral(),
                                 resources=resources) as context:
        return sensors.landing_files(context)


def _set_mtime(path, ns):
    os.utime(path, ns=(ns, ns))


def _land(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_landing_sensor_one_run_per_contiguous_range_of_new_days(golden_landing):
    first = _tick(golden_landing)
    # 7 event files + 2 request files over 11-01..11-03; 11-03/redelivered.ndjson is byte-identical
    # to 11-02/a.ndjson: 8 distinct files, one run for the whole contiguous range
    [request] = first.run_requests
    assert request.partition_key is None
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-01", "2026-11-03")
    assert request.tags["de_assets/landed_files"] == "8"
    checksums = sorted(f"{f.parent.parent.name}:{landing.sha256_of(f)}" for f in golden_landing.rglob("*.*")
                       if f.name != "redelivered.ndjson")
    assert request.run_key == arrivals.batch_key("landed", checksums)

    # nothing new: nothing to do
    again = _tick(golden_landing, first.cursor)
    assert isinstance(again, dg.SkipReason)

    # new files for 11-05, 11-06 and 11-08: one run for 11-05..11-06, one for 11-08
    for day in ("2026-11-05", "2026-11-06", "2026-11-08"):
        _land(golden_landing / "events" / day, "x.ndjson",
              f'{{"messageId": "n-{day}", "type": "page", "userId": "z", "timestamp": "{day}T01:00:00Z"}}\n')
    later = _tick(golden_landing, first.cursor)
    assert [(r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end"),
             r.partition_key) for r in later.run_requests] == [("2026-11-05", "2026-11-06", None),
                                                                (None, None, "2026-11-08")]


def test_landing_sensor_starts_nothing_for_files_the_warehouse_holds(pipeline):
    landed = pipeline.landing
    assert pipeline.run("2026-11-01", "2026-11-03").success
    # first tick (no cursor) on a warehouse that already holds every landed file: nothing to start
    first = _tick(landed, pipeline=pipeline)
    assert first.run_requests == []
    assert first.skip_reason is not None and "9 landed file(s) already in the warehouse" in first.skip_reason.skip_message

    # a new file: exactly one run, for its day
    _land(landed / "events" / "2026-11-04", "x.ndjson",
          '{"messageId": "n1", "type": "page", "userId": "z", "timestamp": "2026-11-04T01:00:00Z"}\n')
    new = _tick(landed, first.cursor, pipeline=pipeline)
    [request] = new.run_requests
    assert request.partition_key == "2026-11-04" and request.tags["de_assets/landed_files"] == "1"

    # a byte-identical copy of an ingested file, under another name and day: nothing
    shutil.copy(landed / "events/2026-11-02/b.csv", landed / "events/2026-11-04/resent.csv")
    assert _tick(landed, new.cursor, pipeline=pipeline).run_requests == []


def test_landing_sensor_waits_while_a_run_covers_the_day(pipeline):
    landed = pipeline.landing
    assert pipeline.run("2026-11-01", "2026-11-03").success
    first = _tick(landed, pipeline=pipeline)
    pipeline.instance.add_run(dg.DagsterRun(job_name="daily_pipeline", run_id="running-04",
                                            status=dg.DagsterRunStatus.STARTED,
                                            tags={"dagster/partition": "2026-11-04"}))
    _land(landed / "events" / "2026-11-04", "x.ndjson",
          '{"messageId": "n1", "type": "page", "userId": "z", "timestamp": "2026-11-04T01:00:00Z"}\n')
    waiting = _tick(landed, first.cursor, pipeline=pipeline)
    assert waiting.run_requests == []
    assert json.loads(waiting.cursor)["pending"] == ["events/2026-11-04/x.ndjson"]
    # the run ended without ingesting the file (say it failed): the next tick starts it, from the cursor alone
    pipeline.instance.delete_run("running-04")
    [request] = _tick(landed, waiting.cursor, pipeline=pipeline).run_requests
    assert request.partition_key == "2026-11-04"


def test_landing_sensor_decides_while_a_writer_holds_the_warehouse(pipeline):
    assert pipeline.run("2026-11-01").success
    with held_by_another_process(pipeline.db):
        # the registry is read from its copy in the catalog database: 11-01 is in, 11-02..11-03 are not
        result = _tick(pipeline.landing, pipeline=pipeline)
    [request] = result.run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-02", "2026-11-03")


def test_the_registry_follows_ingests_and_re_ingests(pipeline):
    """The file registry the landing sensor reads (held in the catalog database) lists exactly the landed
    files: after a range run, after a run that lands a file into an ingested day, and after a
    re-ingest of a day whose file was removed."""
    from de_assets.lib import ops_store, served

    def registry():
        held = ops_store.SOURCE_FILES
        with served.open_lake(str(pipeline.db)).engine.connect() as c:
            return sorted(c.execute(sa.select(held.c.path).where(held.c.status != "refused")).scalars())

    def landed():
        return sorted(str(p.relative_to(pipeline.landing)) for p in pipeline.landing.rglob("*.*")
                      if p.is_file() and p.suffix != ".md")

    assert pipeline.run("2026-11-01", "2026-11-03").success
    assert len(registry()) == 9 and registry() == landed()  # the fixture's 9 files (7 events, 2 requests)
    _land(pipeline.landing / "events" / "2026-11-02", "late.ndjson",
          '{"messageId": "late1", "type": "page", "userId": "z", "timestamp": "2026-11-02T01:00:00Z"}\n')
    assert pipeline.run("2026-11-02").success
    assert len(registry()) == 10 and registry() == landed()
    (pipeline.landing / "events" / "2026-11-02" / "late.ndjson").unlink()
    job = pipeline.defs.resolve_job_def("daily_pipeline")
    assert job.execute_in_process(
        partition_key="2026-11-02", instance=pipeline.instance,
        asset_selection=[dg.AssetKey(["raw", "raw_events"])],
        run_config={"ops": {"raw__events": {"config": {"reingest": True}}}}).success
    assert len(registry()) == 9 and registry() == landed()


def _as_an_earlier_version_left_it(pipeline):
    """Put the file registry back in the warehouse file, with the catalog database's copy lagging by the
    files of 11-03 and the move not recorded, as versions of sessions 11-21 could leave it; its rows."""
    from de_assets.lib import ops_store, served
    from de_assets.lib.sql import insert_arrow
    from de_assets.lib.tables import SOURCE_FILES

    with reader(pipeline.db) as con:
        registry = con.sql(f"SELECT * FROM {SOURCE_FILES.name}").to_arrow_table()
    with duckdb.connect(str(pipeline.db)) as con:
        con.execute(SOURCE_FILES.ddl())
        insert_arrow(con, SOURCE_FILES.name, registry)
    held = ops_store.SOURCE_FILES
    with served.open_lake(str(pipeline.db)).engine.begin() as c:
        c.execute(sa.delete(held).where(held.c.arrival_date == date(2026, 11, 3)))
        c.execute(sa.delete(ops_store.ADOPTED).where(ops_store.ADOPTED.c.warehouse_table == "raw.source_files (moved)"))
    return registry


def test_a_dry_run_before_the_registry_is_moved_reads_the_files_own(pipeline):
    """A dry run writes nothing to the catalog database, so it cannot move an earlier version's registry:
    it reads the file's rows in place of the held ones (which lack 11-03's files) and finds nothing new
    to ingest on 11-03; the move is left to the next real step."""
    assert pipeline.run("2026-11-01", "2026-11-03").success
    _as_an_earlier_version_left_it(pipeline)
    result = pipeline.run("2026-11-03", dry_run=True)
    assert result.success
    ingested = [m.metadata["files_ingested"].value for m in result.asset_materializations_for_node("raw__events")]
    assert ingested == [0]  # 3 files would be "new" when read from the lagging catalog database alone
    assert "raw.source_files" in pipeline.tables()  # not moved by a dry run


def test_the_registry_an_earlier_version_kept_in_the_file_is_moved_once(pipeline):
    """Versions before this one kept the file registry in the warehouse file (and, since session 11, a
    copy in the catalog database, which a step killed between the two could leave behind): the
    first step or sensor tick that can take the file moves the rows the catalog database lacks and
    drops the file's table; while a run holds the file it cannot yet, and the tick waits for the
    next one rather than take every ingested file for new."""
    from de_assets.lib import ops_store, served

    assert pipeline.run("2026-11-01", "2026-11-03").success
    registry = _as_an_earlier_version_left_it(pipeline)
    held = ops_store.SOURCE_FILES
    with held_by_another_process(pipeline.db):
        busy = _tick(pipeline.landing, pipeline=pipeline)
    assert isinstance(busy, dg.SkipReason) and "being written" in busy.skip_message
    tick = _tick(pipeline.landing, pipeline=pipeline)
    assert tick.run_requests == [] and "9 landed file(s) already in the warehouse" in tick.skip_reason.skip_message
    with served.open_lake(str(pipeline.db)).engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(held)).scalar() == registry.num_rows == 9
    assert "raw.source_files" not in pipeline.tables()  # moved: the file keeps no registry


def test_the_registry_answers_for_more_files_than_sqlite_binds_in_one_statement():
    """A first tick over years of landed files asks about many checksums; SQLite binds a limited number
    of values in one statement (32,766 by default; this build's limit is read, and exceeded)."""
    import sqlite3

    from de_assets.lib import ops_store
    from de_assets.lib.tables import SOURCE_FILES

    limit = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    engine = ops_store.ensure(sa.create_engine("sqlite://"))
    day = date(2026, 1, 1)
    ops_store.replace_rows(engine, SOURCE_FILES, [
        dict(source="events", arrival_date=day, path=f"events/2026-01-01/{i}.ndjson", format="ndjson",
             sha256=f"sha-{i}", bytes=1, rows=1, status="ingested", reason=None, duplicate_of=None,
             ingested_at=None, run_id="r") for i in range(1_000)], source="events", arrival_date=(day, day))
    # the 1,000 registered, and more new ones than one statement binds
    asked = [f"sha-{i}" for i in range(limit + 1_000)]
    assert ops_store.registered_checksums(engine, asked) == {f"sha-{i}" for i in range(1_000)}


def test_landing_sensor_lists_only_day_folders_that_changed(golden_landing, monkeypatch):
    base = 1_700_000_000_000_000_000  # ns (2023-11-14); every landed file and folder gets an old, fixed time
    for path in sorted(golden_landing.rglob("*"), reverse=True):  # folders: created a second before their files
        _set_mtime(path, base - 10**9 if path.is_dir() else base)
    first = _tick(golden_landing)
    assert json.loads(first.cursor)["mtime_ns"] == base
    listed = []
    original = landing.list_files
    monkeypatch.setattr(landing, "list_files", lambda root, source, day: listed.append(str(day)) or original(root, source, day))
    new = golden_landing / "requests" / "2026-11-03" / "late.csv"
    new.write_text("timestamp,service,endpoint,host,status,latency_ms\n2026-11-03T10:00:00Z,search,/q,h1,200,5\n")
    result = _tick(golden_landing, first.cursor)
    [request] = result.run_requests
    assert request.partition_key == "2026-11-03" and request.tags["de_assets/landed_files"] == "1"
    assert listed == ["2026-11-03"]  # the other four day folders were not listed
    # a file landed with exactly the cursor's time, not seen before, is still picked up
    twin = golden_landing / "requests" / "2026-11-03" / "twin.csv"
    twin.write_text("timestamp,service,endpoint,host,status,latency_ms\n2026-11-03T11:00:00Z,search,/q,h1,200,6\n")
    _set_mtime(twin, json.loads(result.cursor)["mtime_ns"])
    twin_result = _tick(golden_landing, result.cursor)
    [twin_request] = twin_result.run_requests
    assert twin_request.run_key == arrivals.batch_key("landed", [f"requests:{landing.sha256_of(twin)}"])


def _late_sensor(instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return sensors.late_data_refresh(context)


def test_late_events_re_serve_their_days_automatically(pipeline):
    dau = "SELECT event_date::VARCHAR d, dau, wau FROM marts.daily_engagement ORDER BY d"
    assert pipeline.run("2026-11-01").success
    first = _late_sensor(pipeline.instance)
    assert first.run_requests == []  # nothing late on the first day
    assert pipeline.run("2026-11-02").success  # dave's 11-01 page view (m29) arrives on 11-02
    assert pipeline.query(dau).values.tolist()[0] == ["2026-11-01", 2, 2]  # stale: alice, bob
    second = _late_sensor(pipeline.instance, first.cursor)
    [request] = second.run_requests
    # 11-01, and 11-02 whose day-over-day change was computed against the stale 11-01
    dod = "SELECT round(dod, 4) FROM marts.kpi_changes WHERE kpi = 'dau' AND event_date = '2026-11-02'"
    assert pipeline.query(dod).values.tolist() == [[1.0]]  # 4 / 2 - 1: stale
    assert request.tags["dagster/asset_partition_range_start"] == "2026-11-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-11-02"
    # what the daemon does with the request: a refresh_marts run over that range
    refresh = pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=request.tags
    )
    assert refresh.success
    assert pipeline.query(dau).values.tolist()[0] == ["2026-11-01", 3, 3]  # README: alice, bob, dave
    assert pipeline.query(dod).values.tolist() == [[0.3333]]  # 4 / 3 - 1
    # the refresh run cleaned nothing, and the marts it changed were read by nothing built before it:
    # the next tick has nothing to do
    assert not getattr(_late_sensor(pipeline.instance, second.cursor), "run_requests", None)


def test_re_running_a_past_day_re_serves_later_days_only_when_its_clean_rows_changed(pipeline, golden_landing):
    """A cleaning re-serves the marts of later days that read its rows (30-day windows, A/B lookbacks)
    only when those rows changed: re-running a past day that serves the same rows costs its own work."""
    from de_assets_tests.conftest import land, segment_event

    assert pipeline.run("2026-11-01", "2026-11-03").success
    first = _late_sensor(pipeline.instance)
    assert not getattr(first, "run_requests", None)  # one range run: nothing was built before its data

    rerun = pipeline.run("2026-11-01")
    [clean] = [e for e in rerun.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    meta = clean.materialization.metadata
    assert (meta["event_days"].value, meta["marts_to_refresh"].value) == ("none", "none")
    assert not getattr(_late_sensor(pipeline.instance, first.cursor), "run_requests", None)
    # (before: marts_to_refresh 2026-11-02..2026-11-30, and a refresh of 11-02..11-03, every mart)

    # a file landed late into the 11-01 folder: 11-01 serves a new event, and 11-02/11-03 read it
    land(golden_landing, "2026-11-01", "late.ndjson", [segment_event("m-new", "erin", "2026-11-01T20:00:00Z")])
    second = _late_sensor(pipeline.instance, first.cursor)
    rerun = pipeline.run("2026-11-01")
    [clean] = [e for e in rerun.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    meta = clean.materialization.metadata
    assert (meta["event_days"].value, meta["marts_to_refresh"].value) == (
        "2026-11-01..2026-11-01", "2026-11-02..2026-11-30")
    requests = _late_sensor(pipeline.instance, getattr(second, "cursor", None) or first.cursor).run_requests
    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"],
             r.asset_selection) for r in requests] == [("2026-11-02", "2026-11-03", None)]  # every mart
    mau = "SELECT event_date::VARCHAR d, mau FROM marts.daily_engagement ORDER BY d"
    # golden README: mau 11-01 = 3 (alice, bob, dave), 11-02 and 11-03 = 5 (+ carol, anon-1); erin adds one
    assert pipeline.query(mau).mau.tolist() == [4, 5, 5]  # 11-01 rebuilt by the re-run; 11-02/03 not yet
    assert pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=requests[0].tags).success
    assert pipeline.query(mau).mau.tolist() == [4, 6, 6]


def test_a_re_run_that_changes_only_a_days_health_figures_re_serves_the_anomaly_scores_after_it(
        tmp_path, pipeline, golden_landing):
    """kpi_anomalies scores the pipeline's own health series (rows in, quarantine rate per arrival day)
    with the KPIs. A file landed late into a past day whose every line is unreadable changes no clean
    row, so no mart re-serves, but it changes that day's health figures, which the scores of every
    later day read: the sensor re-serves them, and they equal a run that had the file from the start."""
    from de_assets_tests.conftest import Pipeline, land

    assert pipeline.run("2026-11-01", "2026-11-03").success
    first = _late_sensor(pipeline.instance)
    land(golden_landing, "2026-11-01", "late.ndjson", ["{not json"])  # quarantined: 2 of 5 rows, under the gate
    rerun = pipeline.run("2026-11-01")
    [clean] = [e for e in rerun.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    meta = clean.materialization.metadata
    assert (meta["event_days"].value, meta["marts_to_refresh"].value, meta["health_days"].value) == (
        "none", "none", "2026-11-01..2026-11-01")
    rows_in = "SELECT value FROM marts.kpi_anomalies WHERE kpi = 'pipeline.rows_in' AND event_date = '2026-11-01'"
    assert pipeline.query(rows_in).value.tolist() == [4.0 + 1]  # golden README: 4 event rows land on 11-01
    [request] = _late_sensor(pipeline.instance, first.cursor).run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"],
            [k.to_user_string() for k in request.asset_selection]) == (
        "2026-11-02", "2026-11-03", ["marts/kpi_anomalies", "reports/insights"])  # 11-01 was re-served by the re-run
    assert pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=request.tags, asset_selection=request.asset_selection).success
    sequential = Pipeline(tmp_path / "sequential", golden_landing)
    assert sequential.run("2026-11-01", "2026-11-03").success
    anomalies = "SELECT * EXCLUDE (expected, score), round(expected, 9) e, round(score, 9) s FROM marts.kpi_anomalies ORDER BY ALL"
    assert pipeline.query(anomalies).equals(sequential.query(anomalies))
    # a re-run that changes nothing records no health change, and makes nothing stale
    rerun = pipeline.run("2026-11-01")
    [clean] = [e for e in rerun.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    assert clean.materialization.metadata["health_days"].value == "none"


def _keys(*groups):
    from de_assets.assets.layers import keys_where
    from de_assets.jobs import daily_pipeline

    in_job = defs.resolve_job_def(daily_pipeline.name).asset_layer.executable_asset_keys
    return [k for k in keys_where(groups=groups) if k in in_job]


def test_a_kpi_comparison_built_before_the_day_before_is_re_served(tmp_path, golden_landing, pipeline):
    """Runs of two days at once take turns on the warehouse in any order: day 2's run can compute
    kpi_changes (day over day) after day 1 is cleaned but before day 1's marts exist. No cleaning
    made day 2 stale, yet its comparison read nothing for day 1; the sensor follows the declared
    reads (kpi_changes of d reads the marts of d-1, d-7, a month and a year before) and re-serves it."""
    from de_assets_tests.conftest import Pipeline

    sequential = Pipeline(tmp_path / "sequential", golden_landing)
    assert sequential.run("2026-11-01", "2026-11-02").success
    kpis = "SELECT event_date::VARCHAR d, kpi, value, dod, wow FROM marts.kpi_changes ORDER BY d, kpi"
    anomalies = "SELECT * EXCLUDE (expected, score), round(expected, 9) e, round(score, 9) s FROM marts.kpi_anomalies ORDER BY ALL"
    dod = "SELECT round(dod, 4) FROM marts.kpi_changes WHERE kpi = 'dau' AND event_date = '2026-11-02'"
    assert sequential.query(dod).values.tolist() == [[0.3333]]  # README: 4 users on 11-02 / 3 on 11-01 - 1

    assert pipeline.run("2026-11-01", selection=_keys("ingestion", "cleaning")).success
    assert pipeline.run("2026-11-02").success  # its KPIs compare with a day 1 not served yet
    assert pipeline.run("2026-11-01", selection=_keys("analytics")).success
    assert pipeline.query(dod).isna().values.tolist() == [[True]]  # no base when it was computed
    result = _late_sensor(pipeline.instance)
    [request] = result.run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-02", "2026-11-02")
    assert [k.to_user_string() for k in request.asset_selection] == [
        "marts/kpi_changes", "marts/kpi_anomalies", "reports/insights"]  # the stale mart and what is built from it
    assert pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=request.tags, asset_selection=request.asset_selection).success
    assert pipeline.query(dod).values.tolist() == [[0.3333]]
    assert pipeline.query(kpis).equals(sequential.query(kpis))
    assert pipeline.query(anomalies).equals(sequential.query(anomalies))
    after = _late_sensor(pipeline.instance, result.cursor)
    assert not getattr(after, "run_requests", None)  # the refresh made nothing else stale: no cascade
    # a mart rebuilt with the same rows records no change, and makes nothing stale
    rerun = pipeline.run("2026-11-01", selection=_keys("analytics"))
    changed = {e.asset_key.to_user_string(): e.materialization.metadata["changed_days"].value
               for e in rerun.get_asset_materialization_events() if "changed_days" in e.materialization.metadata}
    assert set(changed.values()) == {"none"} and "marts/daily_engagement" in changed
    assert not getattr(_late_sensor(pipeline.instance, after.cursor), "run_requests", None)


def _settle(p) -> list[tuple[str, str, list[str]]]:
    """What the daemon does: tick late_data_refresh and run what it requests, until it requests nothing.
    Returns the runs: (first day, last day, assets)."""
    cursor, runs = None, []
    for _ in range(5):
        result = _late_sensor(p.instance, cursor)
        cursor = getattr(result, "cursor", None) or cursor
        if not getattr(result, "run_requests", None):
            return runs
        for r in result.run_requests:
            assert p.defs.resolve_job_def("refresh_marts").execute_in_process(
                instance=p.instance, tags=r.tags, asset_selection=r.asset_selection).success
            runs.append((r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"],
                         [k.to_user_string() for k in r.asset_selection or []]))
    raise AssertionError("late_data_refresh kept requesting runs")


def test_a_day_cleaned_after_a_much_later_day_re_serves_what_reads_the_whole_history(tmp_path):
    """new_users and retention cohorts read each user's first day ever, from the whole history, and an
    A/B readout the exposures of 90 days, not a 30-day window: a day cleaned after a much later day was
    built (runs in reverse order, a past day re-run with new files) changes what they read. The later
    day is re-served, and equals a sequential run."""
    from de_assets_tests.conftest import Pipeline, land, segment_event

    def exposed(message_id, user, ts, variant):
        return segment_event(message_id, user, ts, "Experiment Viewed",
                             properties={"experiment_id": "e1", "variant_id": variant})

    landing = tmp_path / "landing"
    land(landing, "2026-09-01", "a.ndjson", [exposed("m1", "alice", "2026-09-01T10:00:00Z", "control"),
                                             exposed("m2", "bob", "2026-09-01T11:00:00Z", "treatment")])
    land(landing, "2026-10-15", "b.ndjson", [segment_event("m3", "alice", "2026-10-15T10:00:00Z"),
                                             segment_event("m4", "bob", "2026-10-15T11:00:00Z"),
                                             exposed("m5", "carol", "2026-10-15T12:00:00Z", "treatment")])
    new_users = "SELECT event_date::VARCHAR d, dau, new_users FROM marts.daily_engagement WHERE dau > 0 ORDER BY d"
    cohorts = "SELECT cohort_week::VARCHAR c, weeks_since, cohort_size, retained_users FROM marts.retention_cohorts ORDER BY ALL"
    readout = ("SELECT variant_id, users FROM marts.experiment_results WHERE as_of_date = '2026-10-15' "
               "AND metric = 'purchase' ORDER BY ALL")
    sequential = Pipeline(tmp_path / "sequential", landing)
    for day in ("2026-09-01", "2026-10-15"):
        assert sequential.run(day).success
    # by hand: alice and bob are new on 09-01; on 10-15 only carol is. Cohorts are ISO weeks (Mondays).
    assert sequential.query(new_users).values.tolist() == [["2026-09-01", 2, 2], ["2026-10-15", 3, 1]]
    assert sequential.query(cohorts).values.tolist() == [
        ["2026-08-31", 0, 2, 2], ["2026-08-31", 6, 2, 2], ["2026-10-12", 0, 1, 1]]
    # the readout as of 10-15 counts the exposures of the 90 days before it: alice; bob and carol
    assert sequential.query(readout).values.tolist() == [["control", 1], ["treatment", 2]]

    reverse = Pipeline(tmp_path / "reverse", landing)
    for day in ("2026-10-15", "2026-09-01"):
        result = reverse.run(day)
        assert result.success
    [clean] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    assert clean.materialization.metadata["first_days_moved"].value == "2026-09-01..2026-09-01, 2026-10-15..2026-10-15"
    assert reverse.query(new_users).values.tolist()[1] == ["2026-10-15", 3, 3]  # built when all 3 were new
    assert reverse.query(readout).values.tolist() == [["treatment", 1]]  # built before 09-01 was cleaned
    # new_users of 10-15, the cohort sizes on every activity week's cells from the moved day on, and
    # the readout whose lookback reads 09-01, with the marts built from them; the other marts of
    # 10-15 do not read 09-01 (funnels, revenue: the day only)
    assert _settle(reverse) == [("2026-10-15", "2026-10-15", [
        "marts/daily_engagement", "marts/retention_cohorts", "marts/kpi_changes", "marts/kpi_anomalies",
        "marts/experiment_results", "reports/insights"])]
    assert reverse.query(new_users).values.tolist() == sequential.query(new_users).values.tolist()
    assert reverse.query(cohorts).values.tolist() == sequential.query(cohorts).values.tolist()
    assert reverse.query(readout).values.tolist() == sequential.query(readout).values.tolist()


def test_events_older_than_the_lookback_are_quarantined_too_late(tmp_path, golden_landing):
    from de_assets_tests.conftest import Pipeline

    day = golden_landing / "events" / "2026-11-20"
    day.mkdir()
    (day / "old.ndjson").write_text(
        '{"messageId": "old-1", "type": "page", "userId": "alice", "timestamp": "2026-11-12T10:00:00Z"}\n'  # 8 days
        '{"messageId": "ok-1", "type": "page", "userId": "alice", "timestamp": "2026-11-13T10:00:00Z"}\n'  # 7 days
    )
    p = Pipeline(tmp_path, golden_landing, late_lookback_days=7)
    result = p.run("2026-11-20")
    assert result.success
    assert p.query("SELECT reason, raw_row->>'$.message_id' m FROM quarantine.events").values.tolist() == [
        ["too_late", "old-1"]]
    assert p.query("SELECT message_id, event_date::VARCHAR d FROM clean.events").values.tolist() == [
        ["ok-1", "2026-11-13"]]
    [clean] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["clean", "clean_events"]]
    meta = clean.materialization.metadata
    assert meta["rows_quarantined"].value == 1 and meta["late_event_days"].value == "2026-11-13"


@pytest.mark.slow  # ~200 s on 2 cores
def test_90_day_backfill_finishes_and_running_it_twice_changes_nothing(tmp_path):
    """The CI-sized version of the 90-day backfill (full scale is measured in docs/operations.md)."""
    from datetime import date

    from de_assets.generator import generate
    from de_assets_tests.conftest import Pipeline, explain
    from de_assets_tests.test_pipeline import snapshot

    generate(tmp_path / "landing", date(2026, 8, 1), 90, 200, seed=11, requests_per_day=50)
    p = Pipeline(tmp_path, tmp_path / "landing", max_quarantine_rate=0.2)
    # raise_on_error=False: a failed step is reported with its whole error chain and the figures of
    # any failed blocking check (Dagster's own exception names the check only)
    result = p.run("2026-08-01", "2026-10-29", raise_on_error=False)
    assert result.success, explain(result)
    first = snapshot(p)
    assert len(p.query("SELECT DISTINCT event_date FROM marts.daily_engagement")) == 90
    result = p.run("2026-08-01", "2026-10-29", raise_on_error=False)
    assert result.success, explain(result)
    assert snapshot(p) == first


def test_explain_gives_the_failed_step_and_the_figures_of_the_failed_blocking_check(tmp_path, golden_landing):
    """What the 90-day test prints when a run fails: Dagster's own error names the check only."""
    from de_assets_tests.conftest import Pipeline, explain

    # golden fixture, README: 1 of 4 events landed on 11-01 is bad, above a 20% gate
    result = Pipeline(tmp_path, golden_landing, max_quarantine_rate=0.2).run("2026-11-01", raise_on_error=False)
    assert not result.success
    text = explain(result)
    assert "step clean_events failed:" in text
    assert "1 blocking asset check failed with ERROR severity" in text
    assert ("blocking check quarantine_rate_within_threshold failed on clean/clean_events 2026-11-01: "
            "quarantine_rate=0.25, max_quarantine_rate=0.2, held_back=True, rows_held_back=3") in text


def test_retention_deletes_old_partitions_but_not_what_a_running_backfill_needs(pipeline):
    from de_assets.partitions import partition_range_tags

    assert pipeline.run("2026-11-01", "2026-11-03").success
    # a backfill of 11-01 is running right now
    pipeline.instance.add_run(dg.DagsterRun(job_name="daily_pipeline", run_id="running-backfill",
                                            status=dg.DagsterRunStatus.STARTED,
                                            tags=partition_range_tags("2026-11-01", "2026-11-01")))
    before = pipeline.query("SELECT arrival_date::VARCHAR d, count(*) n FROM raw.events GROUP BY 1 ORDER BY 1")
    assert before.values.tolist() == [["2026-11-01", 4], ["2026-11-02", 21], ["2026-11-03", 8]]
    config = {"ops": {"enforce_retention": {"config": {"raw_days": 17, "clean_days": 18, "as_of": "2026-11-20"}}}}
    result = pipeline.defs.resolve_job_def("retention_job").execute_in_process(instance=pipeline.instance,
                                                                              run_config=config)
    assert result.success
    # raw keeps days from 11-03 (20 - 17): 11-02 goes, 11-01 stays for the running backfill
    after = pipeline.query("SELECT arrival_date::VARCHAR d, count(*) n FROM raw.events GROUP BY 1 ORDER BY 1")
    assert after.values.tolist() == [["2026-11-01", 4], ["2026-11-03", 8]]
    # clean keeps days from 11-02 (20 - 18): nothing to delete but 11-01, which is protected
    assert pipeline.query("SELECT count(*) n FROM clean.events WHERE arrival_date = '2026-11-01'").n[0] == 3
    # the audit is held in the catalog database, and served
    log = pipeline.held("SELECT table_name, cutoff::VARCHAR c, rows_deleted, days_kept_for_runs k "
                        "FROM pipeline_health.retention_log ORDER BY table_name")
    from de_assets.lib import served

    served_log = served.connect(served.open_lake(str(pipeline.db), create=False)).execute(
        "SELECT table_name, rows_deleted FROM pipeline_health.retention_log ORDER BY 1").fetchall()
    assert served_log == [(t, n) for t, n in log[["table_name", "rows_deleted"]].values]
    raw_events = log[log.table_name == "raw.events"].iloc[0]
    assert (raw_events.c, raw_events.rows_deleted, raw_events.k) == ("2026-11-03", 21, "2026-11-01")
    assert set(log.table_name) >= {"raw.events", "raw.requests", "clean.events", "quarantine.events"}
    assert "marts.daily_engagement" not in set(log.table_name)  # marts are kept forever by default
    assert result.output_for_node("enforce_retention") == int(log.rows_deleted.sum())
    # the file registry stays: a re-delivery of an expired file is still recognized
    # (11-02: a.ndjson, b.csv, c.parquet and requests/r.csv)
    assert pipeline.query("SELECT count(*) n FROM raw.source_files WHERE arrival_date = '2026-11-02'").n[0] == 4


def _forget(p, user_id: str, **config):
    """What `de-assets forget-user` does before the job: record the request; the run gets its id only."""
    from de_assets.lib.privacy import pseudonymize
    from de_assets_tests.conftest import TEST_KEY, record_forget_request

    request_id = record_forget_request(p.db, pseudonymize(TEST_KEY, user_id), TEST_KEY, "dpo@example.org")
    return p.defs.resolve_job_def("forget_user_job").execute_in_process(
        instance=p.instance, run_config={"ops": {"forget_user": {"config": {"request_id": request_id, **config}}}})


def test_forget_user_removes_every_row_audits_and_re_serves_the_marts(pipeline):
    from de_assets.lib import forget
    from de_assets.lib.privacy import pseudonymize
    from de_assets_tests.conftest import TEST_KEY

    assert pipeline.run("2026-11-01", "2026-11-03").success
    carol = pseudonymize(TEST_KEY, "carol")
    dau = "SELECT event_date::VARCHAR d, dau FROM marts.daily_engagement ORDER BY d"
    # README: dau 3 / 4 / 3; carol is active on 11-02 and 11-03
    assert pipeline.query(dau).dau.tolist() == [3, 4, 3]
    with duckdb.connect(str(pipeline.db), read_only=True) as con:
        before = forget.remaining(con, carol)
    assert before["clean.events"] == 6  # README: m15 m19 m20 m28 (11-02), m35 m36 (11-03)
    result = _forget(pipeline, "carol")  # launched without the CLI: the sensor re-serves the marts
    assert result.success
    with duckdb.connect(str(pipeline.db), read_only=True) as con:
        assert forget.remaining(con, carol) == {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}
    audit = pipeline.held("SELECT * FROM pipeline_health.forget_audit")  # in the catalog database
    assert set(audit.table_name) == {"raw.events", "clean.events", "quarantine.events", "clean.events_duplicates"}
    assert not audit.astype(str).apply(lambda col: col.str.contains("carol|" + carol)).any().any()  # no id stored
    assert (audit.subject_hash == forget.subject_hash(carol)).all()
    # the marts no longer count carol once the sensor's refresh has run (before it they still do)
    assert pipeline.query(dau).dau.tolist() == [3, 4, 3]
    with dg.build_sensor_context(instance=pipeline.instance) as context:
        requests = sensors.late_data_refresh(context).run_requests
    [request] = requests  # the two days carol was active on, in one run
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-02", "2026-11-03")
    assert pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=request.tags).success
    assert pipeline.query(dau).dau.tolist() == [3, 3, 2]
    # and the books still balance after the erasure, on a re-run of every day
    rerun = pipeline.run("2026-11-01", "2026-11-03")
    # rows_reconcile is evaluated per day: events and requests x 3 days, all balanced
    assert [e.passed for e in rerun.get_asset_check_evaluations() if e.check_name == "rows_reconcile"] == [True] * 6


def test_forget_user_then_reingest_keeps_the_user_out(tmp_path, golden_landing):
    from de_assets.lib import forget
    from de_assets.lib.privacy import pseudonymize
    from de_assets_tests.conftest import TEST_KEY, Pipeline

    p = Pipeline(tmp_path, golden_landing)
    assert p.run("2026-11-01", "2026-11-03").success
    alice = pseudonymize(TEST_KEY, "alice")
    result = _forget(p, "alice")
    assert result.success
    user = "user_id = $p OR anonymous_id = $p"
    with duckdb.connect(str(p.db), read_only=True) as con:
        assert forget.remaining(con, alice) == {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}
        [(kept, left)] = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {user}) FROM raw.events",
                                     {"p": alice}).fetchall()
    # only hers went: rows whose other id is NULL stay (NOT of a NULL match dropped them once)
    assert left == 0 and kept == 4 + 21 + 8 - 13
    # re-ingesting every day drops her again (the suppression list)
    from de_assets.partitions import partition_range_tags

    rerun = p.defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=p.instance, tags=partition_range_tags("2026-11-01", "2026-11-03"),
        run_config={"ops": {"raw__events": {"config": {"reingest": True}}}})
    assert rerun.success
    with duckdb.connect(str(p.db), read_only=True) as con:
        assert forget.remaining(con, alice) == {"raw.events": 0, "clean.events": 0, "quarantine.events": 0}
        [(rows, left)] = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {user}) FROM raw.events",
                                     {"p": alice}).fetchall()
    forgotten = [tuple(r) for r in p.held("SELECT source_file, rows FROM raw.forgotten_rows ORDER BY 1")
                 .itertuples(index=False)]
    assert left == 0
    # her landed lines (grep '"alice"'): 2 in 11-01/batch-1.ndjson, 9 in 11-02/a.ndjson, 2 in 11-03/a.ndjson.gz
    assert forgotten == [("events/2026-11-01/batch-1.ndjson", 2), ("events/2026-11-02/a.ndjson", 9),
                         ("events/2026-11-03/a.ndjson.gz", 2)]
    assert rows == 4 + 21 + 8 - 13  # raw rows per day (test_retention_...) minus hers; no other row lost
    reconciled = [e.passed for e in rerun.get_asset_check_evaluations() if e.check_name == "rows_reconcile"]
    assert reconciled == [True] * 6  # per day (3) and source (events, requests)


def test_late_refresh_coalesces_and_never_re_serves_what_is_current(pipeline):
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):  # three runs, as the landing sensor would start
        assert pipeline.run(day).success
    # dave's 11-01 page view arrived on 11-02 (clean/clean_events), a request of 11-02 on 11-03
    # (clean/clean_requests): two cleaning materializations, two stale days, one run over both and
    # over 11-03, whose day-over-day changes (marts.kpi_changes) were computed against the stale 11-02
    first = _late_sensor(pipeline.instance)
    [request] = first.run_requests
    span = (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"])
    assert span == ("2026-11-01", "2026-11-03")
    assert pipeline.defs.resolve_job_def("refresh_marts").execute_in_process(
        instance=pipeline.instance, tags=request.tags).success
    # a sensor starting afresh (no cursor) on that instance finds every mart current: nothing to do
    again = _late_sensor(pipeline.instance)
    assert again.run_requests == [] and "no served marts are stale" in again.skip_reason.skip_message


def test_retention_schedule_is_off_in_dev_unless_turned_on():
    from de_assets import maintenance

    assert maintenance.retention_enabled({}) is False  # DE_ASSETS_ENV defaults to dev
    assert maintenance.retention_enabled({"DE_ASSETS_ENV": "dev", "DE_ASSETS_RETENTION": "on"}) is True
    assert maintenance.retention_enabled({"DE_ASSETS_ENV": "prod"}) is True
    assert maintenance.retention_enabled({"DE_ASSETS_ENV": "prod", "DE_ASSETS_RETENTION": "off"}) is False
    # the tests run in dev: the code location's schedule starts stopped
    assert maintenance.retention_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
