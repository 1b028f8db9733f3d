"""Where things live by default (relative to the working directory) and the variable that moves each.

| default | variable |
|---|---|
| `data/warehouse.duckdb` | `DE_ASSETS_DUCKDB` |
| `data/landing` | `DE_ASSETS_LANDING` |
| `data/reports` | `DE_ASSETS_REPORTS` |
| `data/dagster_home` | `DAGSTER_HOME` |
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE = "data/warehouse.duckdb"
LANDING = "data/landing"
REPORTS = "data/reports"
DAGSTER_HOME = Path("data/dagster_home")


def database() -> str:
    """The warehouse file: `$DE_ASSETS_DUCKDB`, else `DATABASE`."""
    return os.getenv("DE_ASSETS_DUCKDB", DATABASE)


def landing() -> str:
    """The landing root: `$DE_ASSETS_LANDING`, else `LANDING`."""
    return os.getenv("DE_ASSETS_LANDING", LANDING)


def reports() -> str:
    """Where the report pages go: `$DE_ASSETS_REPORTS`, else `REPORTS`."""
    return os.getenv("DE_ASSETS_REPORTS", REPORTS)
