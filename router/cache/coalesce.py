"""One backend call for many identical concurrent ones.

The first caller of a key (the leader) starts the call as its own task; callers of the same key
while it runs (followers) await that task. Everyone awaits it through ``asyncio.shield``: a
cancelled leader stops waiting, the call goes on and the followers get its result. Calls are
shared only within one event loop (a task belongs to its loop).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._flights: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bytes, asyncio.Task[Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # loops on several threads (the sync loop thread, callers' own) share the map

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(f) for f in list(self._flights.values()))

    async def run(
        self,
        key: bytes,
        call: Callable[[], Coroutine[Any, Any, T]],
        own_call_after: Callable[[BaseException], bool] | None = None,
    ) -> tuple[T, bool]:
        """``call()``'s result, and whether it was another caller's call (True: a follower).
        ``own_call_after``: errors of the shared call after which a follower makes its own (the
        leader's deadline may have cut a call the follower has time for)."""
        loop = asyncio.get_running_loop()
        flights = self._flights.get(loop)
        if flights is None:
            with self._lock:
                flights = self._flights.setdefault(loop, {})
        task = flights.get(key)
        if task is not None and not task.done():
            try:
                return await asyncio.shield(task), True
            except Exception as exc:
                if own_call_after is None or not own_call_after(exc):
                    raise
            return await call(), False
        task = loop.create_task(call())
        flights[key] = task
        task.add_done_callback(lambda done: _landed(flights, key, done))
        return await asyncio.shield(task), False


def _landed(flights: dict[bytes, asyncio.Task[Any]], key: bytes, task: asyncio.Task[Any]) -> None:
    if flights.get(key) is task:
        del flights[key]
    if not task.cancelled():
        task.exception()  # retrieved: a leader that stopped waiting must not leave a warning behind
