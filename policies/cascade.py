"""Cascades: a cheap backend on all N candidates, a stronger one on its top k.

For each (cheap, strong) pair whose single-stage options pass the hard rules (so budget and
cost are the only reasons the strong model cannot run on everything), the largest k in the grid
that passes every rule is kept; below it, the cheap stage's order stands. If no k fits, the
smallest is kept, rejected, so the explanation says why.

Quality of a cascade is a curve with one parameter:
``q = q_cheap + (q_strong - q_cheap) * min(1, k / saturation_k)``: re-scoring the top
``saturation_k`` of a reasonable first stage recovers the strong model's top 10 (rerankers are
usually run on a top 50-100). The default 50 is a prior; :func:`fit_saturation_k` fits it to
cascades measured on labelled queries (``rerank-router calibrate --fit-constrained`` writes it to a
profile as ``cascade.saturation_k``, with each backend's measured quality). An adaptive cascade
escalates only when the first stage is unsure (top-1 margin below a calibrated threshold, see
:func:`calibrate_margin_threshold`); its predicted cost and latency stay the worst case (both
stages), so ceilings and deadlines hold, and its quality is discounted to
``q_cheap + p * (q_cascade - q_cheap)`` for escalation share ``p``.

The thresholds a profile may set (``thresholds:`` in router.calibration's profile file) are named
by :data:`PROFILE_THRESHOLDS`; ``profile: PATH`` in the constrained policy's params reads them, and
they win over the params given beside it (as a profile's measured spec values win over ``spec:``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.base import PlanningContext, assess
from router.plan import Assessed, Option, Stage

__all__ = [
    "BUDGET_RULES",
    "PROFILE_THRESHOLDS",
    "CascadeParams",
    "calibrate_margin_threshold",
    "cascade_options",
    "cascade_quality",
    "fit_saturation_k",
    "profile_thresholds",
]

# Rules that only say "too slow / too dear / too many for one call": a cascade may cure them.
BUDGET_RULES = frozenset({"latency_budget", "max_cost", "max_documents"})

PROFILE_THRESHOLDS: Mapping[str, str] = {
    "cascade.saturation_k": "saturation_k",
    "cascade.adaptive_margin": "adaptive_margin",
    "cascade.expected_escalation": "expected_escalation",
}
"""Profile threshold name -> the CascadeParams field it sets."""


class CascadeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cascades: bool = True
    cascade_k: tuple[int, ...] = (10, 20, 30, 50, 100, 200)
    """Candidate counts the strong stage may take (kept when top_n <= k < N)."""
    saturation_k: int = Field(50, ge=1)
    """Prior: a strong stage over the first stage's top ``saturation_k`` keeps its full quality."""
    adaptive_margin: float | None = Field(None, ge=0)
    """If set, the strong stage runs only when the cheap stage's top-1 margin is below this
    (calibrated with calibrate_margin_threshold on your traffic's first-stage scores)."""
    expected_escalation: float = Field(1.0, gt=0, le=1)
    """Share of requests that escalate at ``adaptive_margin`` (from the same calibration)."""
    profile: str | None = None
    """A profile file (router.calibration) whose ``cascade.*`` thresholds set the fields above
    (they win over values given here); fit one with ``rerank-router calibrate --fit-constrained``."""


def profile_thresholds(path: str) -> dict[str, Any]:
    """CascadeParams fields set by the ``cascade.*`` thresholds of the profile at ``path``."""
    from router.calibration import load_profile

    found = load_profile(path).thresholds
    out: dict[str, Any] = {}
    for name, field in PROFILE_THRESHOLDS.items():
        if name in found:
            value = found[name]
            out[field] = round(value) if field == "saturation_k" else (None if math.isinf(value) else value)
    return out


def calibrate_margin_threshold(margins: Sequence[float], escalation_share: float) -> float:
    """The margin threshold under which ``escalation_share`` of requests escalate.

    ``margins`` are first-stage top-1 minus top-2 scores observed on representative traffic (see
    router.executor.top_margin). Escalating when margin < threshold sends about that share on.
    """
    if not 0 < escalation_share <= 1:
        raise ValueError("escalation_share must be in (0, 1]")
    finite = sorted(m for m in margins if math.isfinite(m))
    if not finite:
        raise ValueError("no finite margins to calibrate on")
    if escalation_share == 1:
        return math.inf
    position = escalation_share * (len(finite) - 1)
    low, high = math.floor(position), math.ceil(position)
    value = finite[low] + (finite[high] - finite[low]) * (position - low)
    # Strictly above the quantile's value, so ties at it escalate too.
    return math.nextafter(value, math.inf)


