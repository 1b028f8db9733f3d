"""The report's charts as plotly figures: labelled axes with units, a zero baseline, gridlines, the
exact value of every mark on hover (and on the mark where there are few), nothing cut or overlapping.

Each builder returns a `Chart`; `Chart.html()` renders it as a `<figure class="chart"
data-chart="...">` holding the plotly div and its data. The page loads plotly.js once from
`plotly.min.js` beside it (see `page.py`), so no chart fetches anything from the network.

The figures are plain dicts in the form plotly's `graph_objects` would produce (full property
names, `title: {text}` instead of `title_text`, the template inlined), serialized without
validation: building and validating `graph_objects` cost ~60 ms a page, most of the report's time
on long ranges. `test_report_figures.py` checks that every builder's dict passes through
`go.Figure` unchanged and equals what the former `graph_objects` code produced on a fixture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import plotly.io as pio

from de_assets.lib.report import formats as f
from de_assets.lib.report.data import ReportData

BLUE, GREEN, ORANGE, PURPLE, RED, GREY = "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#dc2626", "#6b7280"
GRID = "#e5e7eb"
AXIS = {"automargin": True, "gridcolor": GRID, "linecolor": "#9ca3af", "showgrid": True, "showline": True,
        "tickcolor": "#9ca3af", "ticks": "outside", "title": {"standoff": 8}, "zeroline": True,
        "zerolinecolor": "#9ca3af"}
TEMPLATE = {"layout": {
    "colorway": [BLUE, GREEN, ORANGE, PURPLE, RED, GREY],
    "font": {"color": "#111827", "family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
    "height": 320, "hoverlabel": {"font": {"size": 12}},
    "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
    "margin": {"b": 10, "l": 10, "r": 10, "t": 10}, "paper_bgcolor": "white", "plot_bgcolor": "white",
    "xaxis": AXIS, "yaxis": AXIS,
}}
CONFIG = {"displayModeBar": False, "responsive": True}  # drag to zoom, double-click to reset
# plotly's "Blues" as its validator expands it (plotly.colors.get_colorscale("Blues"))
BLUES = [[0.0, "rgb(247,251,255)"], [0.125, "rgb(222,235,247)"], [0.25, "rgb(198,219,239)"],
         [0.375, "rgb(158,202,225)"], [0.5, "rgb(107,174,214)"], [0.625, "rgb(66,146,198)"],
         [0.75, "rgb(33,113,181)"], [0.875, "rgb(8,81,156)"], [1.0, "rgb(8,48,107)"]]
NO_AXIS_LINES = {"showgrid": False, "zeroline": False, "showline": False}


def figure(data: list[dict], **layout) -> dict:
    """A figure dict with the report's template (as `update_layout(template=...)` set it). Keys are
    in the order `graph_objects` wrote them, so the page's bytes are the same as before."""
    return {"data": data, "layout": {"template": TEMPLATE, **layout}}


def _title(text: str) -> dict:
    return {"title": {"text": text}}


def _days_axis(x: list[str], d: ReportData) -> dict:
    """A date axis from the first day shown to the page's day, half a day of margin each side: the
    axis never runs past the as-of day."""
    first = datetime.fromisoformat(x[0]) - timedelta(hours=12)
    last = datetime.combine(d.day, time(12))
    return {"type": "date", "tickformat": "%b %d", "hoverformat": "%a %Y-%m-%d",
            "range": [first.strftime("%Y-%m-%d %H:%M"), last.strftime("%Y-%m-%d %H:%M")]}


