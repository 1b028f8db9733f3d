"""Asset checks: each table's rules (`Table.checks`, blocking, from `lib/quality.py`; `Table.warnings`,
from `lib/drift.py`; declared with the table in `lib/tables/`) as Dagster checks.

The rules run inside the step that writes a table, on exactly the partitions it wrote (plus a
bounded trailing baseline for the warnings), so a check never loads every partition. A failing
blocking check fails the run, skips everything downstream and raises an alert; a failing warning
is shown on the asset and changes nothing else.

Every check is partitioned like its asset (`AssetCheckSpec(partitions_def=daily)`) and evaluated
per day: a range run records one evaluation per partition (computed by one grouped query per rule
over the range, `rule.by_day`), each with its own result and
figures, so the UI shows the partition of every evaluation and a bad day is not hidden in (nor
blamed on) the rest of its range. Dagster fills the partition of an `AssetCheckResult` only for
single-partition runs, so the steps yield `AssetCheckEvaluation`s with the partition set
(`bookkeeping.check_events`).
"""

import warnings
from datetime import date

import dagster as dg

from de_assets.lib.alerts import Alert
from de_assets.lib.days import days_between, short_label
from de_assets.lib.tables import Table
from de_assets.partitions import daily


def _doc(rule) -> str:
    return (rule.__doc__ or "").strip()


def spec(name: str, asset, *, blocking: bool, description: str) -> dg.AssetCheckSpec:
    """A check evaluated per daily partition (Dagster 1.13 flags partitioned checks as a preview)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description, partitions_def=daily)


def check_specs(asset_key: dg.AssetKey, table: Table) -> list[dg.AssetCheckSpec]:
    """One blocking check spec per rule in `table.checks` and one warning spec per rule in `table.warnings`."""
    return [
        spec(rule.__name__, asset_key, blocking=True, description=_doc(rule))
        for rule in table.checks
    ] + [
        spec(rule.__name__, asset_key, blocking=False, description=f"Warning. {_doc(rule)}")
        for rule in table.warnings
    ]


def evaluation(
    asset_key: dg.AssetKey, name: str, day: date, passed: bool, metadata: dict, *, blocking: bool,
    severity: dg.AssetCheckSeverity | None = None, description: str | None = None,
) -> dg.AssetCheckEvaluation:
    """The result of check `name` on partition `day` (severity: ERROR for blocking checks, else WARN)."""
    if severity is None:
        severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=name, passed=bool(passed), metadata=metadata, severity=severity,
        blocking=blocking, partition=str(day), description=description,
    )


def check_results(con, asset_key: dg.AssetKey, table: Table, start: date, end: date) -> list[dg.AssetCheckEvaluation]:
    """Evaluate the table's rules and warnings on every day of [start, end], one evaluation per day.
    A rule with a grouped form (`rule.by_day`) is evaluated once over the range, giving each day what
    `rule(con, table, day, day)` gives; any other rule is called once per day."""
    results = []
    days = days_between(start, end)
    for rules, blocking in ((table.checks, True), (table.warnings, False)):
        for rule in rules:
            by_day = getattr(rule, "by_day", None)
            outcomes = by_day(con, table, start, end) if by_day else {day: rule(con, table, day, day) for day in days}
            for day in days:
                passed, metadata = outcomes[day]
                results.append(evaluation(asset_key, rule.__name__, day, passed, metadata, blocking=blocking))
    return results


# The cleaning's quality gate: a day above the quarantine rate is held back by the cleaning itself (its
# staged clean rows are the ones served before, its evidence is in quarantine and duplicates), so its
# failure blocks the steps downstream but not the publishing of that evidence.
HOLD_BACK_GATE = "quarantine_rate_within_threshold"


def blocked_days(results: list[dg.AssetCheckEvaluation]) -> set[date]:
    """The partitions (days) on which a blocking (ERROR) check other than the hold-back gate failed:
    the days whose rows must not be published."""
    return {date.fromisoformat(str(r.partition)[:10]) for r in results
            if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR and r.blocking
            and r.check_name != HOLD_BACK_GATE}


def failure_alerts(results: list[dg.AssetCheckEvaluation], run_id: str) -> list[Alert]:
    """An alert per failed blocking (ERROR) check and run, naming the days it failed on; its
    partition is the first..last failed day (one day: that day)."""
    failed: dict[tuple[dg.AssetKey, str], list[dg.AssetCheckEvaluation]] = {}
    for r in results:
        if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR and r.blocking:
            failed.setdefault((r.asset_key, r.check_name), []).append(r)
    alerts = []
    for (asset_key, name), evaluations in failed.items():
        days = sorted(str(e.partition) for e in evaluations)
        first = min(evaluations, key=lambda e: str(e.partition))
        asset, span = asset_key.to_user_string(), short_label(days[0], days[-1])
        alerts.append(Alert(
            severity="error",
            kind="check_failed",
            asset=asset,
            partition=span,
            message=f"blocking check {name} failed on {asset} {span}"
            + (f" ({len(days)} days: {', '.join(days)}; figures of {first.partition})" if len(days) > 1 else "")
            + ": " + ", ".join(f"{k}={v.value}" for k, v in first.metadata.items()),
            run_id=run_id,
            discriminator=name,
        ))
    return alerts
