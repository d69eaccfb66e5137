"""A spend cap that holds under concurrency: reserve before spending, settle after.

Used for shadow arms: a run reserves its predicted cost and goes ahead only if reserved plus
spent stays within the cap for the current window; afterwards the reservation is replaced by
what was billed. The planner is also given the remaining headroom as the run's cost ceiling,
so a plan never exceeds it; only billing above prediction (within the estimators' error) can.

:class:`SpendCap` holds the cap in this process. :class:`RedisSpendCap` holds one cap for every
replica (config ``shared_state:``): amounts are integer micro-dollars (no float drift across
thousands of reservations), one hash per window (``<key>:<floor(time / window_s)>``, fields
``spent`` and ``reserved``, expiring after two windows), and reserve and settle are Lua scripts,
so that "spent + reserved + usd <= max, then hold usd" is one step across processes. A
reservation made in the previous window still counts against the new one until settled (as in
:class:`SpendCap`). Both satisfy :class:`SpendLimiter`, which the engine types against.

When Redis cannot be reached, ``reserve`` refuses (the shadow run is skipped: its spend cannot
be capped), ``headroom`` is 0, ``settle`` is dropped and ``spent`` raises; the outage is logged
once, with the URL scrubbed, and Redis is tried again after a few seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from router.errors import RerankRouterError
from router.resilience.redis_store import SharedStateOutage, redis_errors

if TYPE_CHECKING:
    import redis

__all__ = ["RedisSpendCap", "SpendCap", "SpendLimiter"]


class SpendLimiter(Protocol):
    """What the engine needs of a spend cap: reserve before spending, settle after."""

    max_usd: float
    window_s: float

    def headroom(self) -> float: ...

    def reserve(self, usd: float) -> bool: ...

    def settle(self, reserved: float, spent: float) -> None: ...

    @property
    def spent(self) -> float: ...


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


_MICROS = 1_000_000

# KEYS: this window's hash, the previous window's.  ARGV: micro-dollars, cap in micro-dollars, TTL ms.
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local carried = tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
if spent + reserved + carried + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the hash the reservation was made in, this window's.  ARGV: reserved, spent (micro-dollars), TTL ms.
_SETTLE = """
local held = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local release = math.min(held, tonumber(ARGV[1]))
if release > 0 then redis.call('HINCRBY', KEYS[1], 'reserved', -release) end
redis.call('HINCRBY', KEYS[2], 'spent', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


def _micros(usd: float) -> int:
    """Whole micro-dollars, rounding up (a cap never under-counts) but not float noise (3e-6 is 3)."""
    return math.ceil(round(usd * _MICROS, 6))


class RedisSpendCap:
    """A :class:`SpendCap` shared by every process that uses the same Redis and ``key``."""

    def __init__(
        self,
        max_usd: float,
        window_s: float = 86_400.0,
        *,
        client: redis.Redis,
        key: str,
        clock: Callable[[], float] = time.time,
        outage: SharedStateOutage | None = None,
    ) -> None:
        self.max_usd = max_usd
        self.window_s = window_s
        self.key = key
        self._client = client
        self._clock = clock
        self.outage = outage or SharedStateOutage("shadow runs skipped")
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}
        """Micro-dollars this process holds per window, so a settle releases the right window's."""
        self._errors = redis_errors()

    def _window(self) -> int:
        return math.floor(self._clock() / self.window_s)

    def _hash(self, window: int) -> str:
        return f"{self.key}:{window}"

    @property
    def _ttl_ms(self) -> int:
        return math.ceil(2 * self.window_s * 1000)

    def _read(self, window: int) -> tuple[int, int, int]:
        """(spent, reserved, reserved in the previous window) in micro-dollars."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._hash(window), "spent", "reserved")
            pipe.hget(self._hash(window - 1), "reserved")
            now, before = pipe.execute()
        return int(now[0] or 0), int(now[1] or 0), int(before or 0)

    def headroom(self) -> float:
        if self.outage.down:
            return 0.0
        try:
            spent, reserved, carried = self._read(self._window())
        except self._errors as exc:
            self.outage.failed(exc)
            return 0.0
        self.outage.succeeded()
        return max(0, _micros(self.max_usd) - spent - reserved - carried) / _MICROS

    def reserve(self, usd: float) -> bool:
        """Hold ``usd`` of the cap across every replica; False (nothing held) if it does not fit or Redis is down."""
        if usd < 0:
            raise ValueError(f"cannot reserve a negative amount ({usd})")
        if self.outage.down:
            return False
        window, amount = self._window(), _micros(usd)
        try:
            granted = self._reserve(
                keys=[self._hash(window), self._hash(window - 1)], args=[amount, _micros(self.max_usd), self._ttl_ms]
            )
        except self._errors as exc:
            self.outage.failed(exc)
            return False
        self.outage.succeeded()
        if granted:
            with self._lock:
                self._held[window] = self._held.get(window, 0) + amount
        return bool(granted)

    def settle(self, reserved: float, spent: float) -> None:
        """Release a reservation (in the window it was made in) and record what was spent (in this one)."""
        window, amount = self._window(), _micros(reserved)
        with self._lock:
            made = next((w for w in sorted(self._held) if self._held[w] >= amount), window)
            if made in self._held:
                self._held[made] -= amount
                if self._held[made] <= 0:
                    del self._held[made]
        if self.outage.down:
            return
        try:
            self._settle(keys=[self._hash(made), self._hash(window)], args=[amount, _micros(spent), self._ttl_ms])
        except self._errors as exc:
            self.outage.failed(exc)
            return
        self.outage.succeeded()

    @property
    def spent(self) -> float:
        try:
            spent, _, _ = self._read(self._window())
        except self._errors as exc:
            self.outage.failed(exc)
            raise RerankRouterError(f"shared spend cap {self.key!r}: Redis unreachable ({type(exc).__name__})") from None
        return spent / _MICROS
