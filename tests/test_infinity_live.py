"""The HTTP backend (protocol infinity) against a real Infinity server, when one runs.

Start one on 127.0.0.1:7997 (CPU, offline, tiny random cross-encoder) with::

    eval "$(scripts/start_infinity.sh)"

which exports RERANK_ROUTER_INFINITY_URL and RERANK_ROUTER_INFINITY_MODEL. Without them these tests skip.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router import Router
from router.backends.http import HttpBackend, HttpConfig
from router.backends.registry import build_backend
from router.errors import BadRequestError

URL = os.environ.get("RERANK_ROUTER_INFINITY_URL", "")
MODEL = os.environ.get("RERANK_ROUTER_INFINITY_MODEL", "")

pytestmark = pytest.mark.skipif(
    not URL or not MODEL,
    reason='no live Infinity server: run `eval "$(scripts/start_infinity.sh)"` to set '
    "RERANK_ROUTER_INFINITY_URL and RERANK_ROUTER_INFINITY_MODEL",
)

QUERY = "what is the capital of france"
DOCS = ["paris is the capital of france", "the cat sat on the mat", "a river of water", "hello world", "berlin is in germany"]
# The served model is a tiny cross-encoder: not in the catalog, so say what it is.
SPEC: dict[str, Any] = {"license": "Apache-2.0", "max_tokens_per_doc": 512}


def make(**overrides: Any) -> HttpBackend:
    config = HttpConfig.model_validate({"protocol": "infinity", "base_url": URL, "model": MODEL, "spec": SPEC, **overrides})
    backend = build_backend("infinity", config)
    assert isinstance(backend, HttpBackend)
    return backend


@pytest.fixture
async def backend() -> AsyncIterator[HttpBackend]:
    b = make()
    yield b
    await b.aclose()


async def test_scores_every_document_on_the_unit_scale(backend):
    scores = await backend.rerank(QUERY, DOCS)
    assert len(scores.values) == len(DOCS)
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in scores.values)
    assert scores.usage.requests == 1
    again = await backend.rerank(QUERY, DOCS)
    assert again.values == pytest.approx(scores.values, abs=1e-6)


async def test_split_calls_merge_to_the_same_scores(backend):
    whole = await backend.rerank(QUERY, DOCS)
    split = make(spec={**SPEC, "max_documents": 2})
    try:
        parts = await split.rerank(QUERY, DOCS)
    finally:
        await split.aclose()
    assert parts.usage.requests == 3
    assert parts.values == pytest.approx(whole.values, abs=1e-4)


async def test_raw_scores_through_the_sigmoid_match_the_default_scale(backend):
    plain = await backend.rerank(QUERY, DOCS)
    raw = make(score_mapping="sigmoid")
    try:
        mapped = await raw.rerank(QUERY, DOCS)
    finally:
        await raw.aclose()
    assert mapped.values == pytest.approx(plain.values, abs=1e-5)


async def test_more_documents_than_the_server_takes_are_a_bad_request_unless_split(backend):
    docs = [f"doc {i}" for i in range(2049)]  # Infinity validates at most 2,048 documents
    with pytest.raises(BadRequestError, match="2048"):
        await backend.rerank(QUERY, docs)
    split = make(spec={**SPEC, "max_documents": 1024})
    try:
        scores = await split.rerank(QUERY, docs)
    finally:
        await split.aclose()
    assert len(scores.values) == 2049


def test_through_the_router_every_document_comes_back_once():
    router = Router(
        {
            "constraints": {"on_premise": True},
            "backends": {"infinity": {"type": "http", "protocol": "infinity", "base_url": URL, "model": MODEL, "spec": SPEC}},
        }
    )
    try:
        result = router.rerank(QUERY, DOCS, top_n=3)
        assert sorted(result.indices) == list(range(len(DOCS)))
        assert result.backends == ("infinity",) and not result.degraded
        assert all(item.score is not None for item in result.items)
    finally:
        router.close()
