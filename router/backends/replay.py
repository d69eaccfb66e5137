"""Replay tier: a reranker's recorded output (a TREC run file) served as a backend.

Use it to ask "what would this policy have cost and scored?" without calling the model again: the
evaluation harness (``router.offline.evaluation``) routes labelled queries through a real Router whose
recorded tiers are replay backends.

Which query, which documents. The backend seam hands ``rerank`` only the query text and the
candidate texts, so the backend keeps an index from the labelled set: query text -> qid, and per
qid candidate text -> docids. That needs no change to the seam, the executor or the request, and
works for any subset of candidates a cascade's later stage passes. Config names the set with
``dataset:`` (a path ``router.offline.evaluation.load_dataset`` reads); the harness binds its own in memory
(:meth:`ReplayBackend.bound`). A query the index does not know is refused (``BadRequestError``, so
the executor falls back and the circuit breaker stays closed); a candidate the run does not rank
scores 0 and keeps the order it came in.

Scores. The documents given are ordered by their recorded rank: score = 1 - (rank - 1) / R for
a recorded rank among R recorded documents (on (0, 1]), 0 for unrecorded ones. For a pointwise
scorer that is exactly what the model would return on that subset (each score is independent of
the others). For a listwise reranker (RankGPT, RankVicuna: sliding windows over the whole list)
it is an approximation: the model run on the subset alone could order it differently. Say so
wherever a cascade over a replayed listwise model is reported.

Latency and cost. A replayed call costs no time and no money, so the backend reports what the
real call would have: it waits the spec's latency model (``spec.latency``, token counts estimated
from characters for ``spec.tokenizer_family``, the same estimate the planner uses) on the injected
``sleep`` (the harness passes a simulated clock's, so nothing really waits; ``simulate_latency:
false`` skips it), and reports the units ``spec.pricing`` bills (tokens, search units), so the
executor's accounting prices it like the real thing. Self-hosted GPU time (``per_gpu_hour``) is
priced from the elapsed, i.e. simulated, time.

```yaml
backends:
  rankgpt:
    type: replay
    run: ../shared/data/trec-dl19/runs/rankgpt-gpt-3.5-turbo.run
    dataset: ../shared/data/trec-dl19
    spec: {license: proprietary, data_leaves_premises: true, tokenizer_family: cl100k,
           pricing: {scheme: per_token, usd: 1.2e-6}, latency: {per_doc_ms: 66.66}, quality: {web: 0.680}}
```
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.backends.base import Availability, Backend, Scores
from router.catalog import BackendSpec
from router.cost import predict_usage
from router.datasets import load_dataset, read_run_ranks
from router.errors import BackendUnavailableError, BadRequestError
from router.features import TokenStats
from router.latency import item_tokens, predict_latency_ms
from router.tokens import DEFAULT_CHARS_PER_TOKEN, EstimatedTokenCounter, TokenCounter

__all__ = ["ReplayBackend", "ReplayConfig", "ReplayIndex", "read_run_ranks"]

Sleep = Callable[[float], Awaitable[None]]


class ReplayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["replay"] = "replay"
    run: str
    """TREC run file ``qid Q0 docid rank score tag``; only the rank is used."""
    dataset: str | None = None
    """The labelled set the run belongs to (a path router.offline.evaluation.load_dataset reads), for the
    query text -> qid and candidate text -> docid index. Optional when the evaluation harness binds one."""
    model: str | None = None
    """Model id for the spec (default: the backend name)."""
    catalog: str | None = None
    simulate_latency: bool = True
    """Wait the modelled latency of the real call (on the harness's simulated clock in evaluation)."""
    chars_per_token: float | None = Field(None, gt=0)
    """Token estimate for latency and billing (default: router.tokens' figure for the tokenizer family)."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """License, data_leaves_premises, pricing, latency, quality: what the recorded model would be."""


@dataclass(frozen=True)
class ReplayIndex:
    """Query text -> qid, and per qid candidate text -> its docids (texts can repeat)."""

    qids: Mapping[str, str]
    docids: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def from_queries(cls, queries: Iterable[tuple[str, str, Iterable[tuple[str, str]]]]) -> ReplayIndex:
        """From ``(qid, query text, [(docid, text), ...])``. A repeated query text keeps its first qid."""
        qids: dict[str, str] = {}
        docids: dict[str, dict[str, tuple[str, ...]]] = {}
        for qid, text, candidates in queries:
            qids.setdefault(text, qid)
            table = docids.setdefault(qid, {})
            for docid, doc_text in candidates:
                table[doc_text] = (*table.get(doc_text, ()), docid)
        return cls(qids, docids)


class ReplayBackend(Backend):
    config_model = ReplayConfig
    default_spec: ClassVar[dict[str, Any]] = {"provider": "replay", "input": "pair", "license": "unknown"}

    def __init__(
        self,
        name: str,
        config: ReplayConfig,
        spec: BackendSpec,
        *,
        index: ReplayIndex | None = None,
        ranks: Mapping[str, Mapping[str, int]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.config = config
        self.spec = spec
        self._index = index
        self._ranks = ranks
        self._sleep = sleep
        self._error: str | None = None
        self._lock = threading.Lock()
        ratio = config.chars_per_token or DEFAULT_CHARS_PER_TOKEN.get(spec.tokenizer_family, 4.0)
        self._counter = EstimatedTokenCounter(spec.tokenizer_family, ratio)

    def __repr__(self) -> str:
        return f"ReplayBackend(name={self.name!r}, run={self.config.run!r})"

    def bound(self, index: ReplayIndex | None = None, sleep: Sleep | None = None) -> ReplayBackend:
        """A copy reading the same run with another index and/or clock (the evaluation harness's)."""
        self._load()
        return ReplayBackend(
            self.name, self.config, self.spec, index=index or self._index, ranks=self._ranks, sleep=sleep or self._sleep
        )

    def _load(self) -> None:
        with self._lock:
            if self._ranks is not None and self._index is not None:
                return
            try:
                if self._ranks is None:
                    self._ranks = read_run_ranks(self.config.run)
                if self._index is None and self.config.dataset is not None:
                    dataset = load_dataset(self.config.dataset)
                    self._index = ReplayIndex.from_queries(
                        (q.qid, q.text, ((c.docid, c.text) for c in q.candidates)) for q in dataset.queries
                    )
            except (OSError, ValueError) as exc:
                self._error = f"cannot read the recorded run: {type(exc).__name__}: {exc}"

    def availability(self) -> Availability:
        if self._error is not None:
            return Availability(False, self._error)
        if not Path(self.config.run).is_file() and self._ranks is None:
            return Availability(False, f"no run file at {self.config.run}")
        if self._index is None and self.config.dataset is None:
            return Availability(
                False, "replay needs its labelled set: set `dataset:` or evaluate through router.offline.evaluation"
            )
        return Availability(True)

    def load(self) -> None:
        self._load()
        if self._error is not None:
            raise BackendUnavailableError(self._error, backend=self.name)

    def _scores(self, query: str, documents: Sequence[str]) -> list[float]:
        self.load()
        assert self._ranks is not None
        if self._index is None:
            raise BackendUnavailableError("no labelled set to map texts to ids", backend=self.name)
        qid = self._index.qids.get(query)
        if qid is None:
            raise BadRequestError("no recording for this query (not in the replayed labelled set)", backend=self.name)
        recorded = self._ranks.get(qid, {})
        table = self._index.docids.get(qid, {})
        depth = max(recorded.values(), default=1)
        out: list[float] = []
        for text in documents:
            ranks = [recorded[d] for d in table.get(text, ()) if d in recorded]
            out.append(1.0 - (min(ranks) - 1) / depth if ranks else 0.0)
        return out

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        values = self._scores(query, documents)
        counts = self._counter.count([query, *documents])
        stats = TokenStats(self.spec.tokenizer_family, False, counts[0], tuple(counts[1:]))
        if self.config.simulate_latency:
            await self._sleep(predict_latency_ms(self.spec.latency, item_tokens(self.spec, stats)) / 1000)
        return Scores(tuple(values), predict_usage(self.spec, stats.query, stats.docs))

    def token_counter(self) -> TokenCounter | None:
        return None

    async def aclose(self) -> None:
        return None
