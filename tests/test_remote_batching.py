"""One batching rule (router.backends.batching.split_request) for cost prediction and for the remote
backends: on large Voyage and Cohere requests, prediction and execution split alike, so the
predicted calls and billed units are the ones the provider bills."""

from __future__ import annotations

import math

import pytest
from conftest import build_remote

from router import Router
from router.backends.batching import split_request
from router.backends.cohere import CohereBackend
from router.backends.voyage import VoyageBackend
from router.cost import predict_usage
from router.testing import LoopbackRerankServer
from router.tokens import TokenCounters

KEY = "batching-key-1"


@pytest.fixture(autouse=True)
def server_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CO_API_KEY", KEY)
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    return KEY


def counts(family: str, texts: list[str]) -> list[int]:
    return TokenCounters().get(family).count(texts)


async def test_a_voyage_request_over_600k_tokens_is_split_as_predicted(server: LoopbackRerankServer) -> None:
    backend = build_remote(VoyageBackend, "voyage", {"model": "rerank-2.5", "base_url": server.base_url("voyage")})
    try:
        docs = [f"passage {i} " + "optics lenses telescope mirror " * 100 for i in range(1000)]  # ~700 tokens each
        query = "who invented the telescope"
        q, doc_tokens = counts("voyage", [query])[0], counts("voyage", docs)
        assert backend.spec.max_request_tokens == 600_000
        assert q * len(docs) + sum(doc_tokens) > 600_000 and len(docs) <= backend.spec.max_documents  # type: ignore[operator]
        predicted = predict_usage(backend.spec, q, doc_tokens)
        scores = await backend.rerank(query, docs)
        sent = sorted(len(r.json["documents"]) for r in server.requests)
        expected = sorted(len(b) for b in split_request(backend.spec, q, doc_tokens))
        assert len(sent) == 2 and sent == expected
        assert predicted.requests == scores.usage.requests == 2
        assert predicted.tokens == scores.usage.tokens
    finally:
        await backend.aclose()


async def test_over_a_thousand_voyage_documents_split_alike(server: LoopbackRerankServer) -> None:
    backend = build_remote(VoyageBackend, "voyage", {"model": "rerank-2.5-lite", "base_url": server.base_url("voyage")})
    try:
        docs = [f"candidate {i} about lenses" for i in range(2500)]
        q, doc_tokens = counts("voyage", ["lenses"])[0], counts("voyage", docs)
        scores = await backend.rerank("lenses", docs)
        assert predict_usage(backend.spec, q, doc_tokens).requests == scores.usage.requests == len(server.requests) == 3
    finally:
        await backend.aclose()


@pytest.mark.parametrize(("n", "max_request_tokens"), [(1500, None), (250, 3000), (100, 1500), (2300, 20_000)])
async def test_cohere_search_units_follow_the_split(server: LoopbackRerankServer, n: int, max_request_tokens: int | None) -> None:
    fields = {"model": "rerank-v3.5", "base_url": server.base_url("cohere"), "max_request_tokens": max_request_tokens}
    backend = build_remote(CohereBackend, "cohere", fields)
    try:
        docs = [f"passage {i} on the history of tea in china and india" for i in range(n)]
        q, doc_tokens = counts("cohere", ["history of tea"])[0], counts("cohere", docs)
        predicted = predict_usage(backend.spec, q, doc_tokens)
        scores = await backend.rerank("history of tea", docs)
        batches = split_request(backend.spec, q, doc_tokens)
        assert sorted(len(r.json["documents"]) for r in server.requests) == sorted(len(b) for b in batches)
        assert predicted.requests == scores.usage.requests == len(batches)
        assert predicted.search_units == scores.usage.search_units == sum(math.ceil(len(b) / 100) for b in batches)
    finally:
        await backend.aclose()


def test_the_router_predicts_the_billed_cost_of_a_split_cohere_request(server: LoopbackRerankServer) -> None:
    config = {"type": "cohere", "model": "rerank-v3.5", "base_url": server.base_url("cohere"), "max_request_tokens": 500}
    router = Router({"backends": {"cohere": config}})
    try:
        docs = [f"passage {i} on the history of tea in china and india" for i in range(100)]  # one unit unsplit
        [stage] = router.rerank("history of tea", docs).stages
        assert stage.ok and len(server.requests) > 1
        assert stage.predicted_cost_usd == stage.cost_usd == pytest.approx(len(server.requests) * 0.002)
    finally:
        router.close()
