"""Data contracts of the clean layer, as pandera DataFrameModels.

DuckDB types the raw strings (``try_cast``: an unparseable value becomes NULL, and a ``*_sent``
flag keeps whether something was sent); the contract then decides what is acceptable. Validation
is lazy: every failing row is reported, and ``failing_rows`` turns pandera's failure cases into
one reason string per row (``column:check; ...``) for the quarantine.

Text columns are declared ``Text`` (pandas ``object``): they come from DuckDB VARCHAR columns, so
every value is already a ``str`` or None. Declaring ``str`` instead makes pandera re-check each
element's Python type, which was ~40% of validation time for no added guarantee.

Implausibly old event times are a setting, not a constant: `event_contract(earliest)` and
`request_contract(earliest)` return the contract with a `<time column>:implausibly_old` check
against that instant (default `DEFAULT_EARLIEST_EVENT_TIME`, see `parse_earliest`).

Speed: `sql_proof(model)` derives from the pandera schema a SQL condition that is true only for rows
passing every check, so the clean step sends to pandas only the rows SQL cannot prove valid (about
2% of them); pandera stays the judge of every failing row and writes every reason. The schema's
column checks (not_nullable, isin, str_length, ge/le) are translated from the schema itself; the
dataframe checks, which are Python functions, have their SQL twin in `FRAME_CHECK_SQL` next to
them. A check without a translation turns the proof off (pandera judges every row).
"""

from __future__ import annotations

import functools

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from de_assets.lib.sql import ident, literal

Text = object  # a DuckDB VARCHAR column in pandas: str or None (see the module docstring)

EVENT_TYPES = ["track", "page", "screen", "identify", "group", "alias"]
# Events before this instant are quarantined as `implausibly_old`. The default rejects only the day
# of the Unix epoch, where zeroed device clocks and missing epoch values land (1970-01-01T00:00:00
# plus a boot's worth of seconds); every real history since 1970-01-02 loads. Configurable through
# `PipelineSettings.earliest_event_time` (DE_ASSETS_EARLIEST_EVENT_TIME).
DEFAULT_EARLIEST_EVENT_TIME = "1970-01-02"
# An event may be stamped at most this long after the end of the day its file arrived.
FUTURE_TOLERANCE = pd.Timedelta(days=1)


