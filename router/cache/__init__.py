"""The score cache (config ``cache:``): per-document scores keyed by backend, its fingerprint,
the query and the document text's digest; in-process LRU, Redis with ``shared_state:``.

See :mod:`router.cache.cache` for how a request uses it.
"""

from router.cache.cache import BackendHits, CacheView, ScoreCache, ScoreStore, cacheable_by_default
from router.cache.coalesce import Coalescer
from router.cache.config import CacheConfig
from router.cache.keys import fingerprint
from router.cache.memory import MemoryScoreStore

__all__ = [
    "BackendHits",
    "CacheConfig",
    "CacheView",
    "Coalescer",
    "MemoryScoreStore",
    "ScoreCache",
    "ScoreStore",
    "cacheable_by_default",
    "fingerprint",
]
