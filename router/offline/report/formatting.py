"""How the A/B report writes numbers: quality, milliseconds and dollars, signed differences, intervals
(``0.712 [0.687 to 0.736]``), with a true minus sign (−) for negative values."""

from __future__ import annotations

import math
from collections.abc import Callable

from router.offline.report.stats import Interval

__all__ = ["Fmt", "cell", "ci_name", "money", "ms", "score", "signed", "span"]

Fmt = Callable[[float], str]
_MINUS = "\u2212"


def ci_name(level: float) -> str:
    return f"{100 * level:g}% CI"


def score(x: float) -> str:
    """A quality value (nDCG@10, MRR@10): three decimals."""
    return f"{x:.3f}"


def ms(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def money(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:#.3g}"


def signed(x: float, fmt: Fmt) -> str:
    """``+0.032`` or ``−$7.37``: always a sign."""
    body = fmt(abs(x))
    return (_MINUS if x < 0 else "+") + body


def span(iv: Interval, fmt: Fmt) -> str:
    """The interval's bounds: ``−0.004 to 0.067``."""

    def one(x: float) -> str:
        return (_MINUS if x < 0 else "") + fmt(abs(x))

    return f"{one(iv.low)} to {one(iv.high)}"


def cell(iv: Interval, fmt: Fmt) -> str:
    """A table cell: ``-`` when there is no estimate, the estimate alone when there is no interval."""
    if not math.isfinite(iv.estimate):
        return "-"
    if not iv.defined:
        return _neg(fmt(iv.estimate))
    return f"{_neg(fmt(iv.estimate))} [{span(iv, fmt)}]"


def _neg(text: str) -> str:
    return text.replace("-", _MINUS)
