"""Property-based fault injection: random backends, plans, fault schedules, budgets and constraints.

Each example builds 1-4 FakeBackends with random specs (quality, license including CC-BY-NC,
data leaving the premises, pricing, predicted latency), each scripted per call with a latency
of 0-300 ms and an outcome (success, one of many exception kinds, NaN / short / long score
lists), random resilience settings (retries, breaker, hedging, attempt timeout, concurrency)
and a random policy, then sends one to three requests with random budgets, ceilings and
constraints. Everything runs on a looptime event loop: latency, back-off, timeouts and rate
limits are virtual, so nothing sleeps, and "returns by the deadline" is checked exactly
(``SLACK_MS`` covers float rounding only).

Invariants on every request:
- the result is a permutation of the input;
- it returns by the deadline plus the slack, and leaves no task behind;
- no backend called (hedges and retries included) breaks the request's license or on-premise
  constraints;
- the served option's predicted cost, plus any hedge it sent, is within the ceiling;
- degraded implies a reason, and not degraded means the plan's primary served in full;
- a backend whose breaker is open is neither planned nor called, and the explanation says why;
  once recovery_s has passed it is half-open (read through a second breaker on the same store,
  as another replica would).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from typing import Any

import looptime
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    Constraints,
    MalformedResponseError,
    RateLimitedError,
    RerankResult,
    Router,
    ServerError,
)
from router.plan import Option, Plan
from router.resilience import BreakerPolicy, BreakerState, CircuitBreaker, InMemoryBreakerStore
from router.testing import FakeBackend

SLACK_MS = 1.0

ERRORS: dict[str, Callable[[], BaseException]] = {
    "5xx": lambda: ServerError("HTTP 503"),
    "429": lambda: RateLimitedError("HTTP 429"),
    "429-retry-after": lambda: RateLimitedError("HTTP 429", retry_after=0.2),
    "timeout": lambda: BackendTimeoutError("read timeout"),
    "builtin-timeout": TimeoutError,
    "bad-request": lambda: BadRequestError("HTTP 400"),
    "auth": lambda: AuthenticationError("HTTP 401"),
    "malformed": lambda: MalformedResponseError("bad JSON"),
    "unavailable": lambda: BackendUnavailableError("connection refused"),
    "runtime": lambda: RuntimeError("CUDA out of memory"),
    "oserror": lambda: ConnectionResetError("reset by peer"),
    "value": lambda: ValueError("bad value"),
    "key": lambda: KeyError("missing"),
}
SCORES: dict[str, Callable[[int], list[float]]] = {
    "nan": lambda n: [math.nan] * n,
    "inf": lambda n: [0.5] * (n - 1) + [math.inf],
    "short": lambda n: [0.5] * (n - 1),
    "long": lambda n: [0.5] * (n + 1),
}
FAULTS = [*ERRORS, *SCORES]

LICENSES = ["Apache-2.0", "Apache-2.0", "MIT", "proprietary", "CC-BY-NC-4.0", "unknown"]
PRICING = [
    {"scheme": "free"},
    {"scheme": "per_call", "usd": 0.001},
    {"scheme": "per_call", "usd": 0.004},
    {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 10},
]

step = st.tuples(st.integers(0, 300), st.just("ok") | st.sampled_from(FAULTS))  # about half the calls fail
# Better models are slower (per document), as in practice: that is what makes cascades worth planning.
TIERS = [(0.45, 0.0), (0.6, 1.0), (0.75, 5.0), (0.9, 20.0)]


def spec_of(tier: tuple[float, float], nudge: float, overhead_ms: float, **rest: Any) -> dict[str, Any]:
    quality, per_doc_ms = tier
    return {"quality": {"web": quality + nudge}, "latency": {"overhead_ms": overhead_ms, "per_doc_ms": per_doc_ms}, **rest}


spec = st.builds(
    lambda base, limit: {**base, **limit},
    st.builds(
        spec_of,
        tier=st.sampled_from(TIERS),
        nudge=st.sampled_from([0.0, 0.01, 0.02]),
        overhead_ms=st.sampled_from([0.0, 5.0, 50.0]),
        license=st.sampled_from(LICENSES),
        data_leaves_premises=st.booleans(),
        pricing=st.sampled_from(PRICING),
    ),
    st.sampled_from([{}, {}, {"rpm": 1.0}, {"rpm": 60.0}]),  # a provider rate limit from the catalog
)
schedule = st.lists(step, min_size=1, max_size=6)
backend = st.tuples(spec, schedule)


def _member(tier: tuple[float, float], overhead_ms: float) -> st.SearchStrategy[tuple[dict[str, Any], list[tuple[int, str]]]]:
    spec_ = st.builds(
        spec_of,
        tier=st.just(tier),
        nudge=st.just(0.0),
        overhead_ms=st.just(overhead_ms),
        license=st.just("MIT"),
        pricing=st.sampled_from(PRICING),
    )
    return st.tuples(spec_, schedule)


# A fast weak model and a slow strong one under a commercial license: the pair a cascade is made of.
cascade_pair = st.tuples(_member(TIERS[0], 0.0), _member(TIERS[-1], 5.0)).map(list)
policy_config = st.one_of(
    st.sampled_from([{"name": "cheapest"}, {"name": "fastest"}]),
    st.fixed_dictionaries(
        {
            "name": st.just("constrained"),
            "params": st.fixed_dictionaries(
                {"cascade_k": st.just([2, 5, 10]), "saturation_k": st.sampled_from([5, 50])},
                optional={"adaptive_margin": st.sampled_from([0.0, 0.1, 0.5])},
            ),
        }
    ),
)
resilience_policy = st.fixed_dictionaries(
    {
        "retries": st.fixed_dictionaries(
            {
                "attempts": st.integers(1, 4),
                "initial_s": st.sampled_from([0.0, 0.02, 0.1]),
                "jitter_s": st.sampled_from([0.0, 0.03]),
            }
        ),
        "breaker": st.fixed_dictionaries({"failure_threshold": st.integers(1, 4), "recovery_s": st.sampled_from([0.2, 5.0])}),
        "hedge": st.sampled_from(
            [
                {"enabled": False},
                {"enabled": True, "after_ms": 10.0},
                {"enabled": True, "after_ms": 80.0},
                {"enabled": True, "min_samples": 1, "quantile": 0.5},
            ]
        ),
        "limits": st.one_of(st.just({}), st.just({"max_concurrency": 1})),
    },
    optional={"attempt_timeout_ms": st.sampled_from([40.0, 150.0])},
)
request = st.fixed_dictionaries(
    {
        "n": st.integers(1, 25),
        "top_n": st.sampled_from([None, 1, 2, 3]),
        "latency_budget_ms": st.sampled_from([None, 30.0, 100.0, 150.0, 250.0, 600.0, 2_000.0]),
        # Ceilings near the prices, so that hedges (and a cascade's second call) must be refused.
        "max_cost_usd": st.sampled_from([None, 0.0, 0.001, 0.0015, 0.0025, 0.005, 0.02]),
        "constraints": st.fixed_dictionaries(
            {"on_premise": st.booleans(), "commercial_use": st.booleans()},
            optional={"allowed_licenses": st.sampled_from([["Apache-2.0", "MIT"], ["proprietary", "CC-BY-NC-4.0"]])},
        ),
    }
)


def fake(name: str, spec: dict[str, Any], schedule: list[tuple[int, str]]) -> FakeBackend:
    def latency(call: int) -> float:
        return schedule[call % len(schedule)][0]

    def fail(call: int) -> BaseException | None:
        make = ERRORS.get(schedule[call % len(schedule)][1])
        return None if make is None else make()

    def override(call: int, n: int) -> list[float] | None:
        make = SCORES.get(schedule[call % len(schedule)][1])
        return None if make is None else make(n)

    # A bad score list is sized from the documents of the call it answers.
    backend = FakeBackend(
        name, latency_ms=latency, fail=fail, scores_override=lambda call: override(call, len(backend.calls[call][1])), spec=spec
    )
    return backend


def allowed(spec_: Any, constraints: Constraints) -> bool:
    if constraints.on_premise and spec_.data_leaves_premises:
        return False
    if constraints.commercial_use and spec_.commercial_use is not True:
        return False
    return constraints.allowed_licenses is None or spec_.license in constraints.allowed_licenses


def served_option(plan: Plan, result: RerankResult) -> Option | None:
    if not result.degraded:
        return plan.primary if plan.primary.stages else None
    reason = result.degraded_reason or ""
    if "; served by " not in reason:
        assert reason.endswith("kept the retriever's order"), reason
        return None
    name = reason.rsplit("; served by ", 1)[1]
    return next(o for o in plan.options_in_order if o.name == name)


def check(
    plan: Plan, result: RerankResult, elapsed_ms: float, req: dict[str, Any], backends: dict[str, FakeBackend], called: set[str]
) -> None:
    n = req["n"]
    # 1. a permutation of the input, whatever failed
    assert sorted(result.indices) == list(range(n))
    assert len(result.items) == n
    # 2. the deadline
    budget = req["latency_budget_ms"]
    if budget is not None:
        assert elapsed_ms <= budget + SLACK_MS, (elapsed_ms, budget, result.stages)
    # 3. hard constraints, on every call made (retries, hedges and fallbacks included)
    constraints = Constraints.model_validate(req["constraints"])
    for stage in result.stages:
        assert allowed(backends[stage.backend].spec, constraints), stage
    for name in called:
        assert allowed(backends[name].spec, constraints), name
    for option in plan.options_in_order:
        assert all(allowed(backends[b].spec, constraints) for b in option.backends), option.name
    # 4. the cost ceiling: the served option as planned, plus what any hedge it sent may add
    ceiling = req["max_cost_usd"]
    served = served_option(plan, result)
    if ceiling is not None and served is not None:
        assert served.estimate.cost_usd is not None and served.estimate.cost_usd <= ceiling
        first_ok = next(i for i, s in enumerate(result.stages) if s.ok)
        hedges = sum(s.predicted_cost_usd or 0.0 for s in result.stages[first_ok:] if s.hedged)
        assert served.estimate.cost_usd + hedges <= ceiling + 1e-12, result.stages
    # 5. degradation is explained
    if result.degraded:
        assert result.degraded_reason
    else:
        assert result.degraded_reason is None
        assert all(s.ok for s in result.stages)
        assert served is None or served is plan.primary


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    specs=st.lists(backend, min_size=1, max_size=4) | cascade_pair,
    policy=policy_config,
    default=resilience_policy,
    requests=st.lists(request, min_size=1, max_size=3),
    gap_s=st.sampled_from([0.0, 0.3, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_invariants_hold_under_random_faults(specs, policy, default, requests, gap_s, seed):
    backends = {f"b{i}": fake(f"b{i}", spec_, schedule) for i, (spec_, schedule) in enumerate(specs)}
    config = {"backends": {}, "policy": policy, "resilience": {"default": default}}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        store = InMemoryBreakerStore()
        router = Router(config, backends=backends, sleep=asyncio.sleep, rng=random.Random(seed), breaker_store=store)
        # The breakers as another replica sharing the store would see them.
        policy_ = BreakerPolicy.model_validate(default["breaker"])
        breakers = {name: CircuitBreaker(name, policy_, clock=loop.time, store=store) for name in backends}
        try:
            for req in requests:
                texts = [f"doc {i} about topic {i % 3}" for i in range(req["n"])]
                kwargs = {k: v for k, v in req.items() if k != "n"}
                plan = router.plan("topic 1", texts, **kwargs)
                shut = {name for name, b in breakers.items() if b.status()[0] is BreakerState.OPEN}
                before = {name: len(b.calls) for name, b in backends.items()}
                started = loop.time()
                result = await router.arerank("topic 1", texts, **kwargs)
                elapsed_ms = (loop.time() - started) * 1000
                called = {name for name, b in backends.items() if len(b.calls) > before[name]}
                check(plan, result, elapsed_ms, req, backends, called)
                # 6. an open breaker is not called and the planner says why; it half-opens after recovery_s
                assert not shut & called
                assert not shut & {b for o in plan.options_in_order for b in o.backends}
                for name in shut:
                    assert "circuit" in str(result.explanation), name
                for what, seen in (
                    ("degraded", result.degraded),
                    ("served by a fallback", "served by" in (result.degraded_reason or "")),
                    ("a stage timed out", any("timed out" in (s.error or "") for s in result.stages)),
                    ("a hedge was sent", any(s.hedged for s in result.stages)),
                    ("retried", any(s.attempts > 1 for s in result.stages)),
                    ("cascade planned", len(plan.primary.stages) > 1),
                    ("a second stage ran", any(s.candidates_in < req["n"] for s in result.stages)),
                    ("circuit open at planning", "circuit" in str(result.explanation)),
                ):
                    if seen:
                        event(what)
                await asyncio.sleep(0)  # cancelled losers (hedges, timed-out calls) finish on the next tick
                assert asyncio.all_tasks() == {asyncio.current_task()}
                await asyncio.sleep(gap_s)  # lets open breakers reach half-open between requests
                if gap_s >= policy_.recovery_s:
                    assert not any(b.status()[1].startswith("circuit open after") for b in breakers.values())
        finally:
            await router.aclose()

    loop = looptime.new_event_loop(start=0)
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
