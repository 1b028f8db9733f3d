"""The insights report: one self-contained HTML page per day, charts drawn as inline SVG.

No JavaScript, no CDN, no fonts to fetch: the file opens offline in any browser. Every chart is a
`<figure class="chart" data-chart="...">` holding one `<svg>`; an empty table gives a figure that
says "no data yet" instead of a blank box.
"""

from __future__ import annotations

import html
from datetime import date, timedelta

from de_assets.lib.health import LATEST_KPIS

PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2")
W, H, PAD = 640, 220, 36


def _esc(value) -> str:
    return html.escape(str(value))


def _empty(title: str, name: str) -> str:
    return (f'<figure class="chart" data-chart="{name}"><figcaption>{_esc(title)}</figcaption>'
            f'<svg viewBox="0 0 {W} 60" role="img"><text x="10" y="35">no data yet</text></svg></figure>')


def _scale(values: list[float]) -> tuple[float, float]:
    lo, hi = min(0.0, min(values)), max(values)
    return lo, (hi if hi > lo else lo + 1)


def line_chart(name: str, title: str, x: list[str], series: dict[str, list[float | None]], marks=None) -> str:
    """Lines over a shared x axis; `marks` = {series: [index, ...]} are drawn as red dots (anomalies)."""
    values = [v for ys in series.values() for v in ys if v is not None]
    if not x or not values:
        return _empty(title, name)
    lo, hi = _scale(values)
    step = (W - 2 * PAD) / max(len(x) - 1, 1)

    def pt(i, v):
        return PAD + i * step, H - PAD - (v - lo) / (hi - lo) * (H - 2 * PAD)

    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<text x="4" y="{PAD}" font-size="10">{hi:,.4g}</text>',
             f'<text x="{PAD}" y="{H - 8}" font-size="10">{_esc(x[0])}</text>',
             f'<text x="{W - PAD}" y="{H - 8}" font-size="10" text-anchor="end">{_esc(x[-1])}</text>']
    for k, (label, ys) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in (pt(i, v) for i, v in enumerate(ys) if v is not None))
        parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{W - PAD + 4}" y="{PAD + 14 * k}" font-size="11" fill="{color}">{_esc(label)}</text>')
        for i in (marks or {}).get(label, []):
            if ys[i] is not None:
                a, b = pt(i, ys[i])
                parts.append(f'<circle class="anomaly" cx="{a:.1f}" cy="{b:.1f}" r="5" fill="none" stroke="#dc2626" '
                             f'stroke-width="2"><title>anomaly: {_esc(label)} on {_esc(x[i])}</title></circle>')
    return (f'<figure class="chart" data-chart="{name}"><figcaption>{_esc(title)}</figcaption>'
            f'<svg viewBox="0 0 {W + 90} {H}" role="img">{"".join(parts)}</svg></figure>')


def bar_chart(name: str, title: str, labels: list[str], groups: dict[str, list[float]], fmt="{:,.4g}") -> str:
    """Vertical bars, one group per label, one bar per series in `groups`."""
    values = [v for vs in groups.values() for v in vs if v is not None]
    if not labels or not values:
        return _empty(title, name)
    lo, hi = _scale(values)
    slot = (W - 2 * PAD) / len(labels)
    width = slot * 0.8 / len(groups)
    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>']
    for i, label in enumerate(labels):
        parts.append(f'<text x="{PAD + slot * (i + 0.5):.1f}" y="{H - 20}" font-size="10" text-anchor="middle">'
                     f'{_esc(label)[:18]}</text>')
        for k, (series, vs) in enumerate(groups.items()):
            v = vs[i] or 0.0
            height = (v - lo) / (hi - lo) * (H - 2 * PAD)
            xpos = PAD + slot * i + slot * 0.1 + k * width
            parts.append(f'<rect class="bar" x="{xpos:.1f}" y="{H - PAD - height:.1f}" width="{width:.1f}" '
                         f'height="{height:.1f}" fill="{PALETTE[k % len(PALETTE)]}"><title>{_esc(series)} '
                         f'{_esc(label)}: {fmt.format(v)}</title></rect>')
    legend = "".join(f'<text x="{W - PAD + 4}" y="{PAD + 14 * k}" font-size="11" fill="{PALETTE[k % len(PALETTE)]}">'
                     f'{_esc(s)}</text>' for k, s in enumerate(groups))
    return (f'<figure class="chart" data-chart="{name}"><figcaption>{_esc(title)}</figcaption>'
            f'<svg viewBox="0 0 {W + 90} {H}" role="img">{"".join(parts)}{legend}</svg></figure>')


