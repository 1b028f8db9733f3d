"""Asset checks: the rules of `lib/quality.py` (blocking) and `lib/drift.py` (warnings) as Dagster checks.

The rules run inside the step that writes a table, on exactly the partition range it wrote (plus a
bounded trailing baseline for the warnings), so a check never loads every partition. A failing
blocking check fails the run, skips everything downstream and raises an alert; a failing warning
is shown on the asset and changes nothing else.
"""

from datetime import date

import dagster as dg

from de_assets.lib.alerts import Alert
from de_assets.lib.drift import WARNINGS
from de_assets.lib.quality import RULES
from de_assets.lib.tables import Table


def _doc(rule) -> str:
    return (rule.__doc__ or "").strip()


def check_specs(asset_key: dg.AssetKey, table: Table) -> list[dg.AssetCheckSpec]:
    """One blocking check spec per quality rule of the table and one warning spec per drift rule."""
    return [
        dg.AssetCheckSpec(rule.__name__, asset=asset_key, blocking=True, description=_doc(rule))
        for rule in RULES.get(table.name, [])
    ] + [
        dg.AssetCheckSpec(rule.__name__, asset=asset_key, blocking=False, description=f"Warning. {_doc(rule)}")
        for rule in WARNINGS.get(table.name, [])
    ]


def check_results(con, asset_key: dg.AssetKey, table: Table, start: date, end: date) -> list[dg.AssetCheckResult]:
    """Evaluate the table's rules and warnings on [start, end]."""
    results = []
    for rules, severity in ((RULES, dg.AssetCheckSeverity.ERROR), (WARNINGS, dg.AssetCheckSeverity.WARN)):
        for rule in rules.get(table.name, []):
            passed, metadata = rule(con, table, start, end)
            results.append(dg.AssetCheckResult(
                check_name=rule.__name__, asset_key=asset_key, passed=bool(passed), metadata=metadata,
                severity=severity,
            ))
    return results


def failure_alerts(results: list[dg.AssetCheckResult], partition: str, run_id: str) -> list[Alert]:
    """An alert for every failed blocking (ERROR) check."""
    return [
        Alert(
            severity="error",
            kind="check_failed",
            asset=r.asset_key.to_user_string(),
            partition=partition,
            message=f"blocking check {r.check_name} failed on {r.asset_key.to_user_string()} {partition}: "
            + ", ".join(f"{k}={v.value}" for k, v in r.metadata.items()),
            run_id=run_id,
            discriminator=r.check_name,
        )
        for r in results
        if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR
    ]
