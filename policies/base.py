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
    "feasible_by",
    "plan_by",
    "plan_in_order",
    "single_stage_options",
]


def _cost(option: Option) -> float:
    return math.inf if option.estimate.cost_usd is None else option.estimate.cost_usd


def by_quality(option: Option) -> tuple[float, ...]:
    """Best predicted quality first; ties: cheaper, then faster. Unknown quality sorts last."""
    estimate = option.estimate
    quality, cost = estimate.quality, estimate.cost_usd  # _cost inline: every plan sorts by this
    return (-quality if quality is not None else math.inf, math.inf if cost is None else cost, estimate.latency_ms)


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
    feasible = feasible_by(assessed, key)
    if first is not None:
        feasible = [first, *(o for o in feasible if o is not first)]
    return plan_in_order(name, assessed, feasible, reason)


def feasible_by(assessed: Sequence[Assessed], key: SortKey) -> list[Option]:
    """The feasible options sorted by ``key``, ties in the order assessed: the first one with stages
    is ``min`` of those with stages by ``key`` (so a policy need not compute the keys twice)."""
    return sorted((a.option for a in assessed if a.feasible), key=key)


def plan_in_order(name: str, assessed: Sequence[Assessed], feasible: Sequence[Option], reason: str) -> Plan:
    """The plan trying ``feasible`` in that order, the retriever's order last (the final fallback)."""
    ordered = [o for o in feasible if o.stages] + [o for o in feasible if not o.stages]
    return new_plan(policy=name, primary=ordered[0], fallbacks=tuple(ordered[1:]), assessed=tuple(assessed), reason=reason)
