"""The report's charts as plotly figures: labelled axes with units, a zero baseline, gridlines, the
exact value of every mark on hover (and on the mark where there are few), nothing cut or overlapping.

Each builder returns a `Chart`; `Chart.html()` renders it as a `<figure class="chart"
data-chart="...">` holding the plotly div and its data. The page loads plotly.js once from
`plotly.min.js` beside it (see `page.py`), so no chart fetches anything from the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import plotly.graph_objects as go

from de_assets.lib.report import formats as f
from de_assets.lib.report.data import ReportData

BLUE, GREEN, ORANGE, PURPLE, RED, GREY = "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#dc2626", "#6b7280"
GRID = "#e5e7eb"
AXIS = dict(showgrid=True, gridcolor=GRID, zeroline=True, zerolinecolor="#9ca3af", showline=True,
            linecolor="#9ca3af", ticks="outside", tickcolor="#9ca3af", automargin=True, title_standoff=8)
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12, color="#111827"),
    paper_bgcolor="white", plot_bgcolor="white", colorway=[BLUE, GREEN, ORANGE, PURPLE, RED, GREY],
    margin=dict(l=10, r=10, t=10, b=10), hoverlabel=dict(font_size=12), height=320,
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
    xaxis=AXIS, yaxis=AXIS,
))
CONFIG = {"displayModeBar": False, "responsive": True}  # drag to zoom, double-click to reset



def _days_axis(x: list[str], d: ReportData) -> dict:
    """A date axis from the first day shown to the page's day, half a day of margin each side: the
    axis never runs past the as-of day."""
    first = datetime.fromisoformat(x[0]) - timedelta(hours=12)
    last = datetime.combine(d.day, time(12))
    return dict(type="date", tickformat="%b %d", hoverformat="%a %Y-%m-%d",
                range=[first.strftime("%Y-%m-%d %H:%M"), last.strftime("%Y-%m-%d %H:%M")])

@dataclass
class Chart:
    name: str
    title: str
    figure: go.Figure | None = None  # None: nothing to draw, `empty` says why
    note: str = ""
    empty: str = "no data yet"

    def html(self) -> str:
        head = f'<figure class="chart" data-chart="{self.name}"><figcaption>{f.esc(self.title)}</figcaption>'
        note = f'<p class="note">{f.esc(self.note)}</p>' if self.note else ""
        if self.figure is None:
            return f'{head}<p class="empty">{f.esc(self.empty)}</p>{note}</figure>'
        self.figure.update_layout(template=TEMPLATE)
        body = self.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{self.name}",
                                   config=CONFIG, default_height="320px", default_width="100%")
        return f"{head}{body}{note}</figure>"

    def data(self) -> list[dict]:
        """The traces as plain JSON (what the page hands to plotly.js), for tests and metadata."""
        return [] if self.figure is None else json.loads(self.figure.to_json())["data"]


def _dates(rows: list[dict], column: str) -> list[str]:
    return [str(r[column]) for r in rows]


def engagement(d: ReportData) -> Chart:
    chart = Chart("engagement", "Active users per day: DAU, WAU (7 days), MAU (30 days)",
                  note="Open red circles: days the anomaly detector flagged (hover for the expected value).")
    if not d.engagement:
        return chart
    x = _dates(d.engagement, "event_date")
    fig = go.Figure()
    # MAU >= WAU >= DAU; drawn widest first and dashed on top, so equal series stay visible
    styles = {"MAU": dict(color=PURPLE, width=6), "WAU": dict(color=GREEN, width=3, dash="dash"),
              "DAU": dict(color=BLUE, width=2)}
    for label, line in styles.items():
        fig.add_scatter(x=x, y=[r[label.lower()] for r in d.engagement], name=label, mode="lines", line=line,
                        opacity=0.55 if label == "MAU" else 1.0,
                        hovertemplate=f"{label}: %{{y:,.0f}} users<extra></extra>")
    flagged = [a for a in d.anomalies if a["kpi"] in ("dau", "wau", "mau")]
    if flagged:
        fig.add_scatter(x=[str(a["event_date"]) for a in flagged], y=[a["value"] for a in flagged],
                        name="anomaly", mode="markers",
                        marker=dict(symbol="circle-open", size=14, color=RED, line=dict(width=2)),
                        customdata=[[a["kpi"].upper(), a["expected"], a["score"]] for a in flagged],
                        hovertemplate="%{customdata[0]} anomaly: %{y:,.0f} users, expected %{customdata[1]:,.0f} "
                                      "(score %{customdata[2]:.1f})<extra></extra>")
    fig.update_layout(hovermode="x unified", xaxis=_days_axis(x, d),
                      yaxis=dict(title_text="users", rangemode="tozero", tickformat=",.0f"))
    chart.figure = fig
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
        fig = go.Figure(go.Funnel(
            y=[f"{r['step_order']}. {r['step']}" for r in rows], x=[r["users"] for r in rows],
            marker=dict(color=BLUE), connector=dict(line=dict(color=GRID)),
            texttemplate="%{x:,.0f} (%{percentInitial:.1%})", textposition="auto", textfont=dict(size=12),
            hovertemplate="%{y}: %{x:,.0f} users<br>%{percentInitial:.1%} of the first step<br>"
                          "%{percentPrevious:.1%} of the previous step<extra></extra>",
        ))
        fig.update_layout(yaxis=dict(showgrid=False, zeroline=False, showline=False, ticks=""),
                          xaxis=dict(visible=False), height=60 + 60 * len(rows))
        chart.figure = fig
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
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"week {k}" for k in ks], y=[f"{c} (n={f.count(sizes[c])})" for c in cohorts], text=text,
        texttemplate="%{text}", customdata=custom, zmin=0, zmax=1, colorscale="Blues", xgap=2, ygap=2,
        colorbar=dict(title=dict(text="retained"), tickformat=".0%", thickness=12),
        hovertemplate="cohort %{y}, %{x}: %{z:.1%}<br>%{customdata[0]:,.0f} of %{customdata[1]:,.0f} users"
                      "<extra></extra>", hoverongaps=False,
    ))
    fig.update_layout(xaxis=dict(side="top", showgrid=False, zeroline=False, showline=False, title_text="weeks since "
                                 "the cohort's first week"),
                      yaxis=dict(autorange="reversed", showgrid=False, zeroline=False, showline=False,
                                 title_text="signup week (cohort size)"),
                      height=max(220, 90 + 26 * len(cohorts)))
    chart.figure = fig
    return chart


def revenue(d: ReportData) -> Chart:
    chart = Chart("revenue", "Revenue per day (sum of order revenue)")
    if not d.revenue:
        return chart
    x = _dates(d.revenue, "event_date")
    fig = go.Figure(go.Bar(
        x=x, y=[r["revenue"] or 0.0 for r in d.revenue], marker_color=GREEN,
        customdata=[[r["orders"], r["paying_users"]] for r in d.revenue],
        hovertemplate="%{x}<br>revenue %{y:,.2f}<br>%{customdata[0]:,.0f} orders by %{customdata[1]:,.0f} "
                      "paying users<extra></extra>",
    ))
    fig.update_layout(xaxis=_days_axis(x, d), yaxis=dict(title_text="revenue", rangemode="tozero", tickformat=",.0f"),
                      bargap=0.15)
    chart.figure = fig
    return chart


def latency(d: ReportData) -> Chart:
    chart = Chart("latency", f"Latency per service on {d.day}: p50, p90, p99 (ms)")
    if not d.latency:
        return chart
    services = [f"{r['service']}<br>{f.count(r['requests'])} req, {f.rate(r['error_rate'])} errors" for r in d.latency]
    fig = go.Figure()
    for q, color in (("p50", BLUE), ("p90", ORANGE), ("p99", RED)):
        fig.add_bar(x=services, y=[r[f"{q}_ms"] for r in d.latency], name=q, marker_color=color,
                    texttemplate="%{y:,.1f}", textposition="outside", cliponaxis=False,
                    hovertemplate=f"%{{x}}<br>{q}: %{{y:,.1f}} ms<extra></extra>")
    fig.update_layout(barmode="group", yaxis=dict(title_text="latency (ms)", rangemode="tozero", tickformat=",.0f"),
                      xaxis=dict(showgrid=False, title_text=None, tickangle=0))
    chart.figure = fig
    return chart


def _target_line(fig: go.Figure, target: float | None, label: str) -> None:
    if target is not None:
        fig.add_hline(y=target, line=dict(color=RED, dash="dot", width=1), annotation_text=label,
                      annotation_position="top left", annotation_font_color=RED)


def quarantine(d: ReportData) -> Chart:
    chart = Chart("quarantine", "Quarantine rate per arrival day (share of landed rows rejected)")
    rows = [r for r in d.health if r["quarantine_rate"] is not None]
    if not rows:
        return chart
    x = _dates(rows, "partition")
    fig = go.Figure(go.Scatter(
        x=x, y=[r["quarantine_rate"] for r in rows], mode="lines+markers",
        line=dict(color=ORANGE), customdata=[r["rows_in"] for r in rows],
        hovertemplate="%{x}<br>%{y:.2%} of %{customdata:,.0f} rows<extra></extra>",
    ))
    target = d.slo_targets.get("quarantine_rate")
    _target_line(fig, target, f"SLO {f.rate(target)}" if target is not None else "")
    fig.update_layout(xaxis=_days_axis(x, d), yaxis=dict(title_text="rows quarantined", rangemode="tozero",
                                                  tickformat=".1%"))
    chart.figure = fig
    return chart


def throughput(d: ReportData) -> Chart:
    chart = Chart("throughput", "Pipeline throughput per step (median rows/s over the window)")
    if not d.throughput:
        return chart
    rows = list(reversed(d.throughput))  # fastest on top
    fig = go.Figure(go.Bar(
        y=[r["asset"] for r in rows], x=[r["rows_per_second"] for r in rows], orientation="h", marker_color=BLUE,
        texttemplate="%{x:,.0f}", textposition="auto", customdata=[r["partitions"] for r in rows],
        hovertemplate="%{y}: %{x:,.0f} rows/s (median of %{customdata} partitions)<extra></extra>",
    ))
    fig.update_layout(xaxis=dict(title_text="rows per second", rangemode="tozero", tickformat=",.0f"),
                      yaxis=dict(showgrid=False, title_text=None), height=max(220, 70 + 26 * len(rows)))
    chart.figure = fig
    return chart


def freshness(d: ReportData) -> Chart:
    chart = Chart("freshness", "Data freshness when cleaned (hours from the newest event to available)")
    rows = [r for r in d.health if r["freshness_hours"] is not None]
    if not rows:
        return chart
    x = _dates(rows, "partition")
    fig = go.Figure(go.Scatter(
        x=x, y=[r["freshness_hours"] for r in rows], mode="lines+markers",
        line=dict(color=PURPLE), hovertemplate="%{x}<br>%{y:,.1f} h<extra></extra>",
    ))
    target = d.slo_targets.get("freshness_hours")
    _target_line(fig, target, f"SLO {f.hours(target)}" if target is not None else "")
    fig.update_layout(xaxis=_days_axis(x, d), yaxis=dict(title_text="hours", rangemode="tozero", tickformat=",.0f"))
    chart.figure = fig
    return chart


def all_charts(d: ReportData) -> list[Chart]:
    return [engagement(d), *funnels(d), retention(d), revenue(d), latency(d), quarantine(d), throughput(d),
            freshness(d)]
