"""Retries: exponential backoff with jitter, Retry-After honoured, never past the deadline; the rules
are tenacity strategies over its RetryCallState, made only once an attempt has failed.

Only transient errors are retried (429, 5xx, a per-attempt timeout); a bad request, bad key or a
malformed answer is not. The jitter's randomness and the sleep are injected, so tests never
sleep and never flake.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import cast

from pydantic import BaseModel, ConfigDict, Field
from tenacity import BaseRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from router.errors import BackendTimeoutError, RateLimitedError, ServerError

__all__ = ["RETRYABLE", "RetryPolicy", "Retrying", "release", "retrying"]

RETRYABLE: tuple[type[BaseException], ...] = (RateLimitedError, ServerError, BackendTimeoutError)
# Stateless, so one for every call (each instance is a reference cycle: it keeps a bound method of itself).
_RETRY_TRANSIENT = retry_if_exception_type(RETRYABLE)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=10)
    """Total attempts, the first included."""
    initial_s: float = Field(0.05, ge=0)
    max_s: float = Field(2.0, ge=0)
    jitter_s: float = Field(0.05, ge=0)


def _wait(policy: RetryPolicy, rng: random.Random) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return max(0.0, float(error.retry_after))
        backoff: float = min(policy.max_s, policy.initial_s * 2.0 ** (state.attempt_number - 1))
        return backoff + rng.uniform(0, policy.jitter_s)

    return wait


class _stop_before_deadline(stop_base):
    """Give up when the next sleep would end at or past the deadline."""

    def __init__(self, deadline: float | None, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, state: RetryCallState) -> bool:
        # tenacity computes the wait before asking stop, so the sleep ahead is known here.
        return self._deadline is not None and self._clock() + state.upcoming_sleep >= self._deadline


class Retrying:
    """``async for attempt in retrying(...): with attempt: ...``, as with tenacity's AsyncRetrying,
    with the same stop, wait and retry rules over tenacity's RetryCallState, built at the first
    failure: a call whose first attempt succeeds (nearly all of them) makes no retry state, no
    strategy objects and no reference cycles. Re-raises the last error when it gives up."""

    __slots__ = ("__weakref__", "_clock", "_deadline", "_error", "_policy", "_rng", "_sleep", "_started", "_state")

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: float | None,
        clock: Callable[[], float],
        rng: random.Random,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._policy = policy
        self._deadline = deadline
        self._clock = clock
        self._rng = rng
        self._sleep = sleep
        self._started = False
        self._error: Exception | None = None
        self._state: RetryCallState | None = None

    def resume(self, error: Exception) -> None:
        """Go on after a first attempt made outside the loop failed with ``error``: the loop's next
        round decides on it as on an error raised in its own first attempt."""
        self._started = True
        self._error = error

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> _Attempt:
        if not self._started:
            self._started = True
            return _Attempt(self)
        error = self._error
        if error is None:
            raise StopAsyncIteration
        state = self._state
        if state is None:
            state = self._state = RetryCallState(cast(BaseRetrying, None), None, (), {})
        state.set_exception((type(error), error, error.__traceback__))
        if not _RETRY_TRANSIENT(state):
            raise error
        policy = self._policy
        sleep = _wait(policy, self._rng)(state)
        state.upcoming_sleep = sleep
        stop = stop_after_attempt(policy.attempts) | _stop_before_deadline(self._deadline, self._clock)
        if stop(state):
            raise error
        self._error = None
        await self._sleep(sleep)
        state.idle_for += sleep
        state.attempt_number += 1
        state.outcome = None
        return _Attempt(self)


class _Attempt:
    """One attempt's scope: an Exception inside it is kept for the next round (as tenacity's
    AttemptManager does); CancelledError and other BaseExceptions pass through."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Retrying) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, Exception):
            self._owner._error = exc
            return True
        return False


def retrying(
    policy: RetryPolicy,
    *,
    deadline: float | None,
    clock: Callable[[], float],
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Retrying:
    """Attempts under ``policy``: retried while the error is transient, attempts remain and the
    next sleep ends before ``deadline``; the last error is re-raised when it gives up."""
    return Retrying(policy, deadline, clock, rng, sleep)


def release(retry: Retrying) -> None:
    """Drop what a finished Retrying holds (its last error and retry state, which point back at the
    failed call's frames), so a failed call leaves no cyclic garbage for the collector's full
    passes, which pause the event loop for tens of milliseconds under load."""
    retry._error = None
    retry._state = None
