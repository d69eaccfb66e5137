"""Hedged requests: if a call has not answered by the backend's observed p95, send a second one
(to the next replica, for backends that have several) and take whichever answers first.

Hedging is for tail latency on backends where a duplicate call is cheap (self-hosted, local);
the executor only hedges when the duplicate's cost still fits the request's ceiling.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HedgePolicy", "LatencyWindow", "hedged"]

T = TypeVar("T")


class HedgePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    quantile: float = Field(0.95, gt=0, lt=1)
    """Send the hedge once the call has run longer than this quantile of recent latencies."""
    min_samples: int = Field(20, ge=1)
    """Below this many observations there is no p95 to trust: no hedging."""
    after_ms: float | None = Field(None, gt=0)
    """A fixed delay instead of the observed quantile."""


class LatencyWindow:
    """The last ``size`` observed latencies of one backend, for quantiles. Thread-safe."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)

    def __len__(self) -> int:
        return len(self._values)

    def quantile(self, q: float) -> float | None:
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

    def hedge_delay_ms(self, policy: HedgePolicy) -> float | None:
        if not policy.enabled:
            return None
        if policy.after_ms is not None:
            return policy.after_ms
        if len(self) < policy.min_samples:
            return None
        return self.quantile(policy.quantile)


async def hedged(call: Callable[[], Awaitable[T]], delay_s: float | None) -> tuple[T, bool]:
    """Run ``call``; if it has not finished after ``delay_s``, run it again and take the first
    success. Returns (result, whether a hedge was sent). Losers are cancelled, and so is every
    call in flight if this coroutine is cancelled (the deadline). If all fail, the first error
    is raised. Without a delay (hedging off, or no p95 to trust yet) the call runs in place: no
    task, no wait set."""
    if delay_s is None:
        return await call(), False
    tasks = [asyncio.ensure_future(call())]
    try:
        done, _ = await asyncio.wait(tasks, timeout=delay_s)
        if not done:
            tasks.append(asyncio.ensure_future(call()))
        errors: list[BaseException] = []
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is None:
                    return task.result(), len(tasks) > 1
                errors.append(error)
        raise errors[0]
    finally:
        losers = [task for task in tasks if not task.done()]
        for task in losers:
            task.cancel()
        # Wait for the cancelled calls to unwind, so none is left pending when this returns;
        # gather also reads every finished loser's outcome (none is reported as never retrieved).
        await asyncio.gather(*tasks, return_exceptions=True)
