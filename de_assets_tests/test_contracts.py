"""The pandera contracts (`lib/contracts.py`) on hand-made typed rows, and their SQL proof (`sql_proof`)
against pandera on typed rows in DuckDB."""

import duckdb
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from de_assets.lib import contracts


def _event(**changes) -> dict:
    row = {"message_id": "m1", "type": "track", "event": "Order Completed", "user_key": "u", "timestamp_sent": True,
           "event_ts": pd.Timestamp("2026-11-01 10:00"), "properties_type": "OBJECT", "revenue": 5.0,
           "revenue_sent": True, "arrival_date": pd.Timestamp("2026-11-01")}
    return {**row, **changes}


def test_every_failing_row_gets_every_reason_and_good_rows_none():
    frame = pd.DataFrame([
        _event(),                                                    # 0: clean
        _event(type="bogus"),                                        # 1: type not a Segment type
        _event(type="track", event=None),                            # 2: a track without a name
        _event(revenue=None),                                        # 3: revenue sent but not a number
        _event(event_ts=pd.Timestamp("2026-11-04 00:00")),           # 4: after arrival day + 1 day + 1 day
        _event(event_ts=pd.Timestamp("1970-01-01 00:00"), revenue=-1.0),  # 5: epoch day and negative revenue
    ])
    reasons = contracts.failing_rows(contracts.event_contract(), frame).set_index("row_id").reason.to_dict()
    assert reasons == {
        1: "type:isin(['track', 'page', 'screen', 'identify', 'group', 'alias'])",
        2: "track_has_event_name",
        3: "revenue_is_numeric",
        4: "not_in_future",
        5: "event_ts:implausibly_old; revenue:greater_than_or_equal_to(0)",
    }


def test_the_earliest_event_time_is_a_setting_with_a_clear_error():
    assert contracts.parse_earliest(None) == pd.Timestamp("1970-01-02")
    assert contracts.parse_earliest("1997-06-01T02:00:00+02:00") == pd.Timestamp("1997-06-01 00:00")  # to UTC
    old = pd.DataFrame([_event(event_ts=pd.Timestamp("1997-01-01"))])
    assert contracts.failing_rows(contracts.event_contract(contracts.parse_earliest("1990-01-01")), old).empty
    assert contracts.failing_rows(contracts.event_contract(contracts.parse_earliest("1998-01-01")), old
                                  ).reason.tolist() == ["event_ts:implausibly_old"]
    with pytest.raises(ValueError, match="DE_ASSETS_EARLIEST_EVENT_TIME"):
        contracts.parse_earliest("last tuesday")


def test_a_missing_column_is_a_bug_not_bad_data():
    frame = pd.DataFrame([_event()]).drop(columns=["user_key"])
    with pytest.raises(ValueError, match="schema-level"):
        contracts.failing_rows(contracts.event_contract(), frame)


# --- the SQL proof (`contracts.sql_proof`) against pandera, on typed rows in DuckDB -----------------

_EVENT_COLUMNS = ("row_id BIGINT, message_id VARCHAR, type VARCHAR, event VARCHAR, user_key VARCHAR, event_ts TIMESTAMP, "
                  "timestamp_sent BOOLEAN, properties_type VARCHAR, revenue DOUBLE, revenue_sent BOOLEAN, arrival_date DATE")
_ARRIVED = "2026-11-01"


def _typed_event(row_id, **changes) -> tuple:
    row = {"message_id": "m", "type": "track", "event": "Order Completed", "user_key": "u",
           "event_ts": "2026-11-01 10:00:00", "timestamp_sent": True, "properties_type": "OBJECT", "revenue": 5.0,
           "revenue_sent": True, "arrival_date": _ARRIVED, **changes}
    return (row_id, *row.values())


# One row per failing kind of the event contract, the edges of each check, and valid rows SQL leaves
# to pandera on purpose (a long multi-byte id, an infinite revenue).
EVENT_ROWS = [
    _typed_event(1),
    _typed_event(2, message_id=None),
    _typed_event(3, message_id=""),
    _typed_event(4, message_id="x" * 257),
    _typed_event(5, message_id="x" * 256),
    _typed_event(6, message_id="\u00e9" * 200),  # 200 characters, 400 bytes: valid, not proven
    _typed_event(7, type="bogus"),
    _typed_event(8, type=None),
    _typed_event(9, type="track", event=None),
    _typed_event(10, type="page", event=None),
    _typed_event(11, user_key=None),
    _typed_event(12, event_ts=None),
    _typed_event(13, event_ts=None, timestamp_sent=False),
    _typed_event(14, event_ts="1970-01-01 23:59:59.999999"),
    _typed_event(15, event_ts="1970-01-02 00:00:00"),
    _typed_event(16, event_ts="2026-11-03 00:00:00.000001"),
    _typed_event(17, event_ts="2026-11-03 00:00:00"),
    _typed_event(18, properties_type="ARRAY"),
    _typed_event(19, properties_type=None),
    _typed_event(20, revenue=-0.01),
    _typed_event(21, revenue=0.0),
    _typed_event(22, revenue=None),
    _typed_event(23, revenue=None, revenue_sent=False),
    _typed_event(24, revenue=float("nan")),  # pandas: NaN is missing
    _typed_event(25, revenue=float("inf")),  # valid for pandera, not proven
    _typed_event(26, revenue=-float("inf")),
    _typed_event(27, type="bogus", user_key=None, revenue=-1.0),
]

