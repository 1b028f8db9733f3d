import dagster as dg

from de_assets.assets import analytics, cleaning, ingestion, layers, pipeline_health
from de_assets.definitions import defs

GROUPS = {"ingestion", "cleaning", "analytics", "pipeline_health"}


def test_definitions_load_and_job_resolves():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("daily_pipeline")
    assert job.partitions_def is not None


def test_every_asset_is_documented_grouped_owned_and_partitioned():
    """The catalog explains itself: a new asset without these fails CI."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in GROUPS, key
        assert node.description and len(node.description) > 40, key
        assert node.owners, key
        assert {"layer", "pii"} <= set(node.tags), key
        schema = node.metadata.get("dagster/column_schema")
        if schema is not None:
            schema = schema.schema if hasattr(schema, "schema") else schema
            assert all(c.description for c in schema.columns), key
        if key.path[0] != "landing":
            # the config experiment replays a chosen day range: the one unpartitioned asset
            assert (node.partitions_def is None) == (key == dg.AssetKey(["pipeline_health", "config_experiments"])), key
            assert node.metadata.get("dagster/column_schema") is not None, key
            assert node.kinds, key
            assert node.code_version, key


def test_asset_keys_match_their_tables():
    """Key `<schema>/<table>`, or `<schema>/<schema>_<table>` where tables of several schemas share a
    name (raw/raw_events serves raw.events, clean/clean_events clean.events)."""
    graph = defs.resolve_asset_graph()
    tables = {}
    for key in graph.get_all_asset_keys():
        table = graph.get(key).metadata.get("dagster/table_name")
        if table is not None:
            schema, name = key.path
            tables[key.to_user_string()] = str(table.value if hasattr(table, "value") else table)
            assert tables[key.to_user_string()] == f"warehouse.{schema}.{name.removeprefix(schema + '_')}"
    assert tables["raw/raw_events"] == "warehouse.raw.events"
    assert tables["quarantine/quarantine_requests"] == "warehouse.quarantine.requests"
    assert tables["marts/daily_engagement"] == "warehouse.marts.daily_engagement"


def _keys(assets) -> set[dg.AssetKey]:
    return {key for a in assets for key in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])}


def test_each_asset_modules_all_lists_every_asset_it_declares():
    """`layers.DATA_ASSETS` joins the modules' `ALL` lists: an asset left out of its module's list
    would silently be missing from the code location."""
    for module in (ingestion, cleaning, analytics, pipeline_health):
        declared = dg.load_assets_from_modules([module], include_specs=True)
        assert _keys(module.ALL) == _keys(declared), module.__name__
    assert _keys(layers.DATA_ASSETS) == _keys([*ingestion.ALL, *cleaning.ALL, *analytics.ALL])
    assert len(_keys(layers.DATA_ASSETS)) == 18  # landing 3, raw 2, clean + quarantine 4, marts 8, report 1


def test_every_node_label_in_the_asset_graph_is_distinct():
    """The UI labels an asset node with the last part of its key only (Dagster 1.13 has no display
    name): landing, raw, clean and quarantine events must not all read `events`."""
    labels = [key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()]
    assert len(labels) == len(set(labels)), sorted(labels)
    assert {"landing_events", "raw_events", "clean_events", "quarantine_events"} <= set(labels)


def test_lineage_runs_raw_to_clean_to_marts():
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["raw", "raw_events"]) in graph.get(dg.AssetKey(["clean", "clean_events"])).parent_keys
    assert dg.AssetKey(["clean", "clean_events"]) in graph.get(dg.AssetKey(["marts", "daily_engagement"])).parent_keys
    assert dg.AssetKey(["clean", "clean_requests"]) in graph.get(dg.AssetKey(["marts", "service_latency"])).parent_keys


def test_served_assets_have_freshness_policies_and_checks_and_every_check_is_described():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        served = node.group_name in ("cleaning", "analytics")
        assert (node.freshness_policy is not None) == served, key
    freshness_targets = {k.asset_key for k in defs.resolve_asset_graph().asset_check_keys if k.name == "freshness_check"}
    assert {k.to_user_string() for k in freshness_targets} >= {"clean/clean_events", "marts/daily_engagement"}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert spec.description, check_key


def test_sensors_and_the_job_exclude_the_freshness_checks():
    names = {s.name for s in defs.sensors}
    assert {"freshness_checks_sensor", "run_failure_alerts", "stale_partition_alerts"} <= names
    job_checks = defs.resolve_job_def("daily_pipeline").asset_layer.asset_graph.asset_check_keys
    assert len(job_checks) > 30
    assert not any(k.name == "freshness_check" for k in job_checks)  # evaluated by their sensor only


# Every asset's checks, (name, blocking), in the order declared; derived by hand from the string-keyed
# rule registries this replaced (quality.RULES: blocking, drift.WARNINGS: warnings, keyed by table)
# plus each asset's own checks, before the rules moved onto the tables (`Table.checks` / `.warnings`).
# `freshness_check` (non-blocking) is added to every served asset by freshness.py.
B, W = True, False
EXPECTED_CHECKS = {
    "raw/raw_events": [("volume_vs_trailing_weeks", W), ("source_schema_change", W)],
    "raw/raw_requests": [("volume_vs_trailing_weeks", W), ("source_schema_change", W)],
    "clean/clean_events": [("unique_key", B), ("keys_not_null", B), ("no_raw_pii", B), ("type_distribution_drift", W),
                           ("event_distribution_drift", W), ("quarantine_rate_within_threshold", B),
                           ("rows_reconcile", B), ("conflicting_duplicates", W), ("freshness_check", W)],
    "quarantine/quarantine_events": [("unique_key", B), ("no_raw_pii", B), ("freshness_check", W)],
    "clean/clean_requests": [("unique_key", B), ("keys_not_null", B), ("service_distribution_drift", W),
                             ("status_class_distribution_drift", W), ("quarantine_rate_within_threshold", B),
                             ("rows_reconcile", B), ("conflicting_duplicates", W), ("freshness_check", W)],
    "quarantine/quarantine_requests": [("unique_key", B), ("no_raw_pii", B), ("freshness_check", W)],
    "marts/daily_engagement": [("unique_key", B), ("keys_not_null", B), ("stickiness_in_unit_interval", B),
                               ("freshness_check", W)],
    "marts/funnel_daily": [("unique_key", B), ("keys_not_null", B), ("funnel_monotonic", B),
                           ("conversion_from_start_in_unit_interval", B), ("freshness_check", W)],
    "marts/retention_cohorts": [("unique_key", B), ("keys_not_null", B), ("retention_rate_in_unit_interval", B),
                                ("freshness_check", W)],
    "marts/revenue_daily": [("unique_key", B), ("keys_not_null", B), ("freshness_check", W)],
    "marts/service_latency": [("unique_key", B), ("keys_not_null", B), ("error_rate_in_unit_interval", B),
                              ("freshness_check", W)],
    "marts/kpi_changes": [("unique_key", B), ("keys_not_null", B), ("freshness_check", W)],
    "marts/kpi_anomalies": [("unique_key", B), ("keys_not_null", B), ("freshness_check", W)],
    "marts/experiment_results": [("unique_key", B), ("keys_not_null", B), ("p_value_in_unit_interval", B),
                                 ("srm_p_value_in_unit_interval", B), ("freshness_check", W)],
    "reports/insights": [("freshness_check", W)],
    "pipeline_health/partition_kpis": [("every_step_reported", W)],
    "pipeline_health/slo_status": [("slo_freshness_hours", W), ("slo_completeness", W), ("slo_quarantine_rate", W),
                                   ("slo_duplicate_rate", W)],
}


def test_check_names_and_blocking_per_asset_are_unchanged():
    """The UI, the docs, alert dedupe keys and the recorded check history name checks by
    (asset, check name): moving where the rules are declared must not rename, add or drop one."""
    graph = defs.resolve_asset_graph()
    actual: dict[str, set] = {}
    for key in graph.asset_check_keys:
        actual.setdefault(key.asset_key.to_user_string(), set()).add((key.name, graph.get_check_spec(key).blocking))
    assert actual == {asset: set(checks) for asset, checks in EXPECTED_CHECKS.items()}
    # ... and each asset declares its own checks in the same order (the order they are evaluated and alerted in)
    declared: dict[str, list] = {}
    for asset in defs.assets:
        for spec in getattr(asset, "check_specs", ()):
            declared.setdefault(spec.asset_key.to_user_string(), []).append((spec.name, spec.blocking))
    assert declared == {asset: [c for c in checks if c[0] != "freshness_check"]
                        for asset, checks in EXPECTED_CHECKS.items() if asset != "reports/insights"}
