"""``rerank-router serve`` as a real process: two workers sharing a real Redis (spend caps and rpm
exact under concurrency), /metrics added up across workers, and SIGTERM drain with requests in
flight (all answered, decision log intact)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_support import ProcessGateway

from router.service.config import key_digest
from router.testing import Fault, LoopbackRerankServer

DOCS = ["green tea", "black tea", "coffee", "tea and coffee"]
SEARCH_USD = 0.002  # rerank-v3.5, one search


@pytest.fixture
def upstream() -> Iterator[LoopbackRerankServer]:
    with LoopbackRerankServer() as srv:
        yield srv


def _config(upstream: LoopbackRerankServer, tmp_path: Path, *, shared: bool, **service: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backends": {"cohere": {"type": "cohere", "model": "rerank-v3.5", "base_url": upstream.base_url("cohere")}},
        "constraints": {"on_premise": False},
        "budgets": {"latency_ms": 10_000, "max_cost_usd": 0.01},
        "decision_log": {"sink": "jsonl", "path": str(tmp_path / "decisions.jsonl")},
        "service": {
            "tenants": {
                "capped": {"keys": [{"sha256": key_digest("capped-key")}], "spend_caps": {"day_usd": 5 * SEARCH_USD}},
                "limited": {"keys": [{"sha256": key_digest("limited-key")}], "rpm": 4},
                "free": {"keys": [{"sha256": key_digest("free-key")}]},
            },
            **service,
        },
    }
    if shared:
        config["shared_state"] = {"redis_url_env": "REDIS_URL", "key_prefix": f"serve-test-{uuid.uuid4().hex[:8]}"}
    return config


def _access_pids(log: str) -> set[str]:
    return set(re.findall(r"\d\d:\d\d:\d\d,\d+ (\d+) rerank_router\.access", log))


async def _burst(url: str, key: str, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(client.post("/v2/rerank", json=body) for _ in range(n))))


@pytest.fixture(scope="module")
def upstream_m() -> Iterator[LoopbackRerankServer]:
    with LoopbackRerankServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def two_workers(upstream_m, tmp_path_factory, redis_url) -> Iterator[ProcessGateway]:
    """``rerank-router serve --workers 2`` sharing a real Redis, for the tests below."""
    folder = tmp_path_factory.mktemp("two-workers")
    env = {"REDIS_URL": redis_url, "CO_API_KEY": "k"}
    with ProcessGateway(_config(upstream_m, folder, shared=True), folder, workers=2, env=env) as gw:
        yield gw


def test_two_workers_share_spend_caps_and_rpm_through_redis(two_workers, upstream_m):
    gw = two_workers
    before = len(upstream_m.requests)
    answers = asyncio.run(_burst(gw.url, "capped-key", 24, {"model": "cohere", "query": "tea", "documents": DOCS}))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 19, statuses
    assert len(upstream_m.requests) - before == 5
    # rpm, counted across both workers (a fresh connection per request)
    if 60 - time.time() % 60 < 5:
        time.sleep(60 - time.time() % 60 + 0.1)  # not across a minute boundary
    auth = {"Authorization": "Bearer limited-key"}
    rpm = [httpx.post(f"{gw.url}/v2/rerank", json={"query": "t", "documents": DOCS}, headers=auth) for _ in range(8)]
    assert [r.status_code for r in rpm] == [200] * 4 + [429] * 4
    assert len(_access_pids(gw.log())) == 2, "both workers answered"
    log = gw.log()
    assert "capped-key" not in log and "limited-key" not in log and "pw-" not in log  # nor the Redis password


def _scrape(url: str) -> dict[str, Any]:
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return {f.name: f for f in text_string_to_metric_families(client.get(f"{url}/metrics").text)}


def _total(families: dict[str, Any], family: str, suffix: str, **labels: str) -> float:
    if family not in families:
        return 0.0
    return sum(
        s.value
        for s in families[family].samples
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_add_up_across_workers(two_workers):
    gw = two_workers
    before = _scrape(gw.url)
    sent = {("/v2/rerank", "200"): 0, ("/v1/rerank", "200"): 0, ("/v2/rerank", "401"): 0, ("/rerank", "404"): 0}
    with httpx.Client(base_url=gw.url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for i in range(12):
            route, status = list(sent)[i % 4]
            body: dict[str, Any] = {"query": "tea", "documents": DOCS}
            if status == "404":
                body["model"] = "nope"
            headers = {} if status == "401" else {"Authorization": "Bearer free-key"}
            assert client.post(route, json=body, headers=headers).status_code == int(status)
            sent[(route, status)] += 1
    after = _scrape(gw.url)
    for (route, status), n in sent.items():
        delta = _total(after, "rerank_router_requests", "_total", route=route, status=status) - _total(
            before, "rerank_router_requests", "_total", route=route, status=status
        )
        assert delta == n, (route, status)
    assert (
        _total(after, "rerank_router_requests", "_total", tenant="free")
        - _total(before, "rerank_router_requests", "_total", tenant="free")
        == 9
    )
    count = "rerank_router_request_duration_seconds"
    assert _total(after, count, "_count") - _total(before, count, "_count") == 12
    stage = "rerank_router_stage_duration_seconds"
    assert _total(after, stage, "_count", backend="cohere") - _total(before, stage, "_count", backend="cohere") == 6
    cost = _total(after, "rerank_router_billed_cost_usd", "_total", tenant="free")
    assert math.isclose(cost - _total(before, "rerank_router_billed_cost_usd", "_total", tenant="free"), 6 * SEARCH_USD)
    assert "rerank_router_in_flight" in after and "rerank_router_breaker_state" in after
    assert _total(after, "rerank_router_in_flight", "") == 0


def test_sigterm_drains_requests_in_flight(upstream, tmp_path):
    config = _config(upstream, tmp_path, shared=False, drain={"grace_s": 1.5, "timeout_s": 15})
    gw = ProcessGateway(config, tmp_path, workers=2, env={"CO_API_KEY": "k"}).start()
    try:
        upstream.script([Fault.slow(2.5)] * 6)
        answers: list[httpx.Response] = []
        burst = threading.Thread(
            target=lambda: answers.extend(asyncio.run(_burst(gw.url, "free-key", 6, {"query": "tea", "documents": DOCS}))),
        )
        burst.start()
        deadline = time.monotonic() + 10
        while len(upstream.requests) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(upstream.requests) == 6, "six requests in flight"
        gw.terminate()
        time.sleep(0.2)
        assert httpx.get(f"{gw.url}/health/readiness").status_code == 503  # draining, still listening
        burst.join(timeout=20)
        assert gw.proc is not None
        code = gw.proc.wait(timeout=20)
    finally:
        gw.stop()
    assert code == 0, gw.log()
    assert [r.status_code for r in answers] == [200] * 6
    assert all(r.headers["x-rerank-router-degraded"] == "false" for r in answers)
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert len([r for r in records if r["kind"] == "decision"]) == 6
    assert "Traceback" not in gw.log()
