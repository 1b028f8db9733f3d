"""Bad data is stopped before it reaches a dashboard: the quarantine-rate gate, alerts, run-failure
and stale-partition sensors, and the dry run that writes nothing."""

import hashlib
import json
from datetime import date, datetime, timezone

import dagster as dg

from de_assets import sensors
from de_assets.generator import Dirt, generate
from de_assets_tests.conftest import Pipeline, land, segment_event

DAY = "2026-11-10"


def _check_failures(result) -> dict[str, dict]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": {k: v.value for k, v in e.metadata.items()}
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def test_golden_dirt_at_the_default_gate_holds_back_exactly_the_dirty_days(tmp_path, golden_landing):
    """Hand-derived from fixtures/golden/README.md: events 11-01 1/4 = 25% and 11-02 6/21 = 29% bad,
    11-03 0/8; requests 11-02 2/9 = 22% ("fast", missing service), 11-03 1/3 (truncated line). The
    production gate is 20%, so exactly those four days are held back and nothing else fails."""
    p = Pipeline(tmp_path, golden_landing, max_quarantine_rate=0.2)
    result = p.run("2026-11-01", "2026-11-03", raise_on_error=False)
    assert not result.success
    failures = _check_failures(result)
    assert set(failures) == {"clean/clean_events:quarantine_rate_within_threshold",
                             "clean/clean_requests:quarantine_rate_within_threshold",
                             "raw/raw_events:source_schema_change", "raw/raw_requests:source_schema_change"}
    # checks are evaluated per partition: the gate fails on exactly the four dirty days...
    failed = sorted((e.asset_key.to_user_string(), e.check_name, e.partition, e.severity.value)
                    for e in result.get_asset_check_evaluations() if not e.passed)
    assert [f for f in failed if f[1] == "quarantine_rate_within_threshold"] == [
        ("clean/clean_events", "quarantine_rate_within_threshold", "2026-11-01", "ERROR"),
        ("clean/clean_events", "quarantine_rate_within_threshold", "2026-11-02", "ERROR"),
        ("clean/clean_requests", "quarantine_rate_within_threshold", "2026-11-02", "ERROR"),
        ("clean/clean_requests", "quarantine_rate_within_threshold", "2026-11-03", "ERROR")]
    # ...and each day's schema is compared with the days before it (warnings, they block nothing):
    # events 11-02 carry anonymous_id and traits that 11-01 did not, 11-03 none of them again;
    # requests 11-03 lack cpu_pct and memory_mb, present on 11-02
    assert [f for f in failed if f[1] == "source_schema_change"] == [
        ("raw/raw_events", "source_schema_change", "2026-11-02", "WARN"),
        ("raw/raw_events", "source_schema_change", "2026-11-03", "WARN"),
        ("raw/raw_requests", "source_schema_change", "2026-11-03", "WARN")]
    # held-back days serve no clean rows (none were served before); 11-03's events are (m30..m36 = 7 clean rows)
    assert p.query("SELECT arrival_date::VARCHAR d, count(*) n FROM clean.events GROUP BY 1").values.tolist() == [
        ["2026-11-03", 7]]
    assert p.query("SELECT count(*) n FROM clean.requests").n[0] == 0
    # ... but their evidence is in quarantine: the rejected rows, and the rows that passed the contract
    # but are held back. events 11-01: line 4 rejected, m01..m03 held back; 11-02: 6 rejected, the 14
    # clean rows of the README table held back (m14's re-delivery is a duplicate). requests 11-02: 2
    # rejected, 9 - 2 - 1 duplicate = 6 held back; 11-03: 1 rejected, 2 held back.
    per_day = ("SELECT arrival_date::VARCHAR d, status, count(*) n FROM {} GROUP BY ALL ORDER BY ALL")
    assert p.query(per_day.format("quarantine.events")).values.tolist() == [
        ["2026-11-01", "held_back", 3], ["2026-11-01", "rejected", 1],
        ["2026-11-02", "held_back", 14], ["2026-11-02", "rejected", 6]]
    assert p.query(per_day.format("quarantine.requests")).values.tolist() == [
        ["2026-11-02", "held_back", 6], ["2026-11-02", "rejected", 2],
        ["2026-11-03", "held_back", 2], ["2026-11-03", "rejected", 1]]
    held = p.query("SELECT line_no, raw_row->>'$.message_id' m, reason FROM quarantine.events "
                   "WHERE arrival_date = '2026-11-01' ORDER BY line_no")
    assert held.values.tolist() == [[1, "m01", "held_back:quarantine_rate"], [2, "m02", "held_back:quarantine_rate"],
                                    [3, "m03", "held_back:quarantine_rate"], [4, None, "malformed_json"]]
    assert p.query("SELECT count(*) n FROM clean.events_duplicates WHERE arrival_date = '2026-11-02'").n[0] == 1
    # and every landed row is still accounted for, held-back days included (per file)
    books: dict[str, dict] = {}  # one evaluation per day: the range's books are their sum
    for e in result.get_asset_check_evaluations():
        if e.check_name == "rows_reconcile":
            total = books.setdefault(e.asset_key.to_user_string(), {})
            for k, v in e.metadata.items():
                if isinstance(v.value, int):
                    total[k] = total.get(k, 0) + v.value
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile")
    # events: landed 4 + 21 + 26 = 51 = clean 7 + quarantined 24 (7 rejected + 17 held back) + duplicates 20
    assert {k: books["clean/clean_events"][k] for k in ("days_checked", "files_checked", "rows_landed", "rows_clean",
                                                  "rows_quarantined", "rows_held_back", "rows_duplicate")} == {
        "days_checked": 3, "files_checked": 7, "rows_landed": 51, "rows_clean": 7, "rows_quarantined": 24,
        "rows_held_back": 17, "rows_duplicate": 20}
    assert (books["clean/clean_requests"]["rows_landed"], books["clean/clean_requests"]["rows_quarantined"],
            books["clean/clean_requests"]["rows_held_back"], books["clean/clean_requests"]["rows_duplicate"]) == (12, 11, 8, 1)
    # every mart is downstream of a failed blocking check: skipped, nothing served
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert not any(key.startswith("marts/") for key in materialized)
    alerts = p.alerts("SELECT kind, severity, asset FROM pipeline_health.alerts ORDER BY asset")
    assert alerts.values.tolist() == [["check_failed", "error", "clean/clean_events"],
                                      ["check_failed", "error", "clean/clean_requests"]]
    # the same problem again does not page twice
    p.run("2026-11-01", "2026-11-03", raise_on_error=False)
    assert p.alerts("SELECT list(occurrences ORDER BY asset) o FROM pipeline_health.alerts").o[0].tolist() == [2, 2]


