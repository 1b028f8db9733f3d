"""Statistics of A/B experiments (the readout's core), in pure Python (stdlib ``math`` and ``statistics``).

No scipy or statsmodels at run time: the few distribution functions the readout needs are written
here from their closed forms and agree with scipy/statsmodels to ~1e-12 (checked against scipy in
``de_assets_tests/test_experiment_stats.py``, where scipy is a test-only dependency). Plain
functions and a dataclass, with no Dagster and no DuckDB: callers aggregate per-variant counts or
moments in SQL and hand the summary numbers to these functions.

Modules: ``distributions`` (normal, chi-square, Student t), ``comparisons`` (sample-ratio
mismatch, two-proportion z-test, Welch t-test, CUPED) and ``verdict`` (the plain-language line).
"""

from de_assets.lib.ab_stats.comparisons import (
    Comparison,
    compare_means,
    compare_proportions,
    cuped_moments,
    cuped_theta,
    srm_p_value,
)
from de_assets.lib.ab_stats.distributions import chi2_sf, normal_ppf, normal_sf, student_t_ppf, student_t_sf
from de_assets.lib.ab_stats.verdict import verdict

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
