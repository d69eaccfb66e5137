"""The score store shared by replicas: Redis (config ``shared_state:``), in front of which each
process keeps its own :class:`~router.cache.memory.MemoryScoreStore`.

One ``MGET`` per lookup, one pipelined batch of ``SET ... PX`` per write, each key
``<key_prefix>:score:<hex key>`` and each value the score's 8 IEEE-754 bytes (so a float read
back is the float written). Any Redis error reads as misses and skips the write: the request is
served all the same, and the outage is logged once, its URL scrubbed (router.resilience.redis_store),
with Redis left alone for a few seconds before it is tried again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from router.cache.memory import MemoryScoreStore
from router.resilience.redis_store import SharedStateOutage

__all__ = ["RedisScoreStore", "TieredScoreStore"]

_DOUBLE = struct.Struct("<d")


class RedisScoreStore:
    def __init__(self, client: Any, *, prefix: str, ttl_s: float, outage: SharedStateOutage) -> None:
        self._client = client
        self._prefix = f"{prefix}:score:"
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._outage = outage

    def __repr__(self) -> str:  # never the client: its repr may carry the URL
        return f"RedisScoreStore(prefix={self._prefix!r})"

    def _name(self, key: bytes) -> str:
        return self._prefix + key.hex()

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        if not keys or self._outage.down:
            return [None] * len(keys)
        try:
            raw = self._client.mget([self._name(k) for k in keys])
        except Exception as exc:  # a cache must never fail a request
            self._outage.failed(exc)
            return [None] * len(keys)
        self._outage.succeeded()
        out: list[float | None] = []
        for value in raw:
            out.append(_DOUBLE.unpack(value)[0] if isinstance(value, bytes) and len(value) == 8 else None)
        return out

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        items = list(items)
        if not items or self._outage.down:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, score in items:
                pipe.set(self._name(key), _DOUBLE.pack(score), px=self._ttl_ms)
            pipe.execute()
        except Exception as exc:
            self._outage.failed(exc)
            return
        self._outage.succeeded()


class TieredScoreStore:
    """This process's LRU first; what it misses from Redis (and copied into the LRU)."""

    def __init__(self, local: MemoryScoreStore, remote: RedisScoreStore) -> None:
        self.local = local
        self.remote = remote

    def __repr__(self) -> str:
        return f"TieredScoreStore({self.local!r}, {self.remote!r})"

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        out = self.local.get_many(keys)
        missing = [i for i, v in enumerate(out) if v is None]
        if not missing:
            return out
        found = self.remote.get_many([keys[i] for i in missing])
        back: list[tuple[bytes, float]] = []
        for i, value in zip(missing, found, strict=True):
            if value is not None:
                out[i] = value
                back.append((keys[i], value))
        if back:
            self.local.put_many(back)
        return out

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        items = list(items)
        self.local.put_many(items)
        self.remote.put_many(items)
