"""LangChain: the router as the compressor of a real ContextualCompressionRetriever."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from integrations_support import API_KEY, api_and_local_router
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from router import Router
from router.integrations.langchain import RouterReranker
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


@pytest.fixture
def store():
    vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    vectors.add_documents([Document(page_content=t, metadata={"source": f"s{i}"}, id=f"doc-{i}") for i, t in enumerate(TEXTS)])
    return vectors


@pytest.fixture
def fake_router(make_router):
    return make_router({"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})})


def _expected_order(candidates):
    return sorted(candidates, key=lambda d: -word_overlap(QUERY, d.page_content))


def _check(out, candidates, top_n):
    assert len(out) == top_n
    assert [d.page_content for d in out] == [d.page_content for d in _expected_order(candidates)][:top_n]
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for rank, doc in enumerate(out):
        info = doc.metadata["rerank_router"]
        assert info["backends"] == ["fake"] and info["degraded"] is False and info["rank"] == rank
        assert candidates[info["index"]].page_content == doc.page_content
        assert doc.metadata["source"] == candidates[info["index"]].metadata["source"]  # metadata kept
        assert doc.id == candidates[info["index"]].id
    assert len({d.metadata["rerank_router"]["request_id"] for d in out}) == 1


def test_contextual_compression_retriever_sync(store, fake_router):
    base = store.as_retriever(search_kwargs={"k": 6})
    candidates = base.invoke(QUERY)
    retriever = ContextualCompressionRetriever(base_compressor=RouterReranker(router=fake_router, top_n=3), base_retriever=base)
    out = retriever.invoke(QUERY)
    _check(out, candidates, 3)
    assert all("relevance_score" not in d.metadata for d in candidates)  # documents were copied


async def test_contextual_compression_retriever_async(store, fake_router, monkeypatch):
    base = store.as_retriever(search_kwargs={"k": 6})
    candidates = await base.ainvoke(QUERY)
    compressor = RouterReranker(router=fake_router, top_n=2)
    # the native coroutine runs: the sync method (which the default thread hop would call) is never used
    monkeypatch.setattr(RouterReranker, "compress_documents", lambda *a, **k: pytest.fail("thread hop"))
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    _check(await retriever.ainvoke(QUERY), candidates, 2)


def test_per_call_and_per_copy_settings(store, fake_router):
    compressor = RouterReranker(router=fake_router, top_n=3, context={"domain": "web"})
    docs = [Document(page_content=t) for t in TEXTS]
    assert len(compressor.compress_documents(docs, QUERY, top_n=5)) == 5
    assert len(compressor.with_options(top_n=None).compress_documents(docs, QUERY)) == len(TEXTS)
    assert compressor.compress_documents([], QUERY) == []


def test_an_on_premise_request_through_the_component_never_reaches_the_api_tier(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        router = api_and_local_router(server)
        try:
            docs = [Document(page_content=t) for t in TEXTS]
            on_prem = RouterReranker(router=router, top_n=3, constraints={"on_premise": True})
            out = on_prem.compress_documents(docs, QUERY)
            assert {d.metadata["rerank_router"]["backends"][0] for d in out} == {"local"}
            assert server.requests == []
            # per call, too, and the async path
            anywhere = RouterReranker(router=router, top_n=3)
            import asyncio

            out = asyncio.run(anywhere.acompress_documents(docs, QUERY, constraints={"on_premise": True}))
            assert out[0].metadata["rerank_router"]["backends"] == ["local"] and server.requests == []
            # control: without the constraint the API tier serves
            assert anywhere.compress_documents(docs, QUERY)[0].metadata["rerank_router"]["backends"] == ["cohere"]
            assert len(server.requests) == 1
        finally:
            router.close()


def test_copies_share_one_router_built_once(fake_router):
    import copy
    import threading

    compressor = RouterReranker(router_config={"backends": {"bm25": {"type": "lexical"}}})
    assert copy.deepcopy(compressor)._handle is compressor._handle
    built = []
    threads = [threading.Thread(target=lambda: built.append(compressor._handle.get())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in built}) == 1
    built[0].close()


def test_builds_its_router_from_config():
    compressor = RouterReranker(router_config={"backends": {"bm25": {"type": "lexical"}}}, top_n=1)
    out = compressor.compress_documents([Document(page_content=t) for t in TEXTS], QUERY)
    assert out[0].metadata["rerank_router"]["backends"] == ["bm25"]
    router = compressor._handle.get()
    assert isinstance(router, Router)
    router.close()


def test_missing_framework_names_the_extra():
    code = (
        "import sys\nsys.modules['langchain_core'] = None\n"
        "try:\n    import router.integrations.langchain\nexcept ImportError as e:\n"
        "    from router.errors import MissingDependencyError\n"
        "    assert isinstance(e, MissingDependencyError), type(e)\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "rerank-router[langchain]" in out.stdout
