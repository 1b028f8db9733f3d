"""The insights report: one HTML page per day with interactive plotly charts, fully offline.

`data` reads the warehouse as of the day, `charts` turns it into plotly figures, `tables` and
`page` assemble the HTML; `write_plotly_js` puts the one copy of plotly.js beside the pages.
No Dagster here: the asset `reports/insights` calls `build_pages` for its range of days (one
read of each table for the whole range) and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from de_assets.lib.report import charts as _charts
from de_assets.lib.report.charts import Chart
from de_assets.lib.report.data import DAYS, ReportData, load, load_range
from de_assets.lib.report.page import PLOTLY_JS, chart_count, render, write_plotly_js


@dataclass
class Page:
    day: date
    html: str
    charts: list[Chart]

    @property
    def chart_count(self) -> int:
        return chart_count(self.charts)


def _page(data: ReportData) -> Page:
    charts = _charts.all_charts(data)
    return Page(data.day, render(data, charts), charts)


def build_page(con, day: date, days: int = DAYS) -> Page:
    return _page(load(con, day, days))


def build_pages(con, first: date, last: date, days: int = DAYS, own=None) -> list[Page]:
    """The pages of every day from `first` to `last`; each the same as `build_page` of its day
    (``own``: where the pipeline's KPI and SLO rows are read, default ``con``)."""
    return [_page(data) for data in load_range(con, first, last, days, own)]


def build(con, day: date, days: int = DAYS) -> str:
    """The report page as of `day` (HTML)."""
    return build_page(con, day, days).html


__all__ = ["DAYS", "PLOTLY_JS", "Chart", "Page", "ReportData", "build", "build_page", "build_pages", "load", "load_range",
           "write_plotly_js"]
