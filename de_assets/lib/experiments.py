"""Statistics core of the A/B experiment readout, in pure Python (stdlib ``math`` and ``statistics``).

No scipy or statsmodels at run time: the few distribution functions the readout needs are written
here from their closed forms and agree with scipy/statsmodels to ~1e-12 (checked against scipy in
``de_assets_tests/test_experiment_stats.py``, where scipy is a test-only dependency). Plain
functions and a dataclass, with no Dagster and no DuckDB: callers aggregate per-variant counts or
moments in SQL and hand the summary numbers to these functions.

Distributions
-------------
* Standard normal: ``normal_ppf`` is ``statistics.NormalDist().inv_cdf`` (Wichura's AS241, ~1e-16);
  ``normal_sf(z) = erfc(z / sqrt 2) / 2`` uses ``math.erfc`` rather than ``1 - NormalDist().cdf(z)``
  so that small upper tails keep their relative accuracy (``NormalDist.cdf`` is ``(1 + erf)/2``,
  which cancels for z > ~5).
* Chi-square with integer ``df`` (Abramowitz & Stegun 26.4.4-26.4.5), with ``h = x/2``:
  even df:  ``Q = exp(-h) * sum_{i=0}^{df/2-1} h**i / i!``;
  odd df:   ``Q = erfc(sqrt h) + exp(-h) * sum_{i=1}^{(df-1)/2} h**(i-1/2) / Gamma(i+1/2)``,
  and ``erfc(sqrt h) = 2 * normal_sf(sqrt x)``. Every term is positive, so there is no
  cancellation; terms are evaluated in log space (``lgamma``) so that large x does not underflow
  ``exp(-h)`` before the sum is taken.
* Student t with real ``df`` (Welch's df is not an integer): for t >= 0,
  ``sf(t) = 0.5 * I_{df/(df+t^2)}(df/2, 1/2)`` (A&S 26.7.1; Numerical Recipes eq. 6.14.10), where
  ``I_x(a, b)`` is the regularized incomplete beta function, computed by the Lentz continued
  fraction ``betacf`` of Numerical Recipes (Press et al., 3rd ed., section 6.4), switched to
  ``1 - I_{1-x}(b, a)`` when ``x >= (a+1)/(a+b+2)`` so that the fraction converges fast; for t < 0,
  ``sf(t) = 1 - sf(-t)``. With a large df (a = df/2) the result is sensitive to the rounding of
  x, which is then near 1, so: the prefactor takes ``log x = -log1p(t^2/df)``, the ratio
  ``Gamma(a+b)/Gamma(a)`` comes from a Stirling difference rather than two large ``lgamma``s,
  and above df = 1e4 the continued fraction runs in 40-digit ``decimal`` arithmetic (~0.15 ms);
  relative error about 1e-13 or less at any df (checked against mpmath). ``student_t_ppf``
  inverts the survival function by Newton's method on ``log sf`` safeguarded by bisection, to a
  relative 1e-12 in t.

Tests
-----
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
from decimal import Decimal, localcontext
from statistics import NormalDist

__all__ = [
    "Comparison",
    "chi2_sf",
    "compare_means",
    "compare_proportions",
    "cuped_moments",
    "cuped_theta",
    "normal_ppf",
    "normal_sf",
    "srm_p_value",
    "student_t_ppf",
    "student_t_sf",
    "verdict",
]

_STD_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)

METHOD_PROPORTIONS = "two-proportion z-test (pooled) + Wald CI (unpooled)"
METHOD_MEANS = "Welch t-test"
CUPED_SUFFIX = " + CUPED"


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------


def normal_ppf(q: float) -> float:
    """Quantile of the standard normal: the z with P(Z <= z) = q, for 0 < q < 1."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    return _STD_NORMAL.inv_cdf(q)


