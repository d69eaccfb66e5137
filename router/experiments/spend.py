"""A spend cap that holds under concurrency: reserve before spending, settle after.

Used for shadow arms: a run reserves its predicted cost and goes ahead only if reserved plus
spent stays within the cap for the current window; afterwards the reservation is replaced by
what was billed. The planner is also given the remaining headroom as the run's cost ceiling,
so a plan never exceeds it; only billing above prediction (within the estimators' error) can.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SpendCap"]


class SpendCap:
    def __init__(self, max_usd: float, window_s: float = 86_400.0, clock: Callable[[], float] = time.time) -> None:
        self.max_usd = max_usd
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._spent = 0.0
        self._reserved = 0.0

    def _roll(self) -> None:
        now = self._clock()
        if now - self._window_start >= self.window_s:
            self._window_start = now - (now - self._window_start) % self.window_s
            self._spent = 0.0

    def headroom(self) -> float:
        with self._lock:
            self._roll()
            return max(0.0, self.max_usd - self._spent - self._reserved)

    def reserve(self, usd: float) -> bool:
        """Hold ``usd`` of the cap; False (nothing held) if it does not fit."""
        if usd < 0:
            raise ValueError(f"cannot reserve a negative amount ({usd})")
        with self._lock:
            self._roll()
            if self._spent + self._reserved + usd > self.max_usd + 1e-12:  # float sums of cents
                return False
            self._reserved += usd
            return True

    def settle(self, reserved: float, spent: float) -> None:
        """Release a reservation and record what was actually spent."""
        with self._lock:
            self._roll()
            self._reserved = max(0.0, self._reserved - reserved)
            self._spent += spent

    @property
    def spent(self) -> float:
        with self._lock:
            self._roll()
            return self._spent