def _small_landing(root, day: date, events: int = 300):
    generate(root, day, 1, events, seed=3, dirt=Dirt.none(), requests_per_day=100)


def _serve(p: Pipeline) -> dict:
    return {t: p.query(f"SELECT * FROM {t} ORDER BY ALL").to_csv() for t in
            ("clean.events", "quarantine.events", "marts.daily_engagement", "marts.funnel_daily",
             "marts.revenue_daily", "marts.kpi_changes")}


def test_half_malformed_delivery_stops_downstream_alerts_and_keeps_good_data(tmp_path):
    landing = tmp_path / "landing"
    _small_landing(landing, date.fromisoformat(DAY))
    p = Pipeline(tmp_path, landing, max_quarantine_rate=0.2)
    assert p.run(DAY).success
    good = _serve(p)
    rows = p.query("SELECT count(*) n FROM raw.events").n[0]
    # a second file for the same day: as many broken lines as the day had rows -> 50% malformed
    broken = landing / "events" / DAY / "broken.ndjson"
    broken.write_text("".join('{"messageId": "x%d", "type": "track", "event":\n' % i for i in range(rows)))

    result = p.run(DAY, raise_on_error=False)
    assert not result.success
    failures = _check_failures(result)
    assert list(failures) == ["clean/clean_events:quarantine_rate_within_threshold"]
    assert failures["clean/clean_events:quarantine_rate_within_threshold"]["quarantine_rate"] == 0.5
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "marts/daily_engagement" not in materialized and "marts/kpi_changes" not in materialized
    held_back = _serve(p)
    assert {t: v for t, v in held_back.items() if t != "quarantine.events"} == {
        t: v for t, v in good.items() if t != "quarantine.events"}  # served tables keep their previous good data
    # the rejected rows are visible in quarantine with their reason; no row is held back, since
    # every row that passed the contract is the day's previously served data
    assert p.query("SELECT source_file, status, reason, count(*) n FROM quarantine.events GROUP BY ALL").values.tolist() \
        == [[f"events/{DAY}/broken.ndjson", "rejected", "malformed_json", rows]]
    reconcile = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile"
                 and e.asset_key.to_user_string() == "clean/clean_events"][0]
    assert reconcile.passed and reconcile.metadata["rows_quarantined"].value == rows
    assert reconcile.metadata["rows_clean"].value == rows and reconcile.metadata["files_unbalanced"].value == 0
    [alert] = p.alerts("SELECT * FROM pipeline_health.alerts").to_dict("records")
    assert (alert["kind"], alert["asset"], alert["partition"]) == ("check_failed", "clean/clean_events", DAY)
    assert "quarantine_rate=0.5" in alert["message"]

    # the run-failure sensor turns the failed run into a critical alert, once per job and partition,
    # even while a step of another run holds the warehouse file: alerts never open it
    from de_assets_tests.test_warehouse_lock import hold

    holder, release = hold(str(p.db), "turn")
    try:
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_alerts", dagster_instance=p.instance, dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(), resources=p.defs.resources,
        ) as context:
            sensors.run_failure_alerts(context.for_run_failure())
            sensors.run_failure_alerts(context.for_run_failure())
    finally:
        release()
    runs = p.alerts("SELECT severity, asset, partition, occurrences FROM pipeline_health.alerts WHERE kind = 'run_failure'")
    assert runs.values.tolist() == [["critical", "daily_pipeline", DAY, 2]]
    # and readers of the lake see it at once, although the failed run never reached its end-of-run publish
    from de_assets.lib import served

    with served.connect(served.open_lake(str(p.db), create=False)) as reader:
        assert reader.execute("SELECT severity, asset, \"partition\" FROM pipeline_health.alerts "
                              "WHERE kind = 'run_failure'").fetchall() == [("critical", "daily_pipeline", DAY)]

    # removing the broken file is not enough: raw is append-only, so its rows stay and the day stays held back
    broken.unlink()
    assert not p.run(DAY, raise_on_error=False).success
    # the fix is a re-ingest of the partition, which rebuilds raw from the files landed now
    fixed = p.defs.resolve_job_def("daily_pipeline").execute_in_process(
        partition_key=DAY, instance=p.instance,
        run_config={"ops": {"raw__events": {"config": {"reingest": True}}}},
    )
    assert fixed.success and _serve(p) == good


