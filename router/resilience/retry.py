"""Retries with tenacity: exponential backoff with jitter, Retry-After honoured, never past the deadline.

Only transient errors are retried (429, 5xx, a per-attempt timeout); a bad request, bad key or a
malformed answer is not. The jitter's randomness and the sleep are injected, so tests never
sleep and never flake.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from router.errors import BackendTimeoutError, RateLimitedError, ServerError

__all__ = ["RETRYABLE", "RetryPolicy", "release", "retrying"]

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


def retrying(
    policy: RetryPolicy,
    *,
    deadline: float | None,
    clock: Callable[[], float],
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """An AsyncRetrying that re-raises the last error when it gives up."""
    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | _stop_before_deadline(deadline, clock),
        wait=_wait(policy, rng),
        retry=_RETRY_TRANSIENT,
        sleep=sleep,
        reraise=True,
    )


def release(retry: AsyncRetrying) -> None:
    """Break the reference cycles a finished AsyncRetrying keeps (it holds its RetryCallState,
    which points back at it, and bound methods in its iteration state). Without this every call
    leaves cyclic garbage, and the cyclic collector's full passes pause the event loop for tens
    of milliseconds under load: enough to make a request miss its deadline."""
    retry._local.__dict__.clear()
    retry.__dict__.pop("_retry_state", None)
