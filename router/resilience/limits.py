"""Per-backend concurrency and rate limits (requests and tokens per minute).

asyncio primitives belong to one event loop, and the router serves the caller's loop and its
own sync loop, so each limit keeps one primitive per running loop.
"""

from __future__ import annotations

import asyncio
import weakref

from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BackendLimits", "LimitPolicy"]


class LimitPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int | None = Field(None, ge=1)
    rpm: float | None = Field(None, gt=0)
    """Requests per minute (the provider's rate limit; e.g. Cohere production 1,000)."""
    tpm: float | None = Field(None, gt=0)
    """Tokens per minute (e.g. Voyage rerank-2.5: 2,000,000)."""


class _Bucket(AsyncLimiter):
    """aiolimiter's leaky bucket with its level rounded (to 1e-9 of a unit) after each leak.

    Leaking is float arithmetic: a level left 1e-13 over what the next acquire needs makes the
    bucket re-arm its wake-up at the instant it already is, which spins until the clock moves; on
    a clock that does not move between callbacks (virtual time in tests) it spins for ever."""

    def _leak(self) -> None:
        super()._leak()
        self._level = round(self._level, 9)

    def take(self, amount: float = 1) -> bool:
        """``acquire(amount)`` where it would not wait (no one waiting, the capacity there): taken
        at once, without the coroutine; False (nothing taken) where ``acquire`` must run."""
        if self._waiters or self._waker_handle is not None or not 0 <= amount <= self.max_rate:
            return False
        if not self.has_capacity(amount):  # aiolimiter's check, after the leak (rounded: :meth:`_leak`)
            return False
        self._level += amount  # what acquire() does next; its wake-up reset has nothing to reset here
        return True


class _PerLoop:
    def __init__(self, policy: LimitPolicy) -> None:
        self.semaphore = asyncio.Semaphore(policy.max_concurrency) if policy.max_concurrency else None
        self.requests = _Bucket(policy.rpm, 60) if policy.rpm else None
        self.tokens = _Bucket(policy.tpm, 60) if policy.tpm else None


class BackendLimits:
    def __init__(self, policy: LimitPolicy) -> None:
        self.policy = policy
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PerLoop] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], _PerLoop] | None = None
        """The last call's loop (weakly: a closed loop is not kept alive) and its limits."""

    def _here(self) -> _PerLoop:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:  # the loop of the last call (nearly always): no weak-key lookup
            return last[1]
        state = self._per_loop.get(loop)
        if state is None:
            state = self._per_loop[loop] = _PerLoop(self.policy)
        self._last = (weakref.ref(loop), state)
        return state

    def slot(self, tokens: int = 0) -> _Slot:
        """``async with limits.slot(tokens):`` waits for a concurrency slot and rate budget; the
        caller bounds the wait by its deadline."""
        return _Slot(self._here(), tokens)


class _Slot:
    """One call's hold on its backend's limits. A class rather than an ``@asynccontextmanager``:
    every backend call enters one, and a generator-based manager costs more per call."""

    __slots__ = ("_state", "_tokens")

    def __init__(self, state: _PerLoop, tokens: int) -> None:
        self._state = state
        self._tokens = tokens

    async def __aenter__(self) -> None:
        state, tokens = self._state, self._tokens
        requests = state.requests
        if requests is not None and not requests.take(1):
            await requests.acquire()
        if state.tokens is not None and tokens:
            # aiolimiter refuses amounts above its capacity; a huge request takes the whole minute.
            amount = min(tokens, state.tokens.max_rate)
            if not state.tokens.take(amount):
                await state.tokens.acquire(amount)
        if state.semaphore is not None:
            await state.semaphore.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._state.semaphore is not None:
            self._state.semaphore.release()