def heatmap(name: str, title: str, rows: list[str], cols: list[str], cells: dict[tuple[str, str], float]) -> str:
    """Rows x columns of shaded cells (0..1), e.g. cohort week x weeks since, retention rate."""
    if not rows or not cols:
        return _empty(title, name)
    cw, ch, left = min(60, (W - 120) / len(cols)), 22, 100
    parts = []
    for j, col in enumerate(cols):
        parts.append(f'<text x="{left + j * cw + cw / 2:.1f}" y="14" font-size="10" text-anchor="middle">{_esc(col)}</text>')
    for i, row in enumerate(rows):
        parts.append(f'<text x="4" y="{34 + i * ch:.1f}" font-size="10">{_esc(row)}</text>')
        for j, col in enumerate(cols):
            v = cells.get((row, col))
            if v is None:
                continue
            shade = int(235 - 200 * max(0.0, min(1.0, v)))
            parts.append(f'<rect class="cell" x="{left + j * cw:.1f}" y="{20 + i * ch:.1f}" width="{cw - 2:.1f}" '
                         f'height="{ch - 2}" fill="rgb({shade},{shade + 10 if shade < 245 else 255},255)">'
                         f'<title>{_esc(row)} +{_esc(col)}w: {v:.1%}</title></rect>')
            parts.append(f'<text x="{left + j * cw + cw / 2:.1f}" y="{34 + i * ch:.1f}" font-size="9" '
                         f'text-anchor="middle">{v:.0%}</text>')
    height = 30 + len(rows) * ch
    return (f'<figure class="chart" data-chart="{name}"><figcaption>{_esc(title)}</figcaption>'
            f'<svg viewBox="0 0 {W} {height}" role="img">{"".join(parts)}</svg></figure>')


def table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None or v != v:  # None or NaN
        return ""
    if isinstance(v, float):
        return f"{v:,.4g}"
    return _esc(v)


