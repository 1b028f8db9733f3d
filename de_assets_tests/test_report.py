"""The insights report: one offline HTML page per partition with every chart drawn from the marts."""

import re

from de_assets.lib import report


def test_golden_report_pages_and_charts(pipeline, tmp_path):
    result = pipeline.run("2026-11-01", "2026-11-03")
    assert result.success
    folder = tmp_path / "reports"
    assert sorted(p.name for p in folder.iterdir()) == [
        "insights-2026-11-01.html", "insights-2026-11-02.html", "insights-2026-11-03.html", "latest.html"]
    page = (folder / "latest.html").read_text()
    assert page == (folder / "insights-2026-11-03.html").read_text()
    charts = dict(re.findall(r'<figure class="chart" data-chart="(\w+)">(.*?)</figure>', page, re.S))
    assert set(charts) == {"engagement", "funnel", "retention", "revenue", "latency", "quarantine", "throughput",
                           "freshness"}
    assert all("<svg" in body and "no data yet" not in body for body in charts.values())
    # values from fixtures/golden/README.md: 11-03 funnel 2, 1, 1, 1; checkout latency 100 ms on 11-03
    assert "users 1. Product Viewed: 2</title>" in charts["funnel"]
    assert "users 4. Order Completed: 1</title>" in charts["funnel"]
    assert "p50 checkout: 100</title>" in charts["latency"]
    assert charts["engagement"].count('class="series"') == 3  # DAU, WAU, MAU
    assert "2026-10-26 +1w: 66.7%" in charts["retention"]  # README: cohort 10-26, week 1: alice, bob = 2/3
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)=["\']?(https?:)?//', page) and "<script" not in page
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["reports", "insights"]][-1:]
    meta = event.materialization.metadata
    assert meta["path"].value.endswith("insights-2026-11-03.html") and meta["charts"].value == 8


def test_empty_tables_give_placeholders_not_broken_charts(con):
    from datetime import date

    page = report.build(con, date(2026, 11, 3))
    assert page.count("no data yet") == 8 and "<svg" in page


def test_anomalies_are_circled_on_the_engagement_chart():
    chart = report.line_chart("engagement", "t", ["d1", "d2", "d3"], {"DAU": [1.0, 9.0, 1.0]}, {"DAU": [1]})
    assert chart.count('class="anomaly"') == 1 and "anomaly: DAU on d2" in chart
