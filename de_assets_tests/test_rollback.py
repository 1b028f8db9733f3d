"""Rolling back a bad load (`rollback_job`, `de-assets rollback`, `lib/served.rollback`).

Golden fixture (README): dau 3, 4, 3 on 11-01..11-03. The bad load below lands two events of two
new users on 11-02 (a Monday), so after it dau is 3, 6, 3 and `clean.events` of 11-02 holds two
rows more; the rollback must bring back exactly the state before it, in the lake and the warehouse.
"""

import time
from datetime import datetime, timezone

import dagster as dg
import duckdb
import pytest

from de_assets import cli
from de_assets.lib import lake, served
from de_assets_tests.conftest import land, segment_event
from de_assets_tests.test_served import DAYS, rows

DAU = "SELECT list(dau ORDER BY event_date) FROM marts.daily_engagement"


def _bad_load(pipeline) -> None:
    land(pipeline.landing, "2026-11-02", "bad.ndjson", [
        segment_event("bad-1", "zed", "2026-11-02T10:00:00Z"),
        segment_event("bad-2", "yan", "2026-11-02T11:00:00Z"),
    ])
    assert pipeline.run("2026-11-02").success


def _moment() -> str:
    time.sleep(0.01)
    moment = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    time.sleep(0.01)
    return moment


def _rollback(pipeline, to: str, dry_run: bool = False, **config):
    run_config = {"ops": {"roll_back_served": {"config": {"to": to, **config}}}}
    if dry_run:
        run_config["resources"] = {"run_mode": {"config": {"dry_run": True}}}
    return pipeline.defs.resolve_job_def("rollback_job").execute_in_process(
        instance=pipeline.instance, run_config=run_config, raise_on_error=False)


def _state(pipeline, con=None) -> dict:
    """Every table a rollback restores, as rows: from `con`, or the warehouse file."""
    if con is not None:
        return {t.name: rows(con, t) for t in served.ROLLBACK_TABLES}
    with duckdb.connect(str(pipeline.db), read_only=True) as warehouse:
        return {t.name: rows(warehouse, t) for t in served.ROLLBACK_TABLES}


def test_a_rollback_restores_every_served_table_as_it_was_before_a_bad_load(pipeline):
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    good = _moment()
    catalog = served.open_lake(str(pipeline.db), create=False)
    before = _state(pipeline, served.connect(catalog))
    assert served.connect(catalog).execute(DAU).fetchone()[0] == [3, 4, 3]
    _bad_load(pipeline)
    bad = _moment()
    assert served.connect(catalog).execute(DAU).fetchone()[0] == [3, 6, 3]

    # only the partitions a run over 11-01 writes: the bad load changed none of them
    result = _rollback(pipeline, good, start="2026-11-01", end="2026-11-01")
    assert result.success and result.output_for_node("roll_back_served") == []

    result = _rollback(pipeline, good)
    assert result.success
    restored = result.output_for_node("roll_back_served")
    events = [r for r in restored if r["table"] == "clean.events"]
    assert [(r["partition"], r["rows_before"] - r["rows_after"]) for r in events] == [("2026-11-02", 2)]
    assert {r["table"] for r in restored} >= {"clean.events", "marts.daily_engagement"}
    assert all(r["partition"] >= "2026-11-02" for r in restored)  # 11-01 was not touched

    # lake and warehouse are both what the lake served before the bad load
    assert served.connect(catalog).execute(DAU).fetchone()[0] == [3, 4, 3]
    assert _state(pipeline, served.connect(catalog)) == before
    assert _state(pipeline) == before
    # the raw layer is immutable: the bad file's rows stay there (docs: remove the file and re-ingest)
    assert pipeline.query("SELECT count(*) AS n FROM raw.events WHERE source_file LIKE '%bad.ndjson'")["n"][0] == 2
    # a new commit, not a reset: the bad state is still readable as of a moment before the rollback
    assert served.connect(catalog, as_of=bad).execute(DAU).fetchone()[0] == [3, 6, 3]
    # Dagster records the restored partitions
    [record] = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["clean", "clean_events"]), asset_partitions=["2026-11-02"]),
        limit=1).records
    assert record.run_id == result.run_id
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert meta["rolled_back_to"] == good
    # one materialization per asset and partition; its row count is clean.events' (not its duplicates')
    assert meta["dagster/row_count"] == meta["rows clean.events"] == events[0]["rows_after"]
    # nothing left to restore
    again = _rollback(pipeline, good)
    assert again.success and again.output_for_node("roll_back_served") == []


