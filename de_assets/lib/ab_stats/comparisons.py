"""The A/B tests: sample-ratio mismatch, rates, means, CUPED. Plain functions over per-variant
counts or moments (callers aggregate in SQL).

* Sample-ratio mismatch (``srm_p_value``): Pearson chi-square goodness of fit of users per variant
  against the planned split, ``X2 = sum (O_i - E_i)^2 / E_i`` with ``E_i = N w_i / sum w``,
  ``df = k - 1`` (= ``scipy.stats.chisquare(counts, f_exp=E).pvalue``).
* Rates (``compare_proportions``): p-value from the pooled two-proportion z-test,
  ``z = (p_t - p_c) / sqrt(p (1-p) (1/n_t + 1/n_c))`` with ``p = (x_t + x_c)/(n_t + n_c)``, two-sided
  (= statsmodels ``proportions_ztest([x_t, x_c], [n_t, n_c])``; ``z**2`` is the uncorrected 2x2
  Pearson chi-square, so the p-value also equals ``scipy.stats.chi2_contingency(correction=False)``).
  Confidence interval: unpooled Wald, ``(p_t - p_c) +- z_{1-alpha/2} sqrt(p_t(1-p_t)/n_t +
  p_c(1-p_c)/n_c)`` (= statsmodels ``confint_proportions_2indep(method="wald", compare="diff")``).
  The pooled variance is right under the null the test assumes, the unpooled one is right for an
  interval around a non-zero difference; so at the margin the test and the interval can disagree
  (p just under alpha while the interval touches 0, or the reverse). ``verdict`` follows the p-value.
* Means (``compare_means``): Welch's t-test from summary statistics (sample variances, ddof=1),
  ``t = (m_t - m_c) / se`` with ``se = sqrt(v_t/n_t + v_c/n_c)`` and the Welch-Satterthwaite
  ``df = se^4 / ((v_t/n_t)^2/(n_t-1) + (v_c/n_c)^2/(n_c-1))`` (Welch 1947, Satterthwaite 1946;
  = ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)``); interval
  ``(m_t - m_c) +- t_{1-alpha/2, df} se``.
* CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013): with a pre-experiment covariate X of each user,
  analyse ``Y' = Y - theta (X - mean X)`` instead of Y, with ``theta = cov(X, Y) / var(X)``. theta
  and mean X are computed ONCE over the users of all arms together (``cuped_theta``), never per
  arm, so that the same linear adjustment is applied to every arm and the difference of adjusted
  means stays unbiased (X is independent of the assignment). Per arm, from its moments
  (``cuped_moments``): ``mean Y' = mean Y - theta (mean X - grand mean X)`` and
  ``var Y' = var Y + theta^2 var X - 2 theta cov(X, Y)``, which are exactly the sample mean and
  variance of the per-user adjusted values; they then go through ``compare_means(..., cuped=True)``.
  The variance shrinks by a factor ``1 - rho^2`` (rho the correlation of X and Y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from de_assets.lib.ab_stats.distributions import chi2_sf, normal_ppf, normal_sf, student_t_ppf, student_t_sf

METHOD_PROPORTIONS = "two-proportion z-test (pooled) + Wald CI (unpooled)"
METHOD_MEANS = "Welch t-test"
CUPED_SUFFIX = " + CUPED"


def srm_p_value(counts: list[int], weights: list[float] | None = None) -> float:
    """Chi-square goodness of fit of users per variant vs the planned split (default equal); df = k-1.

    Equal to ``scipy.stats.chisquare(counts, f_exp=expected).pvalue`` with
    ``expected = total * weights / sum(weights)``. A small p-value (the usual alarm is p < 0.001)
    means the assignment or the logging is broken and the experiment should not be read.
    """
    k = len(counts)
    if k < 2:
        raise ValueError("need at least 2 variants")
    if any(c < 0 or c != int(c) for c in counts):
        raise ValueError(f"counts must be non-negative integers, got {counts!r}")
    total = sum(counts)
    if total <= 0:
        raise ValueError("no users in any variant")
    if weights is None:
        weights = [1.0] * k
    if len(weights) != k:
        raise ValueError(f"{len(weights)} weights for {k} variants")
    if any(not (w > 0.0 and math.isfinite(w)) for w in weights):
        raise ValueError(f"weights must be positive and finite, got {weights!r}")
    weight_sum = math.fsum(weights)
    expected = [total * w / weight_sum for w in weights]
    statistic = math.fsum((o - e) ** 2 / e for o, e in zip(counts, expected))
    return chi2_sf(statistic, k - 1)



@dataclass(frozen=True)
class Comparison:
    """Treatment vs control on one metric."""

    estimate: float  # treatment - control (absolute difference)
    relative: float | None  # estimate / control mean (None when the control mean is 0)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided
    method: str  # METHOD_PROPORTIONS | METHOD_MEANS, optionally + CUPED_SUFFIX


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _relative(estimate: float, control: float) -> float | None:
    return None if control == 0.0 else estimate / control


def compare_proportions(
    conv_c: int, n_c: int, conv_t: int, n_t: int, alpha: float = 0.05
) -> Comparison:
    """Conversion rate of treatment vs control: pooled z-test p-value, unpooled Wald interval.

    Raises ValueError when an arm has no users or a count is out of range. When the pooled
    variance is 0 (both rates 0, or both 1) there is nothing to test: p = 1 and the interval is
    the single point [diff, diff].
    """
    _check_alpha(alpha)
    for name, conv, n in (("control", conv_c, n_c), ("treatment", conv_t, n_t)):
        if n != int(n) or conv != int(conv):
            raise ValueError(f"{name}: counts must be integers, got {conv!r}/{n!r}")
        if n <= 0:
            raise ValueError(f"{name}: no users (n={n})")
        if not 0 <= conv <= n:
            raise ValueError(f"{name}: conversions {conv} outside [0, {n}]")
    p_c, p_t = conv_c / n_c, conv_t / n_t
    diff = p_t - p_c
    pooled = (conv_c + conv_t) / (n_c + n_t)
    pooled_var = pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t)
    if pooled_var <= 0.0:
        return Comparison(diff, _relative(diff, p_c), diff, diff, 1.0, METHOD_PROPORTIONS)
    z = diff / math.sqrt(pooled_var)
    p_value = min(1.0, 2.0 * normal_sf(abs(z)))
    se = math.sqrt(p_t * (1.0 - p_t) / n_t + p_c * (1.0 - p_c) / n_c)
    half = normal_ppf(1.0 - alpha / 2.0) * se
    return Comparison(
        diff, _relative(diff, p_c), diff - half, diff + half, p_value, METHOD_PROPORTIONS
    )


def compare_means(
    mean_c: float,
    var_c: float,
    n_c: int,
    mean_t: float,
    var_t: float,
    n_t: int,
    alpha: float = 0.05,
    *,
    cuped: bool = False,
) -> Comparison:
    """Welch's t-test and interval from per-arm mean, sample variance (ddof=1) and size.

    Needs n >= 2 in each arm (ValueError otherwise). When both variances are 0 the standard error
    is 0: p = 1 if the means are equal, else 0, and the interval is [diff, diff]. Pass
    ``cuped=True`` when the moments come from `cuped_moments` (only the method label changes).
    """
    _check_alpha(alpha)
    for name, mean, var, n in (("control", mean_c, var_c, n_c), ("treatment", mean_t, var_t, n_t)):
        if n != int(n) or n < 2:
            raise ValueError(f"{name}: need at least 2 users, got n={n!r}")
        if not (math.isfinite(mean) and math.isfinite(var)):
            raise ValueError(f"{name}: mean and variance must be finite")
        if var < 0.0:
            raise ValueError(f"{name}: negative variance {var!r}")
    method = METHOD_MEANS + (CUPED_SUFFIX if cuped else "")
    diff = mean_t - mean_c
    relative = _relative(diff, mean_c)
    a, b = var_c / n_c, var_t / n_t
    se2 = a + b
    if se2 <= 0.0:
        return Comparison(diff, relative, diff, diff, 1.0 if diff == 0.0 else 0.0, method)
    se = math.sqrt(se2)
    df = se2 * se2 / (a * a / (n_c - 1) + b * b / (n_t - 1))
    p_value = min(1.0, 2.0 * student_t_sf(abs(diff) / se, df))
    half = student_t_ppf(1.0 - alpha / 2.0, df) * se
    return Comparison(diff, relative, diff - half, diff + half, p_value, method)



def cuped_theta(cov_xy_pooled: float, var_x_pooled: float) -> float:
    """theta = cov(X, Y) / var(X), both over the users of ALL arms together; 0 when var(X) == 0."""
    if var_x_pooled < 0.0:
        raise ValueError(f"negative variance {var_x_pooled!r}")
    if var_x_pooled == 0.0:
        return 0.0
    return cov_xy_pooled / var_x_pooled


def cuped_moments(
    mean_y: float,
    var_y: float,
    mean_x: float,
    var_x: float,
    cov_xy: float,
    theta: float,
    grand_mean_x: float,
) -> tuple[float, float]:
    """(mean, variance) of one arm's adjusted metric Y' = Y - theta (X - grand_mean_x).

    ``mean_y, var_y, mean_x, var_x, cov_xy`` are the arm's own moments (variance and covariance
    with the same ddof, normally 1); ``theta`` (from `cuped_theta`) and ``grand_mean_x`` are shared
    by all arms. The variance is clamped at 0 against rounding when X and Y are collinear.
    """
    mean_adj = mean_y - theta * (mean_x - grand_mean_x)
    var_adj = var_y + theta * theta * var_x - 2.0 * theta * cov_xy
    return mean_adj, max(0.0, var_adj)
