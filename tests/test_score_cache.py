"""The score cache (router.cache): keys, bounds, TTL, tenants, planning with cached shares,
executor sends only what is missing, coalescing, Redis shared across routers and Redis down."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import REDIS_PASSWORD, free_port
from specs import CascadePolicy

from router import Router
from router.backends.base import Usage
from router.backends.http import HttpConfig
from router.backends.registry import build_backend
from router.cache import CacheConfig, MemoryScoreStore, ScoreCache, fingerprint
from router.cache.memory import ENTRY_OVERHEAD_BYTES
from router.decisions import decision_from_result
from router.errors import ConfigError, InvalidRequestError, ServerError
from router.testing import FakeBackend, LoopbackRerankServer

QUERY = "how do vaccines train the immune system"
DOCS = [f"document {i} on vaccines and the immune system, part {i * 7}" for i in range(12)]
PRICED = {"pricing": {"scheme": "per_search_unit", "usd": 0.002}, "quality": {"web": 0.9}}
ONE_UNIT = Usage(search_units=1)


def api_backend(name: str = "api", **kwargs: Any) -> FakeBackend:
    return FakeBackend(name, spec=PRICED, usage=ONE_UNIT, **kwargs)


def cached_router(make_router: Callable[..., Router], backends: dict[str, Any], **config: Any) -> Router:
    cache = {"enabled": True, **config.pop("cache", {})}
    return make_router(backends, cache=cache, **config)


def scores(result: Any) -> list[tuple[int, float | None]]:
    return [(item.index, item.score) for item in result.items]


# -- results, calls, costs ---------------------------------------------------------------------------


async def test_a_repeat_is_served_from_the_cache_with_the_same_floats_and_no_call(make_router):
    api = api_backend()
    router = cached_router(make_router, {"api": api}, budgets={"max_cost_usd": 0.01})
    first = await router.arerank(QUERY, DOCS)
    second = await router.arerank(QUERY, DOCS)
    assert api.call_count == 1
    assert scores(first) == scores(second)  # the same floats, the same order
    assert (first.cache_hits, first.cache_misses) == (0, len(DOCS))
    assert (second.cache_hits, second.cache_misses) == (len(DOCS), 0)
    assert second.actual_cost_usd == 0.0 and second.predicted_cost_usd == 0.0
    assert second.cache_saved_usd == pytest.approx(0.002)
    stage = second.stages[0]
    assert stage.ok and stage.cached == len(DOCS) and stage.attempts == 0 and stage.saved_usd == pytest.approx(0.002)
    assert "all 12 scores cached" in str(second.explanation)


async def test_results_with_and_without_the_cache_are_identical(make_router):
    plain = make_router({"api": api_backend()})
    cached = cached_router(make_router, {"api": api_backend()})
    warm = [await cached.arerank(QUERY, DOCS[:k]) for k in (4, 8)]  # partial overlaps of the list below
    assert warm[1].cache_hits == 4
    for docs in (DOCS, DOCS[::-1], DOCS[3:]):
        assert scores(await cached.arerank(QUERY, docs)) == scores(await plain.arerank(QUERY, docs))


async def test_the_executor_sends_only_the_missing_documents(make_router):
    with LoopbackRerankServer() as server:
        config = {
            "backends": {
                "api": {"type": "http", "protocol": "tei", "base_url": server.base_url("tei"), "model": "BAAI/bge-reranker-v2-m3"}
            },
            "cache": {"enabled": True, "backends": ["api"]},
        }
        router = Router(config)
        await router.arerank(QUERY, DOCS[:5])
        result = await router.arerank(QUERY, DOCS[:8])
        sent = [r.json["texts"] for r in server.requests]
        assert sent == [DOCS[:5], DOCS[5:8]]
        assert (result.cache_hits, result.cache_misses) == (5, 3)
        again = await router.arerank(QUERY, DOCS[:8])
        assert len(server.requests) == 2 and again.cache_hits == 8
        assert scores(again) == scores(result)
        await router.aclose()


async def test_a_failed_call_loses_no_document_and_caches_nothing(make_router):
    api = api_backend(fail=lambda call: ServerError("boom", backend="api") if call >= 1 else None)
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    router = cached_router(make_router, {"api": api, "cheap": cheap}, budgets={"max_cost_usd": 0.01})
    await router.arerank(QUERY, DOCS[:6])
    result = await router.arerank(QUERY, DOCS)  # 6 cached, the call for the other 6 fails
    assert sorted(result.indices) == list(range(len(DOCS)))
    assert result.degraded and result.backends == ("cheap",)
    assert result.stages[0].cached == 6 and result.stages[0].cache_misses == 6 and not result.stages[0].ok
    assert api.calls[-1][1] == tuple(DOCS[6:])  # retried with the missing six only
    assert router._cache is not None and len(router._cache.store) == 6  # type: ignore[arg-type]


def test_cache_false_neither_reads_nor_writes(make_router):
    api = api_backend()
    router = cached_router(make_router, {"api": api})
    bypass = router.rerank(QUERY, DOCS, cache=False)
    assert bypass.cache_misses == 0 and router._cache is not None and len(router._cache.store) == 0  # type: ignore[arg-type]
    router.rerank(QUERY, DOCS)
    again = router.rerank(QUERY, DOCS, cache=False)
    assert api.call_count == 3 and again.cache_hits == 0
    with pytest.raises(InvalidRequestError, match="cache must be a bool"):
        router.rerank(QUERY, DOCS, cache="no")  # type: ignore[arg-type]


def test_no_document_text_is_stored(make_router):
    router = cached_router(make_router, {"api": api_backend()})
    router.rerank(QUERY, DOCS)
    store = router._cache.store  # type: ignore[union-attr]
    assert isinstance(store, MemoryScoreStore)
    entries = list(store._entries.items())
    assert len(entries) == len(DOCS)
    for key, (score, expires) in entries:
        assert len(key) == 32 and type(score) is float and type(expires) is float
        assert not any(word.encode() in key for word in ("document", "vaccines"))


# -- keys: tenants and fingerprints ---------------------------------------------------------------


def test_tenants_never_read_each_others_scores(make_router):
    api = api_backend()
    router = cached_router(make_router, {"api": api})
    router.rerank(QUERY, DOCS, context={"tenant": "a"})
    other = router.rerank(QUERY, DOCS, context={"tenant": "b"})
    same = router.rerank(QUERY, DOCS, context={"tenant": "a"})
    anonymous = router.rerank(QUERY, DOCS)
    assert (other.cache_hits, same.cache_hits, anonymous.cache_hits) == (0, len(DOCS), 0)
    assert api.call_count == 3

    shared_api = api_backend()
    shared = cached_router(make_router, {"api": shared_api}, cache={"scope": "shared"})
    shared.rerank(QUERY, DOCS, context={"tenant": "a"})
    assert shared.rerank(QUERY, DOCS, context={"tenant": "b"}).cache_hits == len(DOCS)


def test_the_query_is_part_of_the_key(make_router):
    router = cached_router(make_router, {"api": api_backend()})
    router.rerank(QUERY, DOCS)
    assert router.rerank(QUERY + "?", DOCS).cache_hits == 0


def http_backend(**fields: Any) -> Any:
    base = {"protocol": "vllm-v2", "base_url": "http://gpu:8000", "model": "Qwen/Qwen3-Reranker-4B"}
    return build_backend("gpu", HttpConfig.model_validate({**base, **fields}))


@pytest.mark.parametrize(
    "change",
    [
        {"model": "BAAI/bge-reranker-v2-m3"},
        {"instruction": "Judge relevance for legal search"},
        {"template": "none"},
        {"truncate_prompt_tokens": 512},
        {"score_mapping": "sigmoid"},
        {"spec": {"max_tokens_per_doc": 1024}},
        {"spec": {"score_scale": "logit"}},
    ],
)
def test_what_changes_a_score_changes_the_fingerprint(change):
    assert fingerprint(http_backend(**change)) != fingerprint(http_backend())


@pytest.mark.parametrize(
    "change", [{"timeout_s": 5}, {"max_concurrency": 2}, {"spec": {"pricing": {"scheme": "per_call", "usd": 1}}}]
)
def test_what_only_changes_the_call_keeps_the_fingerprint(change):
    assert fingerprint(http_backend(**change)) == fingerprint(http_backend())


def test_cache_version_changes_every_fingerprint():
    assert fingerprint(http_backend(), "2") != fingerprint(http_backend(), "")


# -- the store: LRU bounds and TTL -----------------------------------------------------------------


def test_lru_is_bounded_in_entries_and_keeps_what_was_read():
    store = MemoryScoreStore(max_entries=3, max_bytes=1 << 20, ttl_s=60)
    store.put_many([(b"a", 0.1), (b"b", 0.2), (b"c", 0.3)])
    assert store.get_many([b"a"]) == [0.1]  # a is now the most recently used
    store.put_many([(b"d", 0.4)])
    assert len(store) == 3 and store.get_many([b"a", b"b", b"c", b"d"]) == [0.1, None, 0.3, 0.4]
    assert store.evictions == 1


def test_lru_is_bounded_in_bytes():
    per_entry = ENTRY_OVERHEAD_BYTES + 32
    store = MemoryScoreStore(max_entries=1_000_000, max_bytes=10 * per_entry, ttl_s=60)
    store.put_many([(i.to_bytes(32, "big"), float(i)) for i in range(100)])
    assert len(store) == 10 and store.size_bytes <= 10 * per_entry
    assert store.get_many([(99).to_bytes(32, "big"), (0).to_bytes(32, "big")]) == [99.0, None]


def test_entries_expire_after_the_ttl(make_router, fake_clock):
    api = api_backend()
    router = cached_router(make_router, {"api": api}, clock=fake_clock, cache={"ttl_s": 60})
    router.rerank(QUERY, DOCS)
    fake_clock.advance(59)
    assert router.rerank(QUERY, DOCS).cache_hits == len(DOCS)
    fake_clock.advance(2)
    assert router.rerank(QUERY, DOCS).cache_hits == 0
    assert api.call_count == 2


# -- which backends, config ---------------------------------------------------------------------------


def test_by_default_priced_and_remote_tiers_are_cached_and_lexical_never(make_router):
    free = FakeBackend("free", spec={"quality": {"web": 0.5}})
    remote = http_backend()
    cache = ScoreCache(
        CacheConfig(enabled=True),
        {"free": free, "api": api_backend(), "gpu": remote},
        MemoryScoreStore(max_entries=10, max_bytes=10_000, ttl_s=1),
    )
    assert set(cache.fingerprints) == {"api", "gpu"}
    router = Router({"backends": {"bm25": {"type": "lexical"}}, "cache": {"enabled": True}})
    assert router._cache is not None and not router._cache.fingerprints
    router.close()
    with pytest.raises(ConfigError, match=r"cache\.backends: nope is not a backend"):
        make_router({"api": api_backend()}, cache={"enabled": True, "backends": ["nope"]})


def test_the_cache_is_off_by_default(make_router):
    api = api_backend()
    router = make_router({"api": api})
    router.rerank(QUERY, DOCS)
    result = router.rerank(QUERY, DOCS)
    assert router._cache is None and api.call_count == 2 and result.cache_hits == 0


# -- planning ------------------------------------------------------------------------------------------


def test_a_fully_cached_priced_tier_is_planned_at_zero_and_chosen_under_a_ceiling_that_refuses_it(make_router):
    api = api_backend()
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    router = cached_router(make_router, {"api": api, "cheap": cheap})
    refused = router.rerank(QUERY, DOCS, max_cost_usd=0.0)
    assert refused.backends == ("cheap",)
    router.rerank(QUERY, DOCS, max_cost_usd=0.01)  # fills the cache
    plan = router.plan(QUERY, DOCS, max_cost_usd=0.0)
    assert plan.primary.name == "api" and plan.primary.estimate.cost_usd == 0.0 and plan.primary.estimate.latency_ms == 0.0
    served = router.rerank(QUERY, DOCS, max_cost_usd=0.0)
    assert served.backends == ("api",) and served.actual_cost_usd == 0.0 and api.call_count == 1


def test_a_later_stage_whose_documents_turn_out_uncached_is_not_called_past_the_ceiling(make_router):
    """The plan assumes a cascade's strong stage gets the documents it cached (the cheap stage
    ranks as before); here the cheap stage ranks the other way round the second time."""
    strong = api_backend("strong")
    n = len(DOCS)
    cheap = FakeBackend(
        "cheap",
        spec={"quality": {"web": 0.5}},
        scores_override=lambda call, k: [(i if call else k - i) / k for i in range(k)],
    )
    router = cached_router(make_router, {"cheap": cheap, "strong": strong}, policy=CascadePolicy("cheap", "strong", 4))
    router.rerank(QUERY, DOCS, max_cost_usd=0.01)  # strong scored (and cached) documents 0-3
    plan = router.plan(QUERY, DOCS, max_cost_usd=0.0)
    assert plan.primary.name == "cheap@12 -> strong@4" and plan.primary.estimate.cost_usd == 0.0
    result = router.rerank(QUERY, DOCS, max_cost_usd=0.0)  # the cheap stage now puts 8-11 on top
    assert strong.call_count == 1 and result.actual_cost_usd == 0.0
    assert sorted(result.indices) == list(range(n)) and result.indices[:4] == (n - 1, n - 2, n - 3, n - 4)
    assert result.degraded and "over the $0.000000 left under the cost ceiling" in (result.degraded_reason or "")


def test_a_cascade_whose_strong_stage_is_cached_costs_nothing(make_router):
    strong = api_backend("strong")
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    router = cached_router(make_router, {"cheap": cheap, "strong": strong}, policy=CascadePolicy("cheap", "strong", 5))
    first = router.rerank(QUERY, DOCS)
    second = router.rerank(QUERY, DOCS)
    assert first.backends == second.backends == ("cheap", "strong")
    assert strong.call_count == 1 and second.predicted_cost_usd == 0.0 and second.cache_hits == 5
    assert scores(first) == scores(second)


# -- coalescing ------------------------------------------------------------------------------------------


async def test_identical_concurrent_requests_make_one_backend_call(make_router):
    api = api_backend(latency_ms=30)
    router = cached_router(make_router, {"api": api})
    results = await asyncio.gather(*(router.arerank(QUERY, DOCS) for _ in range(32)))
    assert api.call_count == 1
    assert len({tuple(scores(r)) for r in results}) == 1
    assert sum(r.stages[0].coalesced for r in results) == 31
    assert sum(r.actual_cost_usd or 0.0 for r in results) == pytest.approx(0.002)


async def test_followers_survive_the_leaders_cancellation(make_router):
    api = api_backend(latency_ms=50)
    router = cached_router(make_router, {"api": api})
    leader = asyncio.create_task(router.arerank(QUERY, DOCS))
    while api.call_count == 0:
        await asyncio.sleep(0.001)
    followers = [asyncio.create_task(router.arerank(QUERY, DOCS)) for _ in range(4)]
    await asyncio.sleep(0.005)
    leader.cancel()
    done = await asyncio.wait_for(asyncio.gather(*followers), timeout=5)
    assert leader.cancelled()
    assert api.call_count == 1 and all(r.backends == ("api",) and not r.degraded for r in done)
    assert router.rerank(QUERY, DOCS).cache_hits == len(DOCS)  # the shared call still wrote its scores


async def test_coalescing_is_per_tenant_and_can_be_turned_off(make_router):
    api = api_backend(latency_ms=20)
    router = cached_router(make_router, {"api": api})
    await asyncio.gather(*(router.arerank(QUERY, DOCS, context={"tenant": t}) for t in ("a", "b")))
    assert api.call_count == 2
    off = api_backend(latency_ms=20)
    separate = cached_router(make_router, {"api": off}, cache={"coalesce": False})
    await asyncio.gather(*(separate.arerank(QUERY, DOCS) for _ in range(3)))
    assert off.call_count == 3


# -- records -------------------------------------------------------------------------------------------


def test_the_decision_record_and_metrics_count_hits_and_savings(make_router):
    router = cached_router(make_router, {"api": api_backend()})
    router.rerank(QUERY, DOCS)
    result = router.rerank(QUERY, DOCS)
    record = decision_from_result(
        result, query=QUERY, latency_budget_ms=None, max_cost_usd=None, domain="web", top_k=3, include_text=False, timestamp=0.0
    )
    assert (record.cache_hits, record.cache_misses) == (len(DOCS), 0)
    assert record.cache_saved_usd == pytest.approx(0.002) and record.stages[0].cached == len(DOCS)
    pytest.importorskip("prometheus_client")
    from router.service.metrics import Metrics

    metrics = Metrics()
    metrics.observe("native", 200, "t", 0.01, result, None)
    text = metrics.exposition().decode()
    assert 'rerank_router_cache_hits_total{backend="api",tenant="t"} 12.0' in text
    assert 'rerank_router_cache_saved_usd_total{backend="api",tenant="t"} 0.002' in text


# -- Redis shared across routers, and Redis down ---------------------------------------------------------


def redis_config(url: str, prefix: str, **cache: Any) -> dict[str, Any]:
    return {"shared_state": {"redis_url": url, "key_prefix": prefix}, "cache": {"enabled": True, **cache}}


def test_two_routers_share_scores_through_redis(make_router, redis_url):
    import redis

    prefix = f"t-{uuid.uuid4().hex[:12]}"
    api_a, api_b = api_backend(), api_backend()
    a = make_router({"api": api_a}, **redis_config(redis_url, prefix))
    b = make_router({"api": api_b}, **redis_config(redis_url, prefix))
    first = a.rerank(QUERY, DOCS)
    second = b.rerank(QUERY, DOCS)
    assert api_b.call_count == 0 and second.cache_hits == len(DOCS)
    assert scores(first) == scores(second)
    client = redis.Redis.from_url(redis_url)
    keys = client.keys(f"{prefix}:score:*")
    assert len(keys) == len(DOCS)
    for key in keys:
        value = client.get(key)
        assert isinstance(value, bytes) and len(value) == 8  # the float's bytes, no text
        assert 0 < client.pttl(key) <= 3_600_000
    client.close()
    other_version = make_router({"api": api_backend()}, **redis_config(redis_url, prefix, version="2"))
    assert other_version.rerank(QUERY, DOCS).cache_hits == 0


def test_redis_down_reads_as_misses_and_the_request_is_served(make_router, caplog):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    api = api_backend()
    router = make_router({"api": api}, **redis_config(url, "down"))
    with caplog.at_level(logging.WARNING, logger="rerank_router"):
        first = router.rerank(QUERY, DOCS)
        second = router.rerank(QUERY, DOCS)
    assert first.backends == ("api",) and not first.degraded
    assert second.cache_hits == len(DOCS)  # this process's own store still serves
    assert "score cache kept in this process only" in caplog.text
    assert REDIS_PASSWORD not in caplog.text and REDIS_PASSWORD not in repr(router._cache)


# -- the invariants with the cache, over random streams ---------------------------------------------------

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_request = st.tuples(
    st.lists(st.integers(0, len(DOCS) - 1), min_size=1, max_size=8, unique=True),  # which documents
    st.sampled_from([None, 0.0, 0.0005, 0.001, 0.002, 0.01]),  # ceiling
    st.booleans(),  # cache on for this call
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(requests=st.lists(_request, min_size=1, max_size=6), failing=st.sets(st.integers(0, 12), max_size=3))
def test_invariants_with_the_cache_no_document_lost_ceiling_held_scores_unchanged(requests, failing):
    per_token = {"pricing": {"scheme": "per_token", "usd": 4e-6}, "quality": {"web": 0.9}}
    strong = FakeBackend(
        "strong",
        spec=per_token,
        usage=Usage(tokens=40),  # under what is predicted for any list: billed <= planned
        fail=lambda call: ServerError("down", backend="strong") if call in failing else None,
    )

    def cheap() -> FakeBackend:
        return FakeBackend("cheap", spec={"quality": {"web": 0.5}})

    policy = {
        "name": "constrained",
        "params": {"cascade_k": [3], "saturation_k": 3},
    }  # a real planner: cascades, single tiers, the ceiling
    router = Router({"backends": {}, "policy": policy, "cache": {"enabled": True}}, backends={"strong": strong, "cheap": cheap()})
    plain = Router(
        {"backends": {}, "policy": policy},
        backends={"strong": FakeBackend("strong", spec=per_token, usage=Usage(tokens=40)), "cheap": cheap()},
    )
    seen: set[str] = set()
    try:
        for picks, ceiling, use_cache in requests:
            docs = [DOCS[i] for i in picks]
            result = router.rerank(QUERY, docs, top_n=2, max_cost_usd=ceiling, cache=use_cache)
            seen.add(result.explanation.chosen)
            assert sorted(result.indices) == list(range(len(docs)))
            assert ceiling is None or (result.actual_cost_usd or 0.0) <= ceiling + 1e-12
            assert ceiling is None or (result.predicted_cost_usd or 0.0) <= ceiling + 1e-12
            if not result.degraded:
                expected = plain.rerank(QUERY, docs, top_n=2, max_cost_usd=1.0)
                if result.backends == expected.backends and len(result.stages) == len(expected.stages):
                    assert scores(result) == scores(expected)
    finally:
        router.close()
        plain.close()
    event(f"options: {' / '.join(sorted(seen))}")


async def test_a_follower_calls_on_its_own_when_the_leaders_deadline_cut_the_shared_call(make_router):
    api = api_backend(latency_ms=60)
    router = cached_router(make_router, {"api": api})
    leader = asyncio.create_task(router.arerank(QUERY, DOCS, latency_budget_ms=30))
    while api.call_count == 0:
        await asyncio.sleep(0.001)
    follower = await router.arerank(QUERY, DOCS, latency_budget_ms=5_000)
    cut = await leader
    assert cut.degraded and not cut.stages[0].ok
    assert follower.backends == ("api",) and not follower.degraded and not follower.stages[0].coalesced
    assert api.call_count == 2


def test_the_gateways_native_format_passes_cache_false_through():
    pytest.importorskip("starlette")
    from router.service.wire import WireError, parse

    body = {"query": QUERY, "documents": DOCS[:2]}
    assert parse("native", {**body, "cache": False}).cache is False
    assert parse("native", body).cache is None
    with pytest.raises(WireError, match="cache must be true or false"):
        parse("native", {**body, "cache": "no"})
