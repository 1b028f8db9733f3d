"""The report's tables: headline KPIs with their changes, experiment readouts with verdicts, SLOs.

One number format per kind of value (see `formats`). A column with no value on any row is left out
and a note under the table says which and why, instead of showing an empty column.
"""

from __future__ import annotations

from de_assets.lib import ab_stats
from de_assets.lib.experiment_readout import REVENUE_METRIC, Plan, healthy
from de_assets.lib.report import formats as f

KPI_LABELS = {
    "dau": "Daily active users", "wau": "Weekly active users (7 days)", "mau": "Monthly active users (30 days)",
    "stickiness": "Stickiness (DAU / MAU)", "new_users": "New users", "returning_users": "Returning users",
    "sessions": "Sessions", "events": "Events", "orders": "Orders", "revenue": "Revenue", "paying_users": "Paying users",
    "arpu": "Revenue per active user", "arppu": "Revenue per paying user", "requests": "Requests",
    "error_rate": "Error rate (5xx)",
}
# optional KPI columns: (column, heading, why it can be empty)
KPI_OPTIONAL = [
    ("dod", "vs day before", "no value the day before"),
    ("wow", "vs week before", "no value 7 days before"),
    ("mom", "vs month before", "no value a month before"),
    ("yoy", "vs year before", "no value a year before"),
    ("expected", "expected", "the anomaly detector needs more history (at least 10 earlier days) to expect a value"),
    ("score", "anomaly score", "the anomaly detector needs more history (at least 10 earlier days) to score"),
]


def html_table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), classes=None) -> str:
    """Cells are already formatted and escaped; `numeric` columns are right-aligned."""
    th = "".join(f'<th{" class=num" if i in numeric else ""}>{h}</th>' for i, h in enumerate(head))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{classes[n]}"' if classes and classes[n] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>'
                                             for i, c in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kpis(rows: list[dict]) -> str:
    if not rows:
        return '<p class="empty">No KPIs for this day yet.</p>'
    shown = [c for c in KPI_OPTIONAL if any(not f.missing(r[c[0]]) for r in rows)]
    hidden = [c for c in KPI_OPTIONAL if c not in shown]
    head = ["KPI", "value", *(h for _, h, _ in shown)]
    order = list(KPI_LABELS)
    rows = sorted(rows, key=lambda r: (order.index(r["kpi"]) if r["kpi"] in order else len(order), r["kpi"]))
    body = []
    for r in rows:
        name = f.esc(KPI_LABELS.get(r["kpi"], r["kpi"]))
        cells = [f'{name} <span class="flag">anomaly</span>' if r["is_anomaly"] else name, f.kpi_value(r["kpi"], r["value"])]
        for column, _, _ in shown:
            if column == "expected":
                cells.append(f.kpi_value(r["kpi"], r[column]))
            elif column == "score":
                cells.append(f.MISSING if f.missing(r[column]) else f"{r[column]:+.1f}")
            else:
                cells.append(f.change(r[column]))
        body.append(cells)
    notes = "".join(f"<li>{f.esc(h)}: not shown, {f.esc(why)}.</li>" for _, h, why in hidden)
    legend = ('<p class="note">Changes are relative (+10.0% = ten percent more than the base day); – where '
              "the base is missing or zero. Anomaly: |score| above 3.5 robust deviations from the expected value.</p>")
    return (html_table(head, body, numeric=set(range(1, len(head))),
                       classes=["anomaly" if r["is_anomaly"] else "" for r in rows])
            + legend + (f'<ul class="note">{notes}</ul>' if notes else ""))


def _lift(metric: str, v, sign: bool = True) -> str:
    if f.missing(v):
        return f.MISSING
    if metric == REVENUE_METRIC:
        return f"{v:+,.2f}" if sign else f"{v:,.2f}"
    return f"{100 * v:+.2f} pp" if sign else f"{100 * v:.2f} pp"