@dataclass
class Chart:
    name: str
    title: str
    figure: dict | None = None  # {"data": [...], "layout": {...}}; None: nothing to draw, `empty` says why
    note: str = ""
    empty: str = "no data yet"

    def html(self) -> str:
        head = f'<figure class="chart" data-chart="{self.name}"><figcaption>{f.esc(self.title)}</figcaption>'
        note = f'<p class="note">{f.esc(self.note)}</p>' if self.note else ""
        if self.figure is None:
            return f'{head}<p class="empty">{f.esc(self.empty)}</p>{note}</figure>'
        body = pio.to_html(self.figure, validate=False, full_html=False, include_plotlyjs=False,
                           div_id=f"chart-{self.name}", config=CONFIG, default_height="320px", default_width="100%")
        return f"{head}{body}{note}</figure>"

    def data(self) -> list[dict]:
        """The traces as plain JSON (what the page hands to plotly.js), for tests and metadata."""
        return [] if self.figure is None else json.loads(pio.to_json(self.figure, validate=False))["data"]


def _dates(rows: list[dict], column: str) -> list[str]:
    return [str(r[column]) for r in rows]


def engagement(d: ReportData) -> Chart:
    chart = Chart("engagement", "Active users per day: DAU, WAU (7 days), MAU (30 days)",
                  note="Open red circles: days the anomaly detector flagged (hover for the expected value).")
    if not d.engagement:
        return chart
    x = _dates(d.engagement, "event_date")
    # MAU >= WAU >= DAU; drawn widest first and dashed on top, so equal series stay visible
    styles = {"MAU": {"color": PURPLE, "width": 6}, "WAU": {"color": GREEN, "dash": "dash", "width": 3},
              "DAU": {"color": BLUE, "width": 2}}
    traces = [{"hovertemplate": f"{label}: %{{y:,.0f}} users<extra></extra>", "line": line, "mode": "lines",
               "name": label, "opacity": 0.55 if label == "MAU" else 1.0, "x": x,
               "y": [r[label.lower()] for r in d.engagement], "type": "scatter"}
              for label, line in styles.items()]
    flagged = [a for a in d.anomalies if a["kpi"] in ("dau", "wau", "mau")]
    if flagged:
        traces.append({
            "customdata": [[a["kpi"].upper(), a["expected"], a["score"]] for a in flagged],
            "hovertemplate": "%{customdata[0]} anomaly: %{y:,.0f} users, expected %{customdata[1]:,.0f} "
                             "(score %{customdata[2]:.1f})<extra></extra>",
            "marker": {"color": RED, "line": {"width": 2}, "size": 14, "symbol": "circle-open"},
            "mode": "markers", "name": "anomaly", "x": [str(a["event_date"]) for a in flagged],
            "y": [a["value"] for a in flagged], "type": "scatter"})
    chart.figure = figure(traces, xaxis=_days_axis(x, d),
                          yaxis={**_title("users"), "rangemode": "tozero", "tickformat": ",.0f"},
                          hovermode="x unified")
    return chart


def funnels(d: ReportData) -> list[Chart]:
    names = list(dict.fromkeys(r["funnel"] for r in d.funnel))
    if not names:
        return [Chart("funnel", f"Funnel on {d.day}: users per step")]
    charts = []
    for name in names:
        rows = [r for r in d.funnel if r["funnel"] == name]
        label = "" if len(names) == 1 else f" ({name})"
        chart = Chart("funnel" if len(names) == 1 else f"funnel-{name}",
                      f"Funnel{label} on {d.day}: users per step, % of the first step",
                      note="Users who did the steps in order on the day; hover for the conversion from the "
                           "previous step.")
        chart.figure = figure(
            [{"connector": {"line": {"color": GRID}},
              "hovertemplate": "%{y}: %{x:,.0f} users<br>%{percentInitial:.1%} of the first step<br>"
                               "%{percentPrevious:.1%} of the previous step<extra></extra>",
              "marker": {"color": BLUE}, "textfont": {"size": 12}, "textposition": "auto",
              "texttemplate": "%{x:,.0f} (%{percentInitial:.1%})", "x": [r["users"] for r in rows],
              "y": [f"{r['step_order']}. {r['step']}" for r in rows], "type": "funnel"}],
            yaxis={**NO_AXIS_LINES, "ticks": ""}, xaxis={"visible": False}, height=60 + 60 * len(rows))
        charts.append(chart)
    return charts