def _query(con, sql: str, params=()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def build(con, day: date, days: int = 90) -> str:
    """The report as of `day`: trailing `days` of daily series, the day's funnel, latency and KPIs."""
    start = day - timedelta(days=days - 1)
    span = (start, day)
    eng = _query(con, "SELECT event_date, dau, wau, mau FROM marts.daily_engagement "
                      "WHERE event_date BETWEEN ? AND ? ORDER BY 1", span)
    x = [str(r["event_date"]) for r in eng]
    anomalies = _query(con, "SELECT event_date, kpi FROM marts.kpi_anomalies WHERE is_anomaly AND kpi IN "
                            "('dau', 'wau', 'mau') AND event_date BETWEEN ? AND ?", span)
    marks: dict[str, list[int]] = {}
    for a in anomalies:
        if str(a["event_date"]) in x:
            marks.setdefault(a["kpi"].upper(), []).append(x.index(str(a["event_date"])))
    charts = [line_chart("engagement", "Daily, weekly and monthly active users (anomalies circled)", x,
                         {"DAU": [r["dau"] for r in eng], "WAU": [r["wau"] for r in eng], "MAU": [r["mau"] for r in eng]},
                         marks)]

    funnel = _query(con, "SELECT funnel, step_order, step, users FROM marts.funnel_daily WHERE event_date = ? "
                         "ORDER BY funnel, step_order", (day,))
    charts.append(bar_chart("funnel", f"Funnel on {day} (users per step)",
                            [f"{r['step_order']}. {r['step']}" for r in funnel], {"users": [r["users"] for r in funnel]}))

    cohorts = _query(con, "SELECT cohort_week, weeks_since, retention_rate FROM marts.retention_cohorts "
                          "WHERE cohort_week >= ? ORDER BY 1, 2", (day - timedelta(weeks=12),))
    rows = sorted({str(r["cohort_week"]) for r in cohorts})
    cols = [str(k) for k in sorted({r["weeks_since"] for r in cohorts})]
    charts.append(heatmap("retention", "Weekly retention (cohort week x weeks since first event)", rows, cols,
                          {(str(r["cohort_week"]), str(r["weeks_since"])): r["retention_rate"] for r in cohorts}))

    revenue = _query(con, "SELECT event_date, revenue, orders FROM marts.revenue_daily WHERE event_date BETWEEN ? AND ? "
                          "ORDER BY 1", span)
    charts.append(line_chart("revenue", "Revenue per day", [str(r["event_date"]) for r in revenue],
                             {"revenue": [r["revenue"] for r in revenue]}))

    latency = _query(con, "SELECT service, p50_ms, p90_ms, p99_ms, error_rate FROM marts.service_latency "
                          "WHERE event_date = ? ORDER BY service", (day,))
    charts.append(bar_chart("latency", f"Latency per service on {day} (ms)", [r["service"] for r in latency],
                            {q: [r[f"{q}_ms"] for r in latency] for q in ("p50", "p90", "p99")}))

    health = _query(con, f"""SELECT partition, sum(rows_quarantined) / nullif(sum(rows_in), 0) AS quarantine_rate,
                                    max(freshness_seconds) / 3600 AS freshness_hours
                             FROM ({LATEST_KPIS}) WHERE asset LIKE 'clean/%' AND partition BETWEEN ? AND ?
                             GROUP BY 1 ORDER BY 1""", span)
    charts.append(line_chart("quarantine", "Quarantine rate per arrival day", [str(r["partition"]) for r in health],
                             {"quarantine rate": [r["quarantine_rate"] for r in health]}))
    throughput = _query(con, f"""SELECT asset, median(rows_per_second) AS rows_per_second FROM ({LATEST_KPIS})
                                 WHERE partition BETWEEN ? AND ? AND rows_in > 0 GROUP BY 1 ORDER BY 1""", span)
    charts.append(bar_chart("throughput", "Pipeline throughput per step (median rows/s)",
                            [r["asset"].split("/")[-1] for r in throughput],
                            {"rows/s": [r["rows_per_second"] for r in throughput]}))
    charts.append(line_chart("freshness", "Data freshness when cleaned (hours from newest event)",
                             [str(r["partition"]) for r in health],
                             {"freshness h": [r["freshness_hours"] for r in health]}))

    kpis = _query(con, """SELECT c.kpi, c.value, c.dod, c.wow, a.expected, a.score, a.is_anomaly
                          FROM marts.kpi_changes c LEFT JOIN marts.kpi_anomalies a USING (event_date, kpi)
                          WHERE c.event_date = ? ORDER BY c.kpi""", (day,))
    for r in kpis:
        r["kpi"] = ("⚠ " if r["is_anomaly"] else "") + r["kpi"]
    experiments = _query(con, """SELECT experiment_id, metric, variant_id, users, conversions, rate, abs_lift, ci_low,
                                        ci_high, p_value, srm_p_value FROM marts.experiment_results
                                 WHERE as_of_date = ? ORDER BY experiment_id, metric, NOT is_control, variant_id""", (day,))
    slos = _query(con, "SELECT slo, target, comparison, actual, status, budget_burn FROM pipeline_health.slo_status "
                       "WHERE partition = ? ORDER BY slo", (day,))
    return _page(day, charts, kpis, experiments, slos)


def _page(day: date, charts: list[str], kpis: list[dict], experiments: list[dict], slos: list[dict]) -> str:
    experiment_section = (
        table(experiments, ["experiment_id", "metric", "variant_id", "users", "conversions", "rate", "abs_lift",
                            "ci_low", "ci_high", "p_value", "srm_p_value"])
        if experiments else "<p>No experiment exposures in the lookback window.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Insights {day}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #111; max-width: 1500px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 16px; }}
figure.chart {{ margin: 0; padding: 8px; border: 1px solid #e5e7eb; border-radius: 6px; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #e5e7eb; padding: 3px 8px; }}
</style></head>
<body>
<h1>Insights report, {day}</h1>
<p>Served tables of de_assets as of the end of {day} (UTC). Charts: trailing 90 days.</p>
<div class="grid">{"".join(charts)}</div>
<h2>Headline KPIs and changes</h2>{table(kpis, ["kpi", "value", "dod", "wow", "expected", "score"])}
<h2>Experiments</h2>{experiment_section}
<h2>Pipeline SLOs</h2>{table(slos, ["slo", "comparison", "target", "actual", "status", "budget_burn"])}
</body></html>
"""