_REQUEST_COLUMNS = ("row_id BIGINT, record_id VARCHAR, request_ts TIMESTAMP, service VARCHAR, status DOUBLE, "
                    "latency_ms DOUBLE, cpu_pct DOUBLE, memory_mb DOUBLE, arrival_date DATE")


def _typed_request(row_id, **changes) -> tuple:
    row = {"record_id": "r", "request_ts": "2026-11-01 10:00:00", "service": "api", "status": 200.0,
           "latency_ms": 12.5, "cpu_pct": 40.0, "memory_mb": 512.0, "arrival_date": _ARRIVED, **changes}
    return (row_id, *row.values())


REQUEST_ROWS = [
    _typed_request(1),
    _typed_request(2, record_id=None),
    _typed_request(3, request_ts=None),
    _typed_request(4, request_ts="1969-12-31 00:00:00"),
    _typed_request(5, request_ts="2026-11-03 00:00:01"),
    _typed_request(6, service=""),
    _typed_request(7, service=None),
    _typed_request(8, status=99.0),
    _typed_request(9, status=600.0),
    _typed_request(10, status=599.0),
    _typed_request(11, status=100.0),
    _typed_request(12, status=float("nan")),
    _typed_request(13, latency_ms=-1.0),
    _typed_request(14, latency_ms=None),
    _typed_request(15, cpu_pct=-0.5),
    _typed_request(16, cpu_pct=None, memory_mb=None),
    _typed_request(17, memory_mb=-1.0),
]


def _verdicts(model, columns: str, rows: list[tuple]) -> tuple[dict[int, str], set[int]]:
    """(pandera's reasons per failing row, the rows the SQL proof proves valid)."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE typed ({columns})")
    con.executemany(f"INSERT INTO typed VALUES ({', '.join('?' * len(rows[0]))})", rows)
    names = ", ".join(f"{c}::TIMESTAMP AS {c}" if c == "arrival_date" else c for c in model.to_schema().columns)
    frame = con.execute(f"SELECT row_id, {names} FROM typed ORDER BY row_id").df().set_index("row_id")
    reasons = contracts.failing_rows(model, frame).set_index("row_id").reason.to_dict()
    proven = {r for (r,) in con.execute(f"SELECT row_id FROM typed WHERE {contracts.sql_proof(model)}").fetchall()}
    return reasons, proven


def test_sql_proves_valid_exactly_the_rows_pandera_passes_except_those_left_to_pandera():
    reasons, proven = _verdicts(contracts.event_contract(), _EVENT_COLUMNS, EVENT_ROWS)
    isin = "type:isin(['track', 'page', 'screen', 'identify', 'group', 'alias'])"
    assert reasons == {
        2: "message_id:not_nullable",
        3: "message_id:str_length(1, 256)",
        4: "message_id:str_length(1, 256)",
        7: isin,
        8: "type_present",
        9: "track_has_event_name",
        11: "user_key:not_nullable",
        12: "event_ts:not_nullable; timestamp_parses",
        13: "event_ts:not_nullable; timestamp_present",
        14: "event_ts:implausibly_old",
        16: "not_in_future",
        18: "properties_type:isin(['OBJECT'])",
        20: "revenue:greater_than_or_equal_to(0)",
        22: "revenue_is_numeric",
        24: "revenue_is_numeric",
        26: "revenue:greater_than_or_equal_to(0)",
        27: f"revenue:greater_than_or_equal_to(0); {isin}; user_key:not_nullable",
    }
    assert proven == {1, 5, 10, 15, 17, 19, 21, 23}  # every valid row but 6 (multi-byte id) and 25 (inf)

    reasons, proven = _verdicts(contracts.request_contract(), _REQUEST_COLUMNS, REQUEST_ROWS)
    assert reasons == {
        2: "record_id:not_nullable",
        3: "request_ts:not_nullable",  # a missing time is not in the future
        4: "request_ts:implausibly_old",
        5: "not_in_future",
        6: "service:str_length(1, None)",
        7: "service:not_nullable",
        8: "status:greater_than_or_equal_to(100)",
        9: "status:less_than_or_equal_to(599)",
        12: "status:not_nullable",
        13: "latency_ms:greater_than_or_equal_to(0)",
        14: "latency_ms:not_nullable",
        15: "cpu_pct:greater_than_or_equal_to(0)",
        17: "memory_mb:greater_than_or_equal_to(0)",
    }
    assert proven == {1, 10, 11, 16}


def test_the_proof_follows_the_earliest_event_time_setting():
    rows = [_typed_event(1, event_ts="1997-01-01 00:00:00")]
    assert _verdicts(contracts.event_contract(contracts.parse_earliest("1990-01-01")), _EVENT_COLUMNS, rows) == ({}, {1})
    assert _verdicts(contracts.event_contract(contracts.parse_earliest("1998-01-01")), _EVENT_COLUMNS, rows) == (
        {1: "event_ts:implausibly_old"}, set())


def test_a_check_without_sql_turns_the_proof_off():
    class WithUnknownCheck(contracts.EventContract):
        @pa.dataframe_check(name="brand_new_rule")
        def brand_new_rule(cls, df: pd.DataFrame) -> pd.Series:
            return df["event"].notna()

    class WithUnknownColumnCheck(contracts.RequestContract):
        host: Series[object] = pa.Field(nullable=True, str_matches=r"^h")

    assert contracts.sql_proof(contracts.EventContract) is not None
    assert contracts.sql_proof(WithUnknownCheck) is None
    assert contracts.sql_proof(WithUnknownColumnCheck) is None
