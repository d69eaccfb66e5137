"""A bound on one await: ``async with Cutoff(delay_s):`` cancels the block at its time and raises
TimeoutError, as ``asyncio.timeout(delay_s)`` does.

Every backend call runs under one, and nearly every one ends before its time: this does the
same as asyncio's for a block entered once (one timer on the running loop, cancelled on the way
out; the caller's own cancellations told apart from the bound's by the task's cancel count),
without the rescheduling and state machine around it that a backend call never uses.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Cutoff"]


class Cutoff:
    """``async with Cutoff(delay_s) as scope:`` cancels the block after ``delay_s`` seconds of the
    running loop's clock (never, for None) and raises TimeoutError from its CancelledError; then
    ``scope.expired()`` is True. A cancellation of the task from elsewhere passes through as is."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_task")

    def __init__(self, delay_s: float | None) -> None:
        self._delay = delay_s
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def expired(self) -> bool:
        """Whether the bound was reached inside the block."""
        return self._expired

    async def __aenter__(self) -> Cutoff:
        if self._delay is None:
            return self
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Cutoff should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + self._delay, self._on_timeout)
        return self

    def _on_timeout(self) -> None:
        assert self._task is not None
        self._task.cancel()
        self._expired = True
        self._handle = None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired:
            assert self._task is not None
            # No cancellation other than the bound's was requested: it is ours to turn into TimeoutError.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
