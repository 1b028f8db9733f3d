"""Feature flags of the pipeline (lake_compression, dedupe_strategy): every table is identical
whichever configuration ran, and the flag does what it says."""

import re

import pyarrow.parquet as pq
import pytest

from de_assets.lib import served
from de_assets.lib.tables import ALL_TABLES, IN_CATALOG_DATABASE
from de_assets_tests.conftest import Pipeline

DAYS = ("2026-11-01", "2026-11-03")


def _data(p: Pipeline) -> dict:
    out = {}
    for table in ALL_TABLES:
        if table.schema == "pipeline_health":
            continue
        varying = [c for c in ("ingested_at", "run_id") if c in table.column_names]  # wall clock, run
        exclude = f"EXCLUDE ({', '.join(varying)})" if varying else ""
        read = p.held if table in IN_CATALOG_DATABASE else p.query  # raw.forgotten_rows: in the catalog database
        out[table.name] = sorted(map(repr, read(f"SELECT * {exclude} FROM {table.name}").astype(str).itertuples(index=False)))
    return out


@pytest.mark.parametrize(
    "flags",
    [dict(lake_compression="snappy"), dict(dedupe_strategy="arg_min"),
     dict(lake_compression="uncompressed", dedupe_strategy="arg_min")],
    ids=["snappy", "arg_min", "uncompressed+arg_min"],
)
def test_every_configuration_serves_identical_tables(tmp_path, golden_landing, flags):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    baseline = Pipeline(tmp_path / "a", golden_landing)
    assert baseline.run(*DAYS).success
    flagged = Pipeline(tmp_path / "b", golden_landing, **flags)
    assert flagged.run(*DAYS).success
    assert _data(flagged) == _data(baseline)
    lake_a = served.connect(served.open_lake(str(baseline.db), create=False))
    lake_b = served.connect(served.open_lake(str(flagged.db), create=False))
    for table in ("clean.events", "marts.daily_engagement"):
        query = f"SELECT * FROM {table} ORDER BY ALL"
        assert lake_b.execute(query).fetchall() == lake_a.execute(query).fetchall()
    # every column chunk of every data file the pipeline wrote to the lake uses the flag's codec
    codec = flags.get("lake_compression", "zstd").upper()
    files = sorted((tmp_path / "b" / "lake" / "clean" / "events" / "data").rglob("*.parquet"))
    assert files
    codecs = {pq.ParquetFile(f).metadata.row_group(0).column(i).compression
              for f in files for i in range(pq.ParquetFile(f).metadata.num_columns)}
    assert codecs == {codec}


def test_unknown_flag_values_are_clear_errors(tmp_path, golden_landing):
    p = Pipeline(tmp_path, golden_landing, lake_compression="brotli")
    result = p.run("2026-11-01", raise_on_error=False)
    assert not result.success and not p.db.exists()  # refused before anything is written
    p = Pipeline(tmp_path / "x", golden_landing, dedupe_strategy="magic")
    (tmp_path / "x").mkdir(exist_ok=True)
    result = p.run("2026-11-01", raise_on_error=False)
    assert not result.success


def test_flag_model_types_and_refuses_what_it_does_not_know():
    from de_assets.lib.flags import FLAG_NAMES, FeatureFlags, parse_flags, parse_pairs

    assert FLAG_NAMES == ("lake_compression", "dedupe_strategy")
    assert FeatureFlags().as_dict() == {"lake_compression": "zstd", "dedupe_strategy": "window"}
    assert parse_flags({"lake_compression": "gzip", "dedupe_strategy": "arg_min"}) == {
        "lake_compression": "gzip", "dedupe_strategy": "arg_min"}
    assert parse_pairs(["lake_compression=snappy", "dedupe_strategy=arg_min"]) == {
        "lake_compression": "snappy", "dedupe_strategy": "arg_min"}
    for bad, cause in [({"lake_compresion": "zstd"}, "unknown feature flag"),
                       ({"lake_compression": "brotli"}, "lake_compression must"),
                       ({"dedupe_strategy": "magic"}, "dedupe_strategy must")]:
        with pytest.raises(ValueError, match=re.escape(cause)):
            parse_flags(bad)
    with pytest.raises(ValueError, match="expected name=value"):
        parse_pairs(["lake_compression"])
