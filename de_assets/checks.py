"""Asset checks: the data-quality rules of `lib/quality.py` as blocking Dagster checks.

The rules run inside the step that writes a table, on exactly the partition range it wrote, so a
check never loads other partitions and a failure skips everything downstream.
"""

from datetime import date

import dagster as dg

from de_assets.lib.quality import RULES
from de_assets.lib.tables import Table


def check_specs(asset_key: dg.AssetKey, table: Table) -> list[dg.AssetCheckSpec]:
    """One blocking check spec per rule of the table."""
    return [
        dg.AssetCheckSpec(rule.__name__, asset=asset_key, blocking=True, description=(rule.__doc__ or "").strip())
        for rule in RULES.get(table.name, [])
    ]


def check_results(con, asset_key: dg.AssetKey, table: Table, start: date, end: date) -> list[dg.AssetCheckResult]:
    """Evaluate the table's rules on [start, end]."""
    results = []
    for rule in RULES.get(table.name, []):
        passed, metadata = rule(con, table, start, end)
        results.append(
            dg.AssetCheckResult(check_name=rule.__name__, asset_key=asset_key, passed=bool(passed), metadata=metadata)
        )
    return results
