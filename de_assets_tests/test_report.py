"""The insights report (de_assets/lib/report/): one offline HTML page per partition, plotly charts fed
from the marts, cut at the page's day. Rendering in a browser: test_report_browser.py."""

import json
import re
from datetime import date

from plotly.offline import get_plotlyjs

from de_assets.lib import report

CHARTS = {"engagement", "funnel", "retention", "revenue", "latency", "quarantine", "throughput", "freshness"}


def figures(page: str, part: int = 0) -> dict[str, list[dict] | dict]:
    """What each chart of a page hands to plotly.js, by chart name: its traces (part 0) or layout (1)."""
    decoder, out = json.JSONDecoder(), {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"chart-([\w-]+)",\s*', page):
        value, end = decoder.raw_decode(page, match.end())
        if part == 1:
            value, _ = decoder.raw_decode(page, re.compile(r"\s*,\s*").match(page, end).end())
        out[match.group(1)] = value
    return out


def chart_bodies(page: str) -> dict[str, str]:
    return dict(re.findall(r'<figure class="chart" data-chart="([\w-]+)">(.*?)</figure>', page, re.S))


def table_rows(page: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell starts with `first_cell`, tags stripped."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_golden_report_pages_values_and_per_partition_paths(pipeline, tmp_path):
    result = pipeline.run("2026-11-01", "2026-11-03")
    assert result.success
    folder = tmp_path / "reports"
    assert sorted(p.name for p in folder.iterdir()) == [
        "insights-2026-11-01.html", "insights-2026-11-02.html", "insights-2026-11-03.html", "latest.html",
        "plotly.min.js"]
    assert (folder / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    page = (folder / "latest.html").read_text()
    assert page == (folder / "insights-2026-11-03.html").read_text()
    assert set(chart_bodies(page)) == CHARTS and "no data yet" not in page
    data = figures(page)
    assert set(data) == CHARTS
    # values from fixtures/golden/README.md
    [funnel] = data["funnel"]  # 11-03: bob through all four steps, carol viewed only
    assert funnel["y"] == ["1. Product Viewed", "2. Product Added", "3. Checkout Started", "4. Order Completed"]
    assert funnel["x"] == [2, 1, 1, 1]
    engagement = {t["name"]: t for t in data["engagement"]}
    assert engagement["DAU"]["x"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert (engagement["DAU"]["y"], engagement["WAU"]["y"], engagement["MAU"]["y"]) == ([3, 4, 3], [3, 5, 5], [3, 5, 5])
    assert engagement["WAU"]["line"]["dash"] == "dash"  # equal to MAU here, drawn on top of it and visible
    [revenue] = data["revenue"]
    assert revenue["y"] == [0.0, 180.5, 20.0]
    latency = {t["name"]: t for t in data["latency"]}
    assert latency["p50"]["y"] == [100.0] and latency["p50"]["x"][0].startswith("checkout<br>1 req, 0.0% errors")
    # 11-03 is a Tuesday: the week in progress (11-02..) is left out; cohort 10-26 week 0 is 3/3
    [heat] = data["retention"]
    assert heat["y"] == ["2026-10-26 (n=3)"] and heat["x"] == ["week 0"] and heat["z"] == [[1.0]]
    assert "the week in progress on 2026-11-03 is left out" in page
    # KPIs: one format per kind, changes in %, the empty columns left out with the reason
    assert table_rows(page, "Daily active users")[1:] == ["3", "-25.0%"]  # 3 vs 4 the day before
    assert table_rows(page, "Revenue per paying user")[1:] == ["20.00", "-66.8%"]  # 20 vs 180.5 / 3
    assert table_rows(page, "Stickiness")[1:] == ["60.0%", "-25.0%"]
    assert "vs week before: not shown, no value 7 days before" in page
    assert "anomaly score: not shown" in page and "<th>anomaly score</th>" not in page
    # offline: the only script loaded is the copy of plotly.js beside the page; no URL anywhere in a src/href
    assert re.findall(r'<script[^>]*\ssrc="([^"]*)"', page) == ["plotly.min.js"]
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    # each partition's materialization points at its own page
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["reports", "insights"]]
    paths = {e.partition: e.materialization.metadata["path"].value for e in events}
    assert {p: paths[p].rsplit("/", 1)[-1] for p in paths} == {
        d: f"insights-{d}.html" for d in ("2026-11-01", "2026-11-02", "2026-11-03")}
    charts = {e.partition: e.materialization.metadata["charts"].value for e in events}
    assert charts["2026-11-03"] == 8
    assert all(e.materialization.metadata["plotly_js_written"].value is True for e in events)

    again = pipeline.run("2026-11-03")  # the script is written once, not per page or per run
    assert again.success
    [event] = [e for e in again.get_asset_materialization_events() if e.asset_key.path == ["reports", "insights"]]
    assert event.materialization.metadata["plotly_js_written"].value is False
    assert event.materialization.metadata["path"].value.endswith("insights-2026-11-03.html")
    assert len(list(folder.glob("*.js"))) == 1


def _as_of_warehouse(con):
    """Daily series for every day of November, and weekly cohorts 10-26 .. 11-23 with every activity week."""
    days = [date(2026, 11, d) for d in range(1, 31)]
    con.executemany("INSERT INTO marts.daily_engagement (event_date, dau, wau, mau) VALUES (?, ?, ?, ?)",
                    [[d, 10 + d.day, 20 + d.day, 30 + d.day] for d in days])
    con.executemany("INSERT INTO marts.revenue_daily (event_date, orders, revenue, paying_users) VALUES (?, 1, ?, 1)",
                    [[d, float(d.day)] for d in days])
    con.executemany("INSERT INTO marts.kpi_anomalies (event_date, kpi, value, expected, score, is_anomaly) "
                    "VALUES (?, 'dau', ?, 5, 9, true)", [[d, 10 + d.day] for d in (days[4], days[19])])
    weeks = [date(2026, 10, 26), date(2026, 11, 2), date(2026, 11, 9), date(2026, 11, 16), date(2026, 11, 23)]
    con.executemany("INSERT INTO marts.retention_cohorts VALUES (?, ?, 10, ?, ?, ?)",
                    [[c, k, 10 - k, (10 - k) / 10, a] for c in weeks for k, a in enumerate(w for w in weeks if w >= c)])


def test_every_chart_is_cut_at_the_as_of_day(con):
    _as_of_warehouse(con)
    page = report.build(con, date(2026, 11, 7))  # a Saturday: week 11-02..11-08 still in progress
    data = figures(page)
    engagement = {t["name"]: t for t in data["engagement"]}
    assert engagement["DAU"]["x"][-1] == "2026-11-07" and len(engagement["DAU"]["x"]) == 7
    assert engagement["anomaly"]["x"] == ["2026-11-05"]  # the one of 11-20 is not known yet
    assert data["revenue"][0]["y"][-1] == 7.0
    assert data["retention"][0]["y"] == ["2026-10-26 (n=10)"] and data["retention"][0]["x"] == ["week 0"]
    date_axes = {name: layout["xaxis"]["range"] for name, layout in figures(page, part=1).items()
                 if layout.get("xaxis", {}).get("type") == "date"}
    assert date_axes == {name: ["2026-10-31 12:00", "2026-11-07 12:00"] for name in ("engagement", "revenue")}
    for later in ("2026-11-08", "2026-11-09", "2026-11-16", "2026-11-20", "2026-11-23", "2026-11-30"):
        assert later not in page, later

    sunday = figures(report.build(con, date(2026, 11, 8)))["retention"][0]  # the week is complete on its Sunday
    assert sunday["y"] == ["2026-10-26 (n=10)", "2026-11-02 (n=10)"] and sunday["x"] == ["week 0", "week 1"]
    assert sunday["z"] == [[1.0, 0.9], [1.0, None]] and sunday["text"] == [["100%", "90%"], ["100%", ""]]


def test_experiments_table_gives_a_verdict_per_comparison(con):
    common = dict(as_of_date=date(2026, 11, 3), metric="purchase", srm_flag=False, method="z-test", alpha=0.05,
                  window_days=7, cuped=False)
    rows = [
        # healthy, significant: +5 pp (+25%), CI [1, 9] pp, p = 0.01
        dict(experiment_id="button", variant_id="control", is_control=True, users=1000, conversions=200, rate=0.2,
             srm_p_value=0.5, crossover_users=0),
        dict(experiment_id="button", variant_id="treatment", is_control=False, users=1000, conversions=250, rate=0.25,
             abs_lift=0.05, rel_lift=0.25, ci_low=0.01, ci_high=0.09, p_value=0.01, srm_p_value=0.5, crossover_users=0),
        # a sample ratio mismatch: no verdict whatever the p-value
        dict(experiment_id="banner", variant_id="control", is_control=True, users=1000, conversions=100, rate=0.1,
             srm_p_value=1e-6, crossover_users=0),
        dict(experiment_id="banner", variant_id="treatment", is_control=False, users=700, conversions=140, rate=0.2,
             abs_lift=0.1, rel_lift=1.0, ci_low=0.05, ci_high=0.15, p_value=0.0001, srm_p_value=1e-6,
             crossover_users=0),
    ]
    columns = sorted({k for r in rows for k in r} | set(common))
    con.executemany(f"INSERT INTO marts.experiment_results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [[{**common, **r}.get(c) for c in columns] for r in rows])
    page = report.build(con, date(2026, 11, 3))
    banner, button = page[page.index("<h3>banner</h3>"):page.index("<h3>button</h3>")], page[page.index("<h3>button</h3>"):]
    assert table_rows(button, "purchase") == ["purchase", "control", "1,000", "200", "20.00%", "–", "–", "–", "–",
                                              "control"]
    treatment = re.search(r"<tr><td>purchase</td><td>treatment</td>(.*?)</tr>", button).group(1)
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", treatment)]
    assert cells == ["1,000", "250", "25.00%", "+5.00 pp", "+25.0%", "[1.00 pp, 9.00 pp]", "0.010",
                     "treatment beats control on purchase by +5.0 pp (+25.0%) [1.0 pp, 9.0 pp], p=0.01"]
    assert "failed: sample ratio mismatch" in banner and "no verdict: health check failed" in banner


def test_an_empty_warehouse_gives_a_page_that_says_so(con):
    page = report.build(con, date(2026, 11, 3))
    bodies = chart_bodies(page)
    assert set(bodies) == CHARTS and figures(page) == {}
    assert all('class="empty"' in body for body in bodies.values())
    assert "no complete week yet (the first complete week ends 2026-11-01)" in bodies["retention"]
    assert "No KPIs for this day yet." in page and "No experiment exposures" in page and "No SLO evaluated" in page


def test_plotly_js_is_written_once(tmp_path):
    assert report.write_plotly_js(tmp_path) is True
    stat = (tmp_path / "plotly.min.js").stat()
    assert report.write_plotly_js(tmp_path) is False
    assert (tmp_path / "plotly.min.js").stat().st_mtime_ns == stat.st_mtime_ns
    (tmp_path / "plotly.min.js").write_text("truncated")  # a damaged copy is replaced
    assert report.write_plotly_js(tmp_path) is True and sorted(p.name for p in tmp_path.iterdir()) == ["plotly.min.js"]


def test_a_dry_run_writes_no_page_and_names_each_partitions_page(pipeline, tmp_path):
    result = pipeline.run("2026-11-01", "2026-11-02", dry_run=True)
    assert result.success and not (tmp_path / "reports").exists()
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["reports", "insights"]]
    assert {e.partition: e.materialization.metadata["would_write"].value.rsplit("/", 1)[-1] for e in events} == {
        "2026-11-01": "insights-2026-11-01.html", "2026-11-02": "insights-2026-11-02.html"}


def test_a_range_of_pages_reads_each_table_once_and_cuts_it_per_day(con):
    """`build_pages` (the asset's path: one query per table for the range) gives every day the rows
    its own query would: the same data and page as `build_page` of the day, windows cut at the day."""
    _as_of_warehouse(con)
    d = lambda n: date(2026, 11, n)  # noqa: E731
    kpis = [  # partition, asset, run, rows_in, rows_quarantined, rows/s, recorded (hour of 11-20)
        *[(d(n), "clean/clean_events", "r1", 100, n, 100.0 * n, 1) for n in range(1, 11)],
        (d(5), "clean/clean_events", "r0", 100, 50, 9999.0, 0),  # superseded by the later run r1
        (d(4), "marts/x", "r1", 10, 0, 50.0, 1),
        (d(6), "raw/raw_events", "r1", 0, 0, 1.0, 1),  # no rows in: not a throughput figure
    ]
    con.executemany("INSERT INTO pipeline_health.partition_kpis (partition, asset, run_id, rows_in, rows_quarantined, "
                    "rows_per_second, recorded_at) VALUES (?, ?, ?, ?, ?, ?, TIMESTAMP '2026-11-20' + to_hours(?))",
                    kpis)
    con.executemany("INSERT INTO pipeline_health.slo_status (partition, slo, target, comparison, actual, status, "
                    "breached_days_28d, budget_burn) VALUES (?, 'quarantine_rate', ?, '<=', 0.01, 'met', 0, 0)",
                    [[d(5), 0.05], [d(6), 0.07]])
    con.executemany("INSERT INTO marts.funnel_daily (event_date, funnel, step_order, step, users) "
                    "VALUES (?, 'f', ?, ?, ?)", [[d(5), 1, "View", 9], [d(5), 2, "Buy", 3], [d(6), 1, "View", 4]])
    con.execute("INSERT INTO marts.service_latency (event_date, service, requests, error_rate, p50_ms, p90_ms, p99_ms) "
                "VALUES ('2026-11-05', 'api', 10, 0, 1, 2, 3)")
    con.executemany("INSERT INTO marts.kpi_changes (event_date, kpi, value, dod) VALUES (?, 'dau', ?, ?)",
                    [[d(5), 15, 0.1], [d(6), 16, 0.2]])

    ranged = report.load_range(con, d(2), d(8), days=3)
    assert [r.day for r in ranged] == [d(n) for n in range(2, 9)]
    for data in ranged:
        assert data == report.load(con, data.day, 3), data.day
    by_day = {r.day: r for r in ranged}
    # medians over each page's own 3-day window, newest run per partition; the window of 11-02 starts 10-31
    assert by_day[d(2)].throughput == [{"asset": "clean/clean_events", "rows_per_second": 150.0, "partitions": 2}]
    assert by_day[d(5)].throughput == [{"asset": "clean/clean_events", "rows_per_second": 400.0, "partitions": 3},
                                       {"asset": "marts/x", "rows_per_second": 50.0, "partitions": 1}]
    assert by_day[d(7)].throughput == [{"asset": "clean/clean_events", "rows_per_second": 600.0, "partitions": 3}]
    assert [r["partition"] for r in by_day[d(5)].health] == [d(3), d(4), d(5)]
    assert by_day[d(5)].health[-1]["quarantine_rate"] == 0.05  # run r1's 5 of 100, not r0's 50
    assert [r["event_date"] for r in by_day[d(5)].engagement] == [d(3), d(4), d(5)]
    assert [r["event_date"] for r in by_day[d(6)].anomalies] == [d(5)]
    assert [(r["step"], r["users"]) for r in by_day[d(5)].funnel] == [("View", 9), ("Buy", 3)]
    assert [(r["step"], r["users"]) for r in by_day[d(6)].funnel] == [("View", 4)]
    assert [r["service"] for r in by_day[d(5)].latency] == ["api"] and by_day[d(6)].latency == []
    assert [by_day[d(n)].slo_targets for n in (5, 6)] == [{"quarantine_rate": 0.05}, {"quarantine_rate": 0.07}]
    assert [r["value"] for r in by_day[d(6)].kpis] == [16] and by_day[d(7)].kpis == []
    assert [r["cohort_week"] for r in by_day[d(7)].retention] == [date(2026, 10, 26)]  # week 11-02.. in progress
    assert len(by_day[d(8)].retention) == 3  # complete on its Sunday: cohort 10-26 weeks 0-1, 11-02 week 0

    pages = report.build_pages(con, d(2), d(8), days=3)
    assert [p.html for p in pages] == [report.build_page(con, p.day, 3).html for p in pages]
    assert report.build_pages(con, d(8), d(2)) == []
