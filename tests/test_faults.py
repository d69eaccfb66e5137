"""Fault injection through the Router over FakeBackends: timeouts, 429s, 5xx, malformed scores,
slow starts, flapping, everything down; breakers, fallbacks, hedges, cancellation and cascades.

Timing tests run on virtual loop time (``@pytest.mark.looptime``): the router's default clock is
the loop's, FakeBackend latency and retry back-off are ``asyncio.sleep`` on that loop, so a
500 ms call takes no real time and deadlines are checked exactly. The stated slack is
``SLACK_MS`` of virtual time (the router's own code takes none; only float rounding is left) and
``REAL_SLACK_MS`` for the one check in real time. Breaker tests move a FakeClock by hand.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from functools import partial

import pytest
from specs import CLOSED_API, CascadePolicy

from policies import ConstrainedPolicy
from router import ConfigError, RateLimitedError, RerankResult, ServerError, Usage
from router.backends.base import Scores
from router.engine import DEADLINE_GUARD_MS
from router.plan import RETRIEVER_ORDER
from router.resilience import BreakerState
from router.testing import FakeBackend

SLACK_MS = 1.0
REAL_SLACK_MS = 50.0

LOCAL = {"quality": {"web": 0.9}}
CHEAP = {"quality": {"web": 0.6}}


def docs(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


def table(values: dict[str, float]):
    return lambda query, document: values[document]


def now() -> float:
    return asyncio.get_running_loop().time()


def since_ms(t0: float) -> float:
    return (now() - t0) * 1000


def assert_permutation(result: RerankResult, n: int) -> None:
    assert sorted(result.indices) == list(range(n))


def resilience(**default: object) -> dict[str, object]:
    return {"default": default}


def breaker_of(router, name: str):
    """The router's breaker for ``name`` (what the planner reads through Router._availability)."""
    return router._executor.breakers[name]


PinnedCascade = partial(CascadePolicy, name="pinned-cascade", require_feasible=True)