class EventContract(pa.DataFrameModel):
    """A Segment event that may enter `clean.events`."""

    message_id: Series[Text] = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 256})
    type: Series[Text] = pa.Field(nullable=True, isin=EVENT_TYPES)
    event: Series[Text] = pa.Field(nullable=True)
    user_key: Series[Text] = pa.Field(nullable=False)
    event_ts: Series[pa.DateTime] = pa.Field(nullable=False)
    timestamp_sent: Series[bool]
    properties_type: Series[Text] = pa.Field(nullable=True, isin=["OBJECT"])
    revenue: Series[float] = pa.Field(nullable=True, ge=0)
    revenue_sent: Series[bool]
    arrival_date: Series[pa.DateTime] = pa.Field(nullable=False)

    @pa.dataframe_check(name="type_present")
    def type_present(cls, df: pd.DataFrame) -> Series[bool]:
        return df["type"].notna()

    @pa.dataframe_check(name="track_has_event_name")
    def track_has_event_name(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["type"] != "track") | df["event"].notna()

    @pa.dataframe_check(name="timestamp_present")
    def timestamp_present(cls, df: pd.DataFrame) -> Series[bool]:
        return df["timestamp_sent"]

    @pa.dataframe_check(name="revenue_is_numeric")
    def revenue_is_numeric(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["revenue_sent"] | df["revenue"].notna()

    @pa.dataframe_check(name="timestamp_parses")
    def timestamp_parses(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["timestamp_sent"] | df["event_ts"].notna()

    @pa.dataframe_check(name="not_in_future")
    def not_in_future(cls, df: pd.DataFrame) -> Series[bool]:
        latest = df["arrival_date"] + pd.Timedelta(days=1) + FUTURE_TOLERANCE
        return df["event_ts"].isna() | (df["event_ts"] <= latest)

    class Config:
        strict = False
        coerce = False


class RequestContract(pa.DataFrameModel):
    """A request-log sample that may enter `clean.requests`."""

    record_id: Series[Text] = pa.Field(nullable=False)
    request_ts: Series[pa.DateTime] = pa.Field(nullable=False)
    service: Series[Text] = pa.Field(nullable=False, str_length={"min_value": 1})
    status: Series[float] = pa.Field(nullable=False, ge=100, le=599)
    latency_ms: Series[float] = pa.Field(nullable=False, ge=0)
    cpu_pct: Series[float] = pa.Field(nullable=True, ge=0)
    memory_mb: Series[float] = pa.Field(nullable=True, ge=0)
    arrival_date: Series[pa.DateTime] = pa.Field(nullable=False)

    @pa.dataframe_check(name="not_in_future")
    def not_in_future(cls, df: pd.DataFrame) -> Series[bool]:
        latest = df["arrival_date"] + pd.Timedelta(days=1) + FUTURE_TOLERANCE
        return df["request_ts"].isna() | (df["request_ts"] <= latest)

    class Config:
        strict = False
        coerce = False


_LATEST = f"arrival_date::TIMESTAMP + INTERVAL '{int((pd.Timedelta(days=1) + FUTURE_TOLERANCE).total_seconds())} seconds'"

# The dataframe-wide checks above as SQL over the typed table (pandas semantics: a NULL is never
# equal to 'track'). Each must hold exactly when its pandas twin passes; test_contracts checks both
# on every failing kind. A check missing here turns `sql_proof` off for its contract.
FRAME_CHECK_SQL: dict[type[pa.DataFrameModel], dict[str, str]] = {
    EventContract: {
        "type_present": "type IS NOT NULL",
        "track_has_event_name": "(type IS DISTINCT FROM 'track' OR event IS NOT NULL)",
        "timestamp_present": "timestamp_sent",
        "revenue_is_numeric": "(NOT revenue_sent OR revenue IS NOT NULL)",
        "timestamp_parses": "(NOT timestamp_sent OR event_ts IS NOT NULL)",
        "not_in_future": f"(event_ts IS NULL OR event_ts <= {_LATEST})",
    },
    RequestContract: {
        "not_in_future": f"(request_ts IS NULL OR request_ts <= {_LATEST})",
    },
}


def parse_earliest(value) -> pd.Timestamp:
    """The earliest plausible event time as a naive UTC timestamp (the type of `event_ts`).

    Accepts an ISO-8601 date or timestamp (with an offset: converted to UTC), a `date`/`datetime`,
    or None for the default. A value that is not a time raises ValueError naming the setting.
    """
    if value is None or value == "":
        value = DEFAULT_EARLIEST_EVENT_TIME
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"earliest_event_time (DE_ASSETS_EARLIEST_EVENT_TIME) must be an ISO-8601 date or timestamp, "
            f"e.g. 1970-01-02 or 1995-06-01T00:00:00Z; got {value!r}"
        ) from err
    if ts is pd.NaT:
        raise ValueError("earliest_event_time (DE_ASSETS_EARLIEST_EVENT_TIME) must be a date or timestamp, got NaT")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _bounded(contract: type[pa.DataFrameModel], column: str, earliest) -> type[pa.DataFrameModel]:
    """``contract`` plus ``<column>:implausibly_old`` (a time before ``earliest``)."""
    bound = parse_earliest(earliest)

    class Bounded(contract):
        @pa.check(column, name="implausibly_old")
        def implausibly_old(cls, series: pd.Series) -> Series[bool]:
            return series >= bound

    Bounded.__name__ = f"{contract.__name__}(earliest={bound})"
    _EARLIEST[Bounded] = (column, bound)
    return Bounded


_EARLIEST: dict[type, tuple[str, pd.Timestamp]] = {}  # bounded contract -> (time column, earliest instant)
# Timestamps pandas can hold (datetime64[ns]); a row outside is left to pandera.
_PANDAS_TIME_RANGE = "TIMESTAMP '1677-09-22' AND TIMESTAMP '2262-04-10'"


def _number(value) -> str | None:
    return repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _column_check_sql(model, column: str, check) -> str | None:
    """A column check of the schema as SQL over the column's non-NULL values; None: not translatable."""
    q, stats = ident(column), check.statistics or {}
    if check.name == "isin":
        allowed = stats.get("allowed_values") or []
        if not allowed or not all(isinstance(v, str) for v in allowed):
            return None
        return f"{q} IN ({', '.join(literal(v) for v in allowed)})"
    if check.name == "str_length":
        if stats.get("exact_value") is not None:
            return None
        low, high = stats.get("min_value"), stats.get("max_value")
        # pandas counts code points: DuckDB's length() does too; strlen() counts bytes (>= code points),
        # so a long multi-byte value is left to pandera rather than proven
        parts = ([f"length({q}) >= {int(low)}"] if low is not None else []) + \
                ([f"strlen({q}) <= {int(high)}"] if high is not None else [])
        return " AND ".join(parts) or "TRUE"
    operators = {"greater_than_or_equal_to": (">=", "min_value"), "less_than_or_equal_to": ("<=", "max_value"),
                 "greater_than": (">", "min_value"), "less_than": ("<", "max_value")}
    if check.name in operators:
        op, stat = operators[check.name]
        value = _number(stats.get(stat))
        return None if value is None else f"{q} {op} {value}"
    if check.name == "implausibly_old" and _EARLIEST.get(model, (None,))[0] == column:
        # DuckDB timestamps are microseconds: the bound rounded up, so a proven row is never before it
        return f"{q} >= TIMESTAMP '{_EARLIEST[model][1].ceil('us').isoformat(sep=' ')}'"
    return None


def _column_sql(model, name: str, column) -> str | None:
    dtype = str(column.dtype)
    if column.unique or column.regex or not column.required or dtype not in ("object", "bool", "float64",
                                                                              "datetime64[ns]"):
        return None
    q = ident(name)
    conditions = []
    if dtype == "float64":  # pandas counts NaN as missing: non-finite values are left to pandera
        conditions.append(f"isfinite({q})")
    if dtype == "datetime64[ns]":
        conditions.append(f"{q} BETWEEN {_PANDAS_TIME_RANGE}")
    for check in column.checks:
        if not check.ignore_na:
            return None
        sql = _column_check_sql(model, name, check)
        if sql is None:
            return None
        conditions.append(f"({sql})")
    when_present = " AND ".join(conditions) or "TRUE"
    return f"({q} IS NULL OR ({when_present}))" if column.nullable else f"({q} IS NOT NULL AND {when_present})"


@functools.lru_cache(maxsize=32)
def sql_proof(model: type[pa.DataFrameModel]) -> str | None:
    """A SQL condition over the typed table that is TRUE only for rows passing every check of
    ``model`` (FALSE or NULL: not proven, pandera decides), or None when some check has no SQL
    translation. Derived from the pandera schema; dataframe checks from `FRAME_CHECK_SQL`."""
    schema = model.to_schema()
    if schema.unique or schema.index is not None:
        return None
    frame_sql = next((FRAME_CHECK_SQL[base] for base in model.__mro__ if base in FRAME_CHECK_SQL), {})
    parts = []
    for check in schema.checks:
        if check.name not in frame_sql:
            return None
        parts.append(frame_sql[check.name])
    for name, column in schema.columns.items():
        sql = _column_sql(model, name, column)
        if sql is None:
            return None
        parts.append(sql)
    return "coalesce(" + "\n AND ".join(parts) + ", false)"


@functools.lru_cache(maxsize=16)
def event_contract(earliest: pd.Timestamp | None = None) -> type[EventContract]:
    """`EventContract` plus `event_ts:implausibly_old` (event time before `earliest`)."""
    return _bounded(EventContract, "event_ts", earliest)


@functools.lru_cache(maxsize=16)
def request_contract(earliest: pd.Timestamp | None = None) -> type[RequestContract]:
    """`RequestContract` plus `request_ts:implausibly_old` (request time before `earliest`)."""
    return _bounded(RequestContract, "request_ts", earliest)


def failing_rows(model: type[pa.DataFrameModel], frame: pd.DataFrame) -> pd.DataFrame:
    """Validate lazily; return ``(row_id, reason)`` for every failing row (index = row_id).

    Column checks are reported as ``column:check``, dataframe-wide checks by their name. A
    schema-level failure (a missing column, a wrong dtype) is a bug in the typing SQL, not bad
    data, so it is raised instead of quarantining every row.
    """
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        schema_level = cases[cases["index"].isna()]
        if not schema_level.empty:
            raise ValueError(f"{model.__name__}: schema-level failures:\n{schema_level.to_string()}") from err
        is_frame_check = cases["schema_context"] == "DataFrameSchema"
        label = cases["check"].astype(str).where(is_frame_check, cases["column"].astype(str) + ":" + cases["check"].astype(str))
        reasons = (
            pd.DataFrame({"row_id": cases["index"].astype("int64"), "reason": label})
            .drop_duplicates()
            .sort_values(["row_id", "reason"])
            .groupby("row_id", sort=True)["reason"]
            .agg("; ".join)
            .reset_index()
        )
        return reasons
    return no_failures()


def no_failures() -> pd.DataFrame:
    return pd.DataFrame({"row_id": pd.Series([], dtype="int64"), "reason": pd.Series([], dtype="object")})