def retention(d: ReportData) -> Chart:
    last = d.last_complete_week
    chart = Chart("retention", "Weekly retention: share of each signup cohort active k weeks later",
                  note=f"Complete weeks only, through the week of {last} to {last + timedelta(days=6)}; "
                       f"the week in progress on {d.day} is left out.",
                  empty=f"no complete week yet (the first complete week ends {last + timedelta(days=6)})")
    if not d.retention:
        return chart
    cohorts = sorted({r["cohort_week"] for r in d.retention})
    ks = sorted({r["weeks_since"] for r in d.retention})
    cell = {(r["cohort_week"], r["weeks_since"]): r for r in d.retention}
    z, text, custom = [], [], []
    for c in cohorts:
        row = [cell.get((c, k)) for k in ks]
        z.append([None if r is None else r["retention_rate"] for r in row])
        text.append(["" if r is None else f.rate(r["retention_rate"], 0) for r in row])
        custom.append([[0, 0] if r is None else [r["retained_users"], r["cohort_size"]] for r in row])
    sizes = {r["cohort_week"]: r["cohort_size"] for r in d.retention}
    chart.figure = figure(
        [{"colorbar": {"thickness": 12, "tickformat": ".0%", "title": {"text": "retained"}}, "colorscale": BLUES,
          "customdata": custom, "hoverongaps": False,
          "hovertemplate": "cohort %{y}, %{x}: %{z:.1%}<br>%{customdata[0]:,.0f} of %{customdata[1]:,.0f} users"
                           "<extra></extra>",
          "text": text, "texttemplate": "%{text}", "x": [f"week {k}" for k in ks],
          "xgap": 2, "y": [f"{c} (n={f.count(sizes[c])})" for c in cohorts], "ygap": 2, "z": z, "zmax": 1,
          "zmin": 0, "type": "heatmap"}],
        xaxis={**_title("weeks since the cohort's first week"), "side": "top", **NO_AXIS_LINES},
        yaxis={**_title("signup week (cohort size)"), "autorange": "reversed", **NO_AXIS_LINES},
        height=max(220, 90 + 26 * len(cohorts)))
    return chart


def revenue(d: ReportData) -> Chart:
    chart = Chart("revenue", "Revenue per day (sum of order revenue)")
    if not d.revenue:
        return chart
    x = _dates(d.revenue, "event_date")
    chart.figure = figure(
        [{"customdata": [[r["orders"], r["paying_users"]] for r in d.revenue],
          "hovertemplate": "%{x}<br>revenue %{y:,.2f}<br>%{customdata[0]:,.0f} orders by %{customdata[1]:,.0f} "
                           "paying users<extra></extra>",
          "marker": {"color": GREEN}, "x": x, "y": [r["revenue"] or 0.0 for r in d.revenue], "type": "bar"}],
        xaxis=_days_axis(x, d), yaxis={**_title("revenue"), "rangemode": "tozero", "tickformat": ",.0f"},
        bargap=0.15)
    return chart


def latency(d: ReportData) -> Chart:
    chart = Chart("latency", f"Latency per service on {d.day}: p50, p90, p99 (ms)")
    if not d.latency:
        return chart
    services = [f"{r['service']}<br>{f.count(r['requests'])} req, {f.rate(r['error_rate'])} errors" for r in d.latency]
    traces = [{"cliponaxis": False, "hovertemplate": f"%{{x}}<br>{q}: %{{y:,.1f}} ms<extra></extra>",
               "marker": {"color": color}, "name": q, "textposition": "outside", "texttemplate": "%{y:,.1f}",
               "x": services, "y": [r[f"{q}_ms"] for r in d.latency], "type": "bar"}
              for q, color in (("p50", BLUE), ("p90", ORANGE), ("p99", RED))]
    chart.figure = figure(traces, yaxis={**_title("latency (ms)"), "rangemode": "tozero", "tickformat": ",.0f"},
                          xaxis={"showgrid": False, "tickangle": 0}, barmode="group")
    return chart


