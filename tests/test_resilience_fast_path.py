"""The resilience wrappers cost nothing where they cannot act: no task when hedging is off, no retry
state when the first attempt succeeds; and where they act, retries behave exactly as tenacity's
AsyncRetrying with the same rules (stop after attempts or before the deadline, backoff with seeded
jitter, Retry-After)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import AsyncRetrying, stop_after_attempt

from router.errors import BackendTimeoutError, BadRequestError, RateLimitedError, ServerError
from router.resilience import RetryPolicy, hedged, retrying
from router.resilience.retry import _RETRY_TRANSIENT, _stop_before_deadline, _wait, release


async def test_without_a_hedge_delay_the_call_runs_in_the_callers_task():
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def call() -> str:
        seen.append(asyncio.current_task())
        return "ok"

    assert await hedged(call, None) == ("ok", False)
    assert seen == [caller]


async def test_without_a_hedge_delay_errors_and_cancellation_pass_through():
    async def fails() -> str:
        raise ServerError("503")

    with pytest.raises(ServerError):
        await hedged(fails, None)

    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    task = asyncio.ensure_future(hedged(hangs, None))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_first_attempt_that_succeeds_builds_no_retry_state():
    retry = retrying(RetryPolicy(attempts=3), deadline=None, clock=lambda: 0.0, rng=random.Random(0))
    runs = 0
    async for attempt in retry:
        with attempt:
            runs += 1
    assert runs == 1
    assert retry._state is None


async def test_cancellation_inside_an_attempt_is_not_retried():
    retry = retrying(RetryPolicy(attempts=3), deadline=None, clock=lambda: 0.0, rng=random.Random(0))
    runs = 0
    with pytest.raises(asyncio.CancelledError):
        async for attempt in retry:
            with attempt:
                runs += 1
                raise asyncio.CancelledError
    assert runs == 1


ERRORS: dict[str, Callable[[], Exception]] = {
    "503": lambda: ServerError("503"),
    "timeout": lambda: BackendTimeoutError("slow"),
    "429": lambda: RateLimitedError("429"),
    "429 after 0.3": lambda: RateLimitedError("429", retry_after=0.3),
    "429 after 9": lambda: RateLimitedError("429", retry_after=9),
    "400": lambda: BadRequestError("400"),
    "bug": lambda: RuntimeError("bug"),
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def drive(make: Callable[[Clock], object], script: list[str | None], clock: Clock) -> tuple[object, ...]:
    calls = 0
    result: object = None
    try:
        async for attempt in make(clock):  # type: ignore[attr-defined]
            with attempt:
                failure = script[calls] if calls < len(script) else None
                calls += 1
                if failure is not None:
                    raise ERRORS[failure]()
                result = "ok"
    except Exception as exc:  # the last error, re-raised
        result = (type(exc).__name__, str(exc))
    return result, calls, clock.sleeps, clock.now


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(st.sampled_from([None, *ERRORS]), max_size=6),
    attempts=st.integers(1, 6),
    budget_s=st.one_of(st.none(), st.floats(0.0, 3.0)),
    seed=st.integers(0, 3),
)
def test_retries_match_tenacity_exactly(script, attempts, budget_s, seed):
    policy = RetryPolicy(attempts=attempts, initial_s=0.1, max_s=1.0, jitter_s=0.05)

    def ours(clock: Clock) -> object:
        deadline = None if budget_s is None else clock.now + budget_s
        return retrying(policy, deadline=deadline, clock=clock, rng=random.Random(seed), sleep=clock.sleep)

    def tenacity(clock: Clock) -> object:  # what router.resilience.retry built before
        deadline = None if budget_s is None else clock.now + budget_s
        return AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | _stop_before_deadline(deadline, clock),
            wait=_wait(policy, random.Random(seed)),
            retry=_RETRY_TRANSIENT,
            sleep=clock.sleep,
            reraise=True,
        )

    assert asyncio.run(drive(ours, script, Clock())) == asyncio.run(drive(tenacity, script, Clock()))


async def test_release_drops_the_last_error():
    retry = retrying(RetryPolicy(attempts=1), deadline=None, clock=lambda: 0.0, rng=random.Random(0))
    with pytest.raises(ServerError):
        async for attempt in retry:
            with attempt:
                raise ServerError("503")
    release(retry)
    assert retry._error is None and retry._state is None
