"""The score cache: what one request finds cached per backend, and where new scores go.

:class:`ScoreCache` is built once per Router (router.compose) from config ``cache:``. Before
planning, :meth:`ScoreCache.view` reads every cached backend's entries for the request's
documents in one store lookup and returns a :class:`CacheView`: the planner prices only the
documents it misses (router.estimate), and the executor sends only those and writes what comes
back (router.executor). The view is the request's snapshot: what was planned as cached is
served from it, even if the store evicts it meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from router.backends.base import Backend
from router.backends.remote import RemoteBackend
from router.cache.coalesce import Coalescer
from router.cache.config import CacheConfig
from router.cache.keys import digests, fingerprint, key_prefix
from router.errors import ConfigError

__all__ = ["BackendHits", "CacheView", "ScoreCache", "ScoreStore", "cacheable_by_default"]


class ScoreStore(Protocol):
    def get_many(self, keys: Sequence[bytes]) -> list[float | None]: ...

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None: ...


def cacheable_by_default(backend: Backend) -> bool:
    """Priced or remote, and scoring each document on its own (not against the other candidates)."""
    if getattr(backend, "scores_depend_on_candidates", False):
        return False
    return backend.spec.pricing.scheme != "free" or isinstance(backend, RemoteBackend)


@dataclass(slots=True)
class BackendHits:
    """One backend's part of a request's view."""

    prefix: bytes
    hits: dict[int, float]
    """Document index -> its cached score (grows as the request scores more)."""


@dataclass(frozen=True, slots=True)
class CacheView:
    cache: ScoreCache
    digests: tuple[bytes, ...]
    backends: Mapping[str, BackendHits]

    def hits(self) -> Mapping[str, Mapping[int, float]]:
        """Per cached backend, document index -> cached score (what planning reads)."""
        return MappingProxyType({name: entry.hits for name, entry in self.backends.items()})

    def store(self, backend: str, indices: Sequence[int], values: Sequence[float]) -> None:
        """Keep new scores of ``indices`` (in this view and in the store)."""
        entry = self.backends[backend]
        entry.hits.update(zip(indices, values, strict=True))
        prefix, doc = entry.prefix, self.digests
        self.cache.store.put_many([(prefix + doc[i], float(v)) for i, v in zip(indices, values, strict=True)])  # floats only

    def flight_key(self, backend: str, indices: Sequence[int]) -> bytes:
        """What identifies one backend call: namespace, backend, fingerprint, query (the prefix)
        and the exact list of documents sent."""
        h = hashlib.blake2b(self.backends[backend].prefix, digest_size=16)
        doc = self.digests
        for i in indices:
            h.update(doc[i])
        return h.digest()


class ScoreCache:
    def __init__(self, config: CacheConfig, backends: Mapping[str, Backend], store: ScoreStore) -> None:
        if config.backends is not None:
            unknown = sorted(set(config.backends) - set(backends))
            if unknown:
                raise ConfigError(f"cache.backends: {', '.join(unknown)} is not a backend ({', '.join(backends)})")
            names: Iterable[str] = config.backends
        else:
            names = [name for name, b in backends.items() if cacheable_by_default(b)]
        self.config = config
        self.store = store
        self.fingerprints: Mapping[str, str] = MappingProxyType(
            {name: fingerprint(backends[name], config.version) for name in names}
        )
        self.coalescer: Coalescer | None = Coalescer() if config.coalesce else None

    def __repr__(self) -> str:
        return f"ScoreCache(backends={list(self.fingerprints)!r}, store={self.store!r})"

    def namespace(self, context: Mapping[str, Any]) -> str:
        if self.config.scope == "shared":
            return "shared"
        tenant = context.get("tenant")
        return "tenant:" + ("" if tenant is None else str(tenant))

    def view(self, namespace: str, query: str, texts: Sequence[str]) -> CacheView | None:
        """The request's cached scores, one store lookup for every cached backend; None when no
        backend is cached."""
        if not self.fingerprints:
            return None
        doc = digests(texts)
        prefixes = {name: key_prefix(namespace, name, fp, query) for name, fp in self.fingerprints.items()}
        keys = [prefix + d for prefix in prefixes.values() for d in doc]
        found = self.store.get_many(keys)
        n = len(doc)
        backends: dict[str, BackendHits] = {}
        for k, (name, prefix) in enumerate(prefixes.items()):
            part = found[k * n : (k + 1) * n]
            backends[name] = BackendHits(prefix, {i: v for i, v in enumerate(part) if v is not None})
        return CacheView(self, doc, MappingProxyType(backends))
