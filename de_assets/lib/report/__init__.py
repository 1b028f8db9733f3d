"""The insights report: one HTML page per day with interactive plotly charts, fully offline.

`data` reads the warehouse as of the day, `charts` turns it into plotly figures, `tables` and
`page` assemble the HTML; `write_plotly_js` puts the one copy of plotly.js beside the pages.
No Dagster here: the asset `reports/insights` calls `build` per day and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from de_assets.lib.report import charts as _charts
from de_assets.lib.report.charts import Chart
from de_assets.lib.report.data import ReportData, load
from de_assets.lib.report.page import PLOTLY_JS, chart_count, render, write_plotly_js


@dataclass
class Page:
    day: date
    html: str
    charts: list[Chart]

    @property
    def chart_count(self) -> int:
        return chart_count(self.charts)


def build_page(con, day: date, days: int = 90) -> Page:
    data = load(con, day, days)
    charts = _charts.all_charts(data)
    return Page(day, render(data, charts), charts)


def build(con, day: date, days: int = 90) -> str:
    """The report page as of `day` (HTML)."""
    return build_page(con, day, days).html


__all__ = ["PLOTLY_JS", "Chart", "Page", "ReportData", "build", "build_page", "load", "write_plotly_js"]
