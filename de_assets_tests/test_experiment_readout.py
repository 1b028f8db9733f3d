"""Product A/B readouts (`marts.experiment_results`): hand-checked definitions, false-positive rate,
SRM, crossover and CUPED through the real SQL, and a known effect found on generated data."""

from datetime import date, timedelta

import pytest

from de_assets.lib import experiment_readout as er
from de_assets.generator import Dirt, ExperimentSpec, generate
from de_assets_tests.conftest import Pipeline

AS_OF = date(2026, 11, 10)


def _event(con, user, event, ts, experiment=None, variant=None, revenue=None):
    con.execute(
        "INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, experiment_id, variant_id, "
        "revenue, arrival_date) VALUES (gen_random_uuid()::VARCHAR, 'track', ?, ?, ?, ?::TIMESTAMP::DATE, ?, ?, ?, ?)",
        [event, user, ts, ts, experiment, variant, revenue, AS_OF],
    )


def _expose(con, user, variant, ts, experiment="exp"):
    _event(con, user, "Experiment Viewed", ts, experiment, variant)


def test_definitions_by_hand(con):
    """u1 (control) buys 1 h after exposure: converts. u2 (control) bought before exposure and 9 days
    after: no conversion in the 7-day window. u3 (treatment) buys twice in the window (revenue 30 + 20).
    u4 (treatment) never buys. u5 was shown both variants: crossover, excluded."""
    _expose(con, "u1", "control", "2026-11-01 10:00")
    _event(con, "u1", "Order Completed", "2026-11-01 11:00", revenue=10.0)
    _event(con, "u2", "Order Completed", "2026-11-01 09:00", revenue=99.0)
    _expose(con, "u2", "control", "2026-11-01 12:00")
    _event(con, "u2", "Order Completed", "2026-11-10 13:00", revenue=99.0)
    _expose(con, "u3", "treatment", "2026-11-02 08:00")
    _expose(con, "u3", "treatment", "2026-11-03 08:00")  # a second exposure of the same arm is fine
    _event(con, "u3", "Order Completed", "2026-11-02 09:00", revenue=30.0)
    _event(con, "u3", "Order Completed", "2026-11-05 09:00", revenue=20.0)
    _expose(con, "u4", "treatment", "2026-11-02 08:00")
    _expose(con, "u5", "control", "2026-11-02 08:00")
    _expose(con, "u5", "treatment", "2026-11-02 09:00")
    _event(con, "u5", "Order Completed", "2026-11-02 10:00", revenue=500.0)
    rows = {(r["variant_id"], r["metric"]): r for r in er.compute(con, AS_OF, er.Plan(metrics={"purchase": "Order Completed"}))}
    control, treatment = rows[("control", "purchase")], rows[("treatment", "purchase")]
    assert (control["users"], control["conversions"], control["rate"]) == (2, 1, 0.5)
    assert (treatment["users"], treatment["conversions"], treatment["rate"]) == (2, 1, 0.5)
    assert treatment["abs_lift"] == 0.0 and control["abs_lift"] is None and control["is_control"]
    assert control["crossover_users"] == 1
    revenue = rows[("treatment", "revenue_per_user")]
    assert revenue["rate"] == 25.0 and rows[("control", "revenue_per_user")]["rate"] == 5.0  # (30+20)/2, 10/2
    assert revenue["conversions"] == 1
    # SRM: 2 vs 2 users against an equal split
    assert control["srm_p_value"] == pytest.approx(1.0)


