"""A warehouse table as data: `Column`, `Table` (name, columns, partition column, grain, the rules
its asset checks run) and the helpers the per-layer modules build their tables with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from de_assets.lib.days import days_between


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


# A data-quality rule: `rule(con, table, start, end) -> (passed, metadata)` over the partitions of the
# days [start, end]; its `__name__` is the check's name and its `__doc__` the check's description.
# A rule may also carry a grouped form, `rule.by_day(con, table, start, end) -> {day: (passed, metadata)}`:
# for every day of [start, end] exactly what `rule(con, table, day, day)` gives, computed in one pass
# over the range (`de_assets/checks.py` uses it when present; `lib/quality.py`, `lib/drift.py`).
Rule = Callable[[Any, "Table", date, date], tuple[bool, dict]]


@dataclass(frozen=True)
class Table:
    name: str  # schema-qualified, e.g. "clean.events"
    columns: tuple[Column, ...]
    partition_column: str | None = None
    key: tuple[str, ...] = ()  # the grain: columns that identify a row
    # Blocking rules (`lib/quality.py`): a failure fails the step that wrote the table and skips
    # everything downstream. Warning rules (`lib/drift.py`): a failure is shown, nothing else.
    # Both become asset checks of the table's asset (`de_assets/checks.py`), in this order.
    checks: tuple[Rule, ...] = field(default=(), compare=False, repr=False)
    warnings: tuple[Rule, ...] = field(default=(), compare=False, repr=False)

    @property
    def schema(self) -> str:
        return self.name.split(".")[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def weekly(self) -> bool:
        """Partitioned by week (`activity_week`, a Monday): a day's run rewrites the week holding it."""
        return self.partition_column == "activity_week"

    def partition_values(self, start: date, end: date) -> list[date]:
        """The partition values a run over the days [start, end] writes: those days, or for a weekly
        table the Monday of every week they touch."""
        if self.weekly:
            start, end = start - timedelta(days=start.weekday()), end - timedelta(days=end.weekday())
            step = 7
        else:
            step = 1
        return days_between(start, end)[::step]

    def range_predicate(self, start: str = "$start", end: str = "$end") -> str:
        """SQL: the rows of the partitions a run over the days [start, end] writes (SQL expressions
        or parameters, e.g. `$start` or `?`)."""
        if self.weekly:
            return (f"{self.partition_column} BETWEEN date_trunc('week', {start}::DATE) "
                    f"AND date_trunc('week', {end}::DATE)")
        return f"{self.partition_column} BETWEEN {start} AND {end}"

    def partition_value(self, day: date) -> date:
        """The partition value the day `day` belongs to: the day, or for a weekly table its Monday
        (what `partition_of_day` computes in SQL)."""
        return day - timedelta(days=day.weekday()) if self.weekly else day

    def partition_of_day(self, day: str) -> str:
        """SQL: the partition value the day `day` (a SQL expression) belongs to."""
        return f"date_trunc('week', {day})" if self.weekly else f"{day}::DATE"

    def ddl(self) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n)"


def _t(
    name: str, partition_column: str | None, *cols: tuple[str, str, str], key=(), checks=(), warnings=()
) -> Table:
    return Table(name, tuple(Column(*c) for c in cols), partition_column, tuple(key), tuple(checks), tuple(warnings))


_LINEAGE = (
    ("arrival_date", "DATE", "UTC day the source file landed (landing day folder); the partition"),
    ("source_file", "VARCHAR", "Landing file the row came from, relative to the landing root"),
    ("line_no", "BIGINT", "1-based row number inside the source file"),
)
