"""The shipped policies. Each is an objective over the same feasible set."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from pydantic import BaseModel, ConfigDict, ValidationError

from policies.base import (
    PlanningContext,
    SortKey,
    assess,
    by_cost,
    by_latency,
    by_quality,
    feasible_by,
    plan_by,
    plan_in_order,
    single_stage_options,
)
from policies.cascade import CascadeParams, cascade_options
from router.plan import Assessed, Plan
from router.validation import config_error

__all__ = ["CheapestPolicy", "ConstrainedPolicy", "FastestPolicy", "FixedParams", "FixedPolicy", "NoParams"]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    """The configured backend name to use whenever the hard rules allow it."""


def _objective_plan(name: str, ctx: PlanningContext, key: SortKey, goal: str) -> Plan:
    assessed = assess(single_stage_options(ctx), ctx)
    return _best_plan(name, assessed, key, goal)


def _best_plan(name: str, assessed: list[Assessed], key: SortKey, goal: str) -> Plan:
    """The feasible options by ``key`` (computed once per option), the best one with stages first."""
    ordered = feasible_by(assessed, key)
    staged = [o for o in ordered if o.stages]
    if not staged:
        return plan_in_order(name, assessed, ordered, "no backend passes the constraints: keeping the retriever's order")
    return plan_in_order(name, assessed, ordered, f"{staged[0].name} has the {goal} of the {len(staged)} feasible option(s)")


@dataclass(frozen=True)
class ConstrainedPolicy:
    """Best predicted quality within every constraint and budget, single backends and cascades
    (policies.cascade) alike; ties: cheaper, then faster.

    Its inputs are each backend's quality for the request's domain (catalog, config ``spec:``, or
    measured into a profile) and the cascade curve (``saturation_k``; a profile's fitted
    ``cascade.*`` thresholds are resolved into these fields by config, router.profile)."""

    name: str = "constrained"
    cascades: bool = True
    cascade_k: tuple[int, ...] = CascadeParams().cascade_k
    saturation_k: int = CascadeParams().saturation_k
    adaptive_margin: float | None = None
    expected_escalation: float = 1.0

    def __post_init__(self) -> None:
        # Validated as config params are, whichever way the policy was built (a profile's values too).
        try:
            CascadeParams.model_validate({f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"})
        except ValidationError as exc:
            raise config_error(exc, "invalid constrained policy") from exc

    @functools.cached_property
    def _params(self) -> CascadeParams:
        """The fields as one (validated) model, built once: :meth:`plan` reads them per request."""
        return CascadeParams(
            cascades=self.cascades,
            cascade_k=self.cascade_k,
            saturation_k=self.saturation_k,
            adaptive_margin=self.adaptive_margin,
            expected_escalation=self.expected_escalation,
        )

    def plan(self, ctx: PlanningContext) -> Plan:
        params = self._params
        singles = assess(single_stage_options(ctx), ctx)
        assessed = singles + cascade_options(ctx, singles, params)
        return _best_plan(self.name, assessed, by_quality, "best predicted quality")


@dataclass(frozen=True)
class CheapestPolicy:
    """Lowest predicted cost within the constraints; ties: faster, then better."""

    name: str = "cheapest"

    def plan(self, ctx: PlanningContext) -> Plan:
        return _objective_plan(self.name, ctx, by_cost, "lowest predicted cost")


@dataclass(frozen=True)
class FastestPolicy:
    """Lowest predicted latency within the constraints; ties: cheaper, then better."""

    name: str = "fastest"

    def plan(self, ctx: PlanningContext) -> Plan:
        return _objective_plan(self.name, ctx, by_latency, "lowest predicted latency")


@dataclass(frozen=True)
class FixedPolicy:
    """Always the configured backend while the hard rules allow it; else the constrained choice."""

    backend: str
    name: str = "fixed"

    def plan(self, ctx: PlanningContext) -> Plan:
        assessed = assess(single_stage_options(ctx), ctx)
        pinned = next((a for a in assessed if a.option.backends == (self.backend,)), None)
        if pinned is None:
            why = f"pinned {self.backend} is not a configured backend: best feasible quality instead"
            return plan_by(self.name, assessed, by_quality, why)
        if pinned.feasible:
            return plan_by(self.name, assessed, by_quality, f"{self.backend} is pinned", first=pinned.option)
        why = "; ".join(map(str, pinned.rejections))
        return plan_by(self.name, assessed, by_quality, f"pinned {self.backend} rejected ({why}): best feasible quality instead")
