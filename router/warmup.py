"""Loading in-process models: all at once before traffic (:func:`warm_up`), or one cold backend
in the background while requests are served by warm ones (:class:`BackgroundLoader`)."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Mapping

from router.backends.base import Backend
from router.errors import RerankRouterError

__all__ = ["BackgroundLoader", "freeze_heap", "warm_up"]


class BackgroundLoader:
    """Starts loading a cold backend once, in a daemon thread, so later requests can use it."""

    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self._backends = backends
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        with self._lock:
            if name in self._started:
                return
            self._started.add(name)
        backend = self._backends[name]

        def run() -> None:
            # A failure is recorded by the backend; availability() reports it to the planner.
            with contextlib.suppress(RerankRouterError):
                backend.load()

        threading.Thread(target=run, name=f"rerank-router-load-{name}", daemon=True).start()


def warm_up(backends: Mapping[str, Backend], *, freeze_gc: bool = True) -> dict[str, str]:
    """Load every available backend now; backend name -> "ready" or the reason it is not.

    ``freeze_gc``: then move everything alive (modules, models, routers) out of the cyclic garbage
    collector's view (``gc.collect(); gc.freeze()``). Its full passes otherwise scan that whole heap
    and pause the event loop long enough to miss tight deadlines on a busy machine
    (``benchmarks/gc_garbage.py``).
    """
    status: dict[str, str] = {}
    for name, backend in backends.items():
        availability = backend.availability()
        if not availability.ok:
            status[name] = availability.reason
            continue
        try:
            backend.load()
        except RerankRouterError as exc:
            status[name] = str(exc)
            continue
        status[name] = "ready"
    if freeze_gc:
        freeze_heap()
    return status


def freeze_heap() -> None:
    """Move everything alive out of the cyclic collector's view (``gc.collect(); gc.freeze()``)."""
    gc.collect()
    gc.freeze()
