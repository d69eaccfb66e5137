"""Provider limits: splitting, merging, validation, truncation, status mapping and score scales."""

from __future__ import annotations

import asyncio
import email.utils
import math

import pytest
from conftest import build_remote
from hypothesis import given
from hypothesis import strategies as st

from router.backends.cohere import CohereBackend
from router.backends.http import HttpConfig
from router.backends.registry import build_backend
from router.backends.remote import (
    PerLoop,
    ScoreMapping,
    error_detail,
    error_for_status,
    parse_retry_after,
    plan_batches,
    scores_from_results,
    truncate_documents,
)
from router.catalog import load_catalog
from router.cost import predict_usage
from router.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BadRequestError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
)
from router.testing import Fault, LoopbackRerankServer, word_overlap
from router.tokens import TokenCounters

KEY = "co-limits-key-0000"


@pytest.fixture(autouse=True)
def server_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The loopback server wants KEY; the Cohere backend reads it from CO_API_KEY."""
    monkeypatch.setenv("CO_API_KEY", KEY)
    return KEY


def cohere(server: LoopbackRerankServer, **overrides: object) -> CohereBackend:
    fields = {"model": "rerank-v4.0-pro", "base_url": server.base_url("cohere"), **overrides}
    return build_remote(CohereBackend, "cohere", fields)


# -- splitting ------------------------------------------------------------------------------------


async def test_2500_documents_make_3_concurrent_calls_merged_in_input_order_and_billed_per_call(server):
    backend = cohere(server)
    docs = [f"passage {i} about {'tea' if i % 7 == 0 else 'weather'} number {i}" for i in range(2500)]
    server.script([Fault.slow(0.3)] * 3)  # each call takes 0.3 s, so concurrent calls overlap on the server
    try:
        scores = await backend.rerank("tea", docs)
    finally:
        await backend.aclose()
    assert [len(r.json["documents"]) for r in sorted(server.requests, key=lambda r: r.json["documents"][0])] == [
        1000,
        1000,
        500,
    ]
    assert server.max_in_flight == 3
    assert scores.values == tuple(word_overlap("tea", d) for d in docs)
    assert scores.usage.search_units == 10 + 10 + 5 and scores.usage.requests == 3
    # the prediction for the same split matches what was billed
    counter = TokenCounters().get("cohere")
    predicted = predict_usage(backend.spec, counter.count(["tea"])[0], counter.count(docs))
    assert predicted.search_units == scores.usage.search_units and predicted.requests == 3


async def test_one_failing_batch_fails_the_request_with_its_typed_error(server):
    backend = cohere(server)
    server.script([None, Fault.rate_limited(retry_after=5)])
    try:
        with pytest.raises(RateLimitedError) as info:
            await backend.rerank("tea", [f"doc {i}" for i in range(1500)])
    finally:
        await backend.aclose()
    assert info.value.retry_after == 5.0


async def test_max_concurrency_bounds_calls_in_flight(server):
    backend = cohere(server, max_concurrency=1)
    server.script([Fault.slow(0.05)] * 3)
    try:
        scores = await backend.rerank("tea", [f"doc {i}" for i in range(2100)])
    finally:
        await backend.aclose()
    assert len(scores.values) == 2100 and server.max_in_flight == 1


async def test_a_self_hosted_max_documents_from_config_splits_too(server, monkeypatch):
    monkeypatch.setenv("VLLM_KEY", KEY)
    backend = build_backend(
        "vllm",
        HttpConfig(
            protocol="vllm-score",
            base_url=server.base_url("vllm"),
            model="BAAI/bge-reranker-v2-m3",
            api_key_env="VLLM_KEY",
            spec={"max_documents": 16},
        ),
    )
    docs = [f"d{i} tea" if i % 2 else f"d{i}" for i in range(40)]
    try:
        scores = await backend.rerank("tea", docs)
    finally:
        await backend.aclose()
    assert sorted(len(r.json["text_2"]) for r in server.requests) == [8, 16, 16]
    assert scores.values == tuple(word_overlap("tea", d) for d in docs)
    assert scores.usage.requests == 3


def test_plan_batches_by_count_and_tokens():
    assert plan_batches([1] * 2500, 1000, None) == [range(0, 1000), range(1000, 2000), range(2000, 2500)]
    assert plan_batches([1] * 5, None, None) == [range(0, 5)]
    assert plan_batches([], 10, None) == [range(0, 0)]
    assert plan_batches([10, 10, 10, 10], None, 25) == [range(0, 2), range(2, 4)]
    assert plan_batches([50, 1, 1], None, 10) == [range(0, 1), range(1, 3)]  # a heavy item goes alone
    assert plan_batches([3, 3, 3, 3, 3], 2, 100) == [range(0, 2), range(2, 4), range(4, 5)]


@given(
    weights=st.lists(st.integers(min_value=1, max_value=50), max_size=300),
    max_docs=st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
    max_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=400)),
)
def test_batches_cover_every_item_once_in_order_within_limits(weights, max_docs, max_tokens):
    batches = plan_batches(weights, max_docs, max_tokens)
    assert [i for b in batches for i in b] == list(range(len(weights)))
    for b in batches:
        if max_docs is not None:
            assert len(b) <= max_docs
        if max_tokens is not None and len(b) > 1:
            assert sum(weights[i] for i in b) <= max_tokens


# -- validation -----------------------------------------------------------------------------------


@given(st.permutations(list(range(12))))
def test_any_permutation_of_results_validates_back_to_input_order(order):
    pairs = [(i, i / 100) for i in order]
    assert scores_from_results(pairs, 12, "b") == [i / 100 for i in range(12)]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(0, 0.1), (1, 0.2), (3, 0.3)], "out of range"),
        ([(0, 0.1), (1, 0.2), (-1, 0.3)], "out of range"),
        ([(0, 0.1), (1, 0.2), (1, 0.3)], "scored twice"),
        ([(0, 0.1), (1, 0.2)], "not scored"),
        ([(0, 0.1), (1, 0.2), ("2", 0.3)], "not an integer"),
        ([(0, 0.1), (1, 0.2), (True, 0.3)], "not an integer"),
        ([(0, 0.1), (1, math.nan), (2, 0.3)], "finite"),
        ([(0, 0.1), (1, None), (2, 0.3)], "finite"),
    ],
)
def test_bad_results_are_malformed(pairs, message):
    with pytest.raises(MalformedResponseError, match=message):
        scores_from_results(pairs, 3, "b")


def test_score_mappings():
    identity, sigmoid = ScoreMapping("identity"), ScoreMapping("sigmoid", 5.0)
    assert identity(0.25, "b") == 0.25 and identity(1.0000000001, "b") == 1.0
    with pytest.raises(MalformedResponseError, match="score_mapping: sigmoid"):
        identity(2.5, "b")
    assert sigmoid(0.0, "b") == 0.5
    assert sigmoid(5.0, "b") == pytest.approx(1 / (1 + math.exp(-1)))
    assert sigmoid(-1e6, "b") == 0.0 and sigmoid(1e6, "b") == 1.0  # no overflow


# -- truncation -----------------------------------------------------------------------------------


async def test_documents_are_cut_to_the_model_context_by_an_estimated_char_budget(server):
    backend = cohere(server, model="rerank-v3.5", max_tokens_per_doc=100)
    long_doc = "tea " * 2000
    try:
        await backend.rerank("tea", ["short", long_doc])
    finally:
        await backend.aclose()
    sent = server.requests[0].json["documents"]
    assert sent[0] == "short"
    assert len(sent[1]) == int(100 * 4.52)  # 100 tokens at the cohere estimate of 4.52 chars/token


def test_truncate_documents():
    assert truncate_documents(["abcdef", "ab"], 3) == ["abc", "ab"]
    assert truncate_documents(["abcdef"], None) == ["abcdef"]


async def test_long_documents_bill_one_search_unit_chunk_each_as_predicted(server):
    """rerank-v3.5 has a 4,096-token context: a 4,096-token document plus the query is two chunks."""
    backend = cohere(server, model="rerank-v3.5")
    docs = ["word " * 30_000] * 60 + ["short passage"] * 30
    try:
        scores = await backend.rerank("a query", docs)
    finally:
        await backend.aclose()
    counter = TokenCounters().get("cohere")
    sent = server.requests[0].json["documents"]
    predicted = predict_usage(backend.spec, counter.count(["a query"])[0], counter.count(sent))
    assert scores.usage.search_units == predicted.search_units == math.ceil((60 * 2 + 30) / 100)


# -- statuses, Retry-After, error bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (404, BadRequestError),
        (413, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (408, BackendTimeoutError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (529, ServerError),
        (200, MalformedResponseError),
    ],
)
def test_error_for_status(status, error):
    err = error_for_status(status, "boom", backend="b", provider="P")
    assert type(err) is error
    assert str(err) == f"b: P returned HTTP {status}: boom"


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "12"}) == 12.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=lambda: now) == pytest.approx(42, abs=1)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 60, usegmt=True)}, now=lambda: now) == 0.0


def test_error_detail_reads_each_providers_error_body():
    assert error_detail({"id": "x", "message": "invalid api token"}) == "invalid api token"  # Cohere
    assert error_detail({"detail": "Provided API key is invalid."}) == "Provided API key is invalid."  # Voyage
    assert error_detail('{"error": {"message": "too long", "code": 400}}') == "too long"  # vLLM / Infinity
    assert error_detail('{"error": "Input validation error", "error_type": "Validation"}') == "Input validation error"  # TEI
    fastapi = {"detail": [{"type": "missing", "loc": ["body", "query"], "msg": "Field required", "input": {}}]}
    assert error_detail(fastapi) == "body.query: Field required"  # FastAPI 422 (Infinity, Voyage)
    assert error_detail(b"upstream connect error") == "upstream connect error"
    assert error_detail(None) == "(empty body)"


# -- the catalog entries this issue adds ------------------------------------------------------------


def test_catalog_has_the_remote_tiers_with_their_pricing_schemes():
    catalog = load_catalog()
    expected = {
        "rerank-v4.0-pro": ("per_search_unit", 0.0025),
        "rerank-v4.0-fast": ("per_search_unit", 0.002),
        "rerank-v3.5": ("per_search_unit", 0.002),
        "rerank-2.5": ("per_token", 5e-08),
        "rerank-2.5-lite": ("per_token", 2e-08),
        "zerank-2": ("per_token", 2.5e-08),
        "mxbai-rerank-large-v2": ("per_token", 1.5e-07),
        "jina-reranker-v3": ("per_token", None),
        "jina-reranker-v2-base-multilingual": ("per_token", None),
        "Qwen/Qwen3-Reranker-4B": ("per_gpu_hour", None),
    }
    for model, (scheme, usd) in expected.items():
        spec = catalog[model]
        assert (spec.pricing.scheme, spec.pricing.usd) == (scheme, usd), model
        assert spec.source
    for model in ("zerank-2", "jina-reranker-v3", "mxbai-rerank-large-v2", "rerank-2.5", "rerank-v4.0-pro"):
        assert catalog[model].data_leaves_premises
    for model in ("Qwen/Qwen3-Reranker-4B", "jinaai/jina-reranker-v3", "zeroentropy/zerank-2"):
        assert not catalog[model].data_leaves_premises


# -- one client per loop ---------------------------------------------------------------------------


async def test_per_loop_clients_are_separate_and_closed():
    closed: list[int] = []
    made = iter(range(100))
    cache: PerLoop[int] = PerLoop(lambda: next(made), lambda c: _record(closed, c))
    first = cache.get()
    assert cache.get() == first

    def other_loop() -> int:
        async def go() -> int:
            return cache.get()

        return asyncio.run(go())

    second = await asyncio.to_thread(other_loop)
    assert second != first
    assert closed == [second]  # asyncio.run's shutdown of the other loop closed that loop's client
    await cache.aclose()
    assert closed == [second, first]
    assert len(cache) == 0


async def _record(closed: list[int], client: int) -> None:
    closed.append(client)


def test_docs_pricing_is_generated_from_the_current_catalog():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("price_table", root / "benchmarks" / "price_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {r["model"]: r["per_1000_queries"] for r in module.table()}
    assert rows["rerank-v4.0-pro"]["1000x500"] == pytest.approx(25.0)  # 10 search units x $0.0025 x 1,000
    assert rows["rerank-2.5"]["100x200"] == pytest.approx((20 * 100 + 200 * 100) * 5e-08 * 1000)
    assert rows["jina-reranker-v3"]["10x200"] == "unknown"
    assert rows["Qwen/Qwen3-Reranker-4B"]["10x200"] == "needs $/GPU-hour"
    assert rows["bm25"]["1000x500"] == 0.0
    current = (root / "docs" / "pricing.md").read_text(encoding="utf-8")
    assert current == module.markdown(module.table()), f"docs/pricing.md is stale: run `{module.COMMAND}`"


def test_a_rate_bucket_left_a_float_residue_over_capacity_still_wakes() -> None:
    """On a clock that only moves when the loop is idle (looptime), aiolimiter's bucket re-armed
    its wake-up at the same instant for ever when leaking left it 1e-13 over capacity."""
    import threading

    import looptime

    from router.resilience.limits import _Bucket

    loop = looptime.new_event_loop(start=180.059002)
    done: list[bool] = []

    async def go() -> None:
        bucket = _Bucket(1000.0, 60)
        await bucket.acquire(1000.0)
        bucket._level = 1.0 + 1e-13  # what float leaks leave behind
        bucket._last_check = asyncio.get_running_loop().time()
        await bucket.acquire(999.0)
        done.append(True)

    thread = threading.Thread(target=lambda: loop.run_until_complete(go()), daemon=True)
    thread.start()
    thread.join(5)
    assert done, "the bucket spun without waking its waiter"
    loop.close()
