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

__all__ = ["NOTHING_CACHED", "BackendView", "PlanningContext", "Policy", "Rule", "RuleVerdicts", "SortKey"]


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
    verdicts: RuleVerdicts | None = field(default=None, compare=False, repr=False)
    """Verdicts of the rules that read only ``backends`` and ``constraints``, shared by the requests
    planned over these same objects (policies.rules.check_all); None: every rule runs."""


class RuleVerdicts:
    """The rules' verdicts that hold as long as the backends' views and the constraints do.

    Bound to one views mapping and one constraints object (both immutable): a context whose
    ``backends`` or ``constraints`` is another object (a breaker opened, a backend's availability or
    spec changed, other constraints) does not use it (:func:`policies.rules.check_all`). ``steps``
    holds, per (rules tuple, option's backends), the rules' outcome in order: a static rule's
    rejection as the Rejection itself (a static rule that passes leaves nothing), any other rule as
    the rule, to run."""

    __slots__ = ("backends", "constraints", "dated", "steps")

    def __init__(self, backends: Mapping[str, BackendView], constraints: Constraints) -> None:
        self.backends = backends
        self.constraints = constraints
        self.dated = any(view.spec.available_until is not None for view in backends.values())
        """Whether a backend has an end date: then the day decides ``in_service``, which runs every time."""
        self.steps: dict[tuple[int, tuple[str, ...]], tuple[tuple[Rule, ...], tuple[Rule | Rejection, ...]]] = {}
        """(id of the rules tuple, the option's backends) -> (that tuple, kept alive so the id stays its own; the steps)."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def plan(self, ctx: PlanningContext) -> Plan: ...


SortKey = Callable[[Option], tuple[float, ...]]
Rule = Callable[[Option, PlanningContext], Rejection | None]


# Constructors for the views and the context built on every request (router.shells).
new_backend_view: Callable[..., BackendView] = shell_of(BackendView)
new_planning_context: Callable[..., PlanningContext] = shell_of(PlanningContext)
