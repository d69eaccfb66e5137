"""The Voyage backend: the real ``voyageai`` SDK (aiohttp) against the loopback server's Voyage wire format."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import MALFORMED_FAULTS, SERVER_FAULTS, build_remote

from router import Router
from router.backends.voyage import VoyageBackend
from router.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
)
from router.testing import Fault, LoopbackRerankServer, word_overlap
from router.tokens import TokenCounters

KEY = "pa-voyage-test-key-83d1c0"
QUERY = "when was the telescope invented"
DOCS = [
    "the telescope was invented in 1608 in the netherlands",
    "galileo improved the telescope",
    "microscopes magnify small things",
]


def estimated(text: str) -> int:
    return TokenCounters().get("voyage").count([text])[0]


@pytest.fixture(autouse=True)
def server_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The loopback server wants KEY; the backend reads it from VOYAGE_API_KEY."""
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    return KEY


TRANSPORTS = ("aiohttp", "httpx", "sdk")
_transport = ["auto"]


@pytest.fixture(params=TRANSPORTS, autouse=True)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs over each transport: the wire path on aiohttp and on httpx, and the SDK."""
    _transport[0] = request.param
    yield request.param
    _transport[0] = "auto"


def make(server: LoopbackRerankServer, **overrides: object) -> VoyageBackend:
    fields = {"model": "rerank-2.5", "base_url": server.base_url("voyage"), "transport": _transport[0], **overrides}
    return build_remote(VoyageBackend, "voyage", fields)


@pytest.fixture
async def backend(server: LoopbackRerankServer) -> AsyncIterator[VoyageBackend]:
    b = make(server)
    yield b
    await b.aclose()


async def test_scores_in_input_order_and_billed_tokens(backend, server):
    scores = await backend.rerank(QUERY, DOCS)
    assert scores.values == tuple(word_overlap(QUERY, d) for d in DOCS)
    assert scores.usage.tokens == estimated(QUERY) * len(DOCS) + sum(estimated(d) for d in DOCS)
    [request] = server.requests
    assert request.path == "/v1/rerank"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["model"] == "rerank-2.5"
    assert request.json["documents"] == DOCS and request.json["query"] == QUERY
    assert request.json["truncation"] is True
    assert request.json.get("top_k") is None


async def test_connections_are_pooled(backend, server):
    for _ in range(4):
        await backend.rerank(QUERY, DOCS)
    assert len({r.client for r in server.requests}) == 1


FAULTS = [
    (Fault.error(400, "Request body is invalid"), BadRequestError, "Request body is invalid"),
    (Fault.error(401, "Provided API key is invalid."), AuthenticationError, "API key is invalid"),
    (Fault.error(403, "forbidden"), AuthenticationError, "forbidden"),
    (Fault.error(422, "query: field required"), BadRequestError, "field required"),
    (Fault.rate_limited(retry_after=4), RateLimitedError, "429"),
    *SERVER_FAULTS,
    *MALFORMED_FAULTS,
    (Fault.bad_indices("string"), MalformedResponseError, "wrong shape"),
    (Fault.dropped_connection(), ServerError, "connection"),
]


@pytest.mark.parametrize(("fault", "error", "text"), FAULTS)
async def test_each_fault_maps_to_its_typed_error(backend, server, fault, error, text):
    server.script([fault])
    with pytest.raises(error) as info:
        await backend.rerank(QUERY, DOCS)
    assert text in str(info.value)
    assert KEY not in str(info.value)
    assert len(server.requests) == 1  # max_retries=0: the executor owns retries


async def test_rate_limit_carries_retry_after(backend, server):
    server.script([Fault.rate_limited(retry_after=4)])
    with pytest.raises(RateLimitedError) as info:
        await backend.rerank(QUERY, DOCS)
    assert info.value.retry_after == 4.0


async def test_a_slow_response_times_out(server):
    backend = make(server, timeout_s=0.2)
    server.script([Fault.slow(1.5)])
    started = time.monotonic()
    try:
        with pytest.raises(BackendTimeoutError):
            await backend.rerank(QUERY, DOCS)
    finally:
        await backend.aclose()
    assert time.monotonic() - started < 1.2


async def test_an_unreachable_server_is_unavailable(server, monkeypatch):
    backend = make(server, base_url="http://127.0.0.1:9/v1")  # port 9 (discard): nothing listens
    try:
        with pytest.raises(BackendUnavailableError, match="cannot connect"):
            await backend.rerank(QUERY, DOCS)
    finally:
        await backend.aclose()


async def test_missing_key_is_unavailable_naming_the_variable(server, monkeypatch):
    monkeypatch.delenv("VOYAGE_API_KEY")
    backend = make(server)
    assert not backend.availability().ok
    assert "VOYAGE_API_KEY" in backend.availability().reason
    with pytest.raises(AuthenticationError, match="VOYAGE_API_KEY"):
        await backend.rerank(QUERY, DOCS)
    assert server.requests == []


async def test_the_key_never_shows_in_reprs_errors_or_logs(backend, server, caplog):
    caplog.set_level(logging.DEBUG)
    await backend.rerank(QUERY, DOCS)
    server.script([Fault.error(401, "Provided API key is invalid.")])
    with pytest.raises(AuthenticationError) as info:
        await backend.rerank(QUERY, DOCS)
    for text in (repr(backend), repr(backend.config), str(info.value), caplog.text):
        assert KEY not in text
    # A provider echoing the key: the router's message scrubs it (the SDK's own log line would not).
    server.script([Fault.error(401, f"key {KEY} revoked")])
    with pytest.raises(AuthenticationError) as echoed:
        await backend.rerank(QUERY, DOCS)
    assert KEY not in str(echoed.value) and "***" in str(echoed.value)


async def test_over_a_thousand_documents_are_split_and_billed_per_call(backend, server):
    docs = [f"passage {i} about optics and lenses" for i in range(2300)]
    scores = await backend.rerank("lenses", docs)  # the server rejects > 1,000 documents per call
    assert scores.values == tuple(word_overlap("lenses", d) for d in docs)
    assert sorted(len(r.json["documents"]) for r in server.requests) == [300, 1000, 1000]  # concurrent: any order
    q = estimated("lenses")
    assert scores.usage.tokens == q * len(docs) + sum(estimated(d) for d in docs)
    assert scores.usage.requests == 3


async def test_a_token_budget_splits_requests(server):
    backend = make(server, max_request_tokens=60)
    try:
        docs = [f"doc {i} " + "word " * 20 for i in range(10)]  # ~25 tokens each with the query
        scores = await backend.rerank("word", docs)
        assert len(scores.values) == 10
        sizes = [len(r.json["documents"]) for r in server.requests]
        assert sum(sizes) == 10 and len(sizes) > 1
        q = estimated("word")
        for r in server.requests:
            assert sum(q + estimated(d) for d in r.json["documents"]) <= 60 or len(r.json["documents"]) == 1
    finally:
        await backend.aclose()


def _router(server: LoopbackRerankServer) -> Router:
    return Router(
        {
            "backends": {
                "voyage": {
                    "type": "voyage",
                    "model": "rerank-2.5",
                    "base_url": server.base_url("voyage"),
                    "transport": _transport[0],
                }
            }
        }
    )


def test_predicted_cost_equals_billed_cost(server):
    router = _router(server)
    try:
        for n in (1, 10, 300):
            docs = [f"candidate passage {i} " + "about telescopes " * (i % 7) for i in range(n)]
            result = router.rerank(QUERY, docs)
            [stage] = result.stages
            assert stage.ok and stage.cost_usd is not None
            assert stage.predicted_cost_usd == pytest.approx(stage.cost_usd, rel=1e-12)
        assert router.usage.correction("voyage") == 1.0
    finally:
        router.close()


def test_the_token_estimate_corrects_itself_from_billed_tokens():
    # A provider whose tokenizer yields twice the router's estimate.
    def doubled(family: str, text: str) -> int:
        return 2 * TokenCounters().get(family).count([text])[0]

    with LoopbackRerankServer(api_key=KEY, token_counter=doubled) as server:
        router = _router(server)
        try:
            docs = [f"passage {i} on the history of optics" for i in range(50)]
            first = router.rerank(QUERY, docs).stages[0]
            assert first.cost_usd == pytest.approx(2 * (first.predicted_cost_usd or 0), rel=0.02)
            assert router.usage.correction("voyage") == pytest.approx(2.0, rel=0.02)
            second = router.rerank(QUERY, docs).stages[0]
            assert second.predicted_cost_usd == pytest.approx(second.cost_usd, rel=0.02)
        finally:
            router.close()


def test_without_the_sdk_availability_names_the_extra(server, monkeypatch, transport):
    import importlib.util

    if transport != "sdk":
        pytest.skip("the wire path needs no SDK (see test_the_wire_path_needs_no_sdk)")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "voyageai" else real(name, *a))
    availability = make(server).availability()
    assert not availability.ok
    assert "pip install 'rerank-router[voyage]'" in availability.reason


def test_the_wire_path_needs_no_sdk(server, monkeypatch, transport):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "voyageai" else real(name, *a))
    assert make(server).availability().ok is (transport != "sdk")