def cascade_quality(cheap: float, strong: float, k: int, saturation_k: float) -> float:
    """The curve: the cheap stage's quality, rising linearly in k to the strong one's at ``saturation_k``."""
    return cheap + (strong - cheap) * min(1.0, k / saturation_k)


def fit_saturation_k(
    tiers: Mapping[str, float], cascades: Mapping[tuple[str, str, int], float], candidates: Iterable[int] = range(1, 201)
) -> int:
    """The ``saturation_k`` whose curve fits measured cascades best (least squares).

    ``tiers``: backend -> its measured mean quality alone on all candidates; ``cascades``:
    (cheap, strong, k) -> the measured mean quality of cheap@N -> strong@k on the same queries.
    Only pairs the planner forms (strong better than cheap) count. The sum of squared errors over
    the means equals that over the queries up to a constant, so this is the per-query fit. Ties
    (e.g. every measured k already saturated) go to the largest ``saturation_k``: the curve that
    claims the least for shallow cascades.
    """
    points = [
        (tiers[c], tiers[s], k, q) for (c, s, k), q in cascades.items() if c in tiers and s in tiers and tiers[s] > tiers[c]
    ]
    if not points:
        raise ValueError("no measured cascade whose strong stage beats its cheap one: nothing to fit saturation_k on")
    grid = sorted(set(candidates))
    if not grid or grid[0] < 1:
        raise ValueError("saturation_k candidates must be positive integers")

    def error(s: int) -> float:
        return sum((cascade_quality(qc, qs, k, s) - q) ** 2 for qc, qs, k, q in points)

    errors = [(error(s), s) for s in grid]
    least = min(e for e, _ in errors)
    return max(s for e, s in errors if e <= least + 1e-15)


def _quality(cheap: float, strong: float, k: int, params: CascadeParams) -> float:
    full = cascade_quality(cheap, strong, k, params.saturation_k)
    if params.adaptive_margin is None:
        return full
    return cheap + params.expected_escalation * (full - cheap)


def cascade_options(ctx: PlanningContext, singles: Sequence[Assessed], params: CascadeParams) -> list[Assessed]:
    if not params.cascades:
        return []
    n, top_n = ctx.features.n_candidates, ctx.features.top_n
    grid = sorted({k for k in params.cascade_k if top_n <= k < n})
    if not grid:
        return []
    usable = {
        a.option.backends[0]: a.option.estimate.quality
        for a in singles
        if len(a.option.stages) == 1
        and a.option.estimate.quality is not None
        and all(r.rule in BUDGET_RULES for r in a.rejections)
    }
    out: list[Assessed] = []
    for cheap, q_cheap in usable.items():
        for strong, q_strong in usable.items():
            if q_cheap is None or q_strong is None or q_strong <= q_cheap:
                continue
            out.append(_largest_feasible(ctx, cheap, strong, grid, q_cheap, q_strong, params))
    return out


def _largest_feasible(
    ctx: PlanningContext, cheap: str, strong: str, grid: list[int], q_cheap: float, q_strong: float, params: CascadeParams
) -> Assessed:
    """Latency and cost grow with k: the first feasible k from the top is the largest; if none
    is feasible, the smallest k's rejection explains why."""
    for k in reversed(grid):
        [assessed] = assess([_option(ctx, cheap, strong, k, q_cheap, q_strong, params)], ctx)
        if assessed.feasible:
            return assessed
    return assessed


def _option(
    ctx: PlanningContext, cheap: str, strong: str, k: int, q_cheap: float, q_strong: float, params: CascadeParams
) -> Option:
    stages = (Stage(cheap, ctx.features.n_candidates), Stage(strong, k, escalate_below_margin=params.adaptive_margin))
    option = ctx.estimate(stages)
    return replace(option, estimate=replace(option.estimate, quality=_quality(q_cheap, q_strong, k, params)))