def verdicts(rows: list[dict]) -> tuple[dict[tuple[str, str], str], list[str]]:
    """The plain-language verdict per (metric, variant) of one experiment, and its failed health checks.

    Same rules as the readout in the Dagster UI (`experiment_readout.markdown`): no verdict when the
    sample ratio or the crossover share fails; otherwise `ab_stats.verdict` on each comparison.
    """
    metrics = {r["metric"]: r["metric"] for r in rows if r["metric"] != REVENUE_METRIC}
    plan = Plan(metrics=metrics, alpha=rows[0]["alpha"])
    ok, problems = healthy(rows, plan)
    control = next((r["variant_id"] for r in rows if r["is_control"]), None)
    out = {}
    for r in rows:
        key = (r["metric"], r["variant_id"])
        if r["is_control"]:
            out[key] = "control"
        elif not ok:
            out[key] = "no verdict: health check failed"
        elif f.missing(r["p_value"]):
            out[key] = "not enough users to compare yet"
        else:
            c = ab_stats.Comparison(r["abs_lift"], r["rel_lift"], r["ci_low"], r["ci_high"], r["p_value"], r["method"])
            out[key] = ab_stats.verdict(r["metric"].replace("_", " "), r["variant_id"], control, c, plan.alpha,
                                     r["metric"] != REVENUE_METRIC)
    return out, problems


def experiments(rows: list[dict]) -> str:
    if not rows:
        return '<p class="empty">No experiment exposures in the lookback window.</p>'
    parts = []
    for experiment in dict.fromkeys(r["experiment_id"] for r in rows):
        mine = [r for r in rows if r["experiment_id"] == experiment]
        verdict, problems = verdicts(mine)
        first = mine[0]
        health = (f"SRM p = {f.p_value(first['srm_p_value'])}, {f.count(first['crossover_users'])} crossover users "
                  "excluded" + ("" if not problems else " — <strong>failed: " + f.esc("; ".join(problems)) + "</strong>"))
        head = ["metric", "variant", "users", "conversions", "rate", "lift", "relative", "CI of the lift", "p", "verdict"]
        body = []
        for r in mine:
            revenue = r["metric"] == REVENUE_METRIC
            ci = (f.MISSING if f.missing(r["ci_low"])
                  else f"[{_lift(r['metric'], r['ci_low'], False)}, {_lift(r['metric'], r['ci_high'], False)}]")
            body.append([f.esc(r["metric"]), f.esc(r["variant_id"]), f.count(r["users"]), f.count(r["conversions"]),
                         f.money(r["rate"]) if revenue else f.rate(r["rate"], 2),
                         _lift(r["metric"], r["abs_lift"]), f.change(r["rel_lift"]), ci, f.p_value(r["p_value"]),
                         f.esc(verdict[(r["metric"], r["variant_id"])])])
        parts.append(f'<h3>{f.esc(experiment)}</h3><p class="note">alpha {first["alpha"]:g}, attribution window '
                     f'{first["window_days"]} days{", CUPED" if first["cuped"] else ""}; {health}. Rates in %, lifts '
                     f'in percentage points (revenue per user: in currency units).</p>'
                     + html_table(head, body, numeric={2, 3, 4, 5, 6, 7, 8}))
    return "".join(parts)


def _slo_value(slo: str, v) -> str:
    return f.hours(v) if slo.endswith("hours") else f.rate(v, 2)


def slos(rows: list[dict]) -> str:
    if not rows:
        return '<p class="empty">No SLO evaluated for this day yet.</p>'
    head = ["SLO", "target", "actual", "status", "breaches in 28 days", "error budget used"]
    body = [[f.esc(r["slo"]), f"{f.esc(r['comparison'])} {_slo_value(r['slo'], r['target'])}",
             _slo_value(r["slo"], r["actual"]), f.esc(str(r["status"]).replace("_", " ")),
             f.count(r["breached_days_28d"]), f.rate(r["budget_burn"], 0)] for r in rows]
    return html_table(head, body, numeric={2, 4, 5},
                      classes=["breached" if r["status"] == "breached" else "" for r in rows])