def test_a_dry_run_rollback_reports_what_it_would_restore_and_changes_nothing(pipeline):
    assert pipeline.run(DAYS[0], DAYS[-1]).success
    good = _moment()
    _bad_load(pipeline)
    catalog = served.open_lake(str(pipeline.db), create=False)

    def snapshots():
        return {t.name: getattr(catalog.load_table(t.name).current_snapshot(), "snapshot_id", None)
                for t in served.ROLLBACK_TABLES if catalog.table_exists(t.name)}

    lake_before, warehouse_before = snapshots(), _state(pipeline)
    dry = _rollback(pipeline, good, dry_run=True)
    assert dry.success
    assert snapshots() == lake_before and _state(pipeline) == warehouse_before
    assert served.connect(catalog).execute(DAU).fetchone()[0] == [3, 6, 3]
    real = _rollback(pipeline, good)
    assert dry.output_for_node("roll_back_served") == real.output_for_node("roll_back_served") != []


def test_a_rollback_past_the_retained_history_or_to_an_unknown_table_is_refused(pipeline):
    assert pipeline.run(DAYS[0]).success
    early = _moment()
    assert pipeline.run(DAYS[1]).success
    catalog = served.open_lake(str(pipeline.db), create=False)
    for table in served.ROLLBACK_TABLES:  # what the daily maintenance does after a week
        if catalog.table_exists(table.name):
            lake.expire_and_clean(catalog.load_table(table.name), datetime.now(timezone.utc))
    state = _state(pipeline)

    result = _rollback(pipeline, early)
    assert not result.success
    message = result.failure_data_for_node("roll_back_served").user_failure_data.description
    assert "keeps no snapshot that old" in message and "were expired" in message
    assert _state(pipeline) == state  # nothing emptied

    result = _rollback(pipeline, early, tables=["raw.events"])
    assert not result.success
    assert "not a served data table: raw.events" in result.failure_data_for_node("roll_back_served").user_failure_data.description


def test_a_rollback_never_brings_back_a_forgotten_user(pipeline):
    """Forget-user expires every older snapshot; a rollback to before it is refused as a whole, before
    any table is touched (alice: m01 and m02 on 11-01, README)."""
    from de_assets.lib.privacy import pseudonymize
    from de_assets_tests.conftest import TEST_KEY
    from de_assets_tests.test_operations import _forget

    assert pipeline.run(DAYS[0], DAYS[-1]).success
    before_forget = _moment()
    assert _forget(pipeline, "alice").success
    alice = pseudonymize(TEST_KEY, "alice")
    state = _state(pipeline)
    result = _rollback(pipeline, before_forget)
    assert not result.success
    assert "keeps no snapshot that old" in result.failure_data_for_node("roll_back_served").user_failure_data.description
    assert _state(pipeline) == state
    catalog = served.open_lake(str(pipeline.db), create=False)
    assert served.connect(catalog).execute("SELECT count(*) FROM clean.events WHERE user_id = ?", [alice]).fetchone()[0] == 0
    assert pipeline.query("SELECT count(*) AS n FROM clean.events WHERE user_id = ?", [alice])["n"][0] == 0


def test_the_rollback_command(tmp_path, monkeypatch, capsys, golden_landing):
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("DE_ASSETS_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("DE_ASSETS_MAX_QUARANTINE_RATE", "0.5")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert cli.main(["run", "--start", DAYS[0], "--end", DAYS[-1], "--landing", str(golden_landing)]) == 0
    good = _moment()
    land(golden_landing, "2026-11-02", "bad.ndjson", [segment_event("bad-1", "zed", "2026-11-02T10:00:00Z")])
    assert cli.main(["run", "--start", "2026-11-02", "--landing", str(golden_landing)]) == 0
    capsys.readouterr()

    assert cli.main(["rollback", "--to", good, "--table", "clean.events", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN: nothing was written. rollback to" in out and "would restore 1 partition(s)" in out
    assert "clean.events" in out and "2026-11-02" in out
    assert cli.main(["rollback", "--to", good]) == 0
    assert "restored" in capsys.readouterr().out
    assert cli.main(["sql", "SELECT count(*) AS n FROM clean.events WHERE message_id = 'bad-1'", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0"

    assert cli.main(["rollback", "--to", good, "--end", "2026-11-02"]) == 1
    assert "--end needs --start" in capsys.readouterr().err
    for wrong, message in (("not-a-time", "'not-a-time' is neither a time"), ("123", "no served table has that snapshot")):
        assert cli.main(["rollback", "--to", wrong]) == 1
        err = capsys.readouterr().err
        assert "rollback FAILED" in err and message in err, err
    assert cli.main(["sql", "SELECT count(*) AS n FROM clean.events", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "24"  # the golden fixture's clean events: nothing emptied


@pytest.mark.parametrize("name, key", [
    ("clean.events", ["clean", "clean_events"]),
    ("clean.requests_duplicates", ["clean", "clean_requests"]),
    ("quarantine.events", ["quarantine", "quarantine_events"]),
    ("marts.daily_engagement", ["marts", "daily_engagement"]),
])
def test_each_restored_table_is_recorded_on_the_asset_that_writes_it(name, key):
    from de_assets.definitions import defs
    from de_assets.maintenance import asset_key_of

    assert asset_key_of(name) == dg.AssetKey(key)
    assert defs.resolve_assets_def(dg.AssetKey(key)) is not None
