"""Cascades: a cheap backend on all N candidates, a stronger one on its top k.

For each (cheap, strong) pair whose single-stage options pass the hard rules (so budget and
cost are the only reasons the strong model cannot run on everything), the largest k in the grid
that passes every rule is kept; below it, the cheap stage's order stands. If no k fits, the
smallest is kept, rejected, so the explanation says why.

Quality of a cascade is a curve with one parameter:
``q = q_cheap + (q_strong - q_cheap) * min(1, k / saturation_k)``: re-scoring the top
``saturation_k`` of a reasonable first stage recovers the strong model's top 10 (rerankers are
usually run on a top 50-100). The default 50 is a prior; :func:`router.offline.fitting.fit_saturation_k`
fits it to cascades measured on labelled queries (``rerank-router calibrate --fit-constrained`` writes it to a
profile as ``cascade.saturation_k``, with each backend's measured quality). An adaptive cascade
escalates only when the first stage is unsure (top-1 margin below a calibrated threshold, see
:func:`router.offline.fitting.calibrate_margin_threshold`); its predicted cost and latency stay the worst case (both
stages), so ceilings and deadlines hold, and its quality is discounted to
``q_cheap + p * (q_cascade - q_cheap)`` for escalation share ``p``.

A profile's ``cascade.*`` thresholds (``profile:`` in config, router.profile) are resolved into
these params once, at config load: policies read no files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from policies.base import PlanningContext, assess
from router.plan import Assessed, Option, Stage

__all__ = [
    "BUDGET_RULES",
    "CascadeParams",
    "cascade_options",
    "cascade_quality",
]

# Rules that only say "too slow / too dear / too many for one call": a cascade may cure them.
BUDGET_RULES = frozenset({"latency_budget", "max_cost", "max_documents"})


class CascadeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cascades: bool = True
    cascade_k: tuple[int, ...] = (10, 20, 30, 50, 100, 200)
    """Candidate counts the strong stage may take (kept when top_n <= k < N)."""
    saturation_k: int = Field(50, ge=1)
    """Prior: a strong stage over the first stage's top ``saturation_k`` keeps its full quality."""
    adaptive_margin: float | None = Field(None, ge=0)
    """If set, the strong stage runs only when the cheap stage's top-1 margin is below this
    (calibrated with router.offline.fitting.calibrate_margin_threshold on your traffic's first-stage scores)."""
    expected_escalation: float = Field(1.0, gt=0, le=1)
    """Share of requests that escalate at ``adaptive_margin`` (from the same calibration)."""


def cascade_quality(cheap: float, strong: float, k: int, saturation_k: float) -> float:
    """The curve: the cheap stage's quality, rising linearly in k to the strong one's at ``saturation_k``."""
    return cheap + (strong - cheap) * min(1.0, k / saturation_k)


def _quality(cheap: float, strong: float, k: int, params: CascadeParams) -> float:
    full = cascade_quality(cheap, strong, k, params.saturation_k)
    if params.adaptive_margin is None:
        return full
    return cheap + params.expected_escalation * (full - cheap)


@functools.lru_cache(maxsize=256)
def _grid(cascade_k: tuple[int, ...], top_n: int, n: int) -> tuple[int, ...]:
    """The strong stage's candidate counts for ``top_n`` of ``n``, ascending (requests repeat a few shapes)."""
    return tuple(sorted({k for k in cascade_k if top_n <= k < n}))


def cascade_options(ctx: PlanningContext, singles: Sequence[Assessed], params: CascadeParams) -> list[Assessed]:
    if not params.cascades:
        return []
    grid = _grid(params.cascade_k, ctx.features.top_n, ctx.features.n_candidates)
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
    ctx: PlanningContext, cheap: str, strong: str, grid: Sequence[int], q_cheap: float, q_strong: float, params: CascadeParams
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
