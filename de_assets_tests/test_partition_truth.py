"""The truth per partition: a range run (one run over several days) records, for every day, that
day's own figures and check results, read back from the Dagster instance and compared with the
warehouse counted independently."""

from collections import Counter

import dagster as dg
import pytest

from de_assets.definitions import defs
from de_assets.lib.tables import ALL_TABLES

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]  # 11-04: nothing landed


def _tables_of_assets() -> dict:
    """Asset key -> the table it serves, from the asset's `dagster/table_name` (raw/raw_events ->
    raw.events: keys name their layer twice where tables of several layers share a name)."""
    graph, tables = defs.resolve_asset_graph(), {t.name: t for t in ALL_TABLES}
    out = {}
    for key in graph.get_all_asset_keys():
        name = graph.get(key).metadata.get("dagster/table_name")
        if name is not None:
            out[key.to_user_string()] = tables[str(getattr(name, "value", name)).removeprefix("warehouse.")]
    return out


TABLE_OF = _tables_of_assets()


@pytest.fixture(scope="module")
def range_run(tmp_path_factory):
    import shutil

    from de_assets_tests.conftest import GOLDEN, Pipeline

    root = tmp_path_factory.mktemp("truth")
    shutil.copytree(GOLDEN / "landing", root / "landing")
    p = Pipeline(root, root / "landing")
    result = p.run(DAYS[0], DAYS[-1])
    assert result.success
    return p, result


def _latest(p, key: dg.AssetKey, day: str):
    [record] = p.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    return record.asset_materialization


def _counted(p, table, day: str) -> int:
    if table.partition_column == "activity_week":  # a day's retention cells: those of its week
        where = "activity_week = date_trunc('week', ?::DATE)"
    else:
        where = f"{table.partition_column} = ?::DATE"
    return int(p.query(f"SELECT count(*) AS n FROM {table.name} WHERE {where}", [day]).n[0])


def test_every_partition_carries_its_own_row_count(range_run):
    p, result = range_run
    tables = [key for key in TABLE_OF if key.startswith(("raw/", "clean/", "quarantine/", "marts/"))
              and "duplicates" not in key and "source_files" not in key]
    keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    checked = 0
    for name in tables:
        if name not in keys:
            continue
        for day in DAYS:
            meta = _latest(p, dg.AssetKey(name.split("/")), day).metadata
            assert meta["dagster/row_count"].value == _counted(p, TABLE_OF[name], day), (name, day)
            checked += 1
    assert checked >= 13 * len(DAYS)
    # hand-checked (fixtures/golden/README.md): raw events per arrival day 4 / 21 / 8 / 0
    raw = [_latest(p, dg.AssetKey(["raw", "raw_events"]), d).metadata["dagster/row_count"].value for d in DAYS]
    assert raw == [4, 21, 8, 0]
    clean = [_latest(p, dg.AssetKey(["clean", "clean_events"]), d).metadata for d in DAYS]
    assert [(m["rows_in"].value, m["rows_clean"].value, m["rows_quarantined"].value, m["rows_duplicate"].value)
            for m in clean] == [(4, 3, 1, 0), (21, 14, 6, 1), (8, 7, 0, 1), (0, 0, 0, 0)]
    assert [m["quarantine_rate"].value for m in clean[:3]] == pytest.approx([1 / 4, 6 / 21, 0.0])
    # the step's seconds are shared by rows in: the 21-row day carries more than the 4-row day
    assert clean[1]["seconds"].value > clean[0]["seconds"].value
    # what describes the run is the same on every day of it
    assert {m["partition_range"].value for m in clean} == {f"{DAYS[0]}..{DAYS[-1]}"}


def test_one_materialization_per_asset_and_partition(range_run):
    _, result = range_run
    per = Counter((m.asset_key.to_user_string(), m.partition) for m in result.get_asset_materialization_events())
    assert set(per.values()) == {1}
    assert {day for _, day in per} == set(DAYS)


def test_a_day_without_landed_data_says_so(range_run):
    p, _ = range_run
    for name in ("raw/raw_events", "clean/clean_events", "marts/daily_engagement", "marts/kpi_changes"):
        key = dg.AssetKey(name.split("/"))
        assert _latest(p, key, "2026-11-04").metadata["no_data"].value is True, name
        assert _latest(p, key, "2026-11-03").metadata["no_data"].value is False, name
    assert _latest(p, dg.AssetKey(["raw", "raw_events"]), "2026-11-04").metadata["dagster/row_count"].value == 0
    # no freshness can be measured for a day without events: left out, never -1
    assert "freshness_seconds" not in _latest(p, dg.AssetKey(["clean", "clean_events"]), "2026-11-04").metadata


def test_every_check_is_recorded_once_per_partition(range_run):
    p, result = range_run
    evaluations = result.get_asset_check_evaluations()
    per = Counter((e.asset_key.to_user_string(), e.check_name, e.partition) for e in evaluations)
    assert set(per.values()) == {1}
    assert {day for _, _, day in per} == set(DAYS)  # no evaluation without a partition
    checks = {(a, c) for a, c, _ in per}
    assert len(per) == len(checks) * len(DAYS)
    # the instance records the partition of each execution (the UI's "Partition" column)
    key = dg.AssetCheckKey(dg.AssetKey(["clean", "clean_events"]), "rows_reconcile")
    history = p.instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    assert sorted(h.partition for h in history) == DAYS
    assert {h.status.value for h in history} == {"SUCCEEDED"}
    reconcile = {e.partition: e.metadata for e in evaluations
                 if e.check_name == "rows_reconcile" and e.asset_key == dg.AssetKey(["clean", "clean_events"])}
    # each day's own books: 11-01 landed 4 rows (batch-1.ndjson), nothing landed on 11-04
    assert reconcile["2026-11-01"]["rows_landed"].value == 4 and reconcile["2026-11-04"]["rows_landed"].value == 0
