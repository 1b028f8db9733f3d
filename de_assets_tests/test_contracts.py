"""The pandera contracts (`lib/contracts.py`) on hand-made typed rows, no Dagster or DuckDB."""

import pandas as pd
import pytest

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
