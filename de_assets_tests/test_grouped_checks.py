"""Grouped evaluation of the checks (`rule.by_day`) and of the per-day metadata (`days_metadata`):
over a multi-day range, every rule and day must give exactly what the per-day call gives, on data
built to exercise each rule (a failing day, an empty day, NULL keys, a drift shift, a week-partitioned
mart, a source that stopped landing for months before the range).

The per-day results are computed by the rules' own per-range SQL (`rule(con, table, day, day)`), an
independent implementation; the per-day metadata by a copy of the original per-day queries.
"""

from datetime import date, timedelta

import dagster as dg
import pytest

from de_assets.checks import check_results
from de_assets.lib.days import days_between
from de_assets.lib.privacy import PSEUDONYM_COLUMNS
from de_assets.lib.tables import (
    ALL_TABLES, CLEAN_EVENTS, CLEAN_REQUESTS, DAILY_ENGAGEMENT, EXPERIMENT_RESULTS, FUNNEL_DAILY, QUARANTINE_EVENTS,
    RAW_EVENTS, RAW_REQUESTS, RETENTION_COHORTS,
)
from de_assets.metadata import PREVIEW_ROWS, _markdown, day_metadata, days_metadata

START = date(2026, 11, 2)  # a Monday
END = START + timedelta(days=13)
EMPTY = START + timedelta(days=4)  # no row in any table
DAYS = days_between(START, END)


def d(n: int) -> date:
    return START + timedelta(days=n)


