"""A LlamaIndex node postprocessor that routes reranking: a drop-in for ``SentenceTransformerRerank``
or ``CohereRerank`` in a query engine::

    from router.integrations.llamaindex import RouterNodePostprocessor

    engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[RouterNodePostprocessor(top_n=5)])

Each returned node's ``score`` is the router's (on [0, 1]; None when no model scored it); the
retriever's score is kept in ``node.metadata["retrieval_score"]`` and the decision (request id,
backends, cost, degraded, input ``index``, new ``rank``) in ``node.metadata["rerank_router"]``,
both hidden from the LLM and the embedder. ``ReRankStartEvent`` / ``ReRankEndEvent`` are dispatched
like LlamaIndex's own rerankers; ``apostprocess_nodes`` awaits the router on the caller's loop
(no thread hop). Budgets, constraints and context are fields, overridable per copy
(``with_options``). Needs the ``llamaindex`` extra.
"""

from __future__ import annotations

from typing import Any

from router import RerankResult, Router
from router.errors import MissingDependencyError
from router.integrations._options import RerankOptions, RouterHandle, result_info

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
    from llama_index_instrumentation import get_dispatcher
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError(
        "router.integrations.llamaindex needs llama-index-core: pip install 'rerank-router[llamaindex]'"
    ) from exc

__all__ = ["RouterNodePostprocessor"]

dispatcher = get_dispatcher(__name__)

_HIDDEN = ("retrieval_score", "rerank_router")


class RouterNodePostprocessor(BaseNodePostprocessor):
    """Reranks retrieved nodes through a :class:`router.Router` (``router``; else one built from
    ``router_config``; else the process default)."""

    router: Router | None = Field(default=None, exclude=True)
    router_config: str | dict[str, Any] | None = None
    top_n: int | None = 3
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    constraints: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    keep_retrieval_score: bool = True
    _handle: RouterHandle = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._handle = RouterHandle(self.router, self.router_config)

    @classmethod
    def class_name(cls) -> str:
        return "RouterNodePostprocessor"

    def with_options(self, **overrides: Any) -> RouterNodePostprocessor:
        """A copy with other settings (same Router)."""
        copy = self.model_copy(update=overrides)
        copy._handle = self._handle
        return copy

    def _options(self) -> RerankOptions:
        return RerankOptions(self.top_n, self.latency_budget_ms, self.max_cost_usd, self.constraints, self.context)

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name="rerank-router")
        )
        if query_bundle is None:
            raise ValueError("RouterNodePostprocessor needs the query (query_bundle or query_str)")
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if not nodes:
            return []
        query, texts = self._start(nodes, query_bundle)
        options = self._options()
        result = self._handle.get().rerank(query, texts, **options.kwargs())
        return self._end(nodes, result, options.top_n)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query, texts = self._start(nodes, query_bundle)
        options = self._options()
        result = await self._handle.get().arerank(query, texts, **options.kwargs())
        return self._end(nodes, result, options.top_n)

    def _end(self, nodes: list[NodeWithScore], result: RerankResult, top_n: int | None) -> list[NodeWithScore]:
        out = []
        for rank, item in enumerate(result.items[:top_n]):
            source = nodes[item.index]
            node = source.node
            if self.keep_retrieval_score:
                node.metadata["retrieval_score"] = source.score
            node.metadata["rerank_router"] = result_info(result, item.index, rank)
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                keys.extend(k for k in _HIDDEN if k not in keys)
            out.append(NodeWithScore(node=node, score=item.score))
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out
