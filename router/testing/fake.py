"""``FakeBackend``: a backend scripted per call, for testing policies and configs without models.

``FakeBackend`` scores from a function, with scripted latency and failures::

    from router import Router
    from router.testing import FakeBackend, word_overlap

    slow = FakeBackend("strong", score=word_overlap, latency_ms=50, spec={"quality": {"web": 0.9}})
    router = Router({"backends": {}}, backends={"strong": slow})
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from router.backends.base import Availability, Backend, Scores, Usage
from router.catalog import BackendSpec, merge_spec
from router.tokens import TokenCounter

__all__ = ["FakeBackend", "word_overlap"]

_WORD = re.compile(r"\w+")


def word_overlap(query: str, document: str) -> float:
    """Share of the query's distinct words found in the document: a deterministic [0, 1] score."""
    q = set(_WORD.findall(query.lower()))
    if not q:
        return 0.0
    return len(q & set(_WORD.findall(document.lower()))) / len(q)


class FakeBackend(Backend):
    """A backend whose behaviour is scripted per call (calls are numbered from 0).

    score: (query, document) -> float.
    latency_ms: a number, or call number -> ms; waited with ``sleep`` (inject a fake to not wait).
    fail: call number -> an exception to raise (after the latency), or None.
    scores_override: call number -> a list of values to return instead (e.g. NaN, wrong length);
        a function of two arguments gets the call number and the number of documents.
    spec: a BackendSpec or overrides of a free, local, Apache-2.0 default.
    keep_calls: keep only the last N calls in ``calls`` (long benchmarks: every call kept grows
        the heap the garbage collector scans); ``call_count`` still counts them all.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        score: Callable[[str, str], float] = word_overlap,
        latency_ms: float | Callable[[int], float] = 0.0,
        fail: Callable[[int], BaseException | None] | None = None,
        scores_override: Callable[[int], Sequence[float] | None] | Callable[[int, int], Sequence[float] | None] | None = None,
        usage: Usage = Usage(),
        spec: BackendSpec | Mapping[str, Any] | None = None,
        available: Availability = Availability(True),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        keep_calls: int | None = None,
    ) -> None:
        self.name = name
        if isinstance(spec, BackendSpec):
            self.spec = spec
        else:
            defaults: dict[str, Any] = {"license": "Apache-2.0", "provider": "fake", "input": "pair"}
            self.spec = merge_spec(None, name, {**defaults, **(spec or {})}, where=f"FakeBackend({name})")
        self._score = score
        self._latency = latency_ms
        self._fail = fail
        self._override = scores_override
        self._usage = usage
        self._available = available
        self._sleep = sleep
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.call_count = 0
        self._keep = keep_calls
        self._override_takes_n = scores_override is not None and len(inspect.signature(scores_override).parameters) == 2

    def __repr__(self) -> str:
        return f"FakeBackend(name={self.name!r})"

    def availability(self) -> Availability:
        return self._available

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        call = self.call_count
        self.call_count += 1
        self.calls.append((query, tuple(documents)))
        if self._keep is not None and len(self.calls) > 2 * self._keep:
            del self.calls[: -self._keep]
        delay = self._latency(call) if callable(self._latency) else self._latency
        if delay > 0:
            await self._sleep(delay / 1000)
        if self._fail is not None:
            error = self._fail(call)
            if error is not None:
                raise error
        if self._override is not None:
            values = self._override(call, len(documents)) if self._override_takes_n else self._override(call)  # type: ignore[call-arg]
            if values is not None:
                return Scores(tuple(values), self._usage)
        return Scores(tuple(self._score(query, d) for d in documents), self._usage)

    def token_counter(self) -> TokenCounter | None:
        return None

    async def aclose(self) -> None:
        return None