@pytest.fixture
def varied(con):
    """Two weeks (and the week before) of hand-shaped rows in every table the rules read."""
    # clean.events: 20 rows a day from d(-7); a shift to 'screen' on d(6); a duplicate message_id on
    # d(2); a NULL message_id on d(3); an e-mail on d(8); an unhashed user key on d(9)
    con.execute(
        """INSERT INTO clean.events BY NAME
           SELECT day::DATE AS event_date, day::DATE AS arrival_date, day::DATE || '-' || i AS message_id,
                  CASE WHEN day::DATE = $shift THEN 'screen'
                       ELSE ['track', 'track', 'page', 'identify'][i % 4 + 1] END AS type,
                  CASE WHEN day::DATE <> $shift AND i % 4 < 2 THEN ['A', 'B', 'C'][i % 3 + 1] END AS event,
                  md5(i::VARCHAR) AS user_key, '{}'::JSON AS properties, '{}'::JSON AS context,
                  'f' AS source_file, i AS line_no
           FROM range($first::TIMESTAMP, $last::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(day),
                range(20) AS r(i)
           WHERE day::DATE <> $empty""",
        {"shift": d(6), "first": d(-7), "last": END, "empty": EMPTY},
    )
    con.execute("INSERT INTO clean.events (event_date, arrival_date, message_id, type) VALUES (?, ?, ?, 'track')",
                [d(2), d(2), f"{d(2)}-5"])
    con.execute("INSERT INTO clean.events (event_date, arrival_date, message_id, type) VALUES (?, ?, NULL, 'page')",
                [d(3), d(3)])
    con.execute("UPDATE clean.events SET properties = '{\"note\":\"mail bob@example.com\"}' "
                "WHERE arrival_date = ? AND line_no = 1", [d(8)])
    con.execute("UPDATE clean.events SET user_key = 'cus_4821' WHERE arrival_date = ? AND line_no = 2", [d(9)])

    # clean.requests: two services and status classes, all 5xx from one service on d(5)
    con.execute(
        """INSERT INTO clean.requests BY NAME
           SELECT day::DATE AS arrival_date, day::DATE AS event_date, day::DATE || '-' || i AS record_id,
                  CASE WHEN day::DATE = $shift THEN 'api' ELSE ['api', 'web'][i % 2 + 1] END AS service,
                  CASE WHEN day::DATE = $shift THEN 503 ELSE [200, 200, 200, 404][i % 4 + 1] END AS status
           FROM range($first::TIMESTAMP, $last::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(day),
                range(12) AS r(i)
           WHERE day::DATE <> $empty""",
        {"shift": d(5), "first": d(-7), "last": END, "empty": EMPTY},
    )

    # raw.events: `extra` gains a key from d(7); anonymous_id only carries values on d(10)
    con.execute(
        """INSERT INTO raw.events BY NAME
           SELECT day::DATE AS arrival_date, 'f' AS source_file, i AS line_no, 'm' || i AS message_id,
                  'track' AS type, 'A' AS event, md5(i::VARCHAR) AS user_id,
                  CASE WHEN day::DATE = $anon THEN md5('a' || i) END AS anonymous_id,
                  CASE WHEN day::DATE >= $added THEN '{"channel":"web","integrations":{}}'
                       ELSE '{"channel":"web"}' END::JSON AS extra
           FROM range($first::TIMESTAMP, $last::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(day),
                range(5) AS r(i)
           WHERE day::DATE <> $empty""",
        {"anon": d(10), "added": d(7), "first": d(-7), "last": END, "empty": EMPTY},
    )
    # raw.requests (no `extra`): cpu_pct sent only from d(9)
    con.execute(
        """INSERT INTO raw.requests BY NAME
           SELECT day::DATE AS arrival_date, 'f' AS source_file, i AS line_no, 'r' || i AS record_id,
                  'api' AS service, '200' AS status, CASE WHEN day::DATE >= $cpu THEN '5' END AS cpu_pct
           FROM range($first::TIMESTAMP, $last::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(day),
                range(4) AS r(i)
           WHERE day::DATE <> $empty""",
        {"cpu": d(9), "first": d(-7), "last": END, "empty": EMPTY},
    )

    # raw.source_files: events landed long ago (d(-120)..d(-100)), then nothing until d(-30); a weekly
    # pattern since, no file on the empty day, a flood on d(11). requests: a week about 7 weeks before
    # the range, then nothing until d(8): inside the 8-week window of d(8)..d(12), outside that of d(13),
    # whose series starts at d(8) (a day's series starts at the first file of ITS window).
    def files(source, first, last, rows):
        for day in days_between(first, last):
            if day != EMPTY:
                con.execute("INSERT INTO raw.source_files (source, arrival_date, path, rows, status) "
                            "VALUES (?, ?, ?, ?, 'ingested')", [source, day, f"{source}/{day}", rows(day)])

    files("events", d(-120), d(-100), lambda day: 100)
    files("events", d(-30), END, lambda day: 5000 if day == d(11) else (40 if day.weekday() >= 5 else 100 + day.day % 3))
    files("requests", d(-50), d(-44), lambda day: 48)
    files("requests", d(8), END, lambda day: 48)
    con.execute("INSERT INTO raw.source_files (source, arrival_date, path, rows, status) "
                "VALUES ('events', ?, 'events/x', 9999, 'rejected')", [d(1)])

    # quarantine.events: a clean row a day, a full IP on d(12)
    for day in DAYS:
        if day != EMPTY:
            con.execute("INSERT INTO quarantine.events (arrival_date, source_file, line_no, reason, raw_row) "
                        "VALUES (?, 'f', 1, 'bad', ?::JSON)",
                        [day, '{"ip":"198.51.100.23"}' if day == d(12) else '{"ip":"198.51.100.0"}'])

    # marts.daily_engagement: stickiness 1.5 on d(1), NULL on d(3), a duplicate day d(11)
    for day in DAYS:
        if day != EMPTY:
            stickiness = 1.5 if day == d(1) else (None if day == d(3) else 0.25)
            con.execute("INSERT INTO marts.daily_engagement (event_date, dau, mau, stickiness) VALUES (?, 1, 4, ?)",
                        [day, stickiness])
    con.execute("INSERT INTO marts.daily_engagement (event_date, dau) VALUES (?, 2)", [d(11)])

    # marts.funnel_daily: 3 steps of two funnels a day; step 3 of funnel g grows on d(2); NULL funnel on d(9)
    for day in DAYS:
        if day != EMPTY:
            for funnel in ("f", "g"):
                for step, users in ((1, 10), (2, 6), (3, 7 if (day, funnel) == (d(2), "g") else 3)):
                    con.execute("INSERT INTO marts.funnel_daily (event_date, funnel, step_order, step, users, "
                                "conversion_from_start) VALUES (?, ?, ?, 's', ?, ?)",
                                [day, None if (day, funnel, step) == (d(9), "f", 2) else funnel, step, users,
                                 users / 10])

    # marts.retention_cohorts, weekly: week START has a NULL weeks_since; week d(7) a rate above 1;
    # a row of the week before the range, and one whose activity_week is not a Monday (no partition)
    for cohort, weeks_since, rate, week in (
        (d(-14), 1, 0.5, d(-7)), (d(-7), 1, 0.4, START), (d(-14), None, 0.3, START),
        (START, 1, 1.2, d(7)), (d(-7), 2, 0.2, d(7)), (d(-7), 3, 0.9, d(3)),
    ):
        con.execute("INSERT INTO marts.retention_cohorts VALUES (?, ?, 10, 5, ?, ?)", [cohort, weeks_since, rate, week])
    return con


