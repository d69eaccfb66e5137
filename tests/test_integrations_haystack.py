"""Haystack: a real Pipeline of InMemoryBM25Retriever -> the router's ranker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no telemetry from tests
pytest.importorskip("haystack")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from integrations_support import API_KEY, api_and_local_router, api_config

from router.integrations.haystack import RouterRanker
from router.testing import FakeBackend, LoopbackRerankServer, word_overlap

TEXTS = [
    "green tea is steamed or pan-fired soon after picking",
    "black tea and green leaves",
    "oolong tea is partly oxidised",
    "the difference between green and black tea is oxidation",
    "coffee holds caffeine",
]
QUERY = "difference between green and black tea"
ALLOWED = ["router.integrations.haystack"]


@pytest.fixture
def store():
    documents = InMemoryDocumentStore()
    documents.write_documents([Document(content=t, meta={"n": i}) for i, t in enumerate(TEXTS)])
    return documents


def pipeline(store, ranker):
    p = Pipeline()
    p.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=5))
    p.add_component("ranker", ranker)
    p.connect("retriever.documents", "ranker.documents")
    return p


def inputs(**ranker):
    return {"retriever": {"query": QUERY}, "ranker": {"query": QUERY, **ranker}}


def _check(documents, top_k, backend):
    assert len(documents) == top_k
    if backend != "bm25":  # the fakes and the loopback API score by word overlap (distinct here)
        assert [d.content for d in documents] == sorted(TEXTS, key=lambda t: -word_overlap(QUERY, t))[:top_k]
    assert [d.score for d in documents] == sorted((d.score for d in documents), reverse=True)
    for rank, d in enumerate(documents):
        assert d.meta["rerank_router"]["rank"] == rank and d.meta["rerank_router"]["backends"] == [backend]
        assert d.meta["n"] == TEXTS.index(d.content)


def test_pipeline_run_and_run_async(store, make_router):
    ranker = RouterRanker(router=make_router({"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})}), top_k=3)
    p = pipeline(store, ranker)
    _check(p.run(inputs())["ranker"]["documents"], 3, "fake")
    _check(p.run(inputs(top_k=2))["ranker"]["documents"], 2, "fake")
    with pytest.raises(TypeError, match="config="):
        ranker.to_dict()


async def test_run_async(store, make_router):
    ranker = RouterRanker(router=make_router({"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})}), top_k=3)
    result = await pipeline(store, ranker).run_async(inputs())
    _check(result["ranker"]["documents"], 3, "fake")
    assert (await ranker.run_async(QUERY, []))["documents"] == []


def test_to_dict_from_dict_round_trip_with_a_loopback_api_tier(store, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        config = api_config(server)
        ranker = RouterRanker(config=config, top_k=3, latency_budget_ms=5000, context={"domain": "web"})
        p = pipeline(store, ranker)
        data = p.to_dict()
        params = data["components"]["ranker"]["init_parameters"]
        assert params["config"] == config and params["top_k"] == 3 and params["context"] == {"domain": "web"}
        loaded = Pipeline.from_dict(data, allowed_modules=ALLOWED)
        assert loaded.to_dict() == data
        loaded.warm_up()
        _check(loaded.run(inputs())["ranker"]["documents"], 3, "cohere")
        assert len(server.requests) == 1
        # YAML too
        again = Pipeline.loads(p.dumps(), allowed_modules=ALLOWED)
        _check(again.run(inputs(constraints={"on_premise": True}))["ranker"]["documents"], 3, "bm25")
        assert len(server.requests) == 1  # on-premise: never reached the API tier


def test_an_on_premise_request_never_reaches_the_api_tier(store, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        router = api_and_local_router(server)
        try:
            p = pipeline(store, RouterRanker(router=router, top_k=3, constraints={"on_premise": True}))
            _check(p.run(inputs())["ranker"]["documents"], 3, "local")
            assert server.requests == []
        finally:
            router.close()


def test_missing_framework_names_the_extra():
    code = (
        "import sys\nsys.modules['haystack'] = None\n"
        "try:\n    import router.integrations.haystack\nexcept ImportError as e:\n"
        "    from router.errors import MissingDependencyError\n"
        "    assert isinstance(e, MissingDependencyError), type(e)\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "rerank-router[haystack]" in out.stdout
