"""Circuit-breaker state shared by app replicas through Redis (config ``shared_state:``).

One hash per backend, ``<prefix>:breaker:<name>`` (state, consecutive failures, when it opened
in wall-clock seconds), plus ``<prefix>:breaker:<name>:probe``, the half-open probe slot. The
slot is taken by one Lua script (``SET NX EX`` on the slot, then the record), so of several
replicas probing a half-open backend exactly one is let through; it expires after
``probe_ttl_s`` in case the replica holding it dies. Records expire after ``ttl_s`` (stale
state goes away on its own); a closed, failure-free record is deleted outright.

``opened_at`` is stored as wall-clock time and converted to and from the breaker's own clock
(monotonic by default), so replicas whose monotonic clocks differ agree on when the recovery
period ends; ``wall_clock`` is injectable (a test passes its fake clock as both). Consecutive-failure counts are read-modify-write (the last writer wins):
under a storm of concurrent failures a replica may lose a count, and the breaker opens a call
or two later; the open/closed state and the probe slot are what must be exact, and are.

When Redis cannot be reached a call falls back to an in-process store that starts closed:
breakers keep working per replica ("closed, not shared") and reranking goes on. The outage is
logged once as a warning (the URL and its password never appear), Redis is tried again after
``retry_s``, and a recovery is logged too. Calls block the caller for one round trip (about a
tenth of a millisecond on a local network; ``socket_timeout`` bounds a hung server).

``redis`` is imported only when a store is built; without it :func:`redis_client` raises
:class:`~router.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from router.errors import MissingDependencyError
from router.resilience.breaker import BreakerRecord, BreakerState, InMemoryBreakerStore
from router.secrets import redact

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBreakerStore", "SharedStateOutage", "redis_client", "redis_errors", "scrub"]

_log = logging.getLogger("rerank_router")


def scrub(text: str, url: SecretStr | str) -> str:
    """``text`` with the URL, its password and its user:password part replaced by ``***``."""
    secret = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(secret)
    hidden = [secret]
    if parts.password:
        hidden += [parts.password, unquote(parts.password)]
    return redact(text, hidden)  # and anything else that looks like a credential


def redis_client(url: SecretStr | str, *, timeout_s: float = 0.5) -> redis.Redis:
    """A client for ``url`` (``redis://[:password@]host:port/db``); connects on first use."""
    try:
        import redis
    except ImportError as exc:
        raise MissingDependencyError("shared_state needs the redis client: pip install 'rerank-router[redis]'") from exc
    secret = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        return redis.Redis.from_url(secret, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except ValueError as exc:  # a malformed URL: the message may quote it
        from router.errors import ConfigError

        raise ConfigError(f"shared_state.redis_url: {scrub(str(exc), secret)}") from None


class SharedStateOutage:
    """Redis availability as one replica sees it: after a failure, skip Redis for ``retry_s``
    (a down server must not cost every call a timeout); warn once per outage, with the URL scrubbed."""

    def __init__(
        self, what: str, url: SecretStr | str = "", *, retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self._url = url
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until: float | None = None

    @property
    def down(self) -> bool:
        """In an outage and not yet time to try Redis again."""
        with self._lock:
            return self._down_until is not None and self._clock() < self._down_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.retry_s
        if first:
            message = scrub(f"{type(exc).__name__}: {exc}", self._url) if self._url else type(exc).__name__
            _log.warning("shared state (Redis) unreachable, %s: %s", self.what, message)

    def succeeded(self) -> None:
        with self._lock:
            recovered, self._down_until = self._down_until is not None, None
        if recovered:
            _log.warning("shared state (Redis) reachable again: %s shared across replicas", self.what)


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


_CLAIM_PROBE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 2 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'failures', ARGV[2], 'opened_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisBreakerStore:
    """A :class:`~router.resilience.breaker.BreakerStore` (and ``ProbeClaimingStore``) in Redis.

    ``clock`` must be the breakers' clock (the Router passes its own); ``wall_clock`` is one that
    every replica shares (the Router passes an injected ``clock`` as both)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "rerank-router",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        ttl_s: int = 86_400,
        probe_ttl_s: int = 60,
        outage: SharedStateOutage | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._wall = wall_clock
        self.ttl_s = ttl_s
        self.probe_ttl_s = probe_ttl_s
        self.outage = outage or SharedStateOutage("circuit breakers fall back to closed, not shared")
        self._local = InMemoryBreakerStore()
        self._claim = client.register_script(_CLAIM_PROBE)
        self._errors = redis_errors()

    def _keys(self, name: str) -> tuple[str, str]:
        key = f"{self._prefix}:breaker:{name}"
        return key, f"{key}:probe"

    def _offset(self) -> float:
        """Wall-clock seconds minus the breaker's clock: converts ``opened_at`` between them."""
        return self._wall() - self._clock()

    def load(self, name: str) -> BreakerRecord:
        if self.outage.down:
            return self._local.load(name)
        key, probe = self._keys(name)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.exists(probe)
                fields, probing = pipe.execute()
        except self._errors as exc:
            self.outage.failed(exc)
            return self._local.load(name)
        self.outage.succeeded()
        if not fields:
            return BreakerRecord()
        record: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
        return BreakerRecord(
            state=BreakerState(record.get("state", BreakerState.CLOSED)),
            consecutive_failures=int(record.get("failures", 0)),
            opened_at=float(record.get("opened_at", 0.0)) - self._offset(),
            probe_in_flight=bool(probing),
        )

    def _fields(self, record: BreakerRecord) -> dict[str, str]:
        return {
            "state": record.state.value,
            "failures": str(record.consecutive_failures),
            "opened_at": repr(record.opened_at + self._offset()),
        }

    def save(self, name: str, record: BreakerRecord) -> None:
        if self.outage.down:
            self._local.save(name, record)
            return
        key, probe = self._keys(name)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                if record == BreakerRecord():
                    pipe.delete(key, probe)
                else:
                    fields: dict[Any, Any] = self._fields(record)
                    pipe.hset(key, mapping=fields)
                    pipe.expire(key, self.ttl_s)
                    if record.probe_in_flight:
                        pipe.set(probe, "1", ex=self.probe_ttl_s)
                    else:
                        pipe.delete(probe)
                pipe.execute()
        except self._errors as exc:
            self.outage.failed(exc)
            self._local.save(name, record)
            return
        self.outage.succeeded()

    def claim_probe(self, name: str, record: BreakerRecord) -> bool:
        """Take the half-open probe slot for ``name`` unless another replica holds it (atomic)."""
        if self.outage.down:
            self._local.save(name, record)
            return True
        fields = self._fields(record)
        try:
            granted = self._claim(
                keys=list(self._keys(name)),
                args=[fields["state"], fields["failures"], fields["opened_at"], self.ttl_s, self.probe_ttl_s],
            )
        except self._errors as exc:
            self.outage.failed(exc)
            self._local.save(name, record)
            return True
        self.outage.succeeded()
        return bool(granted)  # 2: the record was closed meanwhile (a probe elsewhere succeeded)