def _simulate(con, experiments: int, users: int, p_control: float, p_treatment: float, seed: float,
              treatment_share: float = 0.5):
    """Experiments with random 50/50 assignment and Bernoulli purchases after exposure, in SQL."""
    con.execute(f"SELECT setseed({seed})")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sim AS
        SELECT 'e' || e AS experiment_id, 'u' || e || '-' || u AS user_key,
               CASE WHEN random() < {treatment_share} THEN 'treatment' ELSE 'control' END AS variant_id,
               TIMESTAMP '2026-11-05 10:00' + to_minutes(u % 600) AS exposed_at, random() AS r
        FROM range({experiments}) a(e), range({users}) b(u)
        """
    )
    con.execute(
        """INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, experiment_id,
                                    variant_id, arrival_date)
           SELECT gen_random_uuid()::VARCHAR, 'track', 'Experiment Viewed', user_key, exposed_at, exposed_at::DATE,
                  experiment_id, variant_id, DATE '2026-11-10' FROM sim"""
    )
    con.execute(
        f"""INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, revenue, arrival_date)
            SELECT gen_random_uuid()::VARCHAR, 'track', 'Order Completed', user_key, exposed_at + INTERVAL 1 HOUR,
                   exposed_at::DATE, 10.0 + 40 * r, DATE '2026-11-10' FROM sim
            WHERE r < CASE variant_id WHEN 'treatment' THEN {p_treatment} ELSE {p_control} END"""
    )


def test_false_positive_rate_over_200_aa_experiments_is_close_to_alpha(con):
    _simulate(con, experiments=200, users=1000, p_control=0.1, p_treatment=0.1, seed=0.42)
    rows = [r for r in er.compute(con, AS_OF, er.Plan(metrics={"purchase": "Order Completed"}))
            if r["metric"] == "purchase" and not r["is_control"]]
    assert len(rows) == 200
    false_positives = sum(r["p_value"] < 0.05 for r in rows) / len(rows)
    covered = sum(r["ci_low"] <= 0 <= r["ci_high"] for r in rows) / len(rows)
    assert 0.02 <= false_positives <= 0.09, false_positives
    assert covered >= 0.91
    flagged = sum(r["srm_p_value"] < 0.001 for r in rows) / len(rows)
    assert flagged <= 0.02  # a fair coin split is almost never an SRM


def test_true_lift_is_found_and_covered(con):
    _simulate(con, experiments=100, users=4000, p_control=0.10, p_treatment=0.13, seed=0.17)
    rows = [r for r in er.compute(con, AS_OF, er.Plan(metrics={"purchase": "Order Completed"}))
            if r["metric"] == "purchase" and not r["is_control"]]
    power = sum(r["p_value"] < 0.05 for r in rows) / len(rows)
    coverage = sum(r["ci_low"] <= 0.03 <= r["ci_high"] for r in rows) / len(rows)
    assert power >= 0.75 and 0.88 <= coverage <= 1.0, (power, coverage)


def test_srm_is_flagged_and_the_readout_withholds_its_verdict(con):
    _simulate(con, experiments=1, users=2000, p_control=0.1, p_treatment=0.2, seed=0.3, treatment_share=0.42)
    plan = er.Plan(metrics={"purchase": "Order Completed"})
    rows = er.compute(con, AS_OF, plan)
    assert all(r["srm_flag"] for r in rows)  # 42/58 instead of 50/50 over 2,000 users
    text = er.markdown("e0", rows, plan)
    assert "sample ratio mismatch" in text and "**Verdict:** none" in text and "beats" not in text


def test_crossover_users_are_counted_and_excluded_and_too_many_fail_health(con):
    for i in range(40):
        _expose(con, f"a{i}", "control", "2026-11-05 10:00")
        _expose(con, f"b{i}", "treatment", "2026-11-05 10:00")
    for i in range(5):
        _expose(con, f"x{i}", "control", "2026-11-05 10:00")
        _expose(con, f"x{i}", "treatment", "2026-11-05 11:00")
    plan = er.Plan(metrics={"purchase": "Order Completed"})
    rows = er.compute(con, AS_OF, plan)
    assert {r["users"] for r in rows} == {40} and {r["crossover_users"] for r in rows} == {5}
    ok, problems = er.healthy(rows, plan)
    assert not ok and "5 crossover users" in problems[0]  # 5 / 85 = 5.9% > 5%


def test_cuped_narrows_the_interval_with_a_correlated_pre_period(con):
    con.execute("SELECT setseed(0.5)")
    # heavy buyers buy before and after exposure: the pre-period explains much of the variance
    con.execute(
        """CREATE TEMP TABLE sim AS SELECT 'u' || u AS user_key,
                  CASE WHEN u % 2 = 0 THEN 'treatment' ELSE 'control' END AS variant_id,
                  random() < 0.3 AS heavy FROM range(4000) t(u)"""
    )
    con.execute("""INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, experiment_id, variant_id, arrival_date)
                   SELECT gen_random_uuid()::VARCHAR, 'track', 'Experiment Viewed', user_key, TIMESTAMP '2026-11-08 00:00',
                          DATE '2026-11-08', 'exp', variant_id, DATE '2026-11-08' FROM sim""")
    for ts, when in (("2026-11-05 00:00", "pre"), ("2026-11-09 00:00", "post")):
        con.execute(f"""INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, revenue, arrival_date)
                        SELECT gen_random_uuid()::VARCHAR, 'track', 'Order Completed', user_key, TIMESTAMP '{ts}',
                               TIMESTAMP '{ts}'::DATE, CASE WHEN heavy THEN 80 ELSE 5 END + 10 * random()
                                   + CASE WHEN '{when}' = 'post' AND variant_id = 'treatment' THEN 2 ELSE 0 END,
                               DATE '2026-11-09' FROM sim""")
    plain = {r["metric"]: r for r in er.compute(con, AS_OF, er.Plan(metrics={})) if not r["is_control"]}
    cuped = {r["metric"]: r for r in er.compute(con, AS_OF, er.Plan(metrics={}, cuped=True)) if not r["is_control"]}
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert width(cuped["revenue_per_user"]) < 0.5 * width(plain["revenue_per_user"])
    assert cuped["revenue_per_user"]["ci_low"] <= 2 <= cuped["revenue_per_user"]["ci_high"]
    assert "CUPED" in cuped["revenue_per_user"]["method"]


def _truth_run(tmp_path, spec: ExperimentSpec, days: int = 7):
    landing = tmp_path / "landing"
    truth = generate(landing, date(2026, 11, 1), days, 10_000, seed=5, dirt=Dirt.none(), experiment=spec)["experiment"]
    p = Pipeline(tmp_path, landing)
    last = date(2026, 11, 1) + timedelta(days=days - 1)
    job = p.defs.resolve_job_def("daily_pipeline")
    from de_assets.partitions import partition_range_tags

    result = job.execute_in_process(
        instance=p.instance, tags=partition_range_tags("2026-11-01", str(last)),
        run_config={"ops": {"marts__experiment_results": {"config": {"window_days": 30}}}},
    )
    assert result.success
    rows = p.query(f"SELECT * FROM marts.experiment_results WHERE as_of_date = '{last}' AND metric = 'purchase'")
    return truth, rows.set_index("variant_id"), result


def test_generated_experiment_with_a_known_effect_is_found(tmp_path):
    truth, rows, result = _truth_run(tmp_path, ExperimentSpec(true_effect=0.3))
    # the true effect on the treated: orders that exist only because of the effect (same draws)
    att = (truth["converted_users"]["treatment"] - truth["converted_without_effect"]["treatment"]) \
        / truth["exposed_users"]["treatment"]
    treatment = rows.loc["treatment"]
    assert treatment.ci_low <= att <= treatment.ci_high
    assert treatment.p_value < 0.05 and treatment.abs_lift > 0
    assert rows.users.sum() == sum(truth["exposed_users"].values()) - truth["crossover_users"]
    assert int(treatment.crossover_users) == truth["crossover_users"]
    readout = [e for e in result.get_asset_materialization_events()
               if e.asset_key.path == ["marts", "experiment_results"]][-1].materialization.metadata
    assert "treatment beats control on purchase" in readout["readout checkout-button-color"].value


def test_generated_srm_is_flagged(tmp_path):
    truth, rows, result = _truth_run(tmp_path, ExperimentSpec(srm=0.5))
    assert truth["srm_dropped_sessions"] > 0
    assert rows.srm_flag.all()
    readout = [e for e in result.get_asset_materialization_events()
               if e.asset_key.path == ["marts", "experiment_results"]][-1].materialization.metadata
    assert "**Verdict:** none" in readout["readout checkout-button-color"].value


def test_a_range_reads_its_windows_from_one_copy_and_gives_every_days_readout(con, monkeypatch):
    """A range run copies the events its readouts read once per chunk of as-of days (`_copy_events`)
    instead of reading each day's window from `clean.events` again: every as-of day's rows equal the
    one-day readout read from `clean.events` itself, across chunk boundaries, with windows (10-day
    lookback, 3-day attribution and CUPED pre-period) that start before the range and move with it."""
    con.execute("SELECT setseed(0.42)")
    con.execute("""
        CREATE TEMP TABLE sim AS
        SELECT 'u' || i AS user_key, CASE WHEN i % 7 = 0 THEN 'exp-b' ELSE 'exp-a' END AS experiment_id,
               CASE WHEN random() < 0.5 THEN 'control' ELSE 'treatment' END AS variant_id,
               TIMESTAMP '2026-10-20 00:00' + to_minutes((random() * 60 * 24 * 30)::BIGINT) AS exposed_at
        FROM range(400) t(i)""")
    con.execute("""
        INSERT INTO clean.events (message_id, type, event, user_key, event_ts, event_date, experiment_id, variant_id,
                                  revenue, arrival_date)
        SELECT gen_random_uuid()::VARCHAR, 'track', 'Experiment Viewed', user_key, exposed_at, exposed_at::DATE,
               experiment_id, variant_id, NULL, exposed_at::DATE FROM sim
        UNION ALL  -- a few users shown the other arm too (crossover)
        SELECT gen_random_uuid()::VARCHAR, 'track', 'Experiment Viewed', user_key, exposed_at + INTERVAL 1 HOUR,
               (exposed_at + INTERVAL 1 HOUR)::DATE, experiment_id,
               CASE WHEN variant_id = 'control' THEN 'treatment' ELSE 'control' END, NULL, exposed_at::DATE
        FROM sim WHERE user_key LIKE '%3'
        UNION ALL  -- orders and cart adds from 6 days before to 6 days after each exposure
        SELECT gen_random_uuid()::VARCHAR, 'track', CASE WHEN random() < 0.5 THEN 'Order Completed' ELSE 'Product Added' END,
               user_key, ts, ts::DATE, NULL, NULL, round(5 + 50 * random(), 2), ts::DATE
        FROM (SELECT user_key, exposed_at + to_minutes(((random() - 0.5) * 12 * 24 * 60)::BIGINT) AS ts
              FROM sim, range(3))""")
    plan = er.Plan(lookback_days=10, window_days=3, cuped=True)
    start, end = date(2026, 11, 1), date(2026, 11, 12)
    one_by_one = [r for day in range((end - start).days + 1)
                  for r in er.compute(con, start + timedelta(days=day), plan)]
    assert len({r["as_of_date"] for r in one_by_one}) == 12 and any(r["crossover_users"] for r in one_by_one)
    assert any(r["p_value"] is not None for r in one_by_one)

    monkeypatch.setattr(er, "RANGE_CHUNK_DAYS", 5)  # 12 days: chunks of 5, 5 and 2
    copied: list[tuple] = []
    original = er._copy_events
    monkeypatch.setattr(er, "_copy_events", lambda c, first, last, p: (copied.append((first, last)), original(c, first, last, p)))
    written = er.write(con, start, end, plan)
    assert copied == [(date(2026, 11, 1), date(2026, 11, 5)), (date(2026, 11, 6), date(2026, 11, 10)),
                      (date(2026, 11, 11), date(2026, 11, 12))]
    assert written == one_by_one
    stored = con.execute("SELECT count(*) FROM marts.experiment_results").fetchone()[0]
    assert stored == len(one_by_one)
    assert con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{er.EVENTS_COPY}'").fetchone()[0] == 0
