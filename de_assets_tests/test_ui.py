"""The Dagster UI, used like a person uses it: `dagster dev` on a free loopback port against a
temporary DAGSTER_HOME and DuckDB, pages rendered by headless Chromium, a partition materialized
through the webserver's GraphQL API, and the insights report opened in the same browser.

Marked `browser`; skipped (with the reason) where no Chromium is installed. `.ci/run` installs
Debian's `chromium`. Screenshots go to the test's temporary folder, and to
`$DE_ASSETS_SCREENSHOTS` when set; the README's images come from a finished demo instead
(`test_ui_demo.py`: `DE_ASSETS_SCREENSHOTS=docs/img python -m pytest -m browser`).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from de_assets_tests.conftest import GOLDEN, TEST_KEY, stop_process_group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
LOCATION = "de_assets.definitions"
# headless, and nothing that would reach the network in a closed CI
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
         "--window-size=1400,860", "--virtual-time-budget=20000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ui:
    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def browse(self, url: str, *args: str) -> str:
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={self.root / 'chrome'}", *args, url],
                              capture_output=True, text=True, timeout=180)
        return done.stdout

    def screenshot(self, url: str, name: str, *args: str, publish: bool = True) -> Path:
        """A screenshot in the test's folder, copied to `$DE_ASSETS_SCREENSHOTS` when `publish`."""
        target = self.root / name
        self.browse(url, *args, f"--screenshot={target}")
        assert target.exists() and target.stat().st_size > 5000, f"no screenshot of {url}"
        if publish and os.getenv("DE_ASSETS_SCREENSHOTS"):
            out = Path(os.environ["DE_ASSETS_SCREENSHOTS"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(target, out / name)
        return target


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    home.mkdir()
    # one DuckDB writer at a time across runs (the landing sensor starts runs too)
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    granularity: op\n    default_limit: 1\n"
                                       "telemetry:\n  enabled: false\n")
    shutil.copytree(GOLDEN / "landing", root / "landing")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DE_ASSETS_DUCKDB": str(root / "warehouse.duckdb"),
           "DE_ASSETS_LANDING": str(root / "landing"), "DE_ASSETS_REPORTS": str(root / "reports"),
           "DE_ASSETS_PSEUDONYM_KEY": TEST_KEY, "DE_ASSETS_MAX_QUARANTINE_RATE": "0.5"}
    with dagster_dev(root, env) as handle:
        yield handle


@contextmanager
def dagster_dev(root: Path, env: dict):
    """`dagster dev` for the code location, started in `root` with `env`, on a free loopback port;
    yields a `Ui` once the location has loaded (its first-visit dialog dismissed), and stops it."""
    port = _free_port()
    dagster = str(Path(sys.executable).with_name("dagster"))
    server = subprocess.Popen([dagster, "dev", "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)], env=env,
                              cwd=root, stdout=open(root / "dev.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    handle = Ui(f"http://127.0.0.1:{port}", root)
    try:
        deadline = time.time() + 180
        while True:
            try:
                status = handle.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                        "locationOrLoadError { __typename } } } } }")
                entries = status["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
                    break
            except OSError:
                pass
            assert time.time() < deadline, (root / "dev.log").read_text()[-3000:]
            time.sleep(1)
        handle.graphql("mutation { setNuxSeen }")  # the first-visit community dialog would cover the page
        yield handle
    finally:
        stop_process_group(server)


def test_asset_graph_shows_the_groups_and_their_assets(ui):
    lineage = ui.browse(f"{ui.url}/asset-groups", "--dump-dom")
    for group in ("ingestion", "cleaning", "analytics", "pipeline_health"):
        assert group in lineage
    expected = {"ingestion": ["raw/raw_events", "events_api"], "cleaning": ["quarantine", "clean"],
                "analytics": ["funnel_daily", "experiment_results", "insights"]}
    for group, assets in expected.items():
        # the graph renders only the nodes in view: a window tall enough for the analytics group's
        page = ui.browse(f"{ui.url}/locations/{LOCATION}/asset-groups/{group}", "--window-size=1400,2000",
                         "--dump-dom")
        for asset in assets:
            assert asset in page, f"{asset} not rendered in group {group}"
    # the README's images come from a finished demo (test_ui_demo.py), not from this 3-day fixture
    ui.screenshot(f"{ui.url}/locations/{LOCATION}/asset-groups/analytics", "asset-graph.png", publish=False)


def test_materialize_a_partition_through_graphql_and_open_the_report(ui):
    launched = ui.graphql(
        """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
             __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                                 "jobName": "daily_pipeline"},
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2026-11-02"}]}}},
    )["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.time() + 300
    while True:
        status = ui.graphql('query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }',
                            {"id": run_id})["data"]["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.time() < deadline, f"run {run_id} still {status}"
        time.sleep(2)
    assert status == "SUCCESS", (ui.root / "dev.log").read_text()[-3000:]
    ui.screenshot(f"{ui.url}/runs/{run_id}", "run.png", publish=False)

    report = ui.root / "reports" / "insights-2026-11-02.html"
    assert report.exists()
    dom = ui.browse(report.as_uri(), "--dump-dom")
    charts = re.findall(r'<figure class="chart" data-chart="(\w+)"', dom)
    assert set(charts) >= {"engagement", "funnel", "retention", "revenue", "latency", "quarantine", "throughput"}
    assert dom.count('class="main-svg"') >= 8 and "Insights report, 2026-11-02" in dom  # plotly rendered
    # kept in the test's folder only: docs/img/report.png shows a multi-week demo (README "What you see")
    ui.browse(report.as_uri(), f"--screenshot={ui.root / 'report.png'}")