def per_day(rule, con, table):
    return {day: rule(con, table, day, day) for day in DAYS}


def test_every_rule_has_a_grouped_form():
    for table in ALL_TABLES:
        for rule in (*table.checks, *table.warnings):
            assert callable(getattr(rule, "by_day", None)), (table.name, rule.__name__)


@pytest.mark.parametrize("table", [t for t in ALL_TABLES if t.checks or t.warnings], ids=lambda t: t.name)
def test_grouped_rules_give_each_day_what_the_per_day_call_gives(varied, table):
    for rule in (*table.checks, *table.warnings):
        grouped = rule.by_day(varied, table, START, END)
        expected = per_day(rule, varied, table)
        assert list(grouped) == DAYS, rule.__name__
        for day in DAYS:
            assert grouped[day] == expected[day], (table.name, rule.__name__, day)


def failing(con, table) -> dict[str, list[int]]:
    """Per rule of the table, the days (as offsets from START) whose grouped evaluation fails."""
    return {
        rule.__name__: [(day - START).days for day, (passed, _) in rule.by_day(con, table, START, END).items() if not passed]
        for rule in (*table.checks, *table.warnings)
    }


def test_the_varied_data_fails_where_it_was_made_to(varied):
    """The data is not vacuous: the grouped results fail on the days built to fail (hand-checked)."""
    events = failing(varied, CLEAN_EVENTS)
    # d(3): the NULL message_id also counts as a duplicate (count(DISTINCT) skips NULL)
    assert events["unique_key"] == [2, 3] and events["keys_not_null"] == [3] and events["no_raw_pii"] == [8, 9]
    assert 6 in events["type_distribution_drift"] and 6 in events["event_distribution_drift"]
    assert 5 in failing(varied, CLEAN_REQUESTS)["status_class_distribution_drift"]
    raw = failing(varied, RAW_EVENTS)
    # the new extra key on d(7); anonymous_id added on d(10), then missing on d(11)..d(13) (in their baseline week)
    assert raw["source_schema_change"] == [7, 10, 11, 12, 13]
    assert 11 in raw["volume_vs_trailing_weeks"]
    assert failing(varied, RAW_REQUESTS)["source_schema_change"] == [9]
    assert failing(varied, QUARANTINE_EVENTS)["no_raw_pii"] == [12]
    assert failing(varied, DAILY_ENGAGEMENT) == {
        "unique_key": [11], "keys_not_null": [], "stickiness_in_unit_interval": [1]}
    funnel = failing(varied, FUNNEL_DAILY)
    assert funnel["funnel_monotonic"] == [2] and funnel["keys_not_null"] == [9]
    # weekly: every day of a week gets its week's result
    assert failing(varied, RETENTION_COHORTS) == {
        "unique_key": [], "keys_not_null": list(range(7)), "retention_rate_in_unit_interval": list(range(7, 14))}
    # the empty day's figures are those of an empty partition
    assert CLEAN_EVENTS.checks[0].by_day(varied, CLEAN_EVENTS, START, END)[EMPTY] == (
        True, {"rows": 0, "duplicate_keys": 0, "key": "message_id"})


