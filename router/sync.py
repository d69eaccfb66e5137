"""The sync bridge: blocking calls run on one long-lived event loop in its own thread.

One loop per router keeps pooled async clients bound to one loop, and makes sync calls work from
any thread, even one that already runs an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop, started on first use; :meth:`stop` ends it."""

    def __init__(self, name: str = "rerank-router-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for its result (re-raising its exception)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self._name, daemon=True).start()
                self._loop = loop
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self) -> None:
        """Stop the loop and close it once its thread has left ``run_forever``."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        for _ in range(200):  # the loop thread exits within a tick of stop(); then close it
            if not loop.is_running():
                loop.close()
                break
            time.sleep(0.005)
