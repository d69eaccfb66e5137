"""A LangChain document compressor that routes reranking: a drop-in for ``CohereRerank`` or
``CrossEncoderReranker`` inside ``ContextualCompressionRetriever``::

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from router.integrations.langchain import RouterReranker

    retriever = ContextualCompressionRetriever(
        base_compressor=RouterReranker(top_n=5, latency_budget_ms=300), base_retriever=vector_store.as_retriever()
    )

Returned documents are copies, best first (the first ``top_n``; None: all). Each carries
``metadata["relevance_score"]`` (on [0, 1]; None when no model scored it, e.g. degraded to the
retriever's order) and ``metadata["rerank_router"]``: request id, backends, cost, degraded, and the
document's input position (``index``) and new ``rank``. Budgets, constraints and context are set
on the component and can be overridden per call (``compress_documents(..., constraints={...})``)
or per copy (``reranker.with_options(latency_budget_ms=100)``). Needs the ``langchain`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router import RerankResult, Router
from router.errors import MissingDependencyError
from router.integrations._options import RerankOptions, RouterHandle, result_info

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError(
        "router.integrations.langchain needs langchain-core: pip install 'rerank-router[langchain]'"
    ) from exc

__all__ = ["RouterReranker"]


class RouterReranker(BaseDocumentCompressor):
    """Reranks a retriever's documents through a :class:`router.Router`.

    ``router``: the Router to use; else one built from ``router_config`` (a path or mapping);
    else the process default (``$RERANK_ROUTER_CONFIG`` or the packaged default config).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Router | None = Field(default=None, exclude=True)
    router_config: str | dict[str, Any] | None = None
    top_n: int | None = 3
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    constraints: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    _handle: RouterHandle = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._handle = RouterHandle(self.router, self.router_config)

    def with_options(self, **overrides: Any) -> RouterReranker:
        """A copy with other settings (same Router), e.g. ``with_options(constraints={"on_premise": True})``."""
        copy = self.model_copy(update=overrides)
        copy._handle = self._handle
        return copy

    def _options(self, overrides: Mapping[str, Any]) -> RerankOptions:
        base = RerankOptions(self.top_n, self.latency_budget_ms, self.max_cost_usd, self.constraints, self.context)
        return base.merged(**overrides)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
        **overrides: Any,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; ``overrides``: top_n, latency_budget_ms,
        max_cost_usd, constraints, context for this call only."""
        if not documents:
            return []
        options = self._options(overrides)
        result = self._handle.get().rerank(query, [d.page_content for d in documents], **options.kwargs())
        return _documents(documents, result, options.top_n)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
        **overrides: Any,
    ) -> Sequence[Document]:
        """Async twin of :meth:`compress_documents`, on the caller's event loop (no thread hop)."""
        if not documents:
            return []
        options = self._options(overrides)
        result = await self._handle.get().arerank(query, [d.page_content for d in documents], **options.kwargs())
        return _documents(documents, result, options.top_n)


def _documents(documents: Sequence[Document], result: RerankResult, top_n: int | None) -> list[Document]:
    out = []
    for rank, item in enumerate(result.items[:top_n]):
        source = documents[item.index]
        metadata = {**source.metadata, "relevance_score": item.score, "rerank_router": result_info(result, item.index, rank)}
        out.append(source.model_copy(update={"metadata": metadata}, deep=True))
    return out