def normal_sf(z: float) -> float:
    """Survival function of the standard normal, P(Z > z) (erfc form, accurate in the upper tail)."""
    if math.isnan(z):
        raise ValueError("z is NaN")
    return 0.5 * math.erfc(z / _SQRT2)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square with integer ``df >= 1``, from the exact closed forms."""
    if isinstance(df, bool) or df != int(df) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    df = int(df)
    if math.isnan(x):
        raise ValueError("x is NaN")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    h = 0.5 * x
    log_h = math.log(h)
    if df % 2 == 0:
        total = sum(math.exp(-h + i * log_h - math.lgamma(i + 1.0)) for i in range(df // 2))
    else:
        total = 2.0 * normal_sf(math.sqrt(x))
        total += sum(
            math.exp(-h + (i - 0.5) * log_h - math.lgamma(i + 0.5))
            for i in range(1, (df - 1) // 2 + 1)
        )
    return min(1.0, total)


_CF_EPS = 1e-15
_CF_FPMIN = 1e-300
_CF_EPS_DECIMAL = Decimal("1e-24")
_DECIMAL_PREC = 40
_PRECISE_DF = 1e4  # above this df the continued fraction runs in Decimal (error ~ a * eps)
_CF_MAXIT = 100_000


def _betacf(a, b, x, eps=_CF_EPS):
    """Continued fraction of the incomplete beta function (Numerical Recipes ``betacf``, Lentz).

    Written with integer constants only so that it also runs on ``decimal.Decimal`` arguments.
    """
    fpmin = type(x)(_CF_FPMIN)
    qab, qap, qam = a + b, a + 1, a - 1
    c = 1
    d = 1 - qab * x / qap
    if abs(d) < fpmin:
        d = fpmin
    d = 1 / d
    h = d
    for m in range(1, _CF_MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        if abs(d) < fpmin:
            d = fpmin
        c = 1 + aa / c
        if abs(c) < fpmin:
            c = fpmin
        d = 1 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        if abs(d) < fpmin:
            d = fpmin
        c = 1 + aa / c
        if abs(c) < fpmin:
            c = fpmin
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _lgamma_ratio(a: float, b: float) -> float:
    """log(Gamma(a+b) / Gamma(a)) for a, b > 0, without the cancellation of two big lgammas.

    For a >= 100 it is the difference of two Stirling series written so that the large terms
    cancel analytically: (a+b-1/2) log1p(b/a) + b log a - b + [S(a+b) - S(a)], with
    S(z) = 1/(12z) - 1/(360z^3) + 1/(1260z^5) - 1/(1680z^7) (truncation error < 1e-20 there).
    """
    if a < 100.0:
        return math.lgamma(a + b) - math.lgamma(a)

    def series(z: float) -> float:
        z2 = z * z
        return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * z2)) / z2) / z2) / z

    return (a + b - 0.5) * math.log1p(b / a) + b * math.log(a) - b + (series(a + b) - series(a))


def _betai(
    a: float,
    b: float,
    x: float,
    y: float,
    log_x: float,
    log_y: float,
    precise: tuple[Decimal, Decimal] | None = None,
) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 < x < 1.

    ``y = 1 - x`` and the logs are passed in, computed by the caller without cancellation: with
    a large ``a`` (Student t with a large df) the prefactor x^a (1-x)^b is sensitive to them.
    So is the continued fraction when x is near 1 (its relative error grows like a * eps): for
    large ``a`` the caller passes ``precise = (x, y)`` as 40-digit Decimals, and the continued
    fraction is then evaluated in Decimal arithmetic.
    """
    log_front = _lgamma_ratio(a, b) - math.lgamma(b) + a * log_x + b * log_y
    upper = x >= (a + 1.0) / (a + b + 2.0)  # use I_x(a, b) = 1 - I_y(b, a): faster convergence
    if precise is None:
        cf = _betacf(b, a, y) if upper else _betacf(a, b, x)
    else:
        with localcontext() as ctx:
            ctx.prec = _DECIMAL_PREC
            da, db = Decimal(a), Decimal(b)
            px, py = precise
            cf = float(
                _betacf(db, da, py, _CF_EPS_DECIMAL) if upper else _betacf(da, db, px, _CF_EPS_DECIMAL)
            )
    if upper:
        return 1.0 - math.exp(log_front) * cf / b
    return math.exp(log_front) * cf / a


def _check_t_df(df: float) -> None:
    if math.isnan(df) or df <= 0.0:
        raise ValueError(f"df must be > 0, got {df!r}")


