"""Read the served tables: the latest committed snapshot, or a past one, while runs write.

    from de_assets.lake import connect
    con = connect()                                    # every served table as `schema.table`
    con.sql("FROM marts.daily_engagement ORDER BY event_date").df()
    connect(as_of="2026-11-20T06:00:00")               # as of a past moment (UTC), or a snapshot id

The same from a shell: ``de-assets sql "SELECT ..." [--format table|csv|json] [--as-of ...]``.
Readers never open the pipeline's DuckDB file: they read the lake's Iceberg snapshots (see
`de_assets/lib/served.py`), so they never wait for a run and never block one. Where the lake is:
`DE_ASSETS_CATALOG_URI` and `DE_ASSETS_LAKE`, by default `catalog.db` and `lake/` beside the
warehouse file (`DE_ASSETS_DUCKDB`, default `data/warehouse.duckdb`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import date, datetime

import duckdb

from de_assets.lib import paths, served


def catalog(database: str | None = None):
    """The lake's catalog, configured like the pipeline's (environment variables above; ``database``:
    the warehouse file it sits beside, when not the configured one)."""
    return served.open_lake(database or paths.database(),
                            os.getenv("DE_ASSETS_CATALOG_URI"), os.getenv("DE_ASSETS_LAKE"), create=False)


def connect(as_of: int | str | datetime | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every served table as a view over its snapshot."""
    return served.connect(catalog(), as_of)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """Rows as an aligned text table, CSV (header first) or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, row)) for row in rows], default=_text, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [columns] + [["NULL" if v is None else _text(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def query(sql: str, fmt: str = "table", as_of: int | str | datetime | None = None) -> str:
    """Run one query on the served tables and render its result."""
    con = connect(as_of)
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        return render(columns, result.fetchall(), fmt)
    finally:
        con.close()
