"""The gateway's wire formats against a real uvicorn server: the cohere SDK (sync and async) on
/v2/rerank, httpx on the Jina/vLLM, TEI and native shapes, and every error status in each shape."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest
from serve_support import ThreadGateway

from router import Router
from router.testing import FakeBackend, word_overlap

DOCS = ["green tea is not oxidised", "black tea is oxidised", "coffee beans are roasted", "tea and coffee"]
NO_RETRY = {"max_retries": 0}


async def _no_wait(seconds: float) -> None:
    return None


def _router(tmp_path: Path, **service: object) -> Router:
    strong = FakeBackend("strong", spec={"quality": {"web": 0.9}, "model": "acme/strong-reranker"})
    weak = FakeBackend("weak", score=lambda q, d: 0.5, spec={"quality": {"web": 0.3}})
    slow = FakeBackend("slow", latency_ms=300, spec={"quality": {"web": 0.2}})
    config = {
        "backends": {},
        "budgets": {"latency_ms": 2000},
        "limits": {"max_documents": 50},
        "decision_log": {"sink": "jsonl", "path": str(tmp_path / "decisions.jsonl")},
        "service": {"limits": {"max_body_bytes": 20_000, "max_documents": 10, "max_document_chars": 2_000}, **service},
    }
    return Router(config, backends={"strong": strong, "weak": weak, "slow": slow}, sleep=_no_wait)


@pytest.fixture(scope="module")
def gw_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wire")


@pytest.fixture(scope="module")
def gw(gw_folder: Path) -> Iterator[ThreadGateway]:
    router = _router(gw_folder)
    with ThreadGateway(router) as gateway:
        yield gateway
    router.close()


def _expected(query: str, docs: list[str]) -> list[int]:
    scores = [word_overlap(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: -scores[i])


def test_cohere_sdk_sync_gets_a_cohere_answer_with_the_routing_outcome(gw):
    co = cohere.ClientV2(api_key="unused", base_url=gw.url)
    response = co.rerank(model="auto", query="green tea", documents=DOCS, top_n=2)
    assert [r.index for r in response.results] == _expected("green tea", DOCS)[:2]
    assert response.results[0].relevance_score == pytest.approx(1.0)
    assert response.meta.billed_units.search_units == 1
    outcome = response.meta.rerank_router
    assert outcome["backends"] == ["strong"] and outcome["degraded"] is False and outcome["request_id"] == response.id


async def test_cohere_sdk_async_and_a_pinned_model(gw):
    co = cohere.AsyncClientV2(api_key="unused", base_url=gw.url)
    response = await co.rerank(model="weak", query="green tea", documents=DOCS)
    assert response.meta.rerank_router["backends"] == ["weak"]
    assert response.meta.rerank_router["policy"] == "fixed"
    assert sorted(r.index for r in response.results) == list(range(len(DOCS)))
    by_model_id = await co.rerank(model="acme/strong-reranker", query="tea", documents=DOCS)  # a backend's model id
    assert by_model_id.meta.rerank_router["backends"] == ["strong"]


def test_cohere_sdk_maps_every_error_status(gw):
    co = cohere.ClientV2(api_key="unused", base_url=gw.url)
    with pytest.raises(cohere.NotFoundError) as not_found:
        co.rerank(model="rerank-v9", query="tea", documents=DOCS, request_options=NO_RETRY)
    assert "valid models: auto, strong, weak, slow" in not_found.value.body["message"]
    assert "strong" in not_found.value.body["valid_models"]
    with pytest.raises(cohere.BadRequestError) as bad:
        co.rerank(model="auto", query="   ", documents=DOCS, request_options=NO_RETRY)
    assert "query is empty" in bad.value.body["message"]
    with pytest.raises(cohere.UnprocessableEntityError) as many:
        co.rerank(model="auto", query="tea", documents=["d"] * 11, request_options=NO_RETRY)
    assert "over the limit of 10" in many.value.body["message"]
    with pytest.raises(cohere.UnprocessableEntityError) as long_doc:
        co.rerank(model="auto", query="tea", documents=["x" * 2_001], request_options=NO_RETRY)
    assert "over the limit of 2000" in long_doc.value.body["message"]
    with pytest.raises(cohere.core.api_error.ApiError) as too_big:
        co.rerank(model="auto", query="tea", documents=["y" * 2_000] * 10, request_options=NO_RETRY)
    assert too_big.value.status_code == 413 and "over the limit of 20000 bytes" in too_big.value.body["message"]


def test_budget_and_request_id_headers_in_outcome_headers_out(gw):
    r = httpx.post(
        f"{gw.url}/v2/rerank",
        json={"model": "slow", "query": "tea", "documents": DOCS},
        headers={"X-Latency-Budget-Ms": "60", "X-Request-Id": "req-42"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42" and r.json()["id"] == "req-42"
    assert r.headers["x-rerank-router-degraded"] == "true"  # the pinned slow backend cannot make 60 ms
    assert "x-rerank-router-degraded-reason" in r.headers
    assert float(r.headers["x-rerank-router-latency-ms"]) < 250
    ok = httpx.post(
        f"{gw.url}/v2/rerank", json={"model": "auto", "query": "tea", "documents": DOCS}, headers={"X-Max-Cost-Usd": "0"}
    )
    assert ok.headers["x-rerank-router-backends"] == "strong" and ok.headers["x-rerank-router-cost-usd"] == "0.000000"
    bad = httpx.post(f"{gw.url}/v2/rerank", json={"query": "tea", "documents": DOCS}, headers={"X-Latency-Budget-Ms": "soon"})
    assert bad.status_code == 400 and "x-latency-budget-ms" in bad.json()["message"]


def test_jina_vllm_shape(gw):
    r = httpx.post(
        f"{gw.url}/v1/rerank",
        json={"model": "auto", "query": "green tea", "documents": [DOCS[0], {"text": DOCS[1]}, *DOCS[2:]], "top_n": 3},
    )
    assert r.status_code == 200
    body = r.json()
    assert [x["index"] for x in body["results"]] == _expected("green tea", DOCS)[:3]
    assert body["results"][0]["document"] == {"text": DOCS[0]}
    assert body["model"] == "acme/strong-reranker" and body["usage"]["total_tokens"] > 0
    bare = httpx.post(f"{gw.url}/rerank", json={"query": "tea", "documents": DOCS, "return_documents": False}).json()
    assert "document" not in bare["results"][0] and len(bare["results"]) == len(DOCS)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_jina_vllm_errors(gw, path):
    cases = [
        ({"model": "nope", "query": "tea", "documents": DOCS}, 404, "unknown model"),
        ({"query": "tea", "documents": "not a list"}, 422, "documents must be a list"),
        ({"query": "tea", "documents": ["d"] * 11}, 422, "over the limit of 10"),
        ({"query": "", "documents": DOCS}, 400, "query is empty"),
    ]
    for body, status, text in cases:
        r = httpx.post(f"{gw.url}{path}", json=body)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == status and text in error["message"] and {"message", "type", "param", "code"} <= set(error)
    r = httpx.post(f"{gw.url}{path}", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{gw.url}{path}", json={"query": "tea", "documents": ["z" * 1_900] * 11})
    assert r.status_code == 413 and r.json()["error"]["code"] == 413


def test_tei_shape_bare_array_raw_scores_and_text(gw):
    r = httpx.post(f"{gw.url}/rerank", json={"query": "green tea", "texts": DOCS, "return_text": True})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and [x["index"] for x in body] == _expected("green tea", DOCS)
    assert body[0]["text"] == DOCS[body[0]["index"]] and 0 <= body[-1]["score"] <= body[0]["score"] <= 1
    raw = httpx.post(f"{gw.url}/rerank", json={"query": "green tea", "texts": DOCS, "raw_scores": True}).json()
    assert "text" not in raw[0]
    p = body[0]["score"]
    assert raw[0]["score"] == pytest.approx(math.log(min(p, 1 - 1e-6) / (1 - min(p, 1 - 1e-6))), rel=1e-3)


def test_tei_errors(gw):
    cases = [
        ({"query": "tea", "texts": [1, 2]}, 422, "texts must be a list of strings", "Validation"),
        ({"query": "tea", "texts": ["d"] * 11}, 422, "over the limit of 10", "Validation"),
        ({"model": "nope", "query": "tea", "texts": DOCS}, 404, "unknown model", "Validation"),
    ]
    for body, status, text, kind in cases:
        r = httpx.post(f"{gw.url}/rerank", json=body)
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["error"] and r.json()["error_type"] == kind
    # Refused before the body is read, /rerank cannot know a TEI caller yet: vLLM's shape (which also serves /rerank).
    r = httpx.post(f"{gw.url}/rerank", json={"query": "tea", "texts": ["w" * 1_900] * 11})
    assert r.status_code == 413 and "over the limit of 20000 bytes" in r.json()["error"]["message"]


def test_native_endpoint_returns_the_whole_result(gw):
    docs = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(DOCS)]
    r = httpx.post(
        f"{gw.url}/v1/route_rerank",
        json={
            "query": "green tea",
            "documents": docs,
            "top_n": 2,
            "latency_budget_ms": 1500,
            "max_cost_usd": 0.0,
            "constraints": {"blocked_backends": ["strong"]},
            "context": {"domain": "web", "user": "u1"},
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["backends"] == ["weak"]  # strong blocked by the request's own constraint
    assert {i["id"] for i in body["items"]} == {f"d{i}" for i in range(4)} and body["items"][0]["metadata"]["n"] >= 0
    assert body["top_n"] == 2 and body["stages"][0]["backend"] == "weak" and body["degraded"] is False
    assert {"predicted_cost_usd", "actual_cost_usd", "predicted_latency_ms", "degraded_reason", "arm", "request_id"} <= set(body)
    assert body["explanation"]["chosen"] == "weak" and "policy constrained" in body["explanation"]["text"]
    assert any("blocked" in " ".join(o["rejected"]) for o in body["explanation"]["options"])


def test_native_errors(gw):
    cases = [
        ({"query": "tea", "documents": DOCS, "latency_budget_ms": "fast"}, 400, "latency_budget_ms must be a number"),
        ({"query": "tea", "documents": DOCS, "constraints": {"no_such": True}}, 400, "invalid constraints"),
        ({"query": "tea", "documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 400, "share the id"),
        ({"query": "tea", "documents": DOCS, "model": "nope"}, 404, "unknown model"),
        ({"query": "tea", "documents": ["d"] * 11}, 422, "over the limit of 10"),
    ]
    for body, status, text in cases:
        r = httpx.post(f"{gw.url}/v1/route_rerank", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["code"] == status and text in r.json()["error"]["message"]


def test_feedback_joins_the_decision_log(gw, gw_folder):
    r = httpx.post(f"{gw.url}/v1/route_rerank", json={"query": "tea", "documents": DOCS}, headers={"X-Request-Id": "fb-1"})
    assert r.status_code == 200
    f = httpx.post(f"{gw.url}/v1/feedback", json={"request_id": "fb-1", "clicked": ["0"]})
    assert f.status_code == 202
    assert httpx.post(f"{gw.url}/v1/feedback", json={"clicked": ["0"]}).status_code == 400
    gw.router.drain()
    lines = [json.loads(line) for line in (gw_folder / "decisions.jsonl").read_text().splitlines()]
    assert {line["kind"] for line in lines} == {"decision", "feedback"}
    assert all("tea" not in json.dumps(line) for line in lines)  # no query or document text by default


def test_health_endpoints(gw):
    assert httpx.get(f"{gw.url}/health/liveness").json() == {"status": "alive"}
    ready = httpx.get(f"{gw.url}/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    gw.gateway.draining = True
    try:
        assert httpx.get(f"{gw.url}/health/readiness").status_code == 503
    finally:
        gw.gateway.draining = False


def test_import_router_stays_light_and_the_service_package_loads_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, router; assert not [m for m in sys.modules if m.startswith('router.service')], 'router.service'; "
        "import router.service; heavy = {'starlette', 'uvicorn', 'prometheus_client'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_hash_key_prints_a_config_entry():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--hash-key"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    from router.service.config import key_digest

    assert out.stdout.strip() == f"{{sha256: {key_digest('s3cret')}}}"
