"""Unit tests of the resilience strategies: breaker, retries, hedging, limits, margin calibration.

Every clock and every random draw is injected (a FakeClock, a seeded random.Random) or virtual
(looptime), so nothing here really sleeps and nothing can flake.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import Router
from router.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BadRequestError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
)
from router.executor import top_margin
from router.offline.fitting import calibrate_margin_threshold
from router.resilience import (
    RETRYABLE,
    BackendLimits,
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    HedgePolicy,
    LatencyWindow,
    LimitPolicy,
    RetryPolicy,
    hedged,
    retrying,
)
from router.resilience.breaker import BreakerRecord
from router.testing import FakeBackend

if TYPE_CHECKING:
    from router.testing import FakeClock

# -- circuit breaker --------------------------------------------------------------------------------


def breaker(clock: FakeClock, threshold: int = 3, recovery_s: float = 10.0, **kwargs) -> CircuitBreaker:
    return CircuitBreaker("api", BreakerPolicy(failure_threshold=threshold, recovery_s=recovery_s), clock=clock, **kwargs)


def open_breaker(clock: FakeClock, **kwargs) -> CircuitBreaker:
    b = breaker(clock, **kwargs)
    for _ in range(b.policy.failure_threshold):
        b.on_failure()
    return b


def test_breaker_opens_after_n_consecutive_failures(fake_clock):
    b = breaker(fake_clock, threshold=3)
    assert b.status() == (BreakerState.CLOSED, "")
    b.on_failure()
    b.on_failure()
    assert b.status()[0] is BreakerState.CLOSED
    assert b.try_acquire()
    b.on_failure()
    assert b.status() == (BreakerState.OPEN, "circuit open after 3 consecutive failures; probing again in 10.0 s")


def test_a_success_resets_the_failure_count(fake_clock):
    b = breaker(fake_clock, threshold=3)
    for _ in range(5):  # never three in a row
        b.on_failure()
        b.on_failure()
        b.on_success()
    assert b.status()[0] is BreakerState.CLOSED


def test_open_breaker_rejects_with_a_reason_naming_the_wait(fake_clock):
    b = open_breaker(fake_clock, recovery_s=10)
    fake_clock.now += 4
    state, why = b.status()
    assert state is BreakerState.OPEN
    assert why == "circuit open after 3 consecutive failures; probing again in 6.0 s"
    assert not b.try_acquire()
    assert not b.try_acquire()
    fake_clock.now += 5.9
    assert not b.try_acquire()
    assert "probing again in 0.1 s" in b.status()[1]


def test_status_is_side_effect_free(fake_clock):
    b = open_breaker(fake_clock)
    fake_clock.now += 10
    for _ in range(3):
        assert b.status() == (BreakerState.HALF_OPEN, "circuit half-open: this call is the probe")
    assert b.try_acquire()  # reading the status three times took no probe slot


def test_half_open_lets_exactly_one_probe_through(fake_clock):
    b = open_breaker(fake_clock, recovery_s=10)
    fake_clock.now += 10
    assert b.try_acquire()
    assert b.status() == (BreakerState.OPEN, "circuit half-open: a probe call is in flight")
    assert [b.try_acquire() for _ in range(5)] == [False] * 5
    fake_clock.now += 100  # however long the probe takes, it stays the only one
    assert not b.try_acquire()


def test_probe_success_closes(fake_clock):
    b = open_breaker(fake_clock)
    fake_clock.now += 10
    assert b.try_acquire()
    b.on_success()
    assert b.status() == (BreakerState.CLOSED, "")
    assert all(b.try_acquire() for _ in range(5))
    # Closed again means the count starts from zero: it takes three new failures to reopen.
    b.on_failure()
    b.on_failure()
    assert b.status()[0] is BreakerState.CLOSED


def test_probe_failure_reopens_and_restarts_the_timer(fake_clock):
    b = open_breaker(fake_clock, recovery_s=10)
    fake_clock.now += 25  # long past recovery
    assert b.try_acquire()
    fake_clock.now += 2  # the probe takes 2 s, then fails
    b.on_failure()
    state, why = b.status()
    assert state is BreakerState.OPEN
    assert why.endswith("probing again in 10.0 s")  # counted from the probe's failure
    fake_clock.now += 9.99
    assert not b.try_acquire()
    fake_clock.now += 0.01
    assert b.try_acquire()


def test_release_probe_frees_the_slot_without_a_verdict(fake_clock):
    b = open_breaker(fake_clock)
    fake_clock.now += 10
    assert b.try_acquire()
    b.release_probe()  # e.g. the probe was cancelled at the deadline
    assert b.status() == (BreakerState.HALF_OPEN, "circuit half-open: this call is the probe")
    assert b.try_acquire()
    assert not b.try_acquire()


def test_release_probe_on_a_closed_breaker_changes_nothing(fake_clock):
    b = breaker(fake_clock, threshold=2)
    b.on_failure()
    b.release_probe()
    b.on_failure()  # the earlier failure still counts
    assert b.status()[0] is BreakerState.OPEN


class SharedStore:
    """A BreakerStore that is not the in-memory one (as a Redis store would be): a dict shared by
    two CircuitBreaker objects standing in for two app replicas, recording every write."""

    def __init__(self) -> None:
        self.records: dict[str, BreakerRecord] = {}
        self.writes: list[tuple[str, BreakerRecord]] = []

    def load(self, name: str) -> BreakerRecord:
        return self.records.get(name, BreakerRecord())

    def save(self, name: str, record: BreakerRecord) -> None:
        self.records[name] = record
        self.writes.append((name, record))


def test_replicas_sharing_a_store_see_one_breaker(fake_clock):
    store = SharedStore()
    a = breaker(fake_clock, threshold=3, store=store)
    b = breaker(fake_clock, threshold=3, store=store)
    a.on_failure()
    b.on_failure()
    a.on_failure()  # three in a row across the replicas
    assert a.status()[0] is b.status()[0] is BreakerState.OPEN
    assert not b.try_acquire()
    fake_clock.now += 10
    assert b.try_acquire()  # replica b takes the probe ...
    assert not a.try_acquire()  # ... so replica a may not send one too
    b.on_success()
    assert a.status() == (BreakerState.CLOSED, "")
    assert store.writes and all(name == "api" for name, _ in store.writes)
    # A breaker for another backend in the same store keeps its own record.
    other = CircuitBreaker("other", clock=fake_clock, store=store)
    assert other.status()[0] is BreakerState.CLOSED


async def test_bad_requests_do_not_count_against_the_breaker(make_router, fake_clock):
    refused = FakeBackend("api", fail=lambda call: BadRequestError("document too long", backend="api"))
    router = make_router({"api": refused}, clock=fake_clock, resilience={"default": {"breaker": {"failure_threshold": 2}}})
    for _ in range(5):
        result = await router.arerank("q", ["a", "b"])
        assert result.degraded
    assert len(refused.calls) == 5  # never retried, never shut off
    assert router._executor.breakers["api"].status()[0] is BreakerState.CLOSED


async def test_other_failures_count_against_the_breaker(make_router, fake_clock):
    for error in (AuthenticationError("401"), MalformedResponseError("bad json"), ServerError("503"), RuntimeError("x")):
        backend = FakeBackend("api", fail=lambda call, error=error: error)
        router = make_router({"api": backend}, clock=fake_clock, resilience={"default": {"breaker": {"failure_threshold": 2}}})
        await router.arerank("q", ["a", "b"])
        await router.arerank("q", ["a", "b"])
        assert router._executor.breakers["api"].status()[0] is BreakerState.OPEN, error


async def test_bad_request_from_a_probe_releases_it(make_router, fake_clock):
    calls = {0: ServerError("503"), 1: BadRequestError("too long")}
    backend = FakeBackend("api", fail=calls.get)
    router = make_router(
        {"api": backend},
        clock=fake_clock,
        resilience={"default": {"retries": {"attempts": 1}, "breaker": {"failure_threshold": 1, "recovery_s": 5}}},
    )
    await router.arerank("q", ["a", "b"])
    fake_clock.now += 5
    await router.arerank("q", ["a", "b"])  # the probe is refused as a bad request: no verdict
    assert router._executor.breakers["api"].status() == (BreakerState.HALF_OPEN, "circuit half-open: this call is the probe")
    result = await router.arerank("q", ["a", "b"])  # the next call probes, succeeds and closes it
    assert not result.degraded
    assert router._executor.breakers["api"].status()[0] is BreakerState.CLOSED


# -- retries ----------------------------------------------------------------------------------------


class Script:
    """An async callable failing with the given errors in turn, then returning "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class SleepRecorder:
    """An injected sleep that records each wait and moves a FakeClock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds


async def run_retrying(
    fn: Script, policy: RetryPolicy, clock: FakeClock, *, deadline: float | None = None, seed: int = 0
) -> tuple[str, list[float]]:
    sleep = SleepRecorder(clock)
    result = ""
    async for attempt in retrying(policy, deadline=deadline, clock=clock, rng=random.Random(seed), sleep=sleep):
        with attempt:
            result = await fn()
    return result, sleep.sleeps


async def test_retry_after_is_honoured_exactly(fake_clock):
    fn = Script(RateLimitedError("429", retry_after=1.5), RateLimitedError("429", retry_after=0))
    policy = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.1, jitter_s=0.05)  # Retry-After is not capped by max_s
    result, sleeps = await run_retrying(fn, policy, fake_clock)
    assert result == "ok"
    assert sleeps == [1.5, 0.0]
    assert fn.calls == 3


async def test_a_429_without_retry_after_backs_off(fake_clock):
    fn = Script(RateLimitedError("429"))
    policy = RetryPolicy(attempts=2, initial_s=0.2, jitter_s=0)
    assert await run_retrying(fn, policy, fake_clock) == ("ok", [0.2])


async def test_exponential_backoff_with_seeded_jitter(fake_clock):
    policy = RetryPolicy(attempts=6, initial_s=0.1, max_s=1.0, jitter_s=0.05)
    fn = Script(*(ServerError("503") for _ in range(5)))
    result, sleeps = await run_retrying(fn, policy, fake_clock, seed=42)
    assert result == "ok"
    rng = random.Random(42)
    expected = [min(1.0, 0.1 * 2**i) + rng.uniform(0, 0.05) for i in range(5)]
    assert sleeps == expected  # exactly: the same draws from the same seed
    assert [round(s, 1) for s in sleeps] == [0.1, 0.2, 0.4, 0.8, 1.0]  # doubling, capped at max_s
    assert all(0 <= s - base <= 0.05 for s, base in zip(sleeps, [0.1, 0.2, 0.4, 0.8, 1.0], strict=True))
    _, again = await run_retrying(Script(*(ServerError("503") for _ in range(5))), policy, fake_clock, seed=42)
    assert again == sleeps
    _, other = await run_retrying(Script(*(ServerError("503") for _ in range(5))), policy, fake_clock, seed=43)
    assert other != sleeps


async def test_retries_stop_before_a_sleep_would_pass_the_deadline(fake_clock):
    policy = RetryPolicy(attempts=10, initial_s=0.1, max_s=10, jitter_s=0)
    fn = Script(*(ServerError(f"503 #{i}") for i in range(10)))
    deadline = fake_clock.now + 0.25
    with pytest.raises(ServerError, match="503 #1"):  # the last error is re-raised
        await run_retrying(fn, policy, fake_clock, deadline=deadline)
    # Slept 0.1 (ends at 0.1 < 0.25); the next sleep, 0.2, would end at 0.3: stop instead.
    assert fn.calls == 2
    assert fake_clock.now <= deadline


async def test_a_retry_after_past_the_deadline_is_not_waited_for(fake_clock):
    fn = Script(RateLimitedError("429", retry_after=30))
    with pytest.raises(RateLimitedError):
        await run_retrying(fn, RetryPolicy(attempts=3), fake_clock, deadline=fake_clock.now + 2)
    assert fn.calls == 1
    assert fake_clock.now == 1_000.0


async def test_no_deadline_means_attempts_alone_bound_retries(fake_clock):
    fn = Script(*(ServerError("503") for _ in range(5)))
    with pytest.raises(ServerError):
        await run_retrying(fn, RetryPolicy(attempts=4, jitter_s=0), fake_clock)
    assert fn.calls == 4


@pytest.mark.parametrize("error", [BackendTimeoutError("slow"), ServerError("502"), RateLimitedError("429")])
async def test_transient_errors_are_retried(fake_clock, error):
    assert isinstance(error, RETRYABLE)
    fn = Script(error)
    assert (await run_retrying(fn, RetryPolicy(attempts=2), fake_clock))[0] == "ok"
    assert fn.calls == 2


@pytest.mark.parametrize(
    "error",
    [BadRequestError("400"), AuthenticationError("401"), MalformedResponseError("NaN"), RuntimeError("bug"), ValueError("x")],
)
async def test_other_errors_are_not_retried(fake_clock, error):
    fn = Script(error)
    with pytest.raises(type(error)):
        await run_retrying(fn, RetryPolicy(attempts=5), fake_clock)
    assert fn.calls == 1


async def test_router_backoff_uses_the_injected_rng_and_sleep(fake_clock):
    backend = FakeBackend("api", fail=lambda call: ServerError("503") if call < 3 else None)
    sleep = SleepRecorder(fake_clock)
    config = {"backends": {}, "resilience": {"default": {"retries": {"attempts": 4, "initial_s": 0.1, "jitter_s": 0.5}}}}
    router = Router(config, backends={"api": backend}, clock=fake_clock, sleep=sleep, rng=random.Random(5))
    result = await router.arerank("q", ["a", "b"])
    await router.aclose()
    assert result.stages[0].ok
    assert result.stages[0].attempts == 4
    rng = random.Random(5)
    assert sleep.sleeps == [0.1 * 2**i + rng.uniform(0, 0.5) for i in range(3)]


# -- hedging ----------------------------------------------------------------------------------------


class Calls:
    """Scripted calls for hedged(): each takes ``latency`` virtual seconds and returns or raises;
    records when it started and whether it was cancelled."""

    def __init__(self, *script: tuple[float, object]) -> None:
        self.script = list(script)
        self.started: list[float] = []
        self.cancelled: list[int] = []

    async def __call__(self) -> object:
        number = len(self.started)
        self.started.append(asyncio.get_running_loop().time())
        latency, outcome = self.script[number]
        try:
            await asyncio.sleep(latency)
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def now() -> float:
    return asyncio.get_running_loop().time()


@pytest.mark.looptime
async def test_hedge_sent_only_after_the_delay():
    calls = Calls((1.0, "first"), (0.05, "second"))
    t0 = now()
    result = await hedged(calls, 0.1)
    assert result == ("second", True)
    assert [round(t - t0, 6) for t in calls.started] == [0.0, 0.1]
    assert now() - t0 == pytest.approx(0.15)
    await asyncio.sleep(0)  # the loser runs its cancellation on the next tick
    assert calls.cancelled == [0]


@pytest.mark.looptime
async def test_no_hedge_when_the_first_call_answers_in_time():
    calls = Calls((0.09, "first"), (0.0, "never"))
    assert await hedged(calls, 0.1) == ("first", False)
    assert len(calls.started) == 1
    await asyncio.sleep(1)
    assert len(calls.started) == 1


@pytest.mark.looptime
async def test_no_delay_means_no_hedge():
    calls = Calls((5.0, "only"))
    assert await hedged(calls, None) == ("only", False)
    assert len(calls.started) == 1


@pytest.mark.looptime
async def test_first_success_wins_and_the_other_is_cancelled():
    calls = Calls((0.3, "first"), (0.5, "second"))
    assert await hedged(calls, 0.1) == ("first", True)
    await asyncio.sleep(0)
    assert calls.cancelled == [1]


@pytest.mark.looptime
async def test_a_failure_waits_for_the_other_call():
    calls = Calls((0.2, ServerError("first failed")), (0.5, "second"))
    t0 = now()
    assert await hedged(calls, 0.1) == ("second", True)
    assert now() - t0 == pytest.approx(0.6)
    assert calls.cancelled == []


@pytest.mark.looptime
async def test_both_failing_raises_the_first_error():
    calls = Calls((0.4, ServerError("first call")), (0.05, ServerError("hedge")))
    with pytest.raises(ServerError, match="hedge"):  # the hedge failed first, at 0.15 s
        await hedged(calls, 0.1)
    calls = Calls((0.15, ServerError("first call")), (0.5, ServerError("hedge")))
    with pytest.raises(ServerError, match="first call"):
        await hedged(calls, 0.1)


@pytest.mark.looptime
async def test_a_first_call_failing_before_the_delay_is_raised_without_a_hedge():
    calls = Calls((0.05, ServerError("early")), (0.0, "never"))
    with pytest.raises(ServerError, match="early"):
        await hedged(calls, 0.1)
    assert len(calls.started) == 1


@pytest.mark.looptime
@pytest.mark.parametrize("cancel_at", [0.05, 0.2])  # before and after the hedge was sent
async def test_cancelling_hedged_cancels_every_call_in_flight(cancel_at):
    calls = Calls((1.0, "first"), (1.0, "second"))
    task = asyncio.create_task(hedged(calls, 0.1))
    await asyncio.sleep(cancel_at)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert calls.cancelled == list(range(len(calls.started)))
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_latency_window_quantiles():
    window = LatencyWindow()
    assert window.quantile(0.95) is None
    for ms in range(100, 0, -1):  # order of arrival does not matter
        window.add(float(ms))
    assert len(window) == 100
    assert window.quantile(0.95) == 95  # nearest rank
    assert window.quantile(0.5) == 50
    assert window.quantile(0.01) == 1
    assert window.quantile(0.999) == 100
    single = LatencyWindow()
    single.add(7.0)
    assert single.quantile(0.01) == single.quantile(0.99) == 7.0


def test_latency_window_keeps_the_most_recent():
    window = LatencyWindow(size=3)
    for ms in (1.0, 2.0, 100.0, 3.0, 4.0):
        window.add(ms)
    assert len(window) == 3
    assert window.quantile(0.01) == 3.0
    assert window.quantile(0.99) == 100.0


def test_hedge_delay_needs_min_samples():
    window = LatencyWindow()
    policy = HedgePolicy(enabled=True, quantile=0.9, min_samples=20)
    for ms in range(1, 20):
        window.add(float(ms))
    assert window.hedge_delay_ms(policy) is None  # 19 samples: no quantile to trust
    window.add(20.0)
    assert window.hedge_delay_ms(policy) == 18.0
    assert window.hedge_delay_ms(HedgePolicy(enabled=False)) is None
    assert LatencyWindow().hedge_delay_ms(HedgePolicy(enabled=True, after_ms=25)) == 25  # a fixed delay needs no samples
    assert window.hedge_delay_ms(HedgePolicy(enabled=False, after_ms=25)) is None


# -- concurrency and rate limits --------------------------------------------------------------------


@pytest.mark.looptime
async def test_max_concurrency_is_enforced():
    limits = BackendLimits(LimitPolicy(max_concurrency=2))
    inside = 0
    peak = 0
    entered: list[float] = []

    async def call() -> None:
        nonlocal inside, peak
        async with limits.slot():
            inside += 1
            peak = max(peak, inside)
            entered.append(now())
            await asyncio.sleep(1)
            inside -= 1

    t0 = now()
    await asyncio.gather(*(call() for _ in range(5)))
    assert peak == 2
    assert [round(t - t0) for t in entered] == [0, 0, 1, 1, 2]


@pytest.mark.looptime
async def test_a_slot_is_freed_when_the_call_fails_or_is_cancelled():
    limits = BackendLimits(LimitPolicy(max_concurrency=1))
    with pytest.raises(RuntimeError):
        async with limits.slot():
            raise RuntimeError("boom")
    task = asyncio.create_task(_hold(limits, 10))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = now()
    async with limits.slot():
        assert now() == t0  # no wait: both earlier slots were given back


async def _hold(limits: BackendLimits, seconds: float) -> None:
    async with limits.slot():
        await asyncio.sleep(seconds)


@pytest.mark.looptime
async def test_rpm_paces_requests():
    limits = BackendLimits(LimitPolicy(rpm=2))
    t0 = now()
    times = []
    for _ in range(4):
        async with limits.slot():
            times.append(round(now() - t0, 3))
    # A bucket of two (aiolimiter's burst is the whole per-minute rate), then one every 30 s.
    assert times == [0, 0, 30, 60]


@pytest.mark.looptime
async def test_tpm_paces_by_tokens_and_caps_one_huge_request():
    limits = BackendLimits(LimitPolicy(tpm=1000))
    t0 = now()
    async with limits.slot(tokens=1000):
        pass
    async with limits.slot(tokens=500):  # the bucket is empty: 500 tokens take 30 s to refill
        pass
    assert now() - t0 == pytest.approx(30, abs=0.01)
    async with limits.slot(tokens=10**6):  # over the bucket: takes the whole minute, not forever
        pass
    assert now() - t0 == pytest.approx(90, abs=0.01)


def test_limits_keep_one_primitive_per_event_loop():
    limits = BackendLimits(LimitPolicy(max_concurrency=1, rpm=600))

    async def enter() -> None:
        async with limits.slot():
            pass

    asyncio.run(enter())
    asyncio.run(enter())  # a second loop gets its own semaphore and limiter: no "bound to a different loop"


# -- margin calibration -----------------------------------------------------------------------------


def test_top_margin():
    assert top_margin([0.2, 0.9, 0.5]) == pytest.approx(0.4)
    assert top_margin([0.7, 0.7]) == 0
    assert top_margin([0.3]) == math.inf
    assert top_margin([]) == math.inf


def test_calibration_is_the_linear_quantile_nudged_up():
    margins = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert calibrate_margin_threshold(margins, 0.5) == math.nextafter(0.3, math.inf)
    assert calibrate_margin_threshold(margins, 0.25) == math.nextafter(0.2, math.inf)
    assert calibrate_margin_threshold(margins, 0.125) == pytest.approx(0.15)
    for share in (0.01, 0.1, 0.33, 0.5, 0.9, 0.99):
        assert calibrate_margin_threshold(margins, share) == math.nextafter(float(np.quantile(margins, share)), math.inf)


def test_calibration_escalates_ties_at_the_quantile():
    margins = [0.0, 0.0, 0.0, 0.0, 0.8]
    threshold = calibrate_margin_threshold(margins, 0.2)
    assert threshold > 0
    assert sum(m < threshold for m in margins) == 4  # every tie at the quantile escalates
    assert calibrate_margin_threshold([0.3] * 10, 0.1) > 0.3


def test_calibration_share_one_always_escalates():
    assert calibrate_margin_threshold([0.1, 0.9], 1) == math.inf
    assert calibrate_margin_threshold([0.1, 0.9], 1.0) > 1e300


def test_calibration_ignores_non_finite_margins():
    with_junk = [math.inf, 0.2, math.nan, 0.4, -math.inf]
    assert calibrate_margin_threshold(with_junk, 0.5) == calibrate_margin_threshold([0.2, 0.4], 0.5)


@pytest.mark.parametrize("margins", [[], [math.inf], [math.nan, math.inf]])
def test_calibration_needs_finite_margins(margins):
    with pytest.raises(ValueError, match="no finite margins"):
        calibrate_margin_threshold(margins, 0.5)


@pytest.mark.parametrize("share", [0, -0.1, 1.01, math.nan])
def test_calibration_share_must_be_in_range(share):
    with pytest.raises(ValueError, match=r"escalation_share must be in \(0, 1\]"):
        calibrate_margin_threshold([0.1, 0.2], share)


@given(
    margins=st.lists(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=60),
    share=st.floats(0.001, 0.999),
)
def test_calibration_splits_at_the_quantile(margins, share):
    threshold = calibrate_margin_threshold(margins, share)
    ordered = sorted(margins)
    position = share * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    assert all(m < threshold for m in ordered if m <= low)  # at and below the quantile's low rank: escalate
    assert all(m >= threshold for m in ordered if m > high)  # above its high rank: the first stage is sure
    more = calibrate_margin_threshold(margins, min(1.0, share + 0.2))
    assert more >= threshold  # a larger share never lowers the threshold


async def test_released_retrying_is_freed_without_the_cyclic_collector() -> None:
    # Cyclic garbage per call makes the collector's full passes pause the loop (deadline misses).
    import gc
    import weakref

    from router.resilience.retry import release

    async def finished_retrying(fail_first: bool) -> weakref.ref[object]:
        retry = retrying(RetryPolicy(attempts=2, initial_s=0, jitter_s=0), deadline=None, clock=lambda: 0.0, rng=random.Random(0))
        calls = 0
        async for attempt in retry:
            with attempt:
                calls += 1
                if fail_first and calls == 1:
                    raise ServerError("HTTP 503")
        release(retry)
        return weakref.ref(retry)

    gc.disable()
    try:
        for fail_first in (False, True):
            ref = await finished_retrying(fail_first)
            assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()
