"""The insights report opened in headless Chromium with the network cut off: every chart renders
from the plotly.min.js beside the page, the values on the marks are in the rendered SVG, the
console stays clean and the page makes no network request (Chromium's NetLog is read for that).

Marked `browser`; skipped (with the reason) where no Chromium is installed.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from de_assets_tests.conftest import GOLDEN, Pipeline
from de_assets_tests.test_ui import CHROMIUM, FLAGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
# every host name resolves to nothing: a page that needs the network cannot render
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0"]


class Opened:
    def __init__(self, dom: str, console: list[str], requests: list[str]):
        self.dom, self.console, self.requests = dom, console, requests

    @property
    def plots(self) -> int:
        """Chart divs that plotly.js turned into a rendered plot."""
        return len(re.findall(r'<div[^>]*class="[^"]*js-plotly-plot', self.dom))


def open_page(page: Path, workdir: Path) -> Opened:
    """Load `page` offline; return its DOM after scripts ran, console messages and the network requests it made."""
    netlog = workdir / "netlog.json"
    done = subprocess.run([CHROMIUM, *FLAGS, *OFFLINE, f"--user-data-dir={workdir / 'chrome'}",
                           f"--log-net-log={netlog}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    # requests started on behalf of the page (its network isolation key is the file:// site); Chromium's
    # own background traffic has other keys
    requests = []
    for event in json.loads(netlog.read_text())["events"]:
        params = event.get("params") or {}
        if "url" in params and str(params.get("network_isolation_key", "")).startswith("file://"):
            requests.append(params["url"])
    return Opened(done.stdout, console, requests)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    landing = root / "landing"
    shutil.copytree(GOLDEN / "landing", landing)
    assert Pipeline(root, landing).run("2026-11-01", "2026-11-03").success
    return root / "reports"


def test_the_report_renders_offline_with_values_on_the_marks(pages, tmp_path):
    opened = open_page(pages / "insights-2026-11-03.html", tmp_path)
    assert "Insights report, 2026-11-03" in opened.dom
    charts = re.findall(r'<figure class="chart" data-chart="([\w-]+)"', opened.dom)
    assert len(charts) == 8 and opened.plots == 8
    assert opened.dom.count('class="main-svg"') >= 16  # plotly draws each chart in two stacked SVG layers
    text = re.sub(r"<[^>]+>", "|", opened.dom)
    for value in ("2 (100.0%)", "1 (50.0%)",  # funnel of 11-03: 2, 1, 1, 1
                  "100.0"):  # checkout p50 latency on 11-03 (ms)
        assert f"|{value}|" in text, value
    # retention of cohort 10-26 in its first week, written on the heatmap cell (not only on the colour bar)
    assert re.findall(r'class="heatmap-label"><text[^>]*>([^<]*)</text>', opened.dom) == ["100%"]
    assert 'id="no-plotly" style="display: block' not in opened.dom
    # plotly.js logs this warning when its auto-margin pass (axes that grow to fit their labels) has
    # not settled after 10 redraws; it then keeps the last layout. In headless Chromium it shows up
    # now and then, depending on timing (seen once in a CI run; not reproduced locally). Any other
    # console line (an error, a failed load) still fails the test.
    problems = [line for line in opened.console if '"WARN: Too many auto-margin redraws."' not in line]
    assert problems == [] and opened.requests == []


def test_without_the_script_beside_it_the_page_says_so(pages, tmp_path):
    alone = tmp_path / "forwarded"
    alone.mkdir()
    shutil.copy(pages / "insights-2026-11-03.html", alone)
    opened = open_page(alone / "insights-2026-11-03.html", tmp_path)
    assert opened.plots == 0 and 'id="no-plotly" style="display: block' in opened.dom
    assert "Headline KPIs on 2026-11-03" in opened.dom and opened.console == []


def test_the_checks_see_a_page_that_reaches_out_or_throws(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="https://cdn.example.com/x.png"><script>undefinedFn()</script></body></html>')
    opened = open_page(page, tmp_path)
    assert "https://cdn.example.com/x.png" in opened.requests
    assert any("undefinedFn is not defined" in line for line in opened.console)
