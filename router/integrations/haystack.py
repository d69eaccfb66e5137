"""A Haystack ranker component that routes reranking: a drop-in for
``SentenceTransformersSimilarityRanker`` after a retriever::

    from haystack import Pipeline
    from router.integrations.haystack import RouterRanker

    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component("ranker", RouterRanker(top_k=5, latency_budget_ms=300))
    pipeline.connect("retriever.documents", "ranker.documents")

``run`` / ``run_async`` take ``query``, ``documents`` and optional ``top_k``, budgets, constraints
and context for the call; they return ``{"documents": [...]}``, best first, copies with
``Document.score`` set (on [0, 1]; None when no model scored it) and ``meta["rerank_router"]``
(request id, backends, cost, degraded, input ``index``, new ``rank``). Init parameters are
JSON-serialisable (``config``: a path or mapping), so ``to_dict`` / ``from_dict`` and pipeline YAML
round-trip (Haystack 3.x loads only allow-listed modules: ``Pipeline.from_dict(data,
allowed_modules=["router.integrations.haystack"])``); ``warm_up`` builds the Router and loads its local models. A Router object passed as
``router=`` is used as is but cannot be serialised. Needs the ``haystack`` extra.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from router import RerankResult, Router
from router.errors import MissingDependencyError
from router.integrations._options import RerankOptions, RouterHandle, result_info

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError("router.integrations.haystack needs haystack-ai: pip install 'rerank-router[haystack]'") from exc

__all__ = ["RouterRanker"]


@component
class RouterRanker:
    """Reranks documents through a :class:`router.Router` (``router``; else one built from
    ``config``; else the process default)."""

    def __init__(
        self,
        config: str | dict[str, Any] | None = None,
        top_k: int | None = 10,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        *,
        router: Router | None = None,
    ) -> None:
        self.config = config
        self.top_k = top_k
        self.latency_budget_ms = latency_budget_ms
        self.max_cost_usd = max_cost_usd
        self.constraints = dict(constraints or {})
        self.context = dict(context or {})
        self._custom_router = router is not None
        self._handle = RouterHandle(router, config)

    def warm_up(self) -> None:
        """Build the Router and load its local models (not its garbage-collector freeze: the app owns the heap)."""
        self._handle.get().warm_up(freeze_gc=False)

    def to_dict(self) -> dict[str, Any]:
        if self._custom_router:
            raise TypeError("RouterRanker(router=...) cannot be serialised; build it with config= (a path or mapping)")
        return default_to_dict(
            self,
            config=self.config,
            top_k=self.top_k,
            latency_budget_ms=self.latency_budget_ms,
            max_cost_usd=self.max_cost_usd,
            constraints=self.constraints or None,
            context=self.context or None,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterRanker:
        ranker: RouterRanker = default_from_dict(cls, data)
        return ranker

    def _options(
        self,
        top_k: int | None,
        latency_budget_ms: float | None,
        max_cost_usd: float | None,
        constraints: dict[str, Any] | None,
        context: dict[str, Any] | None,
    ) -> RerankOptions:
        base = RerankOptions(self.top_k, self.latency_budget_ms, self.max_cost_usd, self.constraints, self.context)
        return base.merged(
            top_n=top_k, latency_budget_ms=latency_budget_ms, max_cost_usd=max_cost_usd, constraints=constraints, context=context
        )

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, list[Document]]:
        """Rerank ``documents`` for ``query``; the other arguments override the component's for this call."""
        if not documents:
            return {"documents": []}
        options = self._options(top_k, latency_budget_ms, max_cost_usd, constraints, context)
        result = self._handle.get().rerank(query, _texts(documents), **options.kwargs())
        return {"documents": _documents(documents, result, options.top_n)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, list[Document]]:
        """Async twin of :meth:`run`, on the caller's event loop."""
        if not documents:
            return {"documents": []}
        options = self._options(top_k, latency_budget_ms, max_cost_usd, constraints, context)
        result = await self._handle.get().arerank(query, _texts(documents), **options.kwargs())
        return {"documents": _documents(documents, result, options.top_n)}


def _texts(documents: list[Document]) -> list[str]:
    return [d.content or "" for d in documents]


def _documents(documents: list[Document], result: RerankResult, top_k: int | None) -> list[Document]:
    out = []
    for rank, item in enumerate(result.items[:top_k]):
        source = documents[item.index]
        meta = {**source.meta, "rerank_router": result_info(result, item.index, rank)}
        out.append(dataclasses.replace(source, score=item.score, meta=meta))
    return out
