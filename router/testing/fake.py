"""``FakeBackend``: a backend scripted per call, for testing policies and configs without models.

``FakeBackend`` scores from a function, with scripted latency and failures::

    from router import Router
    from router.testing import FakeBackend, word_overlap

    slow = FakeBackend("strong", score=word_overlap, latency_ms=50, spec={"quality": {"web": 0.9}})
    router = Router({"backends": {}}, backends={"strong": slow})
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from router.backends.base import Availability, Scores, Usage
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


class FakeBackend:
    """A backend whose behaviour is scripted per call (calls are numbered from 0).

    score: (query, document) -> float.
    latency_ms: a number, or call number -> ms; waited with ``sleep`` (inject a fake to not wait).
    fail: call number -> an exception to raise (after the latency), or None.
    scores_override: call number -> a list of values to return instead (e.g. NaN, wrong length).
    spec: a BackendSpec or overrides of a free, local, Apache-2.0 default.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        score: Callable[[str, str], float] = word_overlap,
        latency_ms: float | Callable[[int], float] = 0.0,
        fail: Callable[[int], BaseException | None] | None = None,
        scores_override: Callable[[int], Sequence[float] | None] | None = None,
        usage: Usage = Usage(),
        spec: BackendSpec | Mapping[str, Any] | None = None,
        available: Availability = Availability(True),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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

    def __repr__(self) -> str:
        return f"FakeBackend(name={self.name!r})"

    def availability(self) -> Availability:
        return self._available

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        call = len(self.calls)
        self.calls.append((query, tuple(documents)))
        delay = self._latency(call) if callable(self._latency) else self._latency
        if delay > 0:
            await self._sleep(delay / 1000)
        if self._fail is not None:
            error = self._fail(call)
            if error is not None:
                raise error
        if self._override is not None:
            values = self._override(call)
            if values is not None:
                return Scores(tuple(values), self._usage)
        return Scores(tuple(self._score(query, d) for d in documents), self._usage)

    def token_counter(self) -> TokenCounter | None:
        return None

    async def aclose(self) -> None:
        return None
