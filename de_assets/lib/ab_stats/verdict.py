"""The plain-language verdict of one comparison (e.g. "treatment beats control on purchase rate by
+2.1 pp (+8.3%) [0.4 pp, 3.8 pp], p=0.012")."""

from __future__ import annotations

import math

from de_assets.lib.ab_stats.comparisons import Comparison



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
