"""Policies and hard rules tested directly over a PlanningContext (router.testing.planning_context),
without a Router: the policy seam is a pure function of its context."""

from __future__ import annotations

import pytest

from policies import create_policy
from policies.rules import DEFAULT_RULES, residency_ok, within_cost_ceiling, within_latency_budget
from router.plan import Stage
from router.testing import FakeClock, planning_context

LOCAL = {"model": "local-a", "license": "Apache-2.0", "quality": {"web": 0.6}}
API = {
    "model": "api-b",
    "license": "proprietary",
    "data_leaves_premises": True,
    "quality": {"web": 0.8},
    "pricing": {"scheme": "per_search_unit", "usd": 0.002},
}


def test_constrained_prefers_quality_and_on_premise_filters_the_api() -> None:
    ctx = planning_context({"cheap": LOCAL, "api": API}, n=50)
    assert create_policy("constrained").plan(ctx).primary.name == "api"
    onprem = planning_context({"cheap": LOCAL, "api": API}, n=50, constraints={"on_premise": True})
    plan = create_policy("constrained").plan(onprem)
    assert "api" not in {b for o in (plan.primary, *plan.fallbacks) for b in o.backends}
    [api] = [a for a in plan.assessed if a.option.name == "api"]
    assert any(r.rule == "on_premise" or "premise" in r.reason for r in api.rejections)


def test_rules_are_pure_checks_over_an_option_and_context() -> None:
    ctx = planning_context({"cheap": LOCAL, "api": API}, n=10, constraints={"on_premise": True}, max_cost_usd=0.0)
    api = ctx.estimate((Stage("api", 10),))
    assert residency_ok(api, ctx) is not None
    assert within_cost_ceiling(api, ctx) is not None
    cheap = ctx.estimate((Stage("cheap", 10),))
    assert residency_ok(cheap, ctx) is None and within_cost_ceiling(cheap, ctx) is None
    assert residency_ok in DEFAULT_RULES


def test_latency_budget_rule_and_cold_backends() -> None:
    slow_to_load = {**LOCAL, "cold_start_ms": 2000.0, "latency": {"overhead_ms": 0.1}}
    warm = planning_context({"cheap": slow_to_load}, n=10, latency_budget_ms=1.0)
    assert within_latency_budget(warm.estimate((Stage("cheap", 10),)), warm) is None
    ctx = planning_context({"cheap": slow_to_load}, n=10, latency_budget_ms=1.0, cold=["cheap"])
    cold = ctx.estimate((Stage("cheap", 10),))
    assert within_latency_budget(cold, ctx) is not None  # its load time cannot fit 1 ms
    assert create_policy("constrained").plan(ctx).primary.name == "retriever-order"


def test_unavailable_backends_are_rejected_with_their_reason() -> None:
    ctx = planning_context({"cheap": LOCAL, "api": API}, unavailable={"api": "circuit open"})
    plan = create_policy("cheapest").plan(ctx)
    [api] = [a for a in plan.assessed if a.option.name == "api"]
    assert not api.feasible and any("circuit open" in r.reason for r in api.rejections)


def test_planning_context_checks_its_lengths() -> None:
    with pytest.raises(ValueError, match="doc_tokens"):
        planning_context({"cheap": LOCAL}, n=3, doc_tokens=[1, 2])


async def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(10.0)
    await clock.sleep(0.5)
    clock.advance(1.0)
    assert clock() == 11.5
