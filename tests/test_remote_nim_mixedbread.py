"""NVIDIA NIM (``/v1/ranking``, raw logits) and Mixedbread (``/v1/reranking``) through the real httpx
client against the loopback server: bodies, logit mapping, usage and the documented errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import MALFORMED_FAULTS, SERVER_FAULTS, build_remote

from router.backends.http import WIRE_FORMATS, HttpBackend
from router.backends.remote import ScoreMapping
from router.errors import AuthenticationError, BadRequestError, MalformedResponseError, RateLimitedError
from router.testing import Fault, LoopbackRerankServer, word_overlap

QUERY = "how do vaccines train the immune system"
DOCS = [
    "vaccines train the immune system to recognise a pathogen",
    "the stock market fell on monday",
    "the immune system has innate and adaptive parts",
]
NIM_MODEL = "nvidia/llama-nemotron-rerank-1b-v2"
MXBAI_MODEL = "mixedbread-ai/mxbai-rerank-large-v2"


def nim(server: LoopbackRerankServer, **overrides: Any) -> HttpBackend:
    fields = {"protocol": "nim", "base_url": server.base_url("nim"), "model": NIM_MODEL, **overrides}
    return build_remote(HttpBackend, "nim", fields)


def mixedbread(server: LoopbackRerankServer, **overrides: Any) -> HttpBackend:
    fields = {
        "protocol": "mixedbread",
        "base_url": server.base_url("mixedbread"),
        "model": MXBAI_MODEL,
        "catalog": "mxbai-rerank-large-v2",
        **overrides,
    }
    return build_remote(HttpBackend, "mxbai", fields)


def clipped(p: float) -> float:
    """What sigmoid(logit(p)) gives back from the loopback server, which clips p at 1e-4."""
    return min(max(p, 1e-4), 1 - 1e-4)


async def rerank(backend: HttpBackend, docs: list[str] = DOCS) -> Any:
    try:
        return await backend.rerank(QUERY, docs)
    finally:
        await backend.aclose()


# -- NIM ------------------------------------------------------------------------------------------


async def test_nim_sends_query_text_and_passages_and_maps_logits_with_a_sigmoid(server) -> None:
    backend = nim(server)
    assert backend.score_mapping == ScoreMapping("sigmoid", 1.0)
    scores = await rerank(backend)
    [request] = server.requests
    assert request.path == "/v1/ranking"
    assert request.json == {
        "model": NIM_MODEL,
        "query": {"text": QUERY},
        "passages": [{"text": d} for d in DOCS],
        "truncate": "END",
    }
    assert scores.values == pytest.approx([clipped(word_overlap(QUERY, d)) for d in DOCS], rel=1e-9)
    assert scores.usage.tokens is not None and scores.usage.tokens > 0


async def test_nim_answers_logits_for_any_model_so_an_unknown_one_is_mapped_too(server) -> None:
    backend = nim(server, model="my-org/custom-nim-reranker")
    assert backend.spec.score_scale == "probability"  # no catalog entry ...
    assert backend.score_mapping.kind == "sigmoid"  # ... the protocol says logits
    scores = await rerank(backend)
    assert all(0.0 <= v <= 1.0 for v in scores.values)


async def test_nim_logit_scale_from_the_spec_and_identity_by_config() -> None:
    with LoopbackRerankServer(score=lambda q, d: word_overlap(q, d)) as srv:
        scaled = nim(srv, spec={"logit_scale": 5})
        assert scaled.score_mapping == ScoreMapping("sigmoid", 5.0)
        values = (await rerank(scaled)).values
    logits = [math.log(clipped(word_overlap(QUERY, d)) / (1 - clipped(word_overlap(QUERY, d)))) for d in DOCS]
    assert values == pytest.approx([1 / (1 + math.exp(-z / 5)) for z in logits], rel=1e-9)
    with LoopbackRerankServer() as srv:
        identity = nim(srv, score_mapping="identity")
        with pytest.raises(MalformedResponseError, match="score_mapping: sigmoid"):
            await rerank(identity)  # logits are not probabilities


async def test_nim_truncate_none_refuses_a_pair_over_the_context_with_a_400() -> None:
    # One pair over the 8,192-token context (the catalog's max_tokens_per_doc), as NIM answers it.
    with LoopbackRerankServer(token_counter=lambda family, text: 9000 if text.startswith("long") else 5) as srv:
        strict = nim(srv, truncate="NONE")
        with pytest.raises(BadRequestError, match=r"HTTP 400: Input length 9005 exceeds maximum allowed token size 8192"):
            await rerank(strict, ["long document", "short"])
        cut = await rerank(nim(srv), ["long document", "short"])  # END: the server truncates
    assert len(cut.values) == 2
    assert srv.requests[-1].json["truncate"] == "END"


# -- Mixedbread -----------------------------------------------------------------------------------


async def test_mixedbread_sends_input_and_reads_data_scores_as_they_are(server) -> None:
    backend = mixedbread(server)
    assert backend.score_mapping == ScoreMapping("identity", 1.0)
    assert backend.spec.provider == "mixedbread" and backend.spec.license == "proprietary"
    scores = await rerank(backend)
    [request] = server.requests
    assert request.path == "/v1/reranking"
    assert request.json == {"model": MXBAI_MODEL, "query": QUERY, "input": DOCS, "top_k": len(DOCS), "return_input": False}
    assert scores.values == pytest.approx([word_overlap(QUERY, d) for d in DOCS])
    assert scores.usage.tokens is not None and scores.usage.tokens > 0


async def test_mixedbread_refuses_more_than_1000_inputs_and_the_backend_splits_them(server) -> None:
    backend = mixedbread(server)
    many = [f"vaccines document {i}" for i in range(1001)]
    scores = await rerank(backend, many)  # the catalog's max_documents: 1000 splits the call
    assert len(scores.values) == 1001
    assert sorted(len(r.json["input"]) for r in server.requests) == [1, 1000]
    raw = mixedbread(server, spec={"max_documents": None})
    with pytest.raises(BadRequestError, match="too many documents: 1001 > 1000"):
        await rerank(raw, many)


# -- documented errors, both protocols --------------------------------------------------------------

FAULTS = [
    (Fault.error(401, "invalid api token"), AuthenticationError, "invalid api token"),
    (Fault.error(402, "Insufficient balance"), BadRequestError, "Insufficient balance"),
    (Fault.error(422, "query must not be empty"), BadRequestError, "must not be empty"),
    (Fault.rate_limited(retry_after=60), RateLimitedError, "HTTP 429"),
    *SERVER_FAULTS,
    *MALFORMED_FAULTS,
]


@pytest.mark.parametrize("make", [nim, mixedbread], ids=["nim", "mixedbread"])
@pytest.mark.parametrize(("fault", "error", "text"), FAULTS)
async def test_faults_map_to_typed_errors(server, make, fault, error, text) -> None:
    backend = make(server)
    server.script([fault])
    with pytest.raises(error) as info:
        await rerank(backend)
    assert text in str(info.value)
    if isinstance(info.value, RateLimitedError):
        assert info.value.retry_after == 60.0


async def test_error_bodies_have_each_providers_shape(server) -> None:
    import httpx

    server.script([Fault.rate_limited(retry_after=60), Fault.error(401, "no key")])
    async with httpx.AsyncClient() as client:
        limited = await client.post(f"{server.base_url('mixedbread')}/v1/reranking", json={})
        refused = await client.post(f"{server.base_url('nim')}/v1/ranking", json={})
        invalid = await client.post(f"{server.base_url('nim')}/v1/ranking", json={"query": "not an object"})
    body = limited.json()
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert body["type"] == "too_many_requests_error" and "message" in body and "details" in body
    assert refused.status_code == 401 and refused.json() == {"detail": "no key"}
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["msg"] == "query.text must be a non-empty string"


async def test_a_keyed_api_gets_the_bearer_key(monkeypatch) -> None:
    monkeypatch.setenv("MXBAI_API_KEY", "mx-secret")
    with LoopbackRerankServer(api_key="mx-secret") as srv:
        await rerank(mixedbread(srv, api_key_env="MXBAI_API_KEY"))
        with pytest.raises(AuthenticationError):
            await rerank(mixedbread(srv))
    assert srv.requests[0].headers["authorization"] == "Bearer mx-secret"


def test_the_new_wire_formats_are_in_the_table() -> None:
    assert WIRE_FORMATS["nim"].path == "/v1/ranking" and WIRE_FORMATS["nim"].answers_logits
    assert WIRE_FORMATS["mixedbread"].path == "/v1/reranking" and not WIRE_FORMATS["mixedbread"].passes_model_scores
