"""What a policy sees: the planning context and the Policy protocol, the leaf of the policies package.

:mod:`policies.rules` and :mod:`policies.base` both build on these types, so they live apart from
either (no import cycle between rules and the machinery that applies them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from router.backends.base import Availability
from router.budget import BudgetSignal
from router.catalog import BackendSpec
from router.constraints import Constraints
from router.features import Features
from router.plan import Option, Plan, Rejection, Stage
from router.shells import shell_of

NOTHING_CACHED: Mapping[str, Mapping[int, float]] = MappingProxyType({})
"""No backend has cached scores (the planning context's default)."""

__all__ = ["NOTHING_CACHED", "BackendView", "PlanningContext", "Policy", "Rule", "SortKey"]


@dataclass(frozen=True, slots=True)
class BackendView:
    """What a policy may know of a configured backend."""

    name: str
    spec: BackendSpec
    availability: Availability


@dataclass(frozen=True, slots=True)
class PlanningContext:
    features: Features
    constraints: Constraints
    latency_budget_ms: float | None
    max_cost_usd: float | None
    backends: Mapping[str, BackendView]
    estimate: Callable[[tuple[Stage, ...]], Option]
    cached: Mapping[str, Mapping[int, float]] = field(default_factory=lambda: NOTHING_CACHED)  # a mappingproxy: no plain default
    """Per backend with a score cache (router.cache), document index -> its cached score; the
    estimates already price and time only the uncached documents."""
    budget: BudgetSignal | None = None
    """The cross-request mean-cost budget's signal (router.budget), when ``budgets.mean_cost`` is configured."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def plan(self, ctx: PlanningContext) -> Plan: ...


SortKey = Callable[[Option], tuple[float, ...]]
Rule = Callable[[Option, PlanningContext], Rejection | None]


# Constructors for the views and the context built on every request (router.shells).
new_backend_view: Callable[..., BackendView] = shell_of(BackendView)
new_planning_context: Callable[..., PlanningContext] = shell_of(PlanningContext)
