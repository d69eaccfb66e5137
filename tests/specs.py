"""Backend specs and a cascade policy shared by the planner, executor and fault tests."""

from __future__ import annotations

from dataclasses import dataclass

from policies import assess, by_quality, plan_by, single_stage_options
from policies.base import PlanningContext
from router.plan import Plan, Stage

# A closed API billed per search unit, like Cohere's: the documents leave the premises.
CLOSED_API = {
    "license": "proprietary",
    "data_leaves_premises": True,
    "provider": "cohere",
    "pricing": {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 100},
    "quality": {"web": 0.95},
}


@dataclass(frozen=True)
class CascadePolicy:
    """``first`` on all N, then ``second`` on the top ``k``; the single-stage options as fallbacks.

    ``require_feasible``: fail the test if the cascade breaks a hard rule (for tests of how a
    cascade runs, which mean nothing if the planner rejects it).
    """

    first: str
    second: str
    k: int
    name: str = "cascade"
    require_feasible: bool = False

    def plan(self, ctx: PlanningContext) -> Plan:
        n = ctx.features.n_candidates
        cascade = ctx.estimate((Stage(self.first, n), Stage(self.second, min(self.k, n))))
        assessed = assess([cascade, *single_stage_options(ctx)], ctx)
        if self.require_feasible:
            assert assessed[0].feasible, assessed[0].rejections
        return plan_by(self.name, assessed, by_quality, "the cascade first", first=cascade)
