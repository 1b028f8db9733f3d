"""The report's figures are plain dicts (charts.py): plotly.js gets the same JSON that plotly's
graph_objects produced before, without paying for their validation on every page.

Two checks on a hand-made day that draws every kind of mark (anomaly circles, two funnels, a
retention grid with gaps, a day without revenue, SLO target lines):
- each figure passes through `go.Figure` unchanged: the dict is valid plotly and already in the form
  graph_objects would write (full property names, expanded colour scale, the template inlined);
- each figure equals `fixtures/report_figures.json`, the output of the former graph_objects code
  (`git show 75cf091:de_assets/lib/report/charts.py`, `json.loads(fig.to_json())` after its
  `update_layout(template=TEMPLATE)`) on this same day: structure and data, floats to 12 digits.
"""

import json
import math
from datetime import date
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from de_assets.lib.report import charts
from de_assets.lib.report.data import ReportData

GOLDEN = Path(__file__).parent / "fixtures" / "report_figures.json"
D = date


def day_data() -> ReportData:
    """As of Wed 2026-11-11, a 5-day window."""
    days = [D(2026, 11, n) for n in range(7, 12)]
    return ReportData(
        day=D(2026, 11, 11), start=days[0],
        engagement=[dict(event_date=d, dau=10 + i, wau=20 + 2 * i, mau=30 + 3 * i) for i, d in enumerate(days)],
        anomalies=[dict(event_date=days[1], kpi="dau", value=11.0, expected=5.0, score=4.25),
                   dict(event_date=days[3], kpi="mau", value=39.0, expected=None, score=float("nan")),
                   dict(event_date=days[2], kpi="revenue", value=1.0, expected=2.0, score=9.0)],  # not drawn
        funnel=[dict(funnel="checkout", step_order=1, step="Product Viewed", users=200),
                dict(funnel="checkout", step_order=2, step="Checkout Started", users=50),
                dict(funnel="signup", step_order=1, step="Signup Viewed", users=40),
                dict(funnel="signup", step_order=2, step="Signed Up", users=0)],
        retention=[dict(cohort_week=D(2026, 10, 26), weeks_since=0, cohort_size=12, retained_users=12,
                        retention_rate=1.0),
                   dict(cohort_week=D(2026, 10, 26), weeks_since=1, cohort_size=12, retained_users=5,
                        retention_rate=5 / 12),
                   dict(cohort_week=D(2026, 11, 2), weeks_since=0, cohort_size=1500, retained_users=1500,
                        retention_rate=1.0)],
        revenue=[dict(event_date=d, revenue=None if i == 2 else 10.5 * i, orders=i, paying_users=i)
                 for i, d in enumerate(days)],
        latency=[dict(service="checkout", requests=1234, error_rate=0.0125, p50_ms=100.0, p90_ms=250.5,
                      p99_ms=999.25),
                 dict(service="search", requests=7, error_rate=0.0, p50_ms=20.0, p90_ms=30.0, p99_ms=31.0)],
        health=[dict(partition=d, rows_in=100 * (i + 1), quarantine_rate=None if i == 0 else 0.01 * i,
                     freshness_hours=None if i == 4 else 2.5 * i) for i, d in enumerate(days)],
        throughput=[dict(asset="marts/kpi_changes", rows_per_second=90000.5, partitions=5),
                    dict(asset="clean/clean_events", rows_per_second=1234.25, partitions=4)],
        slo_targets={"quarantine_rate": 0.05, "freshness_hours": 36.0},
    )


def figure_json(chart: charts.Chart):
    """What the page hands to plotly.js for the chart: its figure through plotly's JSON encoder."""
    return None if chart.figure is None else json.loads(pio.to_json(chart.figure, validate=False))


def close(a, b, path="") -> None:
    """Equal structure and values; floats to 12 significant digits."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, (path, a, b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (path, sorted(a), sorted(b))
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def drawn() -> dict[str, charts.Chart]:
    return {c.name: c for c in charts.all_charts(day_data())}


def test_every_chart_of_the_fixture_draws(drawn):
    assert list(drawn) == ["engagement", "funnel-checkout", "funnel-signup", "retention", "revenue", "latency",
                           "quarantine", "throughput", "freshness"]
    assert all(c.figure is not None for c in drawn.values())


def test_each_figure_is_valid_plotly_in_graph_objects_form(drawn):
    for name, chart in drawn.items():
        normalized = go.Figure(chart.figure).to_plotly_json()
        assert json.loads(pio.to_json(normalized, validate=False)) == figure_json(chart), name


def test_each_figure_equals_what_graph_objects_produced(drawn):
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(drawn)
    for name, chart in drawn.items():
        close(golden[name], figure_json(chart), name)
    # a few values by hand: the anomaly circles skip the revenue KPI; NaN goes out as null
    [*_, circles] = golden["engagement"]["data"]
    assert circles["x"] == ["2026-11-08", "2026-11-10"] and circles["customdata"] == [["DAU", 5.0, 4.25],
                                                                                      ["MAU", None, None]]
    assert golden["quarantine"]["layout"]["shapes"][0]["y0"] == 0.05
    assert golden["quarantine"]["data"][0]["x"][0] == "2026-11-08"  # no rate on the first day
    assert golden["retention"]["data"][0]["z"] == [[1.0, 5 / 12], [1.0, None]]
    assert golden["revenue"]["data"][0]["y"] == [0.0, 10.5, 0.0, 31.5, 42.0]


def test_the_page_embeds_the_figure_json(drawn):
    html = drawn["latency"].html()
    assert 'id="chart-latency"' in html and 'style="height:320px; width:100%;"' in html
    assert json.dumps(charts.CONFIG) in html
    assert "checkout\\u003cbr\\u003e1,234 req, 1.2% errors" in html  # "<" escaped inside the script