def _target_line(target: float | None, label: str) -> dict:
    """Layout entries for a dotted horizontal line across the plot at `target`, labelled top left
    (what `add_hline` draws); none without a target."""
    if target is None:
        return {}
    return {"shapes": [{"line": {"color": RED, "dash": "dot", "width": 1}, "type": "line", "x0": 0, "x1": 1,
                        "xref": "x domain", "y0": target, "y1": target, "yref": "y"}],
            "annotations": [{"font": {"color": RED}, "showarrow": False, "text": label, "x": 0, "xanchor": "left",
                             "xref": "x domain", "y": target, "yanchor": "bottom", "yref": "y"}]}


def quarantine(d: ReportData) -> Chart:
    chart = Chart("quarantine", "Quarantine rate per arrival day (share of landed rows rejected)")
    rows = [r for r in d.health if r["quarantine_rate"] is not None]
    if not rows:
        return chart
    x = _dates(rows, "partition")
    target = d.slo_targets.get("quarantine_rate")
    chart.figure = figure(
        [{"customdata": [r["rows_in"] for r in rows],
          "hovertemplate": "%{x}<br>%{y:.2%} of %{customdata:,.0f} rows<extra></extra>",
          "line": {"color": ORANGE}, "mode": "lines+markers", "x": x, "y": [r["quarantine_rate"] for r in rows],
          "type": "scatter"}],
        **_target_line(target, f"SLO {f.rate(target)}" if target is not None else ""),
        xaxis=_days_axis(x, d), yaxis={**_title("rows quarantined"), "rangemode": "tozero", "tickformat": ".1%"})
    return chart


def throughput(d: ReportData) -> Chart:
    chart = Chart("throughput", "Pipeline throughput per step (median rows/s over the window)")
    if not d.throughput:
        return chart
    rows = list(reversed(d.throughput))  # fastest on top
    chart.figure = figure(
        [{"customdata": [r["partitions"] for r in rows],
          "hovertemplate": "%{y}: %{x:,.0f} rows/s (median of %{customdata} partitions)<extra></extra>",
          "marker": {"color": BLUE}, "orientation": "h", "textposition": "auto", "texttemplate": "%{x:,.0f}",
          "x": [r["rows_per_second"] for r in rows], "y": [r["asset"] for r in rows], "type": "bar"}],
        xaxis={**_title("rows per second"), "rangemode": "tozero", "tickformat": ",.0f"},
        yaxis={"showgrid": False}, height=max(220, 70 + 26 * len(rows)))
    return chart


def freshness(d: ReportData) -> Chart:
    chart = Chart("freshness", "Data freshness when cleaned (hours from the newest event to available)")
    rows = [r for r in d.health if r["freshness_hours"] is not None]
    if not rows:
        return chart
    x = _dates(rows, "partition")
    target = d.slo_targets.get("freshness_hours")
    chart.figure = figure(
        [{"hovertemplate": "%{x}<br>%{y:,.1f} h<extra></extra>", "line": {"color": PURPLE},
          "mode": "lines+markers", "x": x, "y": [r["freshness_hours"] for r in rows], "type": "scatter"}],
        **_target_line(target, f"SLO {f.hours(target)}" if target is not None else ""),
        xaxis=_days_axis(x, d), yaxis={**_title("hours"), "rangemode": "tozero", "tickformat": ",.0f"})
    return chart


def all_charts(d: ReportData) -> list[Chart]:
    return [engagement(d), *funnels(d), retention(d), revenue(d), latency(d), quarantine(d), throughput(d),
            freshness(d)]
