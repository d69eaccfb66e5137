"""The Policy seam and the machinery every policy shares.

A policy turns a :class:`PlanningContext` into a :class:`~router.plan.Plan`. Policies differ only
in their objective (the sort key over feasible options); the hard rules in
:mod:`policies.rules` apply to all of them, fallbacks included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from policies.context import BackendView, PlanningContext, Policy, Rule, SortKey
from policies.rules import DEFAULT_RULES, check_all
from router.plan import Assessed, Option, Plan, new_assessed, new_plan, new_stage

__all__ = [
    "BackendView",
    "PlanningContext",
    "Policy",
    "SortKey",
    "assess",
    "by_cost",
    "by_latency",
    "by_quality",
    "plan_by",
    "single_stage_options",
]


def _cost(option: Option) -> float:
    return math.inf if option.estimate.cost_usd is None else option.estimate.cost_usd


def by_quality(option: Option) -> tuple[float, ...]:
    """Best predicted quality first; ties: cheaper, then faster. Unknown quality sorts last."""
    quality = option.estimate.quality
    return (-quality if quality is not None else math.inf, _cost(option), option.estimate.latency_ms)


def by_cost(option: Option) -> tuple[float, ...]:
    return (_cost(option), option.estimate.latency_ms, by_quality(option)[0])


def by_latency(option: Option) -> tuple[float, ...]:
    return (option.estimate.latency_ms, _cost(option), by_quality(option)[0])


def single_stage_options(ctx: PlanningContext) -> list[Option]:
    """Each configured backend on all candidates, plus the retriever's order."""
    n = ctx.features.n_candidates
    options = [ctx.estimate((new_stage(name, n),)) for name in ctx.backends]
    options.append(ctx.estimate(()))
    return options


def assess(options: Iterable[Option], ctx: PlanningContext, rules: Sequence[Rule] | None = None) -> list[Assessed]:

    return [new_assessed(option, check_all(option, ctx, rules or DEFAULT_RULES)) for option in options]


def plan_by(name: str, assessed: Sequence[Assessed], key: SortKey, reason: str, first: Option | None = None) -> Plan:
    """Order feasible options by ``key`` (``first`` leads if given); the retriever order closes the chain."""
    feasible = sorted((a.option for a in assessed if a.feasible), key=key)
    if first is not None:
        feasible = [first, *(o for o in feasible if o is not first)]
    # The retriever order is always feasible; keep it last as the final fallback.
    ordered = [o for o in feasible if o.stages] + [o for o in feasible if not o.stages]
    return new_plan(policy=name, primary=ordered[0], fallbacks=tuple(ordered[1:]), assessed=tuple(assessed), reason=reason)
