"""LlamaIndex: the router as a node postprocessor of a real retriever and query engine."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from integrations_support import API_KEY, api_and_local_router
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from router.integrations.llamaindex import RouterNodePostprocessor
from router.testing import FakeBackend, LoopbackRerankServer, word_overlap

TEXTS = [
    "green tea is steamed or pan-fired soon after picking",
    "black tea is fully oxidised before drying",
    "coffee beans are roasted",
    "oolong tea is partly oxidised",
    "the difference between green and black tea is oxidation",
    "a kettle boils water",
]
QUERY = "difference between green and black tea"


class Captured(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Captured"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)


@pytest.fixture
def handler():
    root = get_dispatcher()
    captured = Captured(events=[])
    root.add_event_handler(captured)
    yield captured
    root.event_handlers.remove(captured)


@pytest.fixture
def index():
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.llm = MockLLM(max_tokens=8)
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))


@pytest.fixture
def postprocessor(make_router):
    return RouterNodePostprocessor(router=make_router({"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})}), top_n=3)


def _check(nodes: list[NodeWithScore], top_n: int) -> None:
    expected = sorted(TEXTS, key=lambda t: -word_overlap(QUERY, t))[:top_n]
    assert [n.node.get_content() for n in nodes] == expected
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    for rank, n in enumerate(nodes):
        assert n.node.metadata["rerank_router"]["rank"] == rank and n.node.metadata["rerank_router"]["backends"] == ["fake"]
        assert isinstance(n.node.metadata["retrieval_score"], float)  # the vector store's similarity
        assert "rerank_router" not in n.node.get_content(metadata_mode=MetadataMode.LLM)


def test_query_engine_with_the_postprocessor(index, postprocessor, handler):
    retriever = index.as_retriever(similarity_top_k=6)
    engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[postprocessor], llm=MockLLM(max_tokens=8))
    response = engine.query(QUERY)
    _check(response.source_nodes, 3)
    start, end = handler.events[-2:]
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.top_n == 3 and len(start.nodes) == 6 and start.model_name == "rerank-router"
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in response.source_nodes]


async def test_async_query_engine_uses_the_native_coroutine(index, postprocessor, handler, monkeypatch):
    monkeypatch.setattr(RouterNodePostprocessor, "_postprocess_nodes", lambda *a, **k: pytest.fail("thread hop"))
    retriever = index.as_retriever(similarity_top_k=6)
    engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[postprocessor], llm=MockLLM(max_tokens=8))
    response = await engine.aquery(QUERY)
    _check(response.source_nodes, 3)
    assert [type(e) for e in handler.events[-2:]] == [ReRankStartEvent, ReRankEndEvent]


def test_retriever_then_postprocessor(index, postprocessor):
    nodes = index.as_retriever(similarity_top_k=6).retrieve(QUERY)
    _check(postprocessor.with_options(top_n=2).postprocess_nodes(nodes, query_str=QUERY), 2)
    assert postprocessor.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        postprocessor.postprocess_nodes(nodes)


def test_an_on_premise_request_never_reaches_the_api_tier(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        router = api_and_local_router(server)
        try:
            nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in TEXTS]
            on_prem = RouterNodePostprocessor(router=router, constraints={"on_premise": True})
            out = on_prem.postprocess_nodes(nodes, QueryBundle(QUERY))
            assert out[0].node.metadata["rerank_router"]["backends"] == ["local"] and server.requests == []
            anywhere = RouterNodePostprocessor(router=router)
            assert anywhere.postprocess_nodes(nodes, QueryBundle(QUERY))[0].node.metadata["rerank_router"]["backends"] == [
                "cohere"
            ]
        finally:
            router.close()


def test_missing_framework_names_the_extra():
    code = (
        "import sys\nsys.modules['llama_index.core'] = None\n"
        "try:\n    import router.integrations.llamaindex\nexcept ImportError as e:\n"
        "    from router.errors import MissingDependencyError\n"
        "    assert isinstance(e, MissingDependencyError), type(e)\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "rerank-router[llamaindex]" in out.stdout
