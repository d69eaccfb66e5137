"""Shared state across replicas against a real redis-server (conftest ``redis_url``): breakers,
the atomic half-open probe, the shadow spend cap across threads and processes, outages, secrets."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REDIS_PASSWORD, free_port, reserve_concurrently

from router import Router, ServerError
from router.accounting.spend import RedisSpendCap
from router.config import load_config
from router.resilience import BreakerPolicy, BreakerState, CircuitBreaker
from router.resilience.redis_store import RedisBreakerStore, redis_client
from router.testing import FakeBackend

redis = pytest.importorskip("redis")


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test: tests share one server and never see each other's keys."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    c = redis_client(redis_url)
    yield c
    c.close()


def shared(url: str, prefix: str) -> dict[str, object]:
    return {"shared_state": {"redis_url": url, "key_prefix": prefix}}


def replica(
    make_router: Callable[..., Router], url: str, prefix: str, clock: Callable[[], float], **backends: FakeBackend
) -> Router:
    config = {"default": {"retries": {"attempts": 1}, "breaker": {"failure_threshold": 3, "recovery_s": 30}}}
    return make_router(backends, clock=clock, resilience=config, **shared(url, prefix))


# -- breakers -------------------------------------------------------------------------------------


async def test_failures_through_one_replica_open_the_breaker_the_other_plans_around(make_router, fake_clock, redis_url, prefix):
    api_a = FakeBackend("api", spec={"quality": {"web": 0.9}}, fail=lambda call: ServerError("HTTP 500"))
    api_b = FakeBackend("api", spec={"quality": {"web": 0.9}})
    a = replica(
        make_router, redis_url, prefix, fake_clock, api=api_a, fallback=FakeBackend("fallback", spec={"quality": {"web": 0.6}})
    )
    b = replica(
        make_router, redis_url, prefix, fake_clock, api=api_b, fallback=FakeBackend("fallback", spec={"quality": {"web": 0.6}})
    )
    for _ in range(3):
        assert (await a.arerank("doc 1", ["doc 0", "doc 1"])).backends == ("fallback",)
    fake_clock.now += 10
    result = await b.arerank("doc 1", ["doc 0", "doc 1"])
    assert api_b.calls == []  # replica b never called the backend replica a saw failing
    # Issue 12, finding 10: served around an open breaker is degraded (not the healthy plan).
    assert result.backends == ("fallback",) and result.degraded and "circuit open for api" in (result.degraded_reason or "")
    assert "api: circuit open after 3 consecutive failures; probing again in 20.0 s" in str(result.explanation)

    fake_clock.now += 20  # recovery elapsed: b's next request is the probe, and closes it for both
    assert (await b.arerank("doc 1", ["doc 0", "doc 1"])).backends == ("api",)
    assert a._executor.breakers["api"].status() == (BreakerState.CLOSED, "")


def test_only_one_of_many_concurrent_half_open_probes_is_granted(client, fake_clock, prefix):
    policy = BreakerPolicy(failure_threshold=1, recovery_s=5)
    # 16 replicas: each its own store object and CircuitBreaker, one Redis between them.
    breakers = [
        CircuitBreaker(
            "api",
            policy,
            clock=fake_clock,
            store=RedisBreakerStore(client, prefix=prefix, clock=fake_clock, wall_clock=fake_clock),
        )
        for _ in range(16)
    ]
    breakers[0].on_failure()
    assert all(b.status()[0] is BreakerState.OPEN for b in breakers)
    fake_clock.now += 5
    barrier = threading.Barrier(len(breakers))
    granted: list[bool] = []

    def probe(b: CircuitBreaker) -> None:
        barrier.wait()
        granted.append(b.try_acquire())

    threads = [threading.Thread(target=probe, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 1
    assert breakers[3].status() == (BreakerState.OPEN, "circuit half-open: a probe call is in flight")
    breakers[granted.index(True)].on_failure()  # the probe failed: open again, timer restarted
    assert breakers[5].status()[0] is BreakerState.OPEN and not breakers[5].try_acquire()
    fake_clock.now += 5
    assert breakers[5].try_acquire() and not breakers[6].try_acquire()
    breakers[5].on_success()
    assert all(b.status() == (BreakerState.CLOSED, "") for b in breakers)
    assert client.keys(f"{prefix}:*") == []  # a closed breaker leaves nothing behind


def test_breaker_records_expire(client, fake_clock, prefix):
    store = RedisBreakerStore(client, prefix=prefix, clock=fake_clock, wall_clock=fake_clock, ttl_s=120)
    CircuitBreaker("api", BreakerPolicy(failure_threshold=1), clock=fake_clock, store=store).on_failure()
    assert 0 < client.ttl(f"{prefix}:breaker:api") <= 120


# -- spend cap ------------------------------------------------------------------------------------


class WallClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_spend_cap_holds_and_counts_exactly_across_threads(client, prefix):
    cap = RedisSpendCap(1.0, 3600, client=client, key=f"{prefix}:spend")
    assert reserve_concurrently(cap, 0.003, each=60) == 333  # floor(1.0 / 0.003): exact, no float drift
    assert cap.spent == pytest.approx(0.999, abs=0) and cap.headroom() == pytest.approx(0.001, abs=1e-9)


def test_spend_cap_holds_across_processes(redis_url, prefix, tmp_path: Path):
    script = textwrap.dedent(
        f"""
        import sys
        from router.accounting.spend import RedisSpendCap
        from router.resilience.redis_store import redis_client
        cap = RedisSpendCap(0.5, 3600, client=redis_client(sys.argv[1]), key="{prefix}:spend")
        n = 0
        for _ in range(400):
            if cap.reserve(0.001):
                n += 1
                cap.settle(0.001, 0.001)
        print(n)
        """
    )
    (tmp_path / "worker.py").write_text(script)
    procs = [
        subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), redis_url], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == 500 and all(c > 0 for c in counts)  # 800 tries, the cap lets exactly 500 through
    with redis_client(redis_url) as c:
        assert RedisSpendCap(0.5, 3600, client=c, key=f"{prefix}:spend").spent == pytest.approx(0.5, abs=0)


def test_spend_cap_window_rolls_over_and_keys_expire(client, prefix):
    clock = WallClock(60 * 1000 + 30)
    cap = RedisSpendCap(1.0, 60, client=client, key=f"{prefix}:spend", clock=clock)
    assert cap.reserve(0.6) and not cap.reserve(0.6)
    cap.settle(0.6, 0.5)
    assert cap.spent == 0.5 and cap.headroom() == 0.5
    assert 60_000 < client.pttl(f"{prefix}:spend:1000") <= 120_000  # two windows
    assert cap.reserve(0.4)  # held across the roll-over ...
    clock.now += 60
    assert cap.spent == 0 and cap.headroom() == pytest.approx(0.6)  # ... and still counted in the new window
    assert not cap.reserve(0.7)
    cap.settle(0.4, 0.4)  # released from the window it was made in, spent in this one
    assert cap.spent == pytest.approx(0.4) and cap.headroom() == pytest.approx(0.6)
    assert client.hget(f"{prefix}:spend:1000", "reserved") == b"0"
    with pytest.raises(ValueError, match="negative"):
        cap.reserve(-1)


# -- outages and secrets ----------------------------------------------------------------------------


def shadow_router(config: dict[str, object], tmp_path: Path) -> Router:
    priced = {"quality": {"web": 0.9}, "pricing": {"scheme": "per_call", "usd": 0.01}}
    block = {
        "name": "ab",
        "arms": {"main": {"policy": {"name": "fixed", "params": {"backend": "main"}}}},
        "shadow": {"name": "s", "policy": {"name": "fixed", "params": {"backend": "api"}}, "sample": 1.0, "max_spend_usd": 0.025},
    }
    backends = {"main": FakeBackend("main", spec={"quality": {"web": 0.6}}), "api": FakeBackend("api", spec=priced)}
    return Router({"backends": {}, "experiment": block, **config}, backends=backends)


def test_two_replicas_share_one_shadow_spend_cap(redis_url, prefix, tmp_path):
    routers = [shadow_router(shared(redis_url, prefix), tmp_path) for _ in range(2)]
    try:
        for i in range(5):
            for r in routers:
                r.rerank("tea", ["a", "b"], context={"user": f"u{i}"})
                r.drain()
        shadow_calls = sum(len(r.backends["api"].calls) for r in routers)  # type: ignore[attr-defined]
        assert shadow_calls == 2  # $0.025 across both replicas fits two $0.01 runs, not 2 x 2
    finally:
        for r in routers:
            r.close()


def test_unreachable_redis_keeps_reranking_and_skips_the_shadow(tmp_path, caplog):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    router = shadow_router(shared(url, "down"), tmp_path)
    try:
        with caplog.at_level(logging.DEBUG, logger="rerank_router"):
            for i in range(3):
                result = router.rerank("tea", ["a", "b", "c"], context={"user": f"u{i}"})
                assert sorted(result.indices) == [0, 1, 2] and result.backends == ("main",)
            router.drain()
        assert router.backends["api"].calls == []  # type: ignore[attr-defined]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum("unreachable" in w and "breakers" in w for w in warnings) == 1  # once, not per call
        assert sum("unreachable" in w and "shadow arm s skipped" in w for w in warnings) == 1
        assert REDIS_PASSWORD not in caplog.text
    finally:
        router.close()


def test_the_redis_password_never_shows(redis_url, prefix, caplog):
    config = load_config({"backends": {}, **shared(redis_url, prefix)})
    assert REDIS_PASSWORD not in repr(config) and REDIS_PASSWORD not in str(config)
    assert REDIS_PASSWORD not in config.model_dump_json()
    assert config.shared_state is not None and config.shared_state.redis_url.get_secret_value() == redis_url
    bad = redis_url.replace("redis://", "redis+bogus://")
    with pytest.raises(Exception) as info:
        redis_client(bad)
    assert REDIS_PASSWORD not in str(info.value) and REDIS_PASSWORD not in repr(info.value)
    with pytest.raises(Exception) as invalid:
        load_config({"shared_state": {"redis_url": redis_url, "key_prefix": ""}})
    assert REDIS_PASSWORD not in str(invalid.value)
    with caplog.at_level(logging.DEBUG):
        router = Router({"backends": {}, **shared(redis_url, prefix)}, backends={"main": FakeBackend("main")})
        router.rerank("q", ["a", "b"])
        router.close()
    assert REDIS_PASSWORD not in caplog.text


def test_the_url_comes_from_the_environment_by_default(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    from router import ConfigError
    from router.config import SharedStateConfig

    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable REDIS_URL"):
        SharedStateConfig().url()
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert SharedStateConfig().url().get_secret_value() == redis_url
    assert redis_url not in repr(SharedStateConfig())
    router = Router({"backends": {"bm25": {"type": "lexical"}}, "shared_state": {}})
    assert sorted(router.rerank("tea", ["a tea", "b"]).indices) == [0, 1]
    router.close()
