"""Admission control per worker: a bounded number of requests in flight, a bounded queue.

A request that finds every slot taken waits in a FIFO queue, but only while it can still be
served by its deadline: it is answered at once when the queue is full, or when the expected wait
(its place in the queue times the recent service time, over the slots) leaves less than
``min_work_ms`` of its budget, and it stops waiting when that moment comes. The caller then
answers 503 with Retry-After, or a degraded answer (the caller's order), as configured.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable

__all__ = ["Admission", "Overloaded"]


class Overloaded(Exception):
    """No slot in time; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Admission:
    def __init__(
        self, max_in_flight: int, max_queue: int, min_work_ms: float = 20.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.min_work_ms = min_work_ms
        self._clock = clock
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.service_ms = 0.0
        """Exponentially weighted mean of how long an admitted request held its slot."""

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def expected_wait_ms(self, position: int) -> float:
        return math.ceil(position / self.max_in_flight) * self.service_ms

    async def acquire(self, budget_ms: float | None) -> float:
        """Wait for a slot; returns the ms waited. Raises :class:`Overloaded`."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return 0.0
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(f"queue full ({self.max_queue} waiting, {self.in_flight} in flight)")
        timeout: float | None = None
        if budget_ms is not None:
            room_ms = budget_ms - self.min_work_ms
            expected = self.expected_wait_ms(len(self._waiters) + 1)
            if room_ms <= 0 or expected > room_ms:
                raise Overloaded(f"expected queue wait {expected:.0f} ms leaves under {self.min_work_ms:.0f} ms of the budget")
            timeout = room_ms / 1000
        started = self._clock()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException as exc:  # timed out, or the client went away while queued
            if waiter.done() and not waiter.cancelled():
                self.release(0.0)  # the slot arrived as the wait ended: pass it on
            else:
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise Overloaded("no slot free before the deadline") from None
            raise
        return (self._clock() - started) * 1000

    def release(self, held_ms: float) -> None:
        """Give the slot back (to the first waiter, if any); ``held_ms`` feeds the service time."""
        if held_ms > 0:
            self.service_ms = held_ms if self.service_ms == 0 else 0.9 * self.service_ms + 0.1 * held_ms
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to it: in_flight unchanged
                return
        self.in_flight -= 1
