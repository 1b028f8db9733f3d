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
"""

from __future__ import annotations

import functools

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

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
    return Bounded


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
