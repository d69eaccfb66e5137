"""The Cohere backend: the real ``cohere`` SDK against the loopback server's Cohere v2 wire format."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import MALFORMED_FAULTS, SERVER_FAULTS, build_remote

from router import Router
from router.backends.cohere import CohereBackend
from router.errors import AuthenticationError, BackendError, BackendTimeoutError, BadRequestError, RateLimitedError, ServerError
from router.testing import Fault, LoopbackRerankServer, word_overlap

KEY = "co-test-key-5f1e9a2b7c"
QUERY = "green tea health benefits"
DOCS = [
    "black tea is fermented",
    "green tea has health benefits for the heart",
    "coffee beans are roasted",
    "tea grows on hills",
]


@pytest.fixture(autouse=True)
def server_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The loopback server wants KEY; the backend reads it from CO_API_KEY."""
    monkeypatch.setenv("CO_API_KEY", KEY)
    return KEY


TRANSPORTS = ("aiohttp", "httpx", "sdk")
_transport = ["auto"]


@pytest.fixture(params=TRANSPORTS, autouse=True)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs over each transport: the wire path on aiohttp and on httpx, and the SDK."""
    _transport[0] = request.param
    yield request.param
    _transport[0] = "auto"


def make(server: LoopbackRerankServer, **overrides: object) -> CohereBackend:
    fields = {"model": "rerank-v3.5", "base_url": server.base_url("cohere"), "transport": _transport[0], **overrides}
    return build_remote(CohereBackend, "cohere", fields)


@pytest.fixture
async def backend(server: LoopbackRerankServer) -> AsyncIterator[CohereBackend]:
    b = make(server)
    yield b
    await b.aclose()


async def test_scores_come_back_in_input_order_with_billed_search_units(backend, server):
    scores = await backend.rerank(QUERY, DOCS)
    assert scores.values == tuple(word_overlap(QUERY, d) for d in DOCS)
    assert scores.usage.search_units == 1 and scores.usage.requests == 1
    [request] = server.requests
    assert request.path == "/v2/rerank"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["model"] == "rerank-v3.5"
    assert request.json["query"] == QUERY and request.json["documents"] == DOCS
    assert request.json["top_n"] == len(DOCS)
    assert request.json["max_tokens_per_doc"] == 4096  # the catalog's, sent so Cohere truncates


async def test_search_units_count_one_per_hundred_documents(backend):
    docs = [f"tea passage number {i}" for i in range(250)]
    scores = await backend.rerank("tea", docs)
    assert scores.usage.search_units == 3
    assert len(scores.values) == 250


async def test_max_tokens_per_doc_from_config_is_sent_and_used_for_prediction(server):
    backend = make(server, max_tokens_per_doc=512)
    try:
        await backend.rerank(QUERY, DOCS)
        assert server.requests[0].json["max_tokens_per_doc"] == 512
        assert backend.spec.max_tokens_per_doc == 512
    finally:
        await backend.aclose()


FAULTS = [
    (Fault.error(400, "invalid request: documents must not be empty"), BadRequestError, "documents must not be empty"),
    (Fault.error(401, "invalid api token"), AuthenticationError, "invalid api token"),
    (Fault.error(403, "forbidden"), AuthenticationError, "forbidden"),
    (Fault.error(404, "model not found"), BadRequestError, "model not found"),
    (Fault.error(422, "unprocessable entity"), BadRequestError, "unprocessable"),
    (Fault.rate_limited(retry_after=7), RateLimitedError, "429"),
    *SERVER_FAULTS,
    (Fault.server_error(504), ServerError, "504"),
    *MALFORMED_FAULTS,
    (Fault.dropped_connection(), ServerError, "connection"),
]


@pytest.mark.parametrize(("fault", "error", "text"), FAULTS, ids=lambda v: getattr(v, "__name__", None))
async def test_each_fault_maps_to_its_typed_error(backend, server, fault, error, text):
    server.script([fault])
    with pytest.raises(error) as info:
        await backend.rerank(QUERY, DOCS)
    assert text in str(info.value)
    assert str(info.value).startswith("cohere: ")
    assert KEY not in str(info.value)
    assert len(server.requests) == 1  # the SDK's own retries are off: the executor owns retries


async def test_rate_limit_carries_retry_after_seconds(backend, server):
    server.script([Fault.rate_limited(retry_after=7)])
    with pytest.raises(RateLimitedError) as info:
        await backend.rerank(QUERY, DOCS)
    assert info.value.retry_after == 7.0


async def test_rate_limit_with_an_http_date_retry_after(backend, server):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.script([Fault.rate_limited(retry_after=when)])
    with pytest.raises(RateLimitedError) as info:
        await backend.rerank(QUERY, DOCS)
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


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


async def test_a_wrong_key_is_an_authentication_error(server, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "not-the-key")
    backend = make(server)
    try:
        with pytest.raises(AuthenticationError, match="invalid api token"):
            await backend.rerank(QUERY, DOCS)
    finally:
        await backend.aclose()


async def test_a_missing_key_makes_it_unavailable_naming_the_variable(server, monkeypatch):
    monkeypatch.delenv("CO_API_KEY")
    backend = make(server)
    availability = backend.availability()
    assert not availability.ok
    assert "CO_API_KEY" in availability.reason
    with pytest.raises(AuthenticationError, match="CO_API_KEY"):
        await backend.rerank(QUERY, DOCS)
    assert server.requests == []


async def test_the_key_env_var_is_configurable(server, monkeypatch):
    monkeypatch.delenv("CO_API_KEY")
    monkeypatch.setenv("MY_COHERE_KEY", KEY)
    backend = make(server, api_key_env="MY_COHERE_KEY")
    try:
        assert backend.availability().ok
        assert len((await backend.rerank(QUERY, DOCS)).values) == len(DOCS)
    finally:
        await backend.aclose()


async def test_the_key_never_shows_in_reprs_errors_or_logs(backend, server, caplog):
    caplog.set_level(logging.DEBUG)
    await backend.rerank(QUERY, DOCS)
    server.script([Fault.error(401, f"bad token {KEY}")])  # even a provider echoing the key
    with pytest.raises(AuthenticationError) as info:
        await backend.rerank(QUERY, DOCS)
    assert "***" in str(info.value)
    for text in (repr(backend), repr(backend.config), str(backend.config), str(info.value), repr(info.value), caplog.text):
        assert KEY not in text
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # yet it was sent


async def test_empty_documents_make_no_call(backend, server):
    scores = await backend.rerank(QUERY, [])
    assert scores.values == ()
    assert server.requests == []


def test_one_client_per_event_loop(server):
    """The Router calls from its own loop thread and async callers from theirs: both work."""
    backend = make(server)
    results: list[tuple[float, ...]] = []

    async def go() -> None:
        results.append((await backend.rerank(QUERY, DOCS)).values)
        await backend._clients.aclose_current()  # this loop ends next: close its pooled client

    threads = [threading.Thread(target=asyncio.run, args=(go(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    asyncio.run(go())  # a fresh loop after the others have closed
    assert len(results) == 4 and len(set(results)) == 1
    assert len({r.client for r in server.requests}) == 4  # one connection per loop


def test_router_falls_back_from_a_failing_api_and_keeps_every_document(server):
    router = Router(
        {
            "backends": {
                "cohere": {
                    "type": "cohere",
                    "transport": _transport[0],
                    "model": "rerank-v4.0-pro",
                    "base_url": server.base_url("cohere"),
                    "spec": {"quality": {"web": 0.9}},
                },
                "qwen": {
                    "type": "http",
                    "protocol": "vllm-v2",
                    "base_url": server.base_url("vllm"),
                    "model": "Qwen/Qwen3-Reranker-4B",
                    "api_key_env": "CO_API_KEY",  # the loopback server wants a key from everyone
                },
            }
        }
    )
    try:
        docs = [f"document {i} about {'tea' if i % 3 else 'coffee'}" for i in range(40)]
        server.script([Fault.server_error(503)] * 3)  # every attempt (3 by default) fails
        result = router.rerank("tea", docs)
        assert sorted(result.indices) == list(range(len(docs)))
        assert [s.backend for s in result.stages] == ["cohere", "qwen"]
        assert result.stages[0].attempts == 3
        assert not result.stages[0].ok and "Cohere returned HTTP 503" in (result.stages[0].error or "")
        assert result.stages[1].ok and result.degraded
        assert result.backends == ("qwen",)

        # Retry-After (3 s) would end past the 2 s deadline: no retry, fall back at once.
        server.script([Fault.rate_limited(retry_after=3)])
        limited = router.rerank("tea", docs, latency_budget_ms=2000)
        assert sorted(limited.indices) == list(range(len(docs)))
        assert "429" in (limited.stages[0].error or "") and limited.stages[0].attempts == 1
        assert limited.latency_ms < 2000

        ok = router.rerank("tea", docs)
        assert ok.backends == ("cohere",) and not ok.degraded
        texts = [str(r.explanation) + (r.degraded_reason or "") + repr(r) for r in (result, limited, ok)]
        assert all(KEY not in t for t in texts)
    finally:
        router.close()


def test_predicted_cost_equals_billed_cost(server):
    router = Router(
        {
            "backends": {
                "cohere": {
                    "type": "cohere",
                    "model": "rerank-v4.0-pro",
                    "base_url": server.base_url("cohere"),
                    "transport": _transport[0],
                }
            }
        }
    )
    try:
        for n in (1, 99, 100, 101, 250):
            docs = [f"passage {i} on the history of tea" for i in range(n)]
            result = router.rerank("history of tea", docs)
            [stage] = result.stages
            assert stage.ok
            assert stage.cost_usd == pytest.approx(math.ceil(n / 100) * 0.0025)
            assert stage.predicted_cost_usd == stage.cost_usd
            assert result.actual_cost_usd == result.predicted_cost_usd
    finally:
        router.close()


async def test_unexpected_errors_still_leave_as_backend_errors(backend, monkeypatch):
    def boom(*_: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(backend, "_usage", boom)
    with pytest.raises(BackendError, match="unexpected RuntimeError"):
        await backend.rerank(QUERY, DOCS)


def test_without_the_sdk_availability_names_the_extra(server, monkeypatch, transport):
    import importlib.util

    if transport != "sdk":
        pytest.skip("the wire path needs no SDK (see test_the_wire_path_needs_no_sdk)")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cohere" else real(name, *a))
    availability = make(server).availability()
    assert not availability.ok
    assert "pip install 'rerank-router[cohere]'" in availability.reason


def test_the_wire_path_needs_no_sdk(server, monkeypatch, transport):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cohere" else real(name, *a))
    assert make(server).availability().ok is (transport != "sdk")
