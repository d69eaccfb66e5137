"""Bootstrap confidence intervals: of one arm's mean or quantile, and of the contrast between two arms.

    rng = numpy.random.default_rng(0)
    bootstrap(latencies, quantile(0.95), rng=rng)                  # p95 with its percentile CI
    compare(cheap_ndcg, control_ndcg, mean, rng=rng)               # difference, paired when ids are shared

Arms are given as ``{request id: value}``. When two arms share most request ids (a shadow arm scores
the same requests as the primary) the contrast resamples *pairs* of the shared requests; otherwise the
two arms are resampled independently. Percentile intervals, 2,000 resamples and 95% by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "Contrast",
    "Interval",
    "Statistic",
    "bootstrap",
    "compare",
    "is_paired",
    "mean",
    "quantile",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
PAIRED_OVERLAP = 0.5
"""Pair two arms when the shared request ids are at least this share of the smaller arm."""

Array = npt.NDArray[np.float64]
Statistic = Callable[[Array], Array]
"""Reduces the last axis: a (resamples, n) array to (resamples,); a (n,) array to a 0-d array."""
Contrast = Literal["difference", "relative"]


def mean(values: Array) -> Array:
    return np.asarray(np.mean(values, axis=-1))


def quantile(q: float) -> Statistic:
    """The q-quantile (linear interpolation, numpy's default) as a statistic: ``quantile(0.95)``."""

    def statistic(values: Array) -> Array:
        return np.asarray(np.quantile(values, q, axis=-1))

    return statistic


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its bootstrap percentile interval; NaN throughout when it cannot be formed."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL
    n: int = 0
    paired: bool | None = None
    """For a contrast of two arms: whether the resampling was paired; None for one arm."""

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    @property
    def excludes_zero(self) -> bool:
        """The interval lies strictly on one side of 0: a significant difference at this level."""
        return self.defined and (self.low > 0 or self.high < 0)

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. US$ per request -> per 1,000 requests)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.level, self.n, self.paired)

    def to_dict(self) -> dict[str, float | int | bool | None]:
        def finite(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        out: dict[str, float | int | bool | None] = {
            "estimate": finite(self.estimate),
            "low": finite(self.low),
            "high": finite(self.high),
            "level": self.level,
            "n": self.n,
        }
        if self.paired is not None:
            out["paired"] = self.paired
        return out


_NAN = float("nan")
_CHUNK_CELLS = 2_000_000
"""Resample in chunks so that ``resamples x n`` never needs more than ~16 MB at once."""


def bootstrap(
    values: Sequence[float] | Array,
    statistic: Statistic = mean,
    *,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """The statistic of ``values`` with its percentile interval (NaN bounds below two values)."""
    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, level, 0)
    estimate = float(statistic(data))
    if n < 2:
        return Interval(estimate, _NAN, _NAN, level, n)
    draws = _resample(lambda idx: statistic(data[idx]), n, rng=rng, resamples=resamples)
    return _interval(estimate, draws, level, n, None)


def is_paired(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two arms share enough request ids for a paired comparison (see ``PAIRED_OVERLAP``)."""
    smaller = min(len(a), len(b))
    return smaller > 0 and len(a.keys() & b.keys()) >= max(2, PAIRED_OVERLAP * smaller)


def compare(
    a: Mapping[str, float],
    b: Mapping[str, float],
    statistic: Statistic = mean,
    *,
    rng: np.random.Generator,
    contrast: Contrast = "difference",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """``statistic(a) - statistic(b)`` (or ``statistic(a) / statistic(b) - 1`` for ``relative``) with its
    interval: paired over the shared request ids when :func:`is_paired`, else two independent samples."""
    paired = is_paired(a, b)
    if paired:
        shared = [key for key in a if key in b]
        xa = np.array([a[k] for k in shared], dtype=np.float64)
        xb = np.array([b[k] for k in shared], dtype=np.float64)
    else:
        xa = np.fromiter(a.values(), dtype=np.float64, count=len(a))
        xb = np.fromiter(b.values(), dtype=np.float64, count=len(b))
    n = min(len(xa), len(xb))
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, level, 0, paired)

    def contrast_of(sa: Array, sb: Array) -> Array:
        if contrast == "difference":
            return np.asarray(sa - sb)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(np.where(sb != 0, sa / np.where(sb != 0, sb, 1.0) - 1.0, _NAN))

    estimate = float(contrast_of(statistic(xa), statistic(xb)))
    if n < 2:
        return Interval(estimate, _NAN, _NAN, level, n, paired)
    if paired:
        draws = _resample(lambda idx: contrast_of(statistic(xa[idx]), statistic(xb[idx])), n, rng=rng, resamples=resamples)
    else:
        da = _resample(lambda idx: statistic(xa[idx]), len(xa), rng=rng, resamples=resamples)
        db = _resample(lambda idx: statistic(xb[idx]), len(xb), rng=rng, resamples=resamples)
        draws = contrast_of(da, db)
    return _interval(estimate, draws, level, n, paired)


def _resample(of: Callable[[npt.NDArray[np.intp]], Array], n: int, *, rng: np.random.Generator, resamples: int) -> Array:
    """``of(indices)`` for ``resamples`` draws of n indices with replacement, chunked to bound memory."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    chunk = max(1, _CHUNK_CELLS // n)
    parts = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        parts.append(np.asarray(of(rng.integers(0, n, size=(size, n))), dtype=np.float64))
    return np.concatenate(parts)


def _interval(estimate: float, draws: Array, level: float, n: int, paired: bool | None) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    finite = draws[np.isfinite(draws)]
    if len(finite) < len(draws):  # e.g. a relative contrast whose denominator resampled to 0
        return Interval(estimate, _NAN, _NAN, level, n, paired)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), level, n, paired)