def _t_upper(t: float, df: float) -> float:
    """P(T > t) for t >= 0."""
    if math.isinf(t):
        return 0.0
    if math.isinf(df):
        return normal_sf(t)
    if t == 0.0:
        return 0.5
    if t > 1e100 and df < 1e50:  # t^2 would overflow; df + t^2 == t^2 to double precision
        log_x = math.log(df) - 2.0 * math.log(t)
        x, y, log_y = math.exp(log_x), 1.0, 0.0
    else:
        t2 = t * t
        x = df / (df + t2)
        y = t2 / (df + t2)
        log_x = -math.log1p(t2 / df)
        log_y = math.log(t2) - math.log(df + t2)
    precise = None
    if df > _PRECISE_DF:
        with localcontext() as ctx:
            ctx.prec = _DECIMAL_PREC
            d_df, d_t2 = Decimal(df), Decimal(t) * Decimal(t)
            precise = (d_df / (d_df + d_t2), d_t2 / (d_df + d_t2))
    return 0.5 * _betai(0.5 * df, 0.5, x, y, log_x, log_y, precise)


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for T Student-t with real ``df > 0`` (non-integer df as in Welch's test)."""
    _check_t_df(df)
    if math.isnan(t):
        raise ValueError("t is NaN")
    if t >= 0.0:
        return _t_upper(t, df)
    return 1.0 - _t_upper(-t, df)


def _t_log_pdf(t: float, df: float) -> float:
    return (
        _lgamma_ratio(0.5 * df, 0.5)
        - 0.5 * math.log(df * math.pi)
        - 0.5 * (df + 1.0) * math.log1p((t / math.sqrt(df)) ** 2)
    )


def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t with real ``df > 0``: the t with P(T <= t) = q, for 0 < q < 1.

    Solves ``sf(t) = p`` with ``p = min(q, 1-q)`` for t > 0 (then uses the symmetry), by Newton's
    method on ``log sf`` kept inside a bracket that bisection shrinks when a step leaves it,
    until the step is below 1e-12 relative (agrees with ``scipy.stats.t.ppf`` to ~1e-13).
    """
    _check_t_df(df)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if q == 0.5:
        return 0.0
    if math.isinf(df):
        return normal_ppf(q)
    p = q if q < 0.5 else 1.0 - q  # upper-tail probability to solve for, p < 0.5
    log_p = math.log(p)

    # Bracket [lo, hi] with sf(lo) >= p >= sf(hi): the t tails are heavier than the normal ones,
    # so start at the normal quantile (below the t quantile) and double until sf drops below p.
    lo, hi = 0.0, max(1.0, normal_ppf(1.0 - p))
    while _t_upper(hi, df) > p:
        lo, hi = hi, hi * 2.0
        if math.isinf(hi):  # pragma: no cover - would need p below the smallest double
            raise ArithmeticError("could not bracket the t quantile")
    t = hi if lo == 0.0 else 0.5 * (lo + hi)
    for _ in range(500):
        sf = _t_upper(t, df)
        if sf > p:
            lo = t
        elif sf < p:
            hi = t
        else:
            break
        # Newton on g(t) = log sf(t) - log p, g'(t) = -pdf(t)/sf(t).
        new_t = math.nan
        if sf > 0.0:
            log_sf = math.log(sf)
            new_t = t + (log_sf - log_p) * math.exp(log_sf - _t_log_pdf(t, df))
        if not lo < new_t < hi:  # NaN also lands here
            new_t = math.sqrt(lo * hi) if lo > 0.0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if abs(new_t - t) <= 1e-12 * max(1.0, abs(t)) or hi - lo <= 1e-14 * max(1.0, hi):
            t = new_t
            break
        t = new_t
    return t if q > 0.5 else -t


# --------------------------------------------------------------------------------------------
# Sample-ratio mismatch
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CUPED
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Plain-language verdict
# --------------------------------------------------------------------------------------------


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _fmt_sig(x: float, digits: int = 4, sign: bool = False) -> str:
    """``x`` with ``digits`` significant digits, in positional notation for ordinary magnitudes."""
    if x == 0.0 or not math.isfinite(x):
        text = f"{0.0 if x == 0.0 else x:g}"
    elif 1e-4 <= abs(x) < 1e15:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
        rounded = round(x, decimals)  # 9.9996 -> 10.0: one digit fewer after the point
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
        text = f"{round(x, decimals):.{decimals}f}"
    else:
        text = f"{x:.{digits - 1}e}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    if sign and not text.startswith("-"):
        text = "+" + text
    return text


def _fmt_pp(x: float, decimals: int, sign: bool = False) -> str:
    text = f"{100.0 * x:.{decimals}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    if sign and not text.startswith("-"):
        text = "+" + text
    return f"{text} pp"


def verdict(
    metric: str, variant: str, control: str, c: Comparison, alpha: float, is_rate: bool
) -> str:
    """One plain-language line, decided by ``c.p_value < alpha`` and the sign of the estimate.

    Assumes higher is better ("beats" = significantly higher than control).

    Rates are shown in percentage points (one decimal; two when every number is under 1 pp),
    means with 4 significant digits; the relative change is shown for a significant result.
    E.g. "treatment beats control on purchase rate by +2.1 pp (+8.3%) [0.4 pp, 3.8 pp], p=0.012".
    """
    if is_rate:
        biggest = max(abs(c.estimate), abs(c.ci_low), abs(c.ci_high))
        decimals = 1 if round(100.0 * biggest, 1) >= 1.0 else 2

        def fmt(x: float, sign: bool = False) -> str:
            return _fmt_pp(x, decimals, sign)

    else:

        def fmt(x: float, sign: bool = False) -> str:
            return _fmt_sig(x, 4, sign)

    interval = f"[{fmt(c.ci_low)}, {fmt(c.ci_high)}]"
    p_text = _fmt_p(c.p_value)
    if c.p_value >= alpha or c.estimate == 0.0:
        return (
            f"no significant difference between {variant} and {control} on {metric}: "
            f"{fmt(c.estimate, sign=True)} {interval}, {p_text}"
        )
    relation = "beats" if c.estimate > 0.0 else "is worse than"
    relative = "" if c.relative is None else f" ({100.0 * c.relative:+.1f}%)"
    return (
        f"{variant} {relation} {control} on {metric} by {fmt(c.estimate, sign=True)}{relative} "
        f"{interval}, {p_text}"
    )
