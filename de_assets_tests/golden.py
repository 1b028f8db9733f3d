"""Compare a warehouse table with a hand-verified expected CSV (golden/expected/*.csv)."""

import math
from pathlib import Path

import pandas as pd

EXPECTED = Path(__file__).parent / "fixtures" / "golden" / "expected"
TEMPORAL_SUFFIXES = ("_date", "_week", "_ts")


def expected(name: str) -> pd.DataFrame:
    return pd.read_csv(EXPECTED / f"{name}.csv", dtype=str, keep_default_na=False)


def select_sql(table: str, columns: list[str], order_by: list[str], where: str = "TRUE") -> str:
    cols = ", ".join(f"{c}::VARCHAR AS {c}" if c.endswith(TEMPORAL_SUFFIXES) else c for c in columns)
    return f"SELECT {cols} FROM {table} WHERE {where} ORDER BY {', '.join(order_by)}"


def _same(actual, wanted: str) -> bool:
    if wanted == "":
        return actual is None or (isinstance(actual, float) and math.isnan(actual)) or actual is pd.NA
    if actual is None or (isinstance(actual, float) and math.isnan(actual)):
        return False
    try:
        return math.isclose(float(actual), float(wanted), rel_tol=1e-8, abs_tol=1e-8)
    except (TypeError, ValueError):
        return str(actual) == wanted


def assert_matches(actual: pd.DataFrame, want: pd.DataFrame) -> None:
    """Row for row, column for column; numbers to 1e-8 (the CSVs carry 9 decimals)."""
    assert list(actual.columns) == list(want.columns)
    assert len(actual) == len(want), f"{len(actual)} rows, expected {len(want)}:\n{actual.to_string()}"
    mismatches = [
        f"row {i} {col}: got {actual.iloc[i][col]!r}, expected {want.iloc[i][col]!r}"
        for i in range(len(want))
        for col in want.columns
        if not _same(actual.iloc[i][col], want.iloc[i][col])
    ]
    assert not mismatches, "\n".join(mismatches) + "\n" + actual.to_string()
