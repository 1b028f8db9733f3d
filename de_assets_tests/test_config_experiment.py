"""The pipeline-configuration A/B test (R7): summaries, the identity check, and a real run through Dagster."""

import dagster as dg

from de_assets.config_experiment import PipelineRunner
from de_assets.definitions import build_defs
from de_assets.lib import config_experiment as ce


def _arm(arm, rep, wall, size, prints=None):
    metrics = {m: 1.0 for m in ce.METRICS} | {"wall_seconds": wall, "bytes_stored": size, "rows_per_second": 100 / wall}
    return ce.ArmResult(arm, rep, metrics, prints or {"marts.x": (1, 2)})


def test_a_side_wins_only_when_the_ranges_do_not_overlap():
    results = [_arm("A", 1, 10.0, 100), _arm("B", 1, 8.0, 60), _arm("A", 2, 11.0, 100), _arm("B", 2, 10.5, 61),
               _arm("A", 3, 10.5, 100), _arm("B", 3, 9.0, 60)]
    summary = {s.metric: s for s in ce.summarize(results)}
    assert summary["wall_seconds"].winner == "tie"  # B 8.0-10.5 overlaps A 10.0-11.0
    assert summary["bytes_stored"].winner == "B" and summary["bytes_stored"].change == (60 - 100) / 100
    assert summary["rows_per_second"].winner == "tie"  # higher is better, ranges overlap too
    faster = [_arm("A", 1, 10.0, 100), _arm("B", 1, 8.0, 100), _arm("A", 2, 11.0, 100), _arm("B", 2, 9.0, 100),
              _arm("A", 3, 10.5, 100), _arm("B", 3, 8.5, 100)]
    summary = {s.metric: s for s in ce.summarize(faster)}
    assert summary["wall_seconds"].winner == "B" and summary["rows_per_second"].winner == "B"
    text = ce.readout({"lake_compression": "zstd"}, {"lake_compression": "snappy"}, list(summary.values()), True, [], 3,
                      "2026-11-01", "2026-11-02")
    assert "B wins on wall_seconds by 19.0%" in text  # medians 10.5 -> 8.5: -2 / 10.5


def test_fewer_than_three_repetitions_name_no_winner():
    # B is faster in every run of the two repetitions, but two runs per side say nothing about noise
    two = [_arm("A", 1, 10.0, 100), _arm("B", 1, 8.0, 60), _arm("A", 2, 11.0, 100), _arm("B", 2, 9.0, 61)]
    summary = ce.summarize(two)
    assert {s.winner for s in summary} == {"none"}
    text = ce.readout({"lake_compression": "zstd"}, {"lake_compression": "snappy"}, summary, True, [], 2, "2026-11-01", "2026-11-02")
    assert "no winner named: 2 repetition(s) per arm, at least 3 are needed" in text
    assert "wins" not in text
    assert ce.MIN_REPETITIONS == 3


def test_identity_check_names_the_tables_that_differ():
    same = [_arm("A", 1, 1, 1, {"t": (1, 5)}), _arm("B", 1, 1, 1, {"t": (1, 5)})]
    assert ce.identical_tables(same) == (True, [])
    differ = [_arm("A", 1, 1, 1, {"t": (1, 5), "u": (2, 2)}), _arm("B", 1, 1, 1, {"t": (1, 6), "u": (2, 2)})]
    assert ce.identical_tables(differ) == (False, ["t"])


def test_compression_experiment_runs_through_dagster(pipeline, tmp_path):
    config = {"start": "2026-11-01", "end": "2026-11-03", "a": {"lake_compression": "zstd"},
              "b": {"lake_compression": "uncompressed", "dedupe_strategy": "arg_min"}, "repetitions": 1}
    result = pipeline.defs.resolve_job_def("pipeline_config_experiment").execute_in_process(
        instance=pipeline.instance, run_config={"ops": {"pipeline_health__config_experiments": {"config": config}}},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["identical_tables"] is True
    assert "Served tables identical in every run: **yes**" in meta["readout"]
    rows = pipeline.held("SELECT arm, metric, value, identical_tables FROM pipeline_health.config_experiments")
    assert len(rows) == 2 * 1 * len(ce.METRICS)
    assert rows.identical_tables.all()
    stored = rows[rows.metric == "bytes_stored"].set_index("arm").value
    assert stored["A"] > 0 and stored["B"] > 0
    # the quarantine rate is a property of the data, not of the configuration
    rate = rows[rows.metric == "quarantine_rate"].set_index("arm").value
    assert rate["A"] == rate["B"] > 0
    assert not any(p.name.endswith(".experiments") and any(p.iterdir()) for p in pipeline.db.parent.iterdir() if p.is_dir())


def test_unknown_flag_is_refused(pipeline):
    config = {"start": "2026-11-01", "end": "2026-11-01", "b": {"lake_compresion": "zstd"}, "repetitions": 1}
    result = pipeline.defs.resolve_job_def("pipeline_config_experiment").execute_in_process(
        instance=pipeline.instance, raise_on_error=False,
        run_config={"ops": {"pipeline_health__config_experiments": {"config": config}}},
    )
    assert not result.success
    assert any("unknown feature flag" in str(e.event_specific_data.error) for e in result.all_events
               if e.event_type == dg.DagsterEventType.STEP_FAILURE)


def test_experiment_arms_replay_without_forgotten_users(tmp_path, golden_landing):
    from datetime import date

    from de_assets.lib.privacy import pseudonymize
    from de_assets_tests.conftest import TEST_KEY

    settings = {"landing_root": str(golden_landing), "pseudonym_key": TEST_KEY, "max_quarantine_rate": 0.5,
                "reports_root": str(tmp_path / "reports")}
    day = date(2026, 11, 2)
    suppressed = [("req-1", pseudonymize(TEST_KEY, "carol"), "fp", "erased")]
    runner = PipelineRunner(build_defs)
    plain = runner.run_arm("A", {}, 1, day, day, tmp_path / "plain", settings)
    without = runner.run_arm("A", {}, 1, day, day, tmp_path / "without", settings, suppressed)
    # README: carol's m15 m19 m20 m28 are clean on 11-02; her 4 raw rows are not replayed
    assert plain.fingerprint["clean.events"][0] - without.fingerprint["clean.events"][0] == 4
    assert plain.fingerprint["raw.events"][0] - without.fingerprint["raw.events"][0] == 4
