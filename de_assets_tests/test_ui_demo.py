"""The README's path, as a new user takes it: `de-assets demo`, then `dagster dev` started in the same
folder with nothing else set (no DAGSTER_HOME, no DE_ASSETS_START_DATE: the demo's `.env` carries
them). The catalog then shows the demo's 7 partitions and no missing one, every node label of the
asset graph says what it is, and the README's UI screenshots are taken from this finished demo
(`DE_ASSETS_SCREENSHOTS=docs/img python -m pytest -m browser`).
"""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from de_assets_tests.conftest import TEST_KEY
from de_assets_tests.test_ui import CHROMIUM, LOCATION, dagster_dev

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
DAYS = 7
STAGED = ["landing_events", "raw_events", "clean_events", "quarantine_events",
          "landing_requests", "raw_requests", "clean_requests", "quarantine_requests"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "DE_ASSETS_START_DATE") and not k.startswith("DE_ASSETS_")}
    env["DE_ASSETS_PSEUDONYM_KEY"] = TEST_KEY
    done = subprocess.run([sys.executable, "-m", "de_assets.cli", "demo", "--days", str(DAYS),
                           "--events-per-day", "3000"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # started like the README says: `dagster dev` in the demo's folder, nothing else set
    with dagster_dev(root, env) as handle:
        yield handle, done.stdout


def test_the_catalog_shows_the_demo_days_and_none_missing(demo):
    ui, out = demo
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    first = yesterday - timedelta(days=DAYS - 1)
    assert f"partitions start on {first} (DE_ASSETS_START_DATE in .env; the first generated day)" in out
    assert "DAGSTER_HOME=" in out and "written to .env" in out
    nodes = ui.graphql("""{ assetNodes { assetKey { path } partitionDefinition { description }
                              partitionStats { numMaterialized numPartitions numFailed } } }""")["data"]["assetNodes"]
    stats = {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in nodes if n["partitionStats"]}
    # the dagster dev instance is the CLI's (DAGSTER_HOME from .env): the demo's run is there
    assert stats["raw/raw_events"] == {"numMaterialized": DAYS, "numPartitions": DAYS, "numFailed": 0}
    for key in ("clean/clean_events", "quarantine/quarantine_events", "marts/daily_engagement", "reports/insights"):
        assert stats[key]["numPartitions"] == DAYS and stats[key]["numMaterialized"] == DAYS, (key, stats[key])
    [raw] = [n for n in nodes if n["assetKey"]["path"] == ["raw", "raw_events"]]
    assert first.isoformat() in raw["partitionDefinition"]["description"]


def test_every_node_label_says_what_it_is_and_the_readme_screenshots(demo):
    ui, _ = demo
    # the global lineage collapses the groups: the nodes are drawn on the group pages
    pages = "".join(ui.browse(f"{ui.url}/locations/{LOCATION}/asset-groups/{group}", "--dump-dom")
                    for group in ("ingestion", "cleaning"))
    for label in STAGED:
        assert f">{label}<" in pages, f"node label {label} not rendered"
    assert ">events<" not in pages and ">requests<" not in pages  # what every layer's node read before
    tall, yesterday = "--window-size=1400,1350", datetime.now(timezone.utc).date() - timedelta(days=1)
    ui.screenshot(f"{ui.url}/locations/{LOCATION}/asset-groups/cleaning", "asset-graph.png", tall)
    ui.screenshot(f"{ui.url}/locations/{LOCATION}/asset-groups/analytics", "asset-graph-analytics.png", tall)
    ui.screenshot(f"{ui.url}/assets/clean/clean_events?view=partitions&partition={yesterday}", "partitions.png",
                  "--window-size=1400,1000")
    [run] = ui.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["data"]["runsOrError"]["results"]
    assert run["status"] == "SUCCESS"  # the demo's one run, finished; starting the UI started none
    ui.screenshot(f"{ui.url}/runs/{run['runId']}", "run.png", "--window-size=1400,1000")


def test_each_partition_shows_its_own_rows_its_checks_and_the_slo_checks(demo):
    """What the UI shows per partition, read through its GraphQL API: each day's own row count (equal
    to that day's rows counted independently in the served tables), every check evaluated once per
    partition, and the SLOs as checks of pipeline_health/slo_status."""
    ui, _ = demo
    node = ui.graphql("""{ assetNodeOrError(assetKey: {path: ["clean", "clean_events"]}) { ... on AssetNode {
        assetMaterializations(limit: 50) { partition metadataEntries { label ... on IntMetadataEntry { intRepr } } }
    } } }""")["data"]["assetNodeOrError"]
    shown = {m["partition"]: int(next(e["intRepr"] for e in m["metadataEntries"] if e["label"] == "dagster/row_count"))
             for m in node["assetMaterializations"]}
    counted = subprocess.run(
        [sys.executable, "-m", "de_assets.cli", "sql", "SELECT arrival_date, count(*) AS n FROM clean.events "
         "GROUP BY 1 ORDER BY 1", "--format", "csv"],
        cwd=ui.root, env={k: v for k, v in os.environ.items() if not k.startswith("DE_ASSETS_")},
        capture_output=True, text=True, timeout=120)
    assert counted.returncode == 0, counted.stderr
    by_day = dict(line.split(",") for line in counted.stdout.strip().splitlines()[1:])
    assert len(shown) == DAYS and shown == {day: int(n) for day, n in by_day.items()}
    assert len(set(shown.values())) > 1 or DAYS == 1  # each day its own figure, not the range's

    def executions(path, check):
        return ui.graphql("""query($key: AssetKeyInput!, $check: String!) {
            assetCheckExecutions(assetKey: $key, checkName: $check, limit: 50) { partition status } }""",
                          {"key": {"path": path}, "check": check})["data"]["assetCheckExecutions"]

    reconcile = executions(["clean", "clean_events"], "rows_reconcile")
    assert sorted(e["partition"] for e in reconcile) == sorted(shown)
    assert {e["status"] for e in reconcile} == {"SUCCEEDED"}
    slo = ui.graphql("""{ assetNodeOrError(assetKey: {path: ["pipeline_health", "slo_status"]}) {
        ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } } } }""")
    names = {c["name"] for c in slo["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]}
    assert {"freshness_hours", "completeness", "quarantine_rate", "duplicate_rate"} <= {
        n.removeprefix("slo_") for n in names}, names
    assert len({e["partition"] for e in executions(["pipeline_health", "slo_status"], sorted(names)[0])}) == DAYS
