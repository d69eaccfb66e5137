"""Tenants: who a Bearer key belongs to, and the limits the gateway holds them to.

A key is looked up by its SHA-256 digest (the key itself is kept nowhere, logged nowhere). Each
tenant's requests-per-minute limit and spend caps are shared by every worker and replica through
Redis when the config has ``shared_state:`` (in-process otherwise):

- rpm: one counter per tenant per UTC minute (``<prefix>:rpm:<tenant>:<minute>``, ``INCR`` then
  expiry); over the limit answers 429 with Retry-After the seconds left in the minute. In a Redis
  outage each worker counts alone (logged once).
- spend caps: :class:`~router.accounting.spend.RedisSpendCap` (or ``SpendCap``) per tenant per
  window (a UTC day, a 30-day month). A request reserves its planned cost in every cap before any
  backend is called and settles what was billed after; a reservation that does not fit answers 429
  with Retry-After the seconds left in the window. So N concurrent requests against a cap admit
  exactly as many as fit. In a Redis outage capped tenants get 503 (spend that cannot be counted
  is not spent).
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.accounting.spend import RedisSpendCap, SpendCap, SpendLimiter
from router.constraints import Constraints
from router.resilience.redis_store import SharedStateOutage, redis_errors
from router.service.config import ServiceConfig, TenantConfig, key_digest

if TYPE_CHECKING:
    import redis

__all__ = ["ANONYMOUS", "CapRefused", "Reservation", "Tenant", "Tenants"]

ANONYMOUS = "anonymous"
DAY_S = 86_400.0
MONTH_S = 30 * DAY_S

_RPM = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RpmLimiter:
    """At most ``rpm`` requests per fixed UTC minute, in Redis when given a client."""

    def __init__(
        self, rpm: int, key: str, client: redis.Redis | None, clock: Callable[[], float] = time.time, url: Any = ""
    ) -> None:
        self.rpm = rpm
        self.key = key
        self._clock = clock
        self._lock = threading.Lock()
        self._local: dict[int, int] = {}
        self._client = client
        self._script = client.register_script(_RPM) if client is not None else None
        self.outage = SharedStateOutage(f"rpm limit of {key} counted per worker", url)
        self._errors = redis_errors() if client is not None else ()

    def _local_hit(self, minute: int) -> int:
        with self._lock:
            for old in [m for m in self._local if m < minute]:
                del self._local[old]
            self._local[minute] = self._local.get(minute, 0) + 1
            return self._local[minute]

    def hit(self) -> int | None:
        """Count one request; None if it is within the limit, else seconds until the next minute."""
        now = self._clock()
        minute = math.floor(now / 60)
        count: int
        if self._script is not None and not self.outage.down:
            try:
                count = int(self._script(keys=[f"{self.key}:{minute}"], args=[120_000]))
                self.outage.succeeded()
            except self._errors as exc:
                self.outage.failed(exc)
                count = self._local_hit(minute)
        else:
            count = self._local_hit(minute)
        if count <= self.rpm:
            return None
        return max(1, math.ceil((minute + 1) * 60 - now))


@dataclass(frozen=True)
class CapRefused:
    """A spend reservation that did not fit (429) or could not be counted (Redis down: 503)."""

    status: int
    message: str
    retry_after: int


@dataclass
class Reservation:
    """Planned cost held in each of a tenant's caps; ``settle`` replaces it with what was billed."""

    amount: float
    caps: list[SpendLimiter] = field(default_factory=list)
    settled: bool = False

    def settle(self, spent: float | None) -> None:
        if self.settled:
            return
        self.settled = True
        billed = self.amount if spent is None else spent
        for cap in self.caps:
            cap.settle(self.amount, billed)


class Tenant:
    def __init__(self, name: str, config: TenantConfig, *, client: redis.Redis | None, prefix: str, url: Any = "") -> None:
        self.name = name
        self.config = config
        self.constraints: Constraints = config.constraints
        self.rpm = RpmLimiter(config.rpm, f"{prefix}:rpm:{name}", client, url=url) if config.rpm is not None else None
        self.caps: list[tuple[str, float, SpendLimiter]] = []
        for label, limit, window in (
            ("day", config.spend_caps.day_usd, DAY_S),
            ("month", config.spend_caps.month_usd, MONTH_S),
        ):
            if limit is None:
                continue
            cap: SpendLimiter
            if client is not None:
                cap = RedisSpendCap(
                    limit,
                    window,
                    client=client,
                    key=f"{prefix}:tenant-spend:{name}:{label}",
                    outage=SharedStateOutage(f"spend cap of tenant {name} refuses paid requests", url),
                )
            else:
                cap = SpendCap(limit, window)
            self.caps.append((label, window, cap))

    def __repr__(self) -> str:
        return f"Tenant({self.name!r})"

    @property
    def capped(self) -> bool:
        return bool(self.caps)

    def headroom(self) -> float | None:
        """The least any cap has left (None: no caps)."""
        if not self.caps:
            return None
        return min(cap.headroom() for _, _, cap in self.caps)

    def _refusal(self, label: str, window: float, cap: SpendLimiter, usd: float) -> CapRefused:
        outage = getattr(cap, "outage", None)
        if outage is not None and outage.down:
            return CapRefused(503, f"tenant {self.name}: spend cap cannot be checked (shared state unreachable)", 5)
        left = max(1, math.ceil(window - time.time() % window))
        plans = f" (this request plans ${usd:g})" if usd > 0 else ""
        return CapRefused(429, f"tenant {self.name}: {label} spend cap of ${cap.max_usd:g} reached{plans}", left)

    def exhausted(self) -> CapRefused | None:
        """A refusal when some cap has nothing left (or cannot be read), else None."""
        for label, window, cap in self.caps:
            if cap.headroom() <= 0:
                return self._refusal(label, window, cap, 0.0)
        return None

    def reserve(self, usd: float) -> Reservation | CapRefused:
        held = Reservation(usd)
        if usd <= 0 or not self.caps:
            return held
        for label, window, cap in self.caps:
            if cap.reserve(usd):
                held.caps.append(cap)
                continue
            held.settle(0.0)  # release what the other caps hold
            return self._refusal(label, window, cap, usd)
        return held


class Tenants:
    """Key -> tenant. With no tenants configured every request is the one ``anonymous`` tenant."""

    def __init__(
        self, service: ServiceConfig, *, client: redis.Redis | None = None, prefix: str = "rerank-router", url: Any = ""
    ) -> None:
        self.by_name: dict[str, Tenant] = {
            name: Tenant(name, cfg, client=client, prefix=prefix, url=url) for name, cfg in service.tenants.items()
        }
        self._digests: Mapping[str, str] = service.tenant_digests()
        self.anonymous = (
            Tenant(ANONYMOUS, TenantConfig(keys=[{"sha256": "0" * 64}]), client=None, prefix=prefix) if not self.by_name else None
        )

    @property
    def auth_required(self) -> bool:
        return self.anonymous is None

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant of ``Authorization: Bearer <key>``; None when missing or unknown."""
        if self.anonymous is not None:
            return self.anonymous
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = key_digest(key.strip())
        for known, name in self._digests.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return self.by_name[name]
        return None
