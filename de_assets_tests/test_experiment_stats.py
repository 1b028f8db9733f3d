"""Statistics core of the A/B readout (`de_assets.lib.ab_stats`) checked against scipy.

scipy is a test-only dependency (the module itself uses the standard library only). The
statsmodels formulas the readout promises to match are written out here with scipy.stats.norm /
scipy.stats.t, not imported. The simulations are seeded, so every assertion is deterministic;
their bounds are set about two binomial standard errors around the nominal rates (200 runs).
"""

import math

import numpy as np
import pytest
from scipy import stats

from de_assets.lib.ab_stats import (
    Comparison,
    chi2_sf,
    compare_means,
    compare_proportions,
    cuped_moments,
    cuped_theta,
    normal_ppf,
    normal_sf,
    srm_p_value,
    student_t_ppf,
    student_t_sf,
    verdict,
)

RUNS = 200


def close(a: float, b: float) -> bool:
    """The agreement asked of every formula: 1e-9 relative or 1e-12 absolute."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# --- distributions ---------------------------------------------------------------------------


def test_normal_matches_scipy():
    for q in [1e-12, 1e-6, 0.001, 0.025, 0.1, 0.3, 0.5, 0.7, 0.975, 0.999, 1 - 1e-9]:
        assert close(normal_ppf(q), stats.norm.ppf(q)), q
    for z in [-8.0, -3.0, -1.0, 0.0, 0.5, 1.96, 3.0, 6.0, 10.0, 30.0]:
        assert close(normal_sf(z), stats.norm.sf(z)), z
        # and relative accuracy in the far tail, where 1 - cdf would cancel
        assert math.isclose(normal_sf(z), stats.norm.sf(z), rel_tol=1e-12), z


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6])
def test_chi2_sf_matches_scipy(df):
    for x in [0.0, 1e-8, 0.01, 0.1, 0.5, 1.0, 2.0, 3.84, 5.99, 7.81, 10.0, 20.0, 50.0, 200.0, 700.0]:
        ours, ref = chi2_sf(x, df), stats.chi2.sf(x, df)
        assert close(ours, ref), (df, x, ours, ref)
        assert math.isclose(ours, ref, rel_tol=1e-9), (df, x)  # tails too, not only absolute


@pytest.mark.parametrize("df", [2.5, 7.3, 30, 1000])
def test_student_t_sf_matches_scipy(df):
    for t in [-40.0, -8.0, -2.0, -0.5, 0.0, 1e-6, 0.1, 0.5, 1.0, 1.645, 1.96, 2.5, 4.0, 8.0, 40.0]:
        ours, ref = student_t_sf(t, df), stats.t.sf(t, df)
        assert close(ours, ref), (df, t, ours, ref)


def test_student_t_sf_large_df_and_cauchy():
    # Welch df grows with the sample size; past 1e4 the continued fraction runs in Decimal.
    for df in [2e4, 1e6]:
        for t in [0.5, 1.96, 5.0]:
            assert math.isclose(student_t_sf(t, df), stats.t.sf(t, df), rel_tol=1e-9), (df, t)
    # df = 1 is the Cauchy distribution: sf(t) = 1/2 - atan(t)/pi exactly.
    for t in [-3.0, 1e-6, 0.3, 1.0, 7.0, 1e6]:
        assert close(student_t_sf(t, 1), 0.5 - math.atan(t) / math.pi), t


@pytest.mark.parametrize("df", [2.5, 7.3, 30, 1000])
def test_student_t_ppf_matches_scipy_and_round_trips(df):
    for q in [1e-9, 1e-4, 0.005, 0.025, 0.05, 0.2, 0.5, 0.8, 0.95, 0.975, 0.995, 1 - 1e-6]:
        t = student_t_ppf(q, df)
        assert close(t, stats.t.ppf(q, df)), (df, q, t)
        assert close(student_t_sf(t, df), 1 - q), (df, q)


def test_distribution_arguments_are_checked():
    for bad in [(1.0, 0), (1.0, 2.5), (float("nan"), 2)]:
        with pytest.raises(ValueError):
            chi2_sf(*bad)
    assert chi2_sf(-1.0, 3) == 1.0 and chi2_sf(math.inf, 3) == 0.0
    with pytest.raises(ValueError):
        student_t_sf(1.0, 0)
    for q in [0.0, 1.0]:
        with pytest.raises(ValueError):
            student_t_ppf(q, 5)
        with pytest.raises(ValueError):
            normal_ppf(q)


# --- sample-ratio mismatch --------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, weights",
    [
        ([5030, 4970], None),
        ([5200, 4800], None),
        ([3310, 3350, 3340], None),
        ([3000, 3400, 3600], None),
        ([2010, 7990], [0.2, 0.8]),
        ([2300, 7700], [1, 4]),
        ([5100, 2450, 2450], [0.5, 0.25, 0.25]),
        ([4700, 2700, 2600], [2, 1, 1]),
    ],
)
def test_srm_p_value_matches_scipy_chisquare(counts, weights):
    w = np.ones(len(counts)) if weights is None else np.asarray(weights, dtype=float)
    expected = sum(counts) * w / w.sum()
    ref = stats.chisquare(counts, f_exp=expected).pvalue
    assert close(srm_p_value(counts, weights), ref)


def test_srm_p_value_extremes_and_errors():
    assert srm_p_value([500, 500]) == 1.0
    assert srm_p_value([200, 800], [1, 4]) == 1.0
    assert srm_p_value([5600, 4400]) < 1e-30
    for counts, weights in [([10], None), ([0, 0], None), ([5, -1], None), ([5, 5], [1]), ([5, 5], [1, 0])]:
        with pytest.raises(ValueError):
            srm_p_value(counts, weights)


# --- rates ----------------------------------------------------------------------------------


def statsmodels_proportions(conv_c, n_c, conv_t, n_t, alpha=0.05):
    """proportions_ztest([conv_t, conv_c], [n_t, n_c]) and confint_proportions_2indep(method='wald')."""
    p_c, p_t = conv_c / n_c, conv_t / n_t
    pooled = (conv_c + conv_t) / (n_c + n_t)
    z = (p_t - p_c) / math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    p_value = 2 * stats.norm.sf(abs(z))
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    half = stats.norm.ppf(1 - alpha / 2) * se
    return p_t - p_c, p_value, p_t - p_c - half, p_t - p_c + half


PROPORTION_CASES = [
    (3, 7, 5, 9),  # tiny
    (1, 12, 0, 15),
    (120, 1000, 150, 1000),
    (480, 5000, 600, 5000),
    (90, 900, 80, 1100),  # unequal arms, treatment worse
    (100_000, 1_000_000, 101_000, 1_000_000),  # large n
    (2_400_000, 3_000_000, 2_399_000, 3_000_000),
]


@pytest.mark.parametrize("conv_c, n_c, conv_t, n_t", PROPORTION_CASES)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_compare_proportions_matches_statsmodels_formulas(conv_c, n_c, conv_t, n_t, alpha):
    c = compare_proportions(conv_c, n_c, conv_t, n_t, alpha=alpha)
    diff, p_value, low, high = statsmodels_proportions(conv_c, n_c, conv_t, n_t, alpha)
    assert close(c.estimate, diff)
    assert close(c.p_value, p_value)
    assert close(c.ci_low, low) and close(c.ci_high, high)
    assert close(c.relative, diff / (conv_c / n_c))
    assert c.method == "two-proportion z-test (pooled) + Wald CI (unpooled)"


@pytest.mark.parametrize("conv_c, n_c, conv_t, n_t", PROPORTION_CASES)
def test_pooled_z_test_equals_uncorrected_chi2_contingency(conv_c, n_c, conv_t, n_t):
    table = [[conv_t, n_t - conv_t], [conv_c, n_c - conv_c]]
    ref = stats.chi2_contingency(table, correction=False).pvalue
    assert close(compare_proportions(conv_c, n_c, conv_t, n_t).p_value, ref)


def test_compare_proportions_edge_cases():
    for args in [(0, 0, 1, 10), (1, 10, 0, 0), (11, 10, 1, 10), (-1, 10, 1, 10)]:
        with pytest.raises(ValueError):
            compare_proportions(*args)
    with pytest.raises(ValueError):
        compare_proportions(1, 10, 1, 10, alpha=0)
    for conv_c, n_c, conv_t, n_t in [(0, 50, 0, 80), (50, 50, 80, 80)]:
        c = compare_proportions(conv_c, n_c, conv_t, n_t)
        assert (c.estimate, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert compare_proportions(0, 50, 0, 80).relative is None  # control rate 0


# --- means ----------------------------------------------------------------------------------


MEAN_CASES = [
    # mean_c, var_c, n_c, mean_t, var_t, n_t
    (10.0, 4.0, 2, 12.0, 9.0, 3),  # smallest allowed arms
    (10.0, 4.0, 30, 10.8, 9.0, 25),
    (52.3, 1400.0, 1200, 55.1, 1900.0, 1150),
    (1.7, 0.8, 20_000, 1.69, 0.81, 21_000),  # Welch df > 1e4
    (100.0, 0.0, 50, 100.5, 4.0, 60),  # one arm constant
]


@pytest.mark.parametrize("mean_c, var_c, n_c, mean_t, var_t, n_t", MEAN_CASES)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_compare_means_matches_scipy_welch(mean_c, var_c, n_c, mean_t, var_t, n_t, alpha):
    c = compare_means(mean_c, var_c, n_c, mean_t, var_t, n_t, alpha=alpha)
    ref = stats.ttest_ind_from_stats(
        mean_t, math.sqrt(var_t), n_t, mean_c, math.sqrt(var_c), n_c, equal_var=False
    )
    assert close(c.p_value, ref.pvalue)
    # Welch-Satterthwaite df and the t interval, written out here
    a, b = var_c / n_c, var_t / n_t
    df = (a + b) ** 2 / (a**2 / (n_c - 1) + b**2 / (n_t - 1))
    half = stats.t.ppf(1 - alpha / 2, df) * math.sqrt(a + b)
    diff = mean_t - mean_c
    assert close(c.estimate, diff)
    assert close(c.ci_low, diff - half) and close(c.ci_high, diff + half)
    assert close(c.relative, diff / mean_c)
    assert c.method == "Welch t-test"


def test_compare_means_edge_cases():
    with pytest.raises(ValueError):
        compare_means(1.0, 1.0, 1, 2.0, 1.0, 10)
    with pytest.raises(ValueError):
        compare_means(1.0, -1.0, 10, 2.0, 1.0, 10)
    with pytest.raises(ValueError):
        compare_means(float("nan"), 1.0, 10, 2.0, 1.0, 10)
    same = compare_means(3.0, 0.0, 10, 3.0, 0.0, 10)
    assert (same.estimate, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    apart = compare_means(3.0, 0.0, 10, 4.0, 0.0, 10)
    assert (apart.ci_low, apart.ci_high, apart.p_value) == (1.0, 1.0, 0.0)
    assert compare_means(0.0, 1.0, 10, 1.0, 1.0, 10).relative is None


# --- CUPED ----------------------------------------------------------------------------------


def test_cuped_matches_per_user_adjustment_and_shrinks_variance():
    rng = np.random.default_rng(20240611)
    n = 3000
    x_c, x_t = rng.normal(50, 12, n), rng.normal(50, 12, n)  # pre-period spend
    y_c = 10 + 0.9 * x_c + rng.normal(0, 8, n)
    y_t = 10 + 0.9 * x_t + rng.normal(0, 8, n) + 1.0  # true effect +1.0
    x_all, y_all = np.concatenate([x_c, x_t]), np.concatenate([y_c, y_t])

    theta = cuped_theta(np.cov(x_all, y_all, ddof=1)[0, 1], x_all.var(ddof=1))
    grand_mean_x = x_all.mean()

    adjusted = {}
    for arm, x, y in (("c", x_c, y_c), ("t", x_t, y_t)):
        mean_adj, var_adj = cuped_moments(
            y.mean(), y.var(ddof=1), x.mean(), x.var(ddof=1), np.cov(x, y, ddof=1)[0, 1],
            theta, grand_mean_x,
        )
        direct = y - theta * (x - grand_mean_x)  # the per-user adjusted metric
        assert close(mean_adj, direct.mean())
        assert close(var_adj, direct.var(ddof=1))
        assert var_adj < 0.5 * y.var(ddof=1)  # rho ~ 0.8: variance shrinks by ~1 - rho^2
        adjusted[arm] = (mean_adj, var_adj)

    plain = compare_means(y_c.mean(), y_c.var(ddof=1), n, y_t.mean(), y_t.var(ddof=1), n)
    cuped = compare_means(
        adjusted["c"][0], adjusted["c"][1], n, adjusted["t"][0], adjusted["t"][1], n, cuped=True
    )
    direct_c = y_c - theta * (x_c - grand_mean_x)
    direct_t = y_t - theta * (x_t - grand_mean_x)
    assert close(cuped.estimate, direct_t.mean() - direct_c.mean())
    assert cuped.ci_high - cuped.ci_low < 0.7 * (plain.ci_high - plain.ci_low)
    assert cuped.ci_low < 1.0 < cuped.ci_high
    assert cuped.method == "Welch t-test + CUPED"


def test_cuped_theta_without_covariate_variance():
    assert cuped_theta(0.0, 0.0) == 0.0
    assert cuped_moments(5.0, 2.0, 3.0, 0.0, 0.0, 0.0, 3.0) == (5.0, 2.0)


# --- simulated experiments: error rates ------------------------------------------------------


def test_aa_proportions_false_positive_rate_and_coverage():
    rng = np.random.default_rng(1)
    n = 2000
    conv_c, conv_t = rng.binomial(n, 0.1, RUNS), rng.binomial(n, 0.1, RUNS)
    results = [compare_proportions(int(c), n, int(t), n) for c, t in zip(conv_c, conv_t)]
    fpr = np.mean([r.p_value < 0.05 for r in results])
    coverage = np.mean([r.ci_low <= 0.0 <= r.ci_high for r in results])
    assert 0.02 <= fpr <= 0.09, fpr
    assert coverage >= 0.90, coverage


def test_aa_means_false_positive_rate_on_skewed_revenue():
    rng = np.random.default_rng(2)
    n = 2000
    revenue_c = rng.exponential(25.0, (RUNS, n))  # heavily right-skewed, like revenue per user
    revenue_t = rng.exponential(25.0, (RUNS, n))
    results = [
        compare_means(c.mean(), c.var(ddof=1), n, t.mean(), t.var(ddof=1), n)
        for c, t in zip(revenue_c, revenue_t)
    ]
    fpr = np.mean([r.p_value < 0.05 for r in results])
    coverage = np.mean([r.ci_low <= 0.0 <= r.ci_high for r in results])
    assert 0.02 <= fpr <= 0.09, fpr
    assert coverage >= 0.90, coverage


def test_true_lift_power_and_coverage():
    rng = np.random.default_rng(3)
    n, p_c, p_t = 5000, 0.10, 0.12
    conv_c, conv_t = rng.binomial(n, p_c, RUNS), rng.binomial(n, p_t, RUNS)
    results = [compare_proportions(int(c), n, int(t), n) for c, t in zip(conv_c, conv_t)]
    coverage = np.mean([r.ci_low <= p_t - p_c <= r.ci_high for r in results])
    power = np.mean([r.p_value < 0.05 and r.estimate > 0 for r in results])
    assert 0.92 <= coverage <= 0.98, coverage
    assert power > 0.70, power  # ~0.89 expected at z = 0.02 / 0.0063


# --- verdict --------------------------------------------------------------------------------

P = "two-proportion z-test (pooled) + Wald CI (unpooled)"


def test_verdict_win():
    c = Comparison(0.021, 0.083, 0.004, 0.038, 0.012, P)
    assert verdict("purchase rate", "treatment", "control", c, 0.05, True) == (
        "treatment beats control on purchase rate by +2.1 pp (+8.3%) [0.4 pp, 3.8 pp], p=0.012"
    )


def test_verdict_loss():
    c = Comparison(-0.025, -0.2, -0.04, -0.01, 0.0004, P)
    assert verdict("purchase rate", "new_checkout", "control", c, 0.05, True) == (
        "new_checkout is worse than control on purchase rate by -2.5 pp (-20.0%) "
        "[-4.0 pp, -1.0 pp], p<0.001"
    )


def test_verdict_no_difference():
    c = Comparison(-0.003, -0.012, -0.019, 0.013, 0.71, P)
    assert verdict("purchase rate", "treatment", "control", c, 0.05, True) == (
        "no significant difference between treatment and control on purchase rate: "
        "-0.3 pp [-1.9 pp, 1.3 pp], p=0.71"
    )
    # the same numbers are significant at a looser alpha only if p < alpha
    assert verdict("purchase rate", "treatment", "control", c, 0.8, True).startswith(
        "treatment is worse than control"
    )


def test_verdict_means_and_small_rates():
    c = Comparison(1.23456, 0.0512, 0.3, 2.16789, 0.0093, "Welch t-test")
    assert verdict("revenue per user", "treatment", "control", c, 0.05, False) == (
        "treatment beats control on revenue per user by +1.235 (+5.1%) [0.3000, 2.168], p=0.0093"
    )
    # sub-1 pp differences get two decimals; a real comparison goes through end to end
    small = compare_proportions(400, 100_000, 430, 100_000)
    text = verdict("signup rate", "B", "A", small, 0.05, True)
    assert text.startswith("no significant difference between B and A on signup rate: +0.03 pp [")
