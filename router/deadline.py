"""How early backend work stops before a request's deadline, learnt from how late results come back.

A request's backend work runs against an internal deadline a little before its budget runs out:
when the event loop is busy (many requests planning and scoring on one loop) or the process is
descheduled (a shared machine), timers fire late and the result is assembled late. The guard is a
floor (``floor_ms``) raised to a high quantile of the lateness seen recently, i.e. how far past
its internal deadline a request whose work ran into that deadline actually had its result ready,
and capped at a share of the budget so a tight budget still leaves the backends most of it.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque

__all__ = ["DeadlineGuard"]


class DeadlineGuard:
    def __init__(self, floor_ms: float = 5.0, *, quantile: float = 0.99, window: int = 256, max_share: float = 0.2) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.floor_ms = floor_ms
        self.quantile = quantile
        self.max_share = max_share
        self._recent: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._lock = threading.Lock()

    def guard_ms(self, budget_ms: float) -> float:
        """Milliseconds before the deadline at which backend work stops for this budget."""
        with self._lock:
            learnt = self._sorted[min(len(self._sorted) - 1, int(self.quantile * len(self._sorted)))] if self._sorted else 0.0
        return min(max(self.floor_ms, learnt), self.max_share * budget_ms)

    def observe(self, late_ms: float) -> None:
        """A request whose backend work ran into its internal deadline was ready ``late_ms`` after it."""
        late_ms = max(0.0, late_ms)
        with self._lock:
            if len(self._recent) == self._recent.maxlen:
                old = self._recent[0]
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._recent.append(late_ms)
            bisect.insort(self._sorted, late_ms)

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._recent)
