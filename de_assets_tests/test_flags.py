"""Feature flags of the pipeline (raw_format, dedupe_strategy, rollout): every served table is
identical whichever configuration ran."""

import re
from datetime import date, timedelta

import duckdb
import pytest

from de_assets.lib import rawstore
from de_assets.lib.tables import ALL_TABLES, RAW_EVENTS
from de_assets_tests.conftest import Pipeline

DAYS = ("2026-11-01", "2026-11-03")
RAW = {"raw.events", "raw.requests"}
NOT_COMPARED = {"raw.parquet_batches"}  # where rows are stored differs by design


def _raw_rows(p: Pipeline, table) -> list:
    with duckdb.connect(str(p.db), read_only=True) as con:
        rel = rawstore.relation(con, table)
        return sorted(map(repr, con.execute(f"SELECT * EXCLUDE (ingested_at) FROM {rel}").fetchall()))


def _data(p: Pipeline) -> dict:
    out = {}
    for table in ALL_TABLES:
        if table.schema == "pipeline_health" or table.name in NOT_COMPARED:
            continue
        if table.name in RAW:
            out[table.name] = _raw_rows(p, table)
            continue
        varying = [c for c in ("ingested_at", "run_id") if c in table.column_names]  # wall clock, run
        exclude = f"EXCLUDE ({', '.join(varying)})" if varying else ""
        out[table.name] = sorted(map(repr, p.query(f"SELECT * {exclude} FROM {table.name}").astype(str).itertuples(index=False)))
    return out


@pytest.mark.parametrize(
    "flags",
    [dict(raw_format="parquet"), dict(dedupe_strategy="arg_min"),
     # at 30% the hash buckets of 11-01 (0.24) and 11-03 (0.04) are in, 11-02 (0.43) is not: mixed stores
     dict(raw_format="parquet", raw_format_rollout=0.3, dedupe_strategy="arg_min")],
    ids=["parquet", "arg_min", "parquet-30%-rollout+arg_min"],
)
def test_every_configuration_serves_identical_tables(tmp_path, golden_landing, flags):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    baseline = Pipeline(tmp_path / "a", golden_landing)
    assert baseline.run(*DAYS).success
    flagged = Pipeline(tmp_path / "b", golden_landing, **flags)
    assert flagged.run(*DAYS).success
    assert _data(flagged) == _data(baseline)

    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(3)]
    parquet_days = {d for d in days if flags.get("raw_format") == "parquet"
                    and rawstore.applies("raw_format", d, flags.get("raw_format_rollout", 1.0))}
    stored = flagged.query("SELECT DISTINCT arrival_date FROM raw.parquet_batches")
    assert set(stored.arrival_date.dt.date) == parquet_days
    if flags.get("raw_format_rollout") == 0.3:
        assert parquet_days == {date(2026, 11, 1), date(2026, 11, 3)}
    in_table = set(flagged.query("SELECT DISTINCT arrival_date FROM raw.events").arrival_date.dt.date)
    assert not (in_table & parquet_days)  # a day lives in exactly one store
    for path in flagged.query("SELECT path FROM raw.parquet_batches").path:
        assert path.startswith(str(flagged.db) + ".raw/")


def test_rollout_is_deterministic_and_nested():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(1000)]
    at_30 = {d for d in days if rawstore.applies("raw_format", d, 0.3)}
    at_50 = {d for d in days if rawstore.applies("raw_format", d, 0.5)}
    assert 250 <= len(at_30) <= 350 and 450 <= len(at_50) <= 550
    assert at_30 <= at_50  # widening a rollout only adds days
    assert at_30 == {d for d in days if rawstore.applies("raw_format", d, 0.3)}
    assert not any(rawstore.applies("raw_format", d, 0.0) for d in days)
    assert all(rawstore.applies("raw_format", d, 1.0) for d in days)
    # another flag picks another subset
    assert at_30 != {d for d in days if rawstore.applies("dedupe_strategy", d, 0.3)}


def test_reingest_replaces_parquet_batches_and_a_dry_run_leaves_them(tmp_path, golden_landing):
    p = Pipeline(tmp_path, golden_landing, raw_format="parquet")
    assert p.run("2026-11-02").success
    [first] = p.query("SELECT path FROM raw.parquet_batches WHERE table_name = 'raw.events'").path
    reingest = {"ops": {"raw__events": {"config": {"reingest": True}}}}
    job = p.defs.resolve_job_def("daily_pipeline")
    dry = {**reingest, "resources": {"run_mode": {"config": {"dry_run": True}}}}
    assert job.execute_in_process(partition_key="2026-11-02", instance=p.instance, run_config=dry).success
    assert p.query("SELECT path FROM raw.parquet_batches WHERE table_name = 'raw.events'").path.tolist() == [first]
    from pathlib import Path

    assert Path(first).exists()
    assert job.execute_in_process(partition_key="2026-11-02", instance=p.instance, run_config=reingest).success
    [second] = p.query("SELECT path FROM raw.parquet_batches WHERE table_name = 'raw.events'").path
    assert second != first and Path(second).exists() and not Path(first).exists()
    assert p.query(f"SELECT count(*) n FROM {RAW_EVENTS.name}").n[0] == 0


def test_unknown_flag_values_are_clear_errors(tmp_path, golden_landing):
    p = Pipeline(tmp_path, golden_landing, raw_format="avro")
    result = p.run("2026-11-01", raise_on_error=False)
    assert not result.success
    p = Pipeline(tmp_path / "x", golden_landing, dedupe_strategy="magic")
    (tmp_path / "x").mkdir(exist_ok=True)
    result = p.run("2026-11-01", raise_on_error=False)
    assert not result.success


def test_flag_model_types_and_refuses_what_it_does_not_know():
    from de_assets.lib.flags import FLAG_NAMES, FeatureFlags, parse_flags, parse_pairs

    assert FLAG_NAMES == ("raw_format", "raw_format_rollout", "dedupe_strategy")
    assert FeatureFlags().as_dict() == {"raw_format": "json", "raw_format_rollout": 1.0, "dedupe_strategy": "window"}
    assert parse_flags({"raw_format_rollout": "0.25", "dedupe_strategy": "arg_min"}) == {
        "raw_format_rollout": 0.25, "dedupe_strategy": "arg_min"}
    assert parse_pairs(["raw_format=parquet", "raw_format_rollout=0.5"]) == {
        "raw_format": "parquet", "raw_format_rollout": "0.5"}
    for bad, cause in [({"raw_fromat": "parquet"}, "unknown feature flag"), ({"raw_format": "avro"}, "raw_format must"),
                       ({"raw_format_rollout": "half"}, "must be a number"), ({"raw_format_rollout": "1.5"}, "[0, 1]"),
                       ({"dedupe_strategy": "magic"}, "dedupe_strategy must")]:
        with pytest.raises(ValueError, match=re.escape(cause)):
            parse_flags(bad)
    with pytest.raises(ValueError, match="expected name=value"):
        parse_pairs(["raw_format"])
