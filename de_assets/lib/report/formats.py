"""Number formats of the report, one per kind of figure, used by the tables and the chart labels alike.

counts `12,345`; rates and shares `12.3%`; changes `+4.5%`; money `1,234.56`; hours `3.2 h`. The
charts use the same formats in their d3 notation (`,.0f`, `.1%`, `,.2f`). An unknown value (None,
NaN) is shown as an en dash, never as an empty cell.
"""

from __future__ import annotations

import html
import math

MISSING = "–"

# the KPIs of marts.kpi_changes by kind (anything else is shown with 4 significant digits)
COUNT_KPIS = {"dau", "wau", "mau", "new_users", "returning_users", "sessions", "events", "orders", "paying_users",
              "requests"}
RATE_KPIS = {"stickiness", "error_rate"}
MONEY_KPIS = {"revenue", "arpu", "arppu"}


def esc(value) -> str:
    return html.escape(str(value))


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def count(v) -> str:
    return MISSING if missing(v) else f"{v:,.0f}"


def rate(v, digits: int = 1) -> str:
    return MISSING if missing(v) else f"{v:.{digits}%}"


def change(v) -> str:
    return MISSING if missing(v) else f"{v:+.1%}"


def money(v) -> str:
    return MISSING if missing(v) else f"{v:,.2f}"


def hours(v) -> str:
    return MISSING if missing(v) else f"{v:,.1f} h"


def number(v) -> str:
    if missing(v):
        return MISSING
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return f"{v:,.0f}"
    return f"{v:,.4g}"


def kpi_kind(kpi: str) -> str:
    if kpi in COUNT_KPIS:
        return "count"
    if kpi in RATE_KPIS:
        return "rate"
    if kpi in MONEY_KPIS:
        return "money"
    return "number"


def kpi_value(kpi: str, v) -> str:
    return {"count": count, "rate": rate, "money": money}.get(kpi_kind(kpi), number)(v)


def p_value(v) -> str:
    if missing(v):
        return MISSING
    return "< 0.001" if v < 0.001 else f"{v:.3f}"