# -- timeouts ---------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_call_past_the_deadline_is_cut_and_the_fallback_serves(make_router):
    slow = FakeBackend("slow", latency_ms=500, spec=LOCAL)
    fast = FakeBackend("fast", latency_ms=5, spec=CHEAP)
    router = make_router({"slow": slow, "fast": fast}, sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("doc 3", docs(5), latency_budget_ms=200)
    assert since_ms(t0) <= 200 + SLACK_MS
    assert result.latency_ms <= 200 + SLACK_MS
    assert_permutation(result, 5)
    assert result.backends == ("fast",)
    assert result.items[0].index == 3
    assert result.stages[0].error == "slow: timed out at the deadline"
    assert result.stages[0].attempts == 1  # a retry would end past the deadline: none is tried
    assert result.degraded_reason == "slow: timed out at the deadline; served by fast"


@pytest.mark.looptime
async def test_a_timeout_with_no_fallback_keeps_the_retriever_order(make_router):
    slow = FakeBackend("slow", latency_ms=10_000, spec=LOCAL)
    router = make_router({"slow": slow}, sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("doc 3", docs(5), latency_budget_ms=300)
    assert since_ms(t0) == pytest.approx(300 - DEADLINE_GUARD_MS, abs=SLACK_MS)  # backend work stops at the guard
    assert result.indices == (0, 1, 2, 3, 4)
    assert result.degraded_reason == "slow: timed out at the deadline; kept the retriever's order"


@pytest.mark.looptime
async def test_a_slow_start_is_cut_by_the_attempt_timeout_and_retried(make_router):
    # The first call is slow (a cold replica); the per-attempt bound leaves time to retry.
    backend = FakeBackend("local", latency_ms=lambda call: 1_000 if call == 0 else 10, spec=LOCAL)
    config = resilience(attempt_timeout_ms=100, retries={"initial_s": 0.05, "jitter_s": 0})
    router = make_router({"local": backend}, sleep=asyncio.sleep, resilience=config)
    t0 = now()
    result = await router.arerank("doc 1", docs(4), latency_budget_ms=2_000)
    assert since_ms(t0) == pytest.approx(100 + 50 + 10)
    assert not result.degraded
    (stage,) = result.stages
    assert stage.ok and stage.attempts == 2
    assert len(backend.calls) == 2
    assert result.items[0].index == 1


@pytest.mark.looptime
async def test_every_attempt_slow_names_the_attempt_timeout(make_router):
    backend = FakeBackend("local", latency_ms=1_000, spec=LOCAL)
    config = resilience(attempt_timeout_ms=100, retries={"attempts": 3, "initial_s": 0.05, "jitter_s": 0})
    router = make_router({"local": backend}, sleep=asyncio.sleep, resilience=config)
    t0 = now()
    result = await router.arerank("q", docs(4), latency_budget_ms=2_000)
    assert since_ms(t0) == pytest.approx(100 + 50 + 100 + 100 + 100)
    assert result.stages[0].attempts == 3
    assert result.stages[0].error == "local: timed out after its 100 ms attempt timeout"
    assert result.indices == (0, 1, 2, 3)


# -- 429, 5xx, malformed scores ---------------------------------------------------------------------


@pytest.mark.looptime
async def test_429_waits_exactly_the_retry_after(make_router):
    api = FakeBackend(
        "api",
        spec=CLOSED_API,
        usage=Usage(search_units=1),
        fail=lambda call: RateLimitedError("HTTP 429", backend="api", retry_after=0.3) if call == 0 else None,
    )
    router = make_router({"api": api}, sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("doc 2", docs(3), latency_budget_ms=1_000, max_cost_usd=0.01)
    assert since_ms(t0) == pytest.approx(300)
    assert not result.degraded
    assert result.stages[0].attempts == 2
    assert len(api.calls) == 2
    # Only the answered attempt is billed: a retry does not spend past the plan.
    assert result.actual_cost_usd == pytest.approx(0.002) == result.predicted_cost_usd


@pytest.mark.looptime
async def test_429_with_a_retry_after_past_the_budget_falls_back_at_once(make_router):
    api = FakeBackend("api", spec=CLOSED_API, fail=lambda call: RateLimitedError("HTTP 429", backend="api", retry_after=5))
    local = FakeBackend("local", spec=LOCAL)
    router = make_router({"api": api, "local": local}, sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("doc 2", docs(3), latency_budget_ms=1_000, max_cost_usd=0.01)
    assert since_ms(t0) == 0
    assert len(api.calls) == 1
    assert result.backends == ("local",)
    assert result.degraded_reason == "api: HTTP 429; served by local"


@pytest.mark.looptime
async def test_5xx_is_retried_with_backoff(make_router):
    flaky = FakeBackend("local", spec=LOCAL, fail=lambda call: ServerError("HTTP 503", backend="local") if call < 2 else None)
    config = resilience(retries={"attempts": 3, "initial_s": 0.1, "jitter_s": 0})
    router = make_router({"local": flaky}, sleep=asyncio.sleep, resilience=config)
    t0 = now()
    result = await router.arerank("doc 0", docs(3), latency_budget_ms=1_000)
    assert since_ms(t0) == pytest.approx(100 + 200)
    assert not result.degraded
    assert result.stages[0].attempts == 3


async def test_5xx_every_attempt_falls_back(make_router):
    down = FakeBackend("local", spec=LOCAL, fail=lambda call: ServerError("HTTP 503", backend="local"))
    other = FakeBackend("other", spec=CHEAP)
    result = await make_router({"local": down, "other": other}).arerank("doc 0", docs(3))
    assert len(down.calls) == 3  # the default three attempts
    assert result.stages[0].attempts == 3
    assert result.degraded_reason == "local: HTTP 503; served by other"


@pytest.mark.parametrize("override", [[math.nan] * 3, [0.5, 0.5], [0.1, 0.2, 0.3, 0.4]])
async def test_malformed_scores_are_not_retried_but_count_against_the_breaker(make_router, override):
    bad = FakeBackend("bad", spec=LOCAL, scores_override=lambda call: override)
    other = FakeBackend("other", spec=CHEAP)
    router = make_router({"bad": bad, "other": other}, resilience=resilience(breaker={"failure_threshold": 2}))
    for _ in range(2):
        result = await router.arerank("doc 2", docs(3))
        assert_permutation(result, 3)
        assert result.backends == ("other",)
    assert len(bad.calls) == 2
    assert breaker_of(router, "bad").status()[0] is BreakerState.OPEN


# -- flapping, the breaker and the planner -------------------------------------------------------


async def test_breaker_opens_the_planner_rejects_and_a_probe_closes_it(make_router, fake_clock):
    down = True
    api = FakeBackend("api", spec=LOCAL, fail=lambda call: ServerError("HTTP 500") if down else None)
    fallback = FakeBackend("fallback", spec=CHEAP)
    config = resilience(retries={"attempts": 1}, breaker={"failure_threshold": 3, "recovery_s": 30})
    router = make_router({"api": api, "fallback": fallback}, clock=fake_clock, resilience=config)
    for _ in range(3):
        result = await router.arerank("doc 1", docs(4))
        assert result.backends == ("fallback",) and result.degraded
    assert len(api.calls) == 3

    fake_clock.now += 10
    result = await router.arerank("doc 1", docs(4))
    assert len(api.calls) == 3  # not called while open
    assert result.backends == ("fallback",)
    # Issue 12, finding 10: not the reranking the policy would choose with every backend healthy.
    assert result.degraded and "circuit open for api" in (result.degraded_reason or "")
    assert "circuit open" in str(result.explanation)
    assert "available: api: circuit open after 3 consecutive failures; probing again in 20.0 s" in str(result.explanation)

    down = False
    fake_clock.now += 20  # recovery_s since opening: the next request is the probe
    assert breaker_of(router, "api").status()[0] is BreakerState.HALF_OPEN
    assert router.plan("doc 1", docs(4)).primary.name == "api"
    result = await router.arerank("doc 1", docs(4))
    assert result.backends == ("api",) and not result.degraded
    assert breaker_of(router, "api").status() == (BreakerState.CLOSED, "")


async def test_a_failed_probe_reopens_for_another_recovery_period(make_router, fake_clock):
    api = FakeBackend("api", spec=LOCAL, fail=lambda call: ServerError("HTTP 500"))
    config = resilience(retries={"attempts": 1}, breaker={"failure_threshold": 1, "recovery_s": 30})
    router = make_router({"api": api}, clock=fake_clock, resilience=config)
    await router.arerank("q", docs(2))
    fake_clock.now += 30
    result = await router.arerank("q", docs(2))  # the probe fails
    assert len(api.calls) == 2
    assert result.degraded
    fake_clock.now += 29
    assert "probing again in 1.0 s" in str(router.plan("q", docs(2)))
    await router.arerank("q", docs(2))
    assert len(api.calls) == 2


async def test_flapping_backend(make_router, fake_clock):
    # Down for calls 0-2, up for 3-5, down for 6-8, ...
    flappy = FakeBackend("flappy", spec=LOCAL, fail=lambda call: ServerError("HTTP 502") if (call // 3) % 2 == 0 else None)
    steady = FakeBackend("steady", spec=CHEAP)
    config = resilience(retries={"attempts": 1}, breaker={"failure_threshold": 3, "recovery_s": 5})
    router = make_router({"flappy": flappy, "steady": steady}, clock=fake_clock, resilience=config)
    served = []
    for _ in range(13):
        result = await router.arerank("doc 2", docs(5))
        assert_permutation(result, 5)
        assert result.items[0].index == 2  # whoever served, the ranking is right
        served.append(result.backends)
        fake_clock.now += 1
    # One request a second. Calls 0-2 fail and open the breaker at t=2; at t=7 (recovery_s later)
    # the probe, call 3, succeeds and closes it; calls 4-5 succeed; calls 6-8 fail and open it again.
    assert served == [("steady",)] * 7 + [("flappy",)] * 3 + [("steady",)] * 3
    assert len(flappy.calls) == 9
    assert breaker_of(router, "flappy").status()[0] is BreakerState.OPEN


async def test_every_backend_down_keeps_the_retriever_order(make_router):
    backends = {
        "a": FakeBackend("a", spec={"quality": {"web": 0.9}}, fail=lambda call: ServerError("HTTP 503", backend="a")),
        "b": FakeBackend("b", spec={"quality": {"web": 0.8}}, fail=lambda call: TimeoutError()),
        "c": FakeBackend("c", spec={"quality": {"web": 0.7}}, scores_override=lambda call: [math.nan] * 4),
        "d": FakeBackend("d", spec={"quality": {"web": 0.6}}, scores_override=lambda call: [0.5]),
    }
    router = make_router(backends, resilience=resilience(retries={"attempts": 2}))
    result = await router.arerank("doc 3", docs(4))
    assert result.indices == (0, 1, 2, 3)
    assert all(item.score is None for item in result.items)
    assert result.degraded
    assert result.degraded_reason == (
        "a: HTTP 503; b: timed out (TimeoutError); c: returned a non-finite score; "
        "d: returned 1 scores for 4 documents; kept the retriever's order"
    )
    assert [(s.backend, s.attempts) for s in result.stages] == [("a", 2), ("b", 2), ("c", 1), ("d", 1)]


# -- fallbacks obey the hard constraints ---------------------------------------------------------


async def test_on_premise_request_with_a_failing_local_tier_never_calls_the_api(make_router, fake_clock):
    api = FakeBackend("api", spec=CLOSED_API)
    strong = FakeBackend("strong", spec=LOCAL, fail=lambda call: ServerError("HTTP 500"))
    cheap = FakeBackend("cheap", spec=CHEAP, latency_ms=10, sleep=fake_clock.sleep, fail=lambda call: RuntimeError("oom"))
    config = resilience(breaker={"failure_threshold": 2, "recovery_s": 1})
    router = make_router({"api": api, "strong": strong, "cheap": cheap}, clock=fake_clock, resilience=config)
    for _ in range(6):  # breakers open, half-open and fail again: the api never becomes an option
        result = await router.arerank("q", docs(4), max_cost_usd=1, constraints={"on_premise": True})
        assert result.indices == (0, 1, 2, 3)
        assert result.degraded or result.explanation.chosen == RETRIEVER_ORDER
        assert "api" not in result.explanation.fallbacks
        fake_clock.now += 0.6
    assert api.calls == []
    assert len(strong.calls) > 2 * 3  # opened after two requests of three attempts, then probed


async def test_non_commercial_model_is_not_a_fallback(make_router):
    nc = FakeBackend("nc", spec={"license": "CC-BY-NC-4.0", "quality": {"web": 0.99}})
    down = FakeBackend("down", spec=LOCAL, fail=lambda call: ServerError("HTTP 503"))
    result = await make_router({"nc": nc, "down": down}).arerank("q", docs(3))
    assert nc.calls == []
    assert result.degraded and result.indices == (0, 1, 2)


# -- fallbacks that cannot finish or reuse a failed backend ----------------------------------------


@pytest.mark.looptime
async def test_a_fallback_that_cannot_finish_in_the_time_left_is_skipped(make_router):
    a = FakeBackend("a", spec={"quality": {"web": 0.9}}, latency_ms=150, fail=lambda call: RuntimeError("crashed"))
    b = FakeBackend("b", spec={"quality": {"web": 0.8}, "latency": {"overhead_ms": 100}})
    c = FakeBackend("c", spec={"quality": {"web": 0.7}, "latency": {"overhead_ms": 10}}, latency_ms=10)
    router = make_router({"a": a, "b": b, "c": c}, sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("doc 1", docs(3), latency_budget_ms=200)
    assert since_ms(t0) == pytest.approx(160)
    assert b.calls == []
    assert result.backends == ("c",)
    assert result.degraded_reason == "a: RuntimeError: crashed; b skipped: predicted 100 ms, 45 ms left; served by c"
    assert "b skipped: predicted 100 ms, 45 ms left" in result.explanation.notes


async def test_a_fallback_reusing_a_failed_backend_is_skipped(make_router):
    cheap = FakeBackend("cheap", spec=CHEAP, fail=lambda call: RuntimeError("cpu on fire"))
    strong = FakeBackend("strong", spec=LOCAL, fail=lambda call: RuntimeError("gpu lost"))
    router = make_router({"cheap": cheap, "strong": strong}, policy=PinnedCascade("cheap", "strong", 2))
    result = await router.arerank("q", docs(4), top_n=2)
    assert result.explanation.fallbacks == ("strong", "cheap", RETRIEVER_ORDER)
    assert len(cheap.calls) == 1  # not again as a fallback on its own
    assert len(strong.calls) == 1  # on its own, after the cascade failed in its first stage
    assert "cheap skipped: a backend in it already failed" in result.explanation.notes
    assert result.indices == (0, 1, 2, 3)


# -- hedging and the cost ceiling -------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_free_backend_is_hedged_after_the_fixed_delay(make_router):
    local = FakeBackend("local", spec=LOCAL, latency_ms=lambda call: 500 if call == 0 else 10)
    router = make_router({"local": local}, sleep=asyncio.sleep, resilience=resilience(hedge={"enabled": True, "after_ms": 50}))
    t0 = now()
    result = await router.arerank("doc 2", docs(3), latency_budget_ms=1_000)
    assert since_ms(t0) == pytest.approx(60)
    assert len(local.calls) == 2
    assert result.stages[0].hedged and result.stages[0].ok
    assert not result.degraded


@pytest.mark.looptime
async def test_hedge_after_the_observed_p95(make_router):
    latencies = [10.0] * 18 + [20.0, 30.0, 1_000.0, 5.0]  # p95 of the first 20 is 20 ms
    local = FakeBackend("local", spec=LOCAL, latency_ms=lambda call: latencies[call])
    config = resilience(hedge={"enabled": True, "quantile": 0.95, "min_samples": 20})
    router = make_router({"local": local}, sleep=asyncio.sleep, resilience=config)
    for _ in range(20):
        assert not (await router.arerank("q", docs(2))).stages[0].hedged
    t0 = now()
    result = await router.arerank("q", docs(2))
    assert since_ms(t0) == pytest.approx(20 + 5)
    assert result.stages[0].hedged
    assert len(local.calls) == 22


@pytest.mark.looptime
@pytest.mark.parametrize(("ceiling", "hedge"), [(0.003, False), (0.004, True), (None, True)])
async def test_a_paid_backend_is_hedged_only_when_twice_its_cost_fits(make_router, ceiling, hedge):
    api = FakeBackend("api", spec=CLOSED_API, usage=Usage(search_units=1), latency_ms=lambda call: 500 if call == 0 else 10)
    router = make_router({"api": api}, sleep=asyncio.sleep, resilience=resilience(hedge={"enabled": True, "after_ms": 50}))
    result = await router.arerank("q", docs(3), max_cost_usd=ceiling)
    assert result.stages[0].hedged is hedge
    assert len(api.calls) == (2 if hedge else 1)
    assert result.latency_ms == pytest.approx(60 if hedge else 500)


@pytest.mark.looptime
async def test_a_hedge_in_a_cascade_counts_the_whole_cascade_against_the_ceiling(make_router):
    # cheap $0.003 + strong $0.002 = $0.005 fits the ceiling; a second strong call would not
    # ($0.007), though twice strong's own cost ($0.004) does.
    cheap = FakeBackend("cheap", spec={**CHEAP, "pricing": {"scheme": "per_call", "usd": 0.003}})
    strong = FakeBackend(
        "strong", spec={**LOCAL, "pricing": {"scheme": "per_call", "usd": 0.002}}, latency_ms=lambda call: 500 if call < 2 else 10
    )
    router = make_router(
        {"cheap": cheap, "strong": strong},
        policy=PinnedCascade("cheap", "strong", 2),
        sleep=asyncio.sleep,
        resilience=resilience(hedge={"enabled": True, "after_ms": 50}),
    )
    result = await router.arerank("q", docs(4), top_n=2, max_cost_usd=0.005)
    assert result.explanation.chosen == "cheap@4 -> strong@2"
    assert [s.hedged for s in result.stages] == [False, False]
    assert len(strong.calls) == 1
    # With room for the second call the hedge goes out.
    roomy = await router.arerank("q", docs(4), top_n=2, max_cost_usd=0.007)
    assert [s.hedged for s in roomy.stages] == [False, True]
    assert len(strong.calls) == 3


@pytest.mark.looptime
async def test_hedges_respect_max_concurrency(make_router):
    in_flight = 0
    peak = 0

    class Counting(FakeBackend):
        async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await super().rerank(query, documents)
            finally:
                in_flight -= 1

    local = Counting("local", spec=LOCAL, latency_ms=lambda call: 500 if call == 0 else 10)
    config = resilience(hedge={"enabled": True, "after_ms": 50}, limits={"max_concurrency": 1})
    router = make_router({"local": local}, sleep=asyncio.sleep, resilience=config)
    result = await router.arerank("q", docs(3), latency_budget_ms=1_000)
    assert peak == 1
    assert result.stages[0].ok


@pytest.mark.looptime
async def test_catalog_rpm_paces_calls_within_the_deadline(make_router):
    limited = FakeBackend("api", spec={**LOCAL, "rpm": 2})
    other = FakeBackend("other", spec=CHEAP)
    router = make_router({"api": limited, "other": other}, sleep=asyncio.sleep)
    for _ in range(2):
        assert (await router.arerank("q", docs(2), latency_budget_ms=1_000)).backends == ("api",)
    t0 = now()
    result = await router.arerank("q", docs(2), latency_budget_ms=1_000)  # the third waits 30 s for the limiter
    assert since_ms(t0) <= 1_000 + SLACK_MS
    assert len(limited.calls) == 2
    assert result.backends == ("other",)
    assert result.stages[0].error == "api: timed out at the deadline"


# -- cancellation -----------------------------------------------------------------------------------


class Blocking(FakeBackend):
    """A backend whose call waits on an event that never comes; records how each call ended."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        scores = await super().rerank(query, documents)
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return scores


def others() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def cancel_mid_call(router, backend: Blocking, **kwargs) -> None:
    task = asyncio.create_task(router.arerank("q", docs(3), **kwargs))
    await backend.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_a_request_cancels_the_backend_call(make_router, fake_clock):
    backend = Blocking("local", spec=LOCAL)
    router = make_router({"local": backend}, clock=fake_clock)
    await cancel_mid_call(router, backend)
    assert backend.cancelled == 1
    assert others() == set()
    assert breaker_of(router, "local").status() == (BreakerState.CLOSED, "")  # a cancel is not a failure


@pytest.mark.looptime
async def test_cancelling_a_hedged_request_cancels_both_calls(make_router):
    backend = Blocking("local", spec=LOCAL)
    router = make_router({"local": backend}, sleep=asyncio.sleep, resilience=resilience(hedge={"enabled": True, "after_ms": 50}))
    task = asyncio.create_task(router.arerank("q", docs(3)))
    await asyncio.sleep(0.1)
    assert len(backend.calls) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the losers' cancellation runs on the next tick
    assert backend.cancelled == 2
    assert others() == set()


async def test_cancelling_a_probe_releases_its_slot(make_router, fake_clock):
    backend = Blocking("local", spec=LOCAL, fail=lambda call: ServerError("HTTP 500") if call == 0 else None)
    config = resilience(retries={"attempts": 1}, breaker={"failure_threshold": 1, "recovery_s": 10})
    router = make_router({"local": backend}, clock=fake_clock, resilience=config)
    await router.arerank("q", docs(3))
    fake_clock.now += 10
    await cancel_mid_call(router, backend)  # the probe is cancelled: no verdict either way
    assert backend.cancelled == 1
    assert breaker_of(router, "local").status() == (BreakerState.HALF_OPEN, "circuit half-open: this call is the probe")
    backend.release.set()
    result = await router.arerank("q", docs(3))  # the next request probes and closes it
    assert result.backends == ("local",)
    assert breaker_of(router, "local").status()[0] is BreakerState.CLOSED


# -- the deadline in real time (the one check that really waits) -----------------------------------


async def test_deadline_holds_in_real_time_under_retries_and_hedges(make_router):
    budget_ms = 80
    flaky = FakeBackend("flaky", spec=LOCAL, latency_ms=30, fail=lambda call: ServerError("HTTP 503"))
    slow = FakeBackend("slow", spec=CHEAP, latency_ms=1_000)
    config = resilience(retries={"attempts": 5, "initial_s": 0.01, "jitter_s": 0.005}, hedge={"enabled": True, "after_ms": 10})
    router = make_router({"flaky": flaky, "slow": slow}, sleep=asyncio.sleep, resilience=config)
    started = time.perf_counter()
    result = await router.arerank("q", docs(5), latency_budget_ms=budget_ms)
    assert (time.perf_counter() - started) * 1000 <= budget_ms + REAL_SLACK_MS
    assert_permutation(result, 5)
    assert result.degraded
    await asyncio.sleep(0)
    assert others() == set()


# -- cascades ---------------------------------------------------------------------------------------

CHEAP_SCORES = {"doc 0": 0.1, "doc 1": 0.9, "doc 2": 0.5, "doc 3": 0.7, "doc 4": 0.3, "doc 5": 0.2}
STRONG_SCORES = {"doc 0": 0.0, "doc 1": 0.2, "doc 2": 0.8, "doc 3": 0.4, "doc 4": 0.9, "doc 5": 0.6}


@pytest.mark.looptime
async def test_a_second_stage_timeout_keeps_the_first_stage_order(make_router):
    cheap = FakeBackend("cheap", score=table(CHEAP_SCORES), spec=CHEAP, latency_ms=20)
    strong = FakeBackend("strong", score=table(STRONG_SCORES), spec=LOCAL, latency_ms=5_000)
    router = make_router({"cheap": cheap, "strong": strong}, policy=PinnedCascade("cheap", "strong", 3), sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("q", docs(6), top_n=3, latency_budget_ms=300)
    assert since_ms(t0) <= 300 + SLACK_MS
    assert result.indices == (1, 3, 2, 4, 5, 0)  # cheap's order
    assert [item.score for item in result.items] == [0.9, 0.7, 0.5, 0.3, 0.2, 0.1]
    assert result.degraded
    assert result.degraded_reason == (
        "strong: timed out at the deadline; kept the order of the stages before it; served by cheap@6 -> strong@3"
    )
    assert [(s.backend, s.ok) for s in result.stages] == [("cheap", True), ("strong", False)]


@pytest.mark.looptime
async def test_only_a_first_stage_leaves_time_for_fallbacks(make_router):
    # Fallbacks: strong (predicted 100 ms) and cheap (50 ms). The first stage (cheap) leaves
    # 100 + 10 ms for strong, the one fallback that could run if it failed (cheap would be
    # skipped); the second stage has no fallback and may use the whole budget.
    cheap = FakeBackend("cheap", spec={**CHEAP, "latency": {"overhead_ms": 50}}, latency_ms=10)
    strong = FakeBackend("strong", spec={**LOCAL, "latency": {"overhead_ms": 100}}, latency_ms=170)
    router = make_router({"cheap": cheap, "strong": strong}, policy=PinnedCascade("cheap", "strong", 2), sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("q", docs(3), top_n=1, latency_budget_ms=200)
    assert result.explanation.fallbacks == ("strong", "cheap", RETRIEVER_ORDER)
    assert since_ms(t0) == pytest.approx(180)
    assert not result.degraded

    hung = FakeBackend("cheap", spec={**CHEAP, "latency": {"overhead_ms": 50}}, latency_ms=10_000)
    strong = FakeBackend("strong", spec={**LOCAL, "latency": {"overhead_ms": 100}}, latency_ms=20)
    router = make_router({"cheap": hung, "strong": strong}, policy=PinnedCascade("cheap", "strong", 2), sleep=asyncio.sleep)
    t0 = now()
    result = await router.arerank("q", docs(3), top_n=1, latency_budget_ms=200)
    assert result.stages[0].latency_ms == pytest.approx(200 - DEADLINE_GUARD_MS - 110)  # cut early enough for strong
    assert result.backends == ("strong",)
    assert since_ms(t0) == pytest.approx(200 - DEADLINE_GUARD_MS - 110 + 20)


def adaptive_router(make_router, margin: float):
    cheap = FakeBackend("cheap", score=table(CHEAP_SCORES), spec=CHEAP)
    strong = FakeBackend("strong", score=table(STRONG_SCORES), spec={**LOCAL, "latency": {"per_doc_ms": 100}})
    # Strong on all six is predicted 600 ms: over the 400 ms budget; on the top 3 it fits.
    policy = ConstrainedPolicy(cascade_k=(3,), adaptive_margin=margin)
    return make_router({"cheap": cheap, "strong": strong}, policy=policy), strong


async def test_adaptive_cascade_skips_the_second_stage_when_the_first_is_sure(make_router):
    router, strong = adaptive_router(make_router, margin=0.2)  # cheap's top-1 margin is 0.9 - 0.7 = 0.2
    result = await router.arerank("q", docs(6), top_n=2, latency_budget_ms=400)
    assert result.explanation.chosen == "cheap@6 -> strong@3?m<0.2"
    assert strong.calls == []
    assert result.indices == (1, 3, 2, 4, 5, 0)
    assert not result.degraded
    assert "strong not needed: cheap is sure (top-1 margin 0.200 >= 0.200)" in result.explanation.notes


async def test_adaptive_cascade_escalates_when_the_first_stage_is_unsure(make_router):
    router, strong = adaptive_router(make_router, margin=0.25)
    result = await router.arerank("q", docs(6), top_n=2, latency_budget_ms=400)
    assert strong.calls == [("q", ("doc 1", "doc 3", "doc 2"))]
    assert result.indices == (2, 3, 1, 4, 5, 0)
    assert result.backends == ("cheap", "strong")
    assert not any("not needed" in note for note in result.explanation.notes)


def cascade_backends(strong_spec: dict[str, object]) -> dict[str, FakeBackend]:
    cheap = FakeBackend("cheap", spec={**CHEAP, "latency": {"per_doc_ms": 0.1}})
    strong = FakeBackend("strong", spec={"quality": {"web": 0.9}, **strong_spec})
    return {"cheap": cheap, "strong": strong}


def test_planner_picks_the_largest_cascade_within_the_latency_budget(make_router):
    router = make_router(cascade_backends({"latency": {"per_doc_ms": 10}}))
    # strong on 100: 1,000 ms; cheap on 100: 10 ms; cheap + strong@k = 10 + 10k ms.
    plan = router.plan("q", docs(100), top_n=10, latency_budget_ms=500)
    assert plan.primary.name == "cheap@100 -> strong@30"  # 310 ms; k=50 would be 510 ms
    assert {r.rule for a in plan.assessed if a.option.name == "strong" for r in a.rejections} == {"latency_budget"}
    assert plan.primary.estimate.quality == pytest.approx(0.6 + 0.3 * 30 / 50)
    roomy = router.plan("q", docs(100), top_n=10, latency_budget_ms=700)
    assert roomy.primary.name == "cheap@100 -> strong@50"


def test_planner_picks_the_largest_cascade_within_the_cost_ceiling(make_router):
    paid = {"pricing": {"scheme": "per_search_unit", "usd": 0.001, "docs_per_unit": 10}}
    router = make_router(cascade_backends(paid))
    plan = router.plan("q", docs(100), top_n=10, max_cost_usd=0.0035)
    assert plan.primary.name == "cheap@100 -> strong@30"  # 3 units; k=50 is 5
    assert plan.primary.estimate.cost_usd == pytest.approx(0.003)
    assert plan.primary.estimate.cost_usd <= 0.0035


async def test_planned_cascade_runs_the_strong_model_on_k(make_router):
    backends = cascade_backends({"latency": {"per_doc_ms": 10}})
    result = await make_router(backends).arerank("q", docs(100), top_n=10, latency_budget_ms=500)
    assert [s.candidates_in for s in result.stages] == [100, 30]
    assert len(backends["strong"].calls[0][1]) == 30
    assert_permutation(result, 100)


def test_cascades_can_be_turned_off_in_config(make_router):
    router = make_router(
        cascade_backends({"latency": {"per_doc_ms": 10}}), policy={"name": "constrained", "params": {"cascades": False}}
    )
    plan = router.plan("q", docs(100), top_n=10, latency_budget_ms=500)
    assert plan.primary.name == "cheap"
    assert not any(len(a.option.stages) > 1 for a in plan.assessed)


# -- resilience config ------------------------------------------------------------------------------


async def test_per_backend_resilience_overrides_the_default(make_router):
    api = FakeBackend("api", spec=LOCAL, fail=lambda call: ServerError("HTTP 503"))
    local = FakeBackend("local", spec=CHEAP, fail=lambda call: ServerError("HTTP 503"))
    config = {"default": {"retries": {"attempts": 1}}, "backends": {"api": {"retries": {"attempts": 4}}}}
    router = make_router({"api": api, "local": local}, resilience=config)
    assert router.config.resilience_for("api").retries.attempts == 4
    assert router.config.resilience_for("api").retries.initial_s == router.config.resilience.default.retries.initial_s
    assert router.config.resilience_for("local").retries.attempts == 1
    await router.arerank("q", docs(3))
    assert len(api.calls) == 4
    assert len(local.calls) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"retries": {"attempts": 0}}, r"backends\.api: retries\.attempts: Input should be greater than or equal to 1"),
        ({"retrys": {"attempts": 2}}, r"backends\.api: retrys: Extra inputs are not permitted"),
        ({"hedge": {"quantile": 1.5}}, r"backends\.api: hedge\.quantile: Input should be less than 1"),
    ],
)
def test_an_invalid_override_fails_at_load_naming_the_path(make_router, override, message):
    with pytest.raises(ConfigError, match=r"resilience: .*" + message):
        make_router(resilience={"backends": {"api": override}})
