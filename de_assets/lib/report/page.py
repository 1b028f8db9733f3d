"""One HTML page per day, and the one copy of plotly.js that every page of the folder loads.

The page has no external reference: its only script is `plotly.min.js` from the same folder
(`write_plotly_js`), so it opens offline. Opened without that file, the page still shows the
tables and says what is missing where the charts would be.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from de_assets.lib.report import tables
from de_assets.lib.report.charts import Chart
from de_assets.lib.report.data import ReportData

PLOTLY_JS = "plotly.min.js"

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px auto; color: #111827;
       max-width: 1500px; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 28px; } h3 { margin-bottom: 4px; }
.sub { color: #4b5563; margin-top: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(620px, 1fr)); gap: 16px; }
figure.chart { margin: 0; padding: 10px; border: 1px solid #e5e7eb; border-radius: 6px; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 6px; }
.note { color: #4b5563; font-size: 12px; margin: 6px 0 0; }
ul.note { padding-left: 18px; }
.empty { color: #6b7280; font-style: italic; padding: 24px 0; text-align: center; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
td, th { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f9fafb; }
.num { text-align: right; white-space: nowrap; }
tr.anomaly td, tr.breached td { background: #fef2f2; }
.flag { color: #b91c1c; font-size: 11px; font-weight: 600; border: 1px solid #fecaca; border-radius: 3px;
        padding: 0 4px; margin-left: 4px; }
#no-plotly { display: none; background: #fffbeb; border: 1px solid #fcd34d; padding: 8px 12px; border-radius: 6px; }
"""

# Runs before the charts: without plotly.js, say so and give the charts a no-op so nothing throws.
GUARD = """<script>
if (!window.Plotly) {
  document.getElementById("no-plotly").style.display = "block";
  window.Plotly = { newPlot: function () {} };
}
</script>"""


def render(data: ReportData, charts: list[Chart]) -> str:
    day: date = data.day
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Insights {day}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="{PLOTLY_JS}" charset="utf-8"></script>
<style>{STYLE}</style></head>
<body>
<h1>Insights report, {day}</h1>
<p class="sub">What the warehouse knew at the end of {day} (UTC); nothing after that day is shown.
Daily charts cover the trailing {(day - data.start).days + 1} days, {data.start} to {day}. Hover a chart for exact values.</p>
<p id="no-plotly">The charts need <code>{PLOTLY_JS}</code> in the same folder as this page (the report asset writes
it there); copy the folder, not just this file. The tables below do not need it.</p>
{GUARD}
<h2>Headline KPIs on {day}</h2>{tables.kpis(data.kpis)}
<h2>Charts</h2>
<div class="grid">{"".join(c.html() for c in charts)}</div>
<h2>Experiments as of {day}</h2>{tables.experiments(data.experiments)}
<h2>Pipeline SLOs for {day}</h2>{tables.slos(data.slos)}
</body></html>
"""


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def write_plotly_js(folder: Path) -> bool:
    """Write `plotly.min.js` into `folder` unless the same file is already there; True when written.

    Written to a temporary name and renamed, so a page opened meanwhile never loads half a file.
    """
    target = folder / PLOTLY_JS
    script = plotly_js().encode("utf-8")
    if target.exists() and target.stat().st_size == len(script) and target.read_bytes() == script:
        return False
    partial = folder / f".{PLOTLY_JS}.{os.getpid()}.tmp"
    partial.write_bytes(script)
    partial.replace(target)
    return True


def chart_count(charts: list[Chart]) -> int:
    """Charts that have something to draw."""
    return sum(c.figure is not None for c in charts)