def test_check_results_uses_the_grouped_form(varied, monkeypatch):
    """check_results runs each rule once for the range (not once per day) and keeps its order."""
    calls = []
    rule = CLEAN_EVENTS.checks[0]
    original = rule.by_day
    monkeypatch.setattr(rule, "by_day", lambda *a: calls.append(a[2:]) or original(*a))
    results = check_results(varied, dg.AssetKey(["clean", "clean_events"]), CLEAN_EVENTS, START, END)
    assert calls == [(START, END)]
    names = [r.check_name for r in results]
    assert names == [r.__name__ for r in (*CLEAN_EVENTS.checks, *CLEAN_EVENTS.warnings) for _ in DAYS]
    assert [r.partition for r in results[:len(DAYS)]] == [str(day) for day in DAYS]
    assert [r.passed for r in results[:len(DAYS)]] == [day not in (d(2), d(3)) for day in DAYS]


def old_day_metadata(con, table, day):
    """The per-day metadata as computed before the grouped form: two queries per day. (Its order is
    total on the varied data, whose rows never tie on the first three preview columns.)"""
    where = table.range_predicate("?", "?")
    rows = con.execute(f"SELECT count(*) FROM {table.name} WHERE {where}", [day, day]).fetchone()[0]
    preview_cols = [c.name for c in table.columns if c.type != "JSON" and c.name not in PSEUDONYM_COLUMNS]
    order = ", ".join(preview_cols[:3])
    preview = con.execute(
        f"SELECT {', '.join(preview_cols)} FROM {table.name} WHERE {where} ORDER BY {order} LIMIT {PREVIEW_ROWS}",
        [day, day],
    ).fetchall()
    out = {"dagster/row_count": rows, "preview": dg.MetadataValue.md(_markdown(preview_cols, preview))}
    if table.weekly:  # since session 17 a weekly table's day also names its week (the CLI counts it once)
        out["week"] = str(day - timedelta(days=day.weekday()))
    return out


@pytest.mark.parametrize("table", [CLEAN_EVENTS, CLEAN_REQUESTS, RAW_EVENTS, QUARANTINE_EVENTS, DAILY_ENGAGEMENT,
                                   FUNNEL_DAILY, RETENTION_COHORTS], ids=lambda t: t.name)
@pytest.mark.parametrize("max_grouped", [10**9, 0], ids=["one_preview_query", "top_n_per_partition"])
def test_grouped_day_metadata_is_the_per_day_metadata(varied, table, max_grouped):
    grouped = days_metadata(varied, table, START, END, grouped_preview_max_rows=max_grouped)
    assert list(grouped) == DAYS
    for day in DAYS:
        assert grouped[day] == old_day_metadata(varied, table, day), (table.name, day)
        assert day_metadata(varied, table, day) == grouped[day]
    assert grouped[EMPTY]["dagster/row_count"] == (2 if table is RETENTION_COHORTS else 0)  # its week's rows
    if table is RETENTION_COHORTS:  # START is a Monday: its week's days name it, the next week's the Monday after
        assert [grouped[d(n)]["week"] for n in (0, 6, 7, 13)] == ["2026-11-02", "2026-11-02", "2026-11-09", "2026-11-09"]
    assert grouped[d(1)]["dagster/row_count"] == {CLEAN_EVENTS: 20, CLEAN_REQUESTS: 12, RAW_EVENTS: 5,
                                                  QUARANTINE_EVENTS: 1, DAILY_ENGAGEMENT: 1, FUNNEL_DAILY: 6,
                                                  RETENTION_COHORTS: 2}[table]


def test_preview_rows_equal_on_the_first_three_columns_come_in_a_fixed_order(con):
    """experiment_results has one row per metric under the same (as_of_date, experiment_id, variant_id):
    the other preview columns break the tie, so the preview does not depend on the order rows were written."""
    for metric in ("revenue_per_user", "purchase", "add_to_cart"):
        con.execute("INSERT INTO marts.experiment_results (as_of_date, experiment_id, variant_id, metric, users) "
                    "VALUES (?, 'e', 'control', ?, 9)", [START, metric])
    preview = days_metadata(con, EXPERIMENT_RESULTS, START, START)[START]["preview"].value
    metrics = [line.split(" | ")[3] for line in preview.splitlines()[2:]]
    assert metrics == ["add_to_cart", "purchase", "revenue_per_user"]
