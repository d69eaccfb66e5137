"""Builders for testing policies and rules directly, without a Router (like tenacity's
``make_retry_state``), and one fake clock for deadline, breaker and hedging tests.

    from policies import create_policy
    from router.testing import planning_context

    ctx = planning_context({"cheap": {"quality": {"web": 0.6}},
                            "api": {"quality": {"web": 0.8}, "license": "proprietary",
                                    "data_leaves_premises": True}},
                           n=100, constraints={"on_premise": True})
    assert create_policy("constrained").plan(ctx).primary.name == "cheap"
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from policies.context import BackendView, PlanningContext
from router.backends.base import Availability
from router.catalog import BackendSpec, load_catalog, merge_spec
from router.constraints import Constraints
from router.cost import UsageCalibrator
from router.estimate import OptionEstimator
from router.features import Features, TokenStats
from router.latency import LatencyEstimator

__all__ = ["FakeClock", "planning_context"]


class FakeClock:
    """A monotonic clock that only moves when a test double sleeps on it: timings without waiting.

    Pass ``clock`` to ``Router(clock=...)`` and ``clock.sleep`` to ``FakeBackend(sleep=...)``: a
    backend's scripted latency then shows up in the router's measurements, and nothing waits.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def _spec(name: str, value: BackendSpec | Mapping[str, Any]) -> BackendSpec:
    if isinstance(value, BackendSpec):
        return value
    overrides = dict(value)
    model = str(overrides.get("model", name))
    return merge_spec(load_catalog().get(model), model, overrides, f"backends.{name}")


def planning_context(
    backends: Mapping[str, BackendSpec | Mapping[str, Any]],
    *,
    n: int = 10,
    top_n: int = 10,
    doc_tokens: int | Iterable[int] = 100,
    query_tokens: int = 8,
    tokenizer_families: Iterable[str] = ("bert-wordpiece",),
    domain: str = "web",
    constraints: Constraints | Mapping[str, Any] | None = None,
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
    unavailable: Mapping[str, str] | None = None,
    cold: Iterable[str] = (),
) -> PlanningContext:
    """A PlanningContext as the Router would build it for one request.

    ``backends``: name -> a BackendSpec, or spec overrides over the catalog entry of ``model``
    (default: the name); ``doc_tokens``: one length for all ``n`` candidates, or one per candidate;
    ``unavailable``: name -> reason; ``cold``: backends not loaded yet (predicted with their load time).
    The estimator is the router's own (router.estimate) with fresh, uncorrected models.
    """
    specs = {name: _spec(name, value) for name, value in backends.items()}
    docs = tuple(doc_tokens) if not isinstance(doc_tokens, int) else (doc_tokens,) * n
    if len(docs) != n:
        raise ValueError(f"doc_tokens has {len(docs)} lengths for n={n} candidates")
    families = {*tokenizer_families, *(s.tokenizer_family for s in specs.values())}
    features = Features(
        n_candidates=n,
        top_n=min(top_n, n),
        domain=domain,
        tokens=MappingProxyType({f: TokenStats(f, False, query_tokens, docs) for f in sorted(families)}),
    )
    down = dict(unavailable or {})
    cold_set = frozenset(cold)
    views = {
        name: BackendView(
            name=name,
            spec=spec,
            availability=Availability(False, down[name]) if name in down else Availability(True, warm=name not in cold_set),
        )
        for name, spec in specs.items()
    }
    if constraints is None:
        resolved = Constraints()
    elif isinstance(constraints, Constraints):
        resolved = constraints
    else:
        resolved = Constraints.model_validate(dict(constraints))
    estimator = OptionEstimator(specs, LatencyEstimator(), features, cold_set, UsageCalibrator())
    return PlanningContext(
        features=features,
        constraints=resolved,
        latency_budget_ms=latency_budget_ms,
        max_cost_usd=max_cost_usd,
        backends=MappingProxyType(views),
        estimate=estimator.estimate,
    )
