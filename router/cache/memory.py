"""The in-process score store: an LRU bounded in entries and (approximate) bytes, with a TTL.

Values are floats only. Each entry is counted as its key's length plus a fixed overhead that
covers the key object, the (score, expiry) pair and the ordered dict's own bookkeeping; the
benchmark (benchmarks/cache.py) checks the bound against traced allocations. One lock guards
every operation: the router's sync loop thread and callers' own loops may share one store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

__all__ = ["ENTRY_OVERHEAD_BYTES", "MemoryScoreStore"]

ENTRY_OVERHEAD_BYTES = 376
"""What one entry may cost besides its key's bytes (CPython 3.11, 64-bit): the key object's header,
a tuple of two floats, the ordered dict's link node (~200 bytes), and its share of the hash tables,
which after evictions can hold several slots per live entry (up to ~170 bytes): an upper bound, so
``max_bytes`` bounds what the store holds."""


class MemoryScoreStore:
    """``get_many`` / ``put_many`` over bytes keys; expired entries read as misses."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def __repr__(self) -> str:
        return f"MemoryScoreStore(entries={len(self)}, bytes={self.size_bytes}, max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The approximate bytes held (what ``max_bytes`` bounds)."""
        return self._bytes

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        now = self._clock()
        out: list[float | None] = []
        append = out.append
        entries = self._entries
        with self._lock:
            for key in keys:
                entry = entries.get(key)
                if entry is None:
                    append(None)
                elif entry[1] <= now:  # expired: gone
                    del entries[key]
                    self._bytes -= ENTRY_OVERHEAD_BYTES + len(key)
                    append(None)
                else:
                    entries.move_to_end(key)
                    append(entry[0])
        return out

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        expires = self._clock() + self.ttl_s
        entries = self._entries
        get, move = entries.get, entries.move_to_end
        with self._lock:
            added = 0
            for key, score in items:
                if get(key) is None:
                    added += ENTRY_OVERHEAD_BYTES + len(key)
                else:
                    move(key)
                entries[key] = (score, expires)
            self._bytes += added
            if len(entries) > self.max_entries or self._bytes > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        entries, pop = self._entries, self._entries.popitem
        freed = evicted = 0
        over_entries = len(entries) - self.max_entries
        over_bytes = self._bytes - self.max_bytes
        while entries and (evicted < over_entries or freed < over_bytes):
            old, _ = pop(last=False)
            freed += ENTRY_OVERHEAD_BYTES + len(old)
            evicted += 1
        self._bytes -= freed
        self.evictions += evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