def test_held_back_day_keeps_served_rows_and_shows_the_new_ones_in_quarantine(tmp_path, capsys, monkeypatch):
    """A day served with 4 good events gets a second file: 2 new good events and 3 broken lines, so
    3 of 9 rows (33%) fail. The gate holds the day back: the 4 served rows stay served, the broken
    lines are rejected and the 2 new good events are held back, all visible in quarantine."""
    from de_assets import cli

    landing = tmp_path / "landing"
    land(landing, DAY, "a.ndjson", [segment_event(f"e{i}", "u1", f"{DAY}T10:0{i}:00Z") for i in range(1, 5)])
    p = Pipeline(tmp_path, landing, max_quarantine_rate=0.2)
    assert p.run(DAY).success
    land(landing, DAY, "b.ndjson", [segment_event("e5", "u2", f"{DAY}T11:00:00Z"),
                                    segment_event("e6", "u2", f"{DAY}T11:01:00Z"),
                                    '{"messageId": "e7", "type":', '{"messageId": "e8"', "not json"])
    result = p.run(DAY, raise_on_error=False)
    assert not result.success
    assert list(_check_failures(result)) == ["clean/clean_events:quarantine_rate_within_threshold"]
    assert p.query("SELECT list(message_id ORDER BY message_id) m FROM clean.events").m[0].tolist() == [
        "e1", "e2", "e3", "e4"]
    assert p.query("SELECT events FROM marts.daily_engagement").events.tolist() == [4]
    quarantine = p.query("SELECT source_file, line_no, status, reason, raw_row->>'$.message_id' m "
                         "FROM quarantine.events ORDER BY line_no")
    b = f"events/{DAY}/b.ndjson"
    assert quarantine.values.tolist() == [
        [b, 1, "held_back", "held_back:quarantine_rate", "e5"], [b, 2, "held_back", "held_back:quarantine_rate", "e6"],
        [b, 3, "rejected", "malformed_json", None], [b, 4, "rejected", "malformed_json", None],
        [b, 5, "rejected", "malformed_json", None]]
    # the CLI summary adds up: 3 quarantined + 2 held back = the 5 rows of quarantine/quarantine_events
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    cli._print_summary(result)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert lines["clean/clean_events"].split(None, 1)[1] == "4 rows, 3 quarantined, 0 duplicate, 2 held back (in quarantine)"
    assert lines["quarantine/quarantine_events"].split(None, 1)[1] == "5 rows"

    # accepting the delivery (a higher threshold) serves the held-back rows; the rejected ones stay
    accepted = Pipeline(tmp_path, landing, max_quarantine_rate=0.5)
    assert accepted.run(DAY).success
    assert accepted.query("SELECT count(*) n FROM clean.events").n[0] == 6
    assert accepted.query("SELECT status, count(*) n FROM quarantine.events GROUP BY 1").values.tolist() == [
        ["rejected", 3]]
    assert accepted.query("SELECT events FROM marts.daily_engagement").events.tolist() == [6]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_files(folder) -> list[str]:
    """The files beside the warehouse; SQLite's -wal/-shm files come and go with open catalog connections."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


def _lake_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in (folder / "lake").rglob("*") if p.is_file())


def test_dry_run_writes_nothing_and_reports_the_diff(pipeline):
    assert pipeline.run("2026-11-01", "2026-11-02").success
    before = _sha(pipeline.db)
    files_before, lake_before = _data_files(pipeline.db.parent), _lake_files(pipeline.db.parent)
    result = pipeline.run("2026-11-01", "2026-11-03", dry_run=True)
    assert result.success
    assert _sha(pipeline.db) == before  # byte-for-byte
    assert _data_files(pipeline.db.parent) == files_before  # scratch copy removed
    assert _lake_files(pipeline.db.parent) == lake_before  # no data or metadata file committed to the lake
    meta = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    # clean.events: 3 + 14 rows stored for 11-01..02; the dry run would add 11-03's 7 (README)
    assert (meta["clean/clean_events"]["stored_rows"], meta["clean/clean_events"]["would_write_rows"]) == (17, 24)
    assert meta["clean/clean_events"]["dry_run"] is True
    engagement = meta["marts/daily_engagement"]
    # 11-03 is new; 11-01 and 11-02 are recomputed unchanged
    assert (engagement["row_diff"], engagement["rows_added_or_changed"], engagement["rows_removed_or_changed"]) == (1, 1, 0)


def test_a_dry_run_copies_no_history_only_the_partitions_it_writes(pipeline, monkeypatch):
    """A dry run reads the lake's current snapshots in place: its scratch copy of the warehouse keeps
    the lake tables as views (no row of the stored history is copied), and what the run writes is
    kept in its staging overlay, for the partitions it wrote only. Looked at through the run's
    connection just before the run ends."""
    from de_assets.lib import staged
    from de_assets.lib.tables import CLEAN_EVENTS
    from de_assets.resources import Warehouse

    assert pipeline.run("2026-11-01", "2026-11-02").success
    seen = {}
    teardown = Warehouse.teardown_after_execution

    def look_then_teardown(self, context):
        con = self._dry_con
        seen["kinds"] = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema IN ('raw', 'clean', 'marts')").fetchall())
        seen["staged"] = {t.name: [str(d) for d in staged.staged_days(con, t)] for t in (*staged.RAW, *staged.TABLES)}
        seen["clean_rows"] = con.execute(f"SELECT count(*) FROM {staged.target(con, CLEAN_EVENTS, [])}").fetchone()[0]
        teardown(self, context)

    monkeypatch.setattr(Warehouse, "teardown_after_execution", look_then_teardown)
    assert pipeline.run("2026-11-03", dry_run=True).success
    for table in ("raw.events", "raw.requests", "clean.events", "marts.daily_engagement"):
        assert seen["kinds"][table] == "VIEW", table  # over the lake: 11-01 and 11-02 are not copied
    staged_days = seen["staged"]
    # the arrival day the run ingested and cleaned, and the event day of its marts; nothing else
    assert staged_days["raw.events"] == staged_days["clean.events"] == ["2026-11-03"]
    assert staged_days["marts.daily_engagement"] == ["2026-11-03"]
    assert seen["clean_rows"] == 7  # 11-03's clean events (m30..m36), as a real run serves them


def test_a_dry_run_of_a_re_ingest_replaces_the_days_raw_rows_instead_of_adding_to_them(pipeline):
    assert pipeline.run("2026-11-01").success
    stored = pipeline.query("SELECT count(*) AS n FROM raw.events WHERE arrival_date = '2026-11-01'")["n"][0]
    files = len(list((pipeline.landing / "events" / "2026-11-01").iterdir()))
    dry = pipeline.defs.resolve_job_def("daily_pipeline").execute_in_process(
        partition_key="2026-11-01", instance=pipeline.instance,
        run_config={"ops": {"raw__events": {"config": {"reingest": True}}},
                    "resources": {"run_mode": {"config": {"dry_run": True}}}})
    assert dry.success
    [raw] = [m.metadata for m in dry.asset_materializations_for_node("raw__events")]
    assert raw["files_ingested"].value == files  # every file read again ...
    # ... and the day's rows replaced by them, not added: the same rows as stored
    assert (raw["stored_rows"].value, raw["would_write_rows"].value, raw["row_diff"].value) == (stored, stored, 0)


def test_a_dry_run_pages_nobody(tmp_path, golden_landing):
    """A bad file met by a dry run says which alert a real run would raise, as an info line of the
    run's log; the webhook gets nothing, no `ALERT {json}` line is logged and no alert is recorded
    (a real run would otherwise count it as a repeat and never page). The same file in a real run
    is paged once."""
    from de_assets_tests.test_alerts import Server

    def messages(result) -> list[str]:
        return [e.user_message for e in p.instance.all_logs(result.run_id)]

    with Server([200]) as hook:
        p = Pipeline(tmp_path, golden_landing, alerting={"webhook_url": hook.url})
        assert p.run("2026-11-01").success and hook.requests == 0  # the golden day raises nothing
        (golden_landing / "events" / "2026-11-02" / "zz-bad.ndjson").write_bytes(b"\xff\xfe not json\n")
        dry = p.run("2026-11-01", "2026-11-02", dry_run=True)
        assert dry.success and hook.requests == 0
        assert not [m for m in messages(dry) if m.startswith("ALERT ")]
        said = [m for m in messages(dry) if m.startswith("dry run, not paged: a real run would raise")]
        assert len(said) == 1 and '"kind": "bad_file"' in said[0] and "zz-bad.ndjson" in said[0]
        assert p.alerts("SELECT count(*) AS n FROM pipeline_health.alerts")["n"][0] == 0  # nothing recorded
        real = p.run("2026-11-02")
        assert hook.requests == 1 and json.loads(hook.bodies[0])["kind"] == "bad_file"
        assert [m for m in messages(real) if m.startswith("ALERT ")] != []


def test_dry_run_on_an_empty_warehouse_creates_no_file(tmp_path, golden_landing):
    p = Pipeline(tmp_path, golden_landing)
    assert p.run("2026-11-01", dry_run=True).success
    assert not p.db.exists()


def test_cli_dry_run_prints_the_report_and_keeps_the_file(tmp_path, monkeypatch, capsys, golden_landing):
    from de_assets import cli

    db = tmp_path / "w.duckdb"
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(db))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DE_ASSETS_MAX_QUARANTINE_RATE", "0.5")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert cli.main(["run", "--start", "2026-11-01", "--landing", str(golden_landing)]) == 0
    before = _sha(db)
    capsys.readouterr()
    assert cli.main(["run", "--start", "2026-11-01", "--end", "2026-11-02", "--dry-run",
                     "--landing", str(golden_landing)]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN: nothing was written" in out
    assert "stored 3, diff +14" in out  # clean/clean_events: 3 rows stored, 3 + 14 would be written
    assert _sha(db) == before
    # and the dry run is not recorded as a materialization in the instance
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        records = instance.fetch_materializations(dg.AssetKey(["clean", "clean_events"]), limit=10).records
        assert [r.partition_key for r in records] == ["2026-11-01"]


def test_stale_partition_sensor_alerts_once_per_asset_and_partition(pipeline):
    assert pipeline.run("2026-11-01").success  # every served asset is in operation, but long overdue
    now = datetime.now(timezone.utc)
    stale = sensors.stale_assets(pipeline.instance, sensors.SERVED, now)
    assert {k.to_user_string() for k in stale} == {k.to_user_string() for k in sensors.SERVED}
    with dg.build_sensor_context(instance=pipeline.instance, resources=pipeline.defs.resources) as context:
        sensors.stale_partition_alerts(context)
        sensors.stale_partition_alerts(context)
    alerts = pipeline.alerts("SELECT asset, partition, occurrences FROM pipeline_health.alerts WHERE kind = 'stale_partition'")
    assert len(alerts) == len(sensors.SERVED)
    assert set(alerts.partition) == {sensors._due_partition(now)} and set(alerts.occurrences) == {2}


def test_due_partition_respects_the_deadline():
    assert sensors._due_partition(datetime(2026, 11, 22, 5, 59, tzinfo=timezone.utc)) == "2026-11-20"
    assert sensors._due_partition(datetime(2026, 11, 22, 6, 0, tzinfo=timezone.utc)) == "2026-11-21"


def test_alert_payload_is_structured_json(tmp_path, golden_landing, capfd):
    p = Pipeline(tmp_path, golden_landing, max_quarantine_rate=0.2)
    p.run("2026-11-01", raise_on_error=False)
    lines = [line.split("ALERT ", 1)[1] for line in capfd.readouterr().err.splitlines() if "ALERT {" in line]
    payload = json.loads(lines[0])
    assert payload["kind"] == "check_failed" and payload["dedupe_key"].startswith("check_failed|clean/clean_events|2026-11-01")
    assert p.alerts("SELECT count(*) AS n FROM pipeline_health.alerts")["n"][0] == len(lines)
