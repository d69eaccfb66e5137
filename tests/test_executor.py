"""Step 5: the executor never loses a document, falls back in plan order and honours the deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specs import CLOSED_API, CascadePolicy

from policies import CheapestPolicy, ConstrainedPolicy, FastestPolicy
from router import BackendError, MalformedResponseError, RateLimitedError, Router, ServerError, Usage
from router.backends.base import Scores
from router.catalog import LatencyParams
from router.latency import LatencyEstimator, predict_latency_ms
from router.plan import RETRIEVER_ORDER
from router.testing import FakeBackend


def table_score(table: dict[str, float]):
    return lambda query, document: table[document]


def docs(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


# -- the permutation invariant, under anything a backend can do ------------------------------------

BEHAVIOURS = {
    "ok": None,
    "runtime": RuntimeError("boom"),
    "value": ValueError("bad value"),
    "key": KeyError("missing"),
    "zero": ZeroDivisionError("division by zero"),
    "timeout": TimeoutError(),
    "oserror": ConnectionResetError("reset by peer"),
    "memory": MemoryError(),
    "rate": RateLimitedError("429", retry_after=1.0),
    "server": ServerError("503"),
    "backend": BackendError("generic"),
}
OVERRIDES = {
    "nan": lambda n: [math.nan] * n,
    "inf": lambda n: [math.inf] * n,
    "-inf": lambda n: [-math.inf] * n,
    "empty": lambda n: [],
    "long": lambda n: [0.5] * (n + 1),
    "none": lambda n: [None] * n,
    "text": lambda n: ["high"] * n,
}
behaviour = st.sampled_from([*BEHAVIOURS, *OVERRIDES])


def scripted(name: str, quality: float, scripts: Sequence[str], table: dict[str, float], n: int) -> FakeBackend:
    def fail(call: int) -> BaseException | None:
        return BEHAVIOURS.get(scripts[call % len(scripts)])

    def override(call: int) -> list[float] | None:
        make = OVERRIDES.get(scripts[call % len(scripts)])
        return None if make is None else make(n)

    return FakeBackend(name, score=table_score(table), fail=fail, scores_override=override, spec={"quality": {"web": quality}})


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    values=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1), min_size=40, max_size=40),
    scripts=st.lists(st.lists(behaviour, min_size=1, max_size=3), min_size=3, max_size=3),
    policy_name=st.sampled_from(["constrained", "cheapest", "fastest", "cascade"]),
    k=st.integers(1, 40),
)
def test_result_is_always_a_permutation(n, values, scripts, policy_name, k):
    texts = docs(n)
    table = dict(zip(texts, values, strict=False))
    backends = {name: scripted(name, q, s, table, n) for name, q, s in zip("abc", (0.9, 0.8, 0.7), scripts, strict=True)}
    policy = {
        "constrained": ConstrainedPolicy(),
        "cheapest": CheapestPolicy(),
        "fastest": FastestPolicy(),
        "cascade": CascadePolicy("c", "a", k),
    }[policy_name]
    router = Router({"backends": {}}, backends=backends, policy=policy, sleep=_no_wait)  # retries never wait
    result = asyncio.run(router.arerank("query", texts))

    assert sorted(result.indices) == list(range(n))
    assert [item.text for item in result.items] == [texts[i] for i in result.indices]
    assert len({item.id for item in result.items}) == n
    assert len(result.top()) == n
    if not any(stage.ok for stage in result.stages):
        assert result.indices == tuple(range(n))
        assert all(item.score is None for item in result.items)
    if result.degraded:
        assert result.degraded_reason
    else:
        assert all(stage.ok for stage in result.stages)
        assert result.degraded_reason is None
    if result.stages and all(s.ok for s in result.stages) and len(result.stages) == 1:
        # One stage on everything: best first, ties in the retriever's order.
        assert result.indices == tuple(sorted(range(n), key=lambda i: -values[i]))
        assert [item.score for item in result.items] == [values[i] for i in result.indices]


@pytest.mark.parametrize("bad", ["nan", "inf", "empty", "long", "none", "text"])
async def test_bad_scores_are_a_backend_failure(make_router, bad):
    strong = FakeBackend("strong", scores_override=lambda call: OVERRIDES[bad](5), spec={"quality": {"web": 0.9}})
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    result = await make_router({"strong": strong, "cheap": cheap}).arerank("doc 3", docs(5))
    assert result.backends == ("cheap",)
    assert result.degraded
    assert result.stages[0].backend == "strong" and not result.stages[0].ok
    assert result.stages[0].error.startswith("strong:")
    if bad in ("nan", "inf"):
        assert "non-finite score" in result.stages[0].error
    if bad in ("empty", "long"):
        assert "scores for 5 documents" in result.stages[0].error


def test_malformed_response_error_names_the_backend():
    error = MalformedResponseError("returned 3 scores for 5 documents", backend="strong")
    assert str(error) == "strong: returned 3 scores for 5 documents"


# -- fallbacks and degradation ----------------------------------------------------------------------


async def test_failing_primary_falls_back(make_router):
    strong = FakeBackend("strong", fail=lambda call: RuntimeError("CUDA out of memory"), spec={"quality": {"web": 0.9}})
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    result = await make_router({"strong": strong, "cheap": cheap}).arerank("doc 3", docs(5))
    assert result.explanation.chosen == "strong"
    assert result.backends == ("cheap",)
    assert result.items[0].index == 3
    assert result.degraded
    assert result.degraded_reason == "strong: RuntimeError: CUDA out of memory; served by cheap"
    assert [(s.backend, s.ok) for s in result.stages] == [("strong", False), ("cheap", True)]
    assert len(strong.calls) == len(cheap.calls) == 1


async def test_backend_errors_keep_their_message(make_router):
    strong = FakeBackend("strong", fail=lambda call: ServerError("HTTP 503", backend="strong"), spec={"quality": {"web": 0.9}})
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    result = await make_router({"strong": strong, "cheap": cheap}).arerank("doc 3", docs(5))
    assert result.degraded_reason == "strong: HTTP 503; served by cheap"


async def test_all_fail_keeps_the_retriever_order(make_router):
    backends = {
        name: FakeBackend(name, fail=lambda call, name=name: OSError(f"{name} down"), spec={"quality": {"web": q}})
        for name, q in (("a", 0.9), ("b", 0.8), ("c", 0.7))
    }
    result = await make_router(backends).arerank("doc 4", docs(6))
    assert result.indices == tuple(range(6))
    assert result.degraded
    assert result.degraded_reason == "a: OSError: a down; b: OSError: b down; c: OSError: c down; kept the retriever's order"
    assert [s.backend for s in result.stages] == ["a", "b", "c"]
    assert result.backends == ()
    assert result.actual_cost_usd == 0  # nothing billed
    assert all(len(b.calls) == 1 for b in backends.values())


async def test_a_fallback_that_fails_too_is_skipped(make_router):
    backends = {
        "a": FakeBackend("a", fail=lambda call: RuntimeError("x"), spec={"quality": {"web": 0.9}}),
        "b": FakeBackend("b", scores_override=lambda call: [math.nan] * 4, spec={"quality": {"web": 0.8}}),
        "c": FakeBackend("c", spec={"quality": {"web": 0.7}}),
    }
    result = await make_router(backends).arerank("doc 2", docs(4))
    assert result.backends == ("c",)
    assert result.items[0].index == 2
    assert [s.ok for s in result.stages] == [False, False, True]
    assert result.degraded_reason.endswith("served by c")


async def test_success_is_not_degraded(make_router):
    result = await make_router({"a": FakeBackend("a", spec={"quality": {"web": 0.9}})}).arerank("doc 2", docs(4))
    assert not result.degraded
    assert result.degraded_reason is None
    assert result.items[0].index == 2
    assert result.items[0].score == 1.0


CHEAP_TABLE = {"doc 0": 0.1, "doc 1": 0.9, "doc 2": 0.5, "doc 3": 0.7, "doc 4": 0.3}
STRONG_TABLE = {"doc 0": 0.0, "doc 1": 0.2, "doc 2": 0.8, "doc 3": 0.4, "doc 4": 0.9}


def cascade_router(make_router, *, strong_fail=None, cheap_fail=None):
    cheap = FakeBackend("cheap", score=table_score(CHEAP_TABLE), fail=cheap_fail, spec={"quality": {"web": 0.6}})
    strong = FakeBackend("strong", score=table_score(STRONG_TABLE), fail=strong_fail, spec={"quality": {"web": 0.9}})
    router = make_router({"cheap": cheap, "strong": strong}, policy=CascadePolicy("cheap", "strong", 3))
    return router, cheap, strong


async def test_cascade_rescores_the_top_k_only(make_router):
    router, _cheap, strong = cascade_router(make_router)
    result = await router.arerank("q", docs(5))
    assert result.explanation.chosen == "cheap@5 -> strong@3"
    assert strong.calls[0][1] == ("doc 1", "doc 3", "doc 2")  # cheap's top 3, in cheap's order
    assert result.indices == (2, 3, 1, 4, 0)
    assert [item.raw_score for item in result.items] == [0.8, 0.4, 0.2, 0.3, 0.1]  # each from its last scorer
    assert [item.scored_by for item in result.items] == ["strong", "strong", "strong", "cheap", "cheap"]
    # the strong stage's 0.2 and the cheap tail's 0.3 rise against the order: pooled to their mean
    assert [item.score for item in result.items] == pytest.approx([0.8, 0.4, 0.25, 0.25, 0.1])
    assert not result.scores_calibrated
    assert result.backends == ("cheap", "strong")
    assert [s.candidates_in for s in result.stages] == [5, 3]
    assert not result.degraded


async def test_later_stage_failure_keeps_the_earlier_order(make_router):
    router, _cheap, strong = cascade_router(make_router, strong_fail=lambda call: RuntimeError("gpu lost"))
    result = await router.arerank("q", docs(5))
    assert result.indices == (1, 3, 2, 4, 0)  # cheap's order
    assert result.degraded
    assert "strong: RuntimeError: gpu lost" in result.degraded_reason
    assert "kept the order of the stages before it" in result.degraded_reason
    assert [(s.backend, s.ok) for s in result.stages] == [("cheap", True), ("strong", False)]
    assert len(strong.calls) == 1  # no fallback run: the order in hand is kept


async def test_first_stage_failure_moves_to_the_next_option(make_router):
    router, _cheap, strong = cascade_router(
        make_router, cheap_fail=lambda call: RuntimeError("cpu on fire") if call == 0 else None
    )
    result = await router.arerank("q", docs(5))
    assert result.explanation.fallbacks[0] == "strong"
    assert result.backends == ("strong",)  # the next option by quality, on all five
    assert strong.calls[0][1] == tuple(docs(5))
    assert result.indices == (4, 2, 3, 1, 0)
    assert result.degraded
    assert result.degraded_reason == "cheap: RuntimeError: cpu on fire; served by strong"


# -- deadline (the one test that really waits) ---------------------------------------------------


@pytest.mark.parametrize("with_fallback", [True, False])
async def test_deadline_cuts_a_slow_backend(make_router, with_fallback):
    budget_ms = 100
    slow = FakeBackend("slow", latency_ms=500, spec={"quality": {"web": 0.9}})  # predicted 0 ms: planned
    backends = {"slow": slow}
    if with_fallback:
        backends["fast"] = FakeBackend("fast", spec={"quality": {"web": 0.5}})
    router = make_router(backends)
    started = time.perf_counter()
    result = await router.arerank("doc 3", docs(5), latency_budget_ms=budget_ms)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert elapsed_ms <= budget_ms + 50
    assert result.latency_ms <= budget_ms + 50
    assert result.degraded
    assert result.stages[0].backend == "slow" and not result.stages[0].ok
    assert result.stages[0].error == "slow: timed out at the deadline"
    assert sorted(result.indices) == list(range(5))
    if with_fallback:
        assert result.backends == ("fast",)
        assert result.items[0].index == 3
        assert result.degraded_reason.endswith("served by fast")
    else:
        assert result.indices == tuple(range(5))
        assert result.degraded_reason.endswith("kept the retriever's order")


async def test_no_fallback_starts_after_the_deadline(make_router, fake_clock):
    # The primary uses up the whole budget (on the fake clock) and fails: no fallback is started.
    slow = FakeBackend(
        "slow", latency_ms=150, sleep=fake_clock.sleep, fail=lambda call: RuntimeError("late"), spec={"quality": {"web": 0.9}}
    )
    other = FakeBackend("other", spec={"quality": {"web": 0.5}})
    router = make_router({"slow": slow, "other": other}, clock=fake_clock)
    result = await router.arerank("q", docs(3), latency_budget_ms=100)
    assert other.calls == []
    assert result.indices == (0, 1, 2)
    assert result.degraded
    assert result.degraded_reason == "slow: RuntimeError: late; deadline reached; kept the retriever's order"


# -- stage reports: predicted and actual --------------------------------------------------------


async def test_stage_report_carries_predicted_and_actual(make_router, fake_clock):
    api = FakeBackend(
        "api",
        spec={**CLOSED_API, "latency": {"overhead_ms": 30}},
        usage=Usage(search_units=2),  # billed more than predicted: the report shows what was billed
        latency_ms=45,
        sleep=fake_clock.sleep,
    )
    router = make_router({"api": api}, clock=fake_clock)
    result = await router.arerank("q", docs(10), max_cost_usd=1)
    (stage,) = result.stages
    assert stage.ok and stage.backend == "api" and stage.model == "api" and stage.candidates_in == 10
    assert stage.predicted_latency_ms == pytest.approx(30)
    assert stage.latency_ms == pytest.approx(45)
    assert stage.predicted_cost_usd == pytest.approx(0.002)
    assert stage.cost_usd == pytest.approx(0.004)
    assert result.predicted_latency_ms == pytest.approx(30)
    assert result.predicted_cost_usd == pytest.approx(0.002)
    assert result.actual_cost_usd == pytest.approx(0.004)
    assert result.latency_ms == pytest.approx(45)


async def test_gpu_hour_cost_comes_from_observed_latency(make_router, fake_clock):
    spec = {"pricing": {"scheme": "per_gpu_hour", "usd": 3.6}, "latency": {"overhead_ms": 10}}  # $1e-6 per ms
    backend = FakeBackend("gpu", spec=spec, latency_ms=40, sleep=fake_clock.sleep)
    result = await make_router({"gpu": backend}, clock=fake_clock).arerank("q", docs(3))
    assert result.stages[0].predicted_cost_usd == pytest.approx(1e-5)
    assert result.stages[0].cost_usd == pytest.approx(4e-5)
    assert result.actual_cost_usd == pytest.approx(4e-5)


async def test_unknown_billed_cost_makes_the_total_unknown(make_router):
    # A per-search-unit backend that reports no units: the price of the call is unknown.
    api = FakeBackend("api", spec=CLOSED_API, usage=Usage())
    result = await make_router({"api": api}).arerank("q", docs(3), max_cost_usd=1)
    assert result.stages[0].cost_usd is None
    assert result.actual_cost_usd is None


async def test_failed_stage_report(make_router, fake_clock):
    spec = {"quality": {"web": 0.9}, "latency": {"overhead_ms": 20}}
    bad = FakeBackend("bad", spec=spec, latency_ms=15, sleep=fake_clock.sleep, fail=lambda call: ValueError("nope"))
    router = make_router({"bad": bad}, clock=fake_clock)
    result = await router.arerank("q", docs(3))
    (stage,) = result.stages
    assert not stage.ok
    assert stage.cost_usd is None
    assert stage.latency_ms == pytest.approx(15)
    assert stage.predicted_latency_ms == pytest.approx(20)
    assert stage.error == "bad: ValueError: nope"


# -- online latency correction ----------------------------------------------------------------------


async def test_latency_correction_moves_toward_observed(make_router, fake_clock):
    spec = {"quality": {"web": 0.9}, "latency": {"per_doc_ms": 1.0}}
    backend = FakeBackend("b", spec=spec, latency_ms=lambda call: 40.0, sleep=fake_clock.sleep)  # 4x the prediction
    router = make_router({"b": backend}, clock=fake_clock)
    before = router.plan("q", docs(10)).primary.estimate.latency_ms
    assert before == pytest.approx(10)

    corrections = []
    for _ in range(25):
        await router.arerank("q", docs(10))
        corrections.append(router.latency.correction("b"))
    assert all(a < b for a, b in itertools.pairwise(corrections))
    assert 1.0 < corrections[0] < 4.0
    assert corrections[-1] == pytest.approx(4.0, rel=0.02)
    assert router.plan("q", docs(10)).primary.estimate.latency_ms == pytest.approx(40, rel=0.02)
    # A prediction for another request size scales by the same factor.
    assert router.plan("q", docs(20)).primary.estimate.latency_ms == pytest.approx(80, rel=0.02)


class ColdStartFake(FakeBackend):
    """Reports its first call as a cold start (it "loaded the model"), as local backends do."""

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        scores = await super().rerank(query, documents)
        return dataclasses.replace(scores, cold_start=len(self.calls) == 1)


async def test_cold_start_calls_do_not_train_the_estimator(make_router, fake_clock):
    spec = {"quality": {"web": 0.9}, "latency": {"per_doc_ms": 1.0}}
    latencies = {0: 5_000.0}  # loading the model: says nothing about scoring
    backend = ColdStartFake("b", spec=spec, latency_ms=lambda call: latencies.get(call, 10.0), sleep=fake_clock.sleep)
    router = make_router({"b": backend}, clock=fake_clock)
    first = await router.arerank("q", docs(10))
    assert first.stages[0].latency_ms == pytest.approx(5_000)
    assert router.latency.correction("b") == 1.0
    await router.arerank("q", docs(10))
    assert router.latency.correction("b") == pytest.approx(1.0)  # 10 ms observed, 10 ms predicted


async def test_failed_calls_do_not_train_the_estimator(make_router, fake_clock):
    spec = {"quality": {"web": 0.9}, "latency": {"per_doc_ms": 1.0}}
    backend = FakeBackend("b", spec=spec, latency_ms=100, sleep=fake_clock.sleep, fail=lambda call: RuntimeError("x"))
    router = make_router({"b": backend}, clock=fake_clock)
    await router.arerank("q", docs(10))
    assert router.latency.correction("b") == 1.0


def test_estimator_unit():
    params = LatencyParams(overhead_ms=10, per_token_ms=1)
    tokens = [5, 5]
    est = LatencyEstimator(alpha=0.5, max_correction=4.0)
    assert est.predict("x", params, tokens) == predict_latency_ms(params, tokens) == 20
    est.observe("x", params, tokens, 80)  # 4x
    assert est.correction("x") == pytest.approx(2.0)  # halfway in log space
    assert est.predict("x", params, tokens) == pytest.approx(40)
    assert est.correction("y") == 1.0  # per backend
    est.observe("x", params, tokens, 20 * 1000)  # clamped to max_correction
    assert est.correction("x") == pytest.approx(math.exp((math.log(2) + math.log(4)) / 2))
    before = est.correction("x")
    est.observe("x", params, tokens, 0)  # nonsense observations are ignored
    est.observe("x", LatencyParams(), tokens, 50)  # nothing to correct when the model predicts 0
    assert est.correction("x") == before
    fast = LatencyEstimator(alpha=0.5)
    fast.observe("x", params, tokens, 5)  # faster machines correct downwards
    assert fast.correction("x") == pytest.approx(0.5)


def test_retriever_order_is_the_last_resort():
    assert RETRIEVER_ORDER == "retriever-order"


async def test_fake_backend_keeps_only_recent_calls_and_passes_the_document_count() -> None:
    seen: list[tuple[int, int]] = []

    def override(call: int, n: int) -> list[float] | None:
        seen.append((call, n))
        return None

    fake = FakeBackend("f", keep_calls=2, scores_override=override)
    for n in range(1, 8):
        await fake.rerank("q", [f"d{i}" for i in range(n)])
    assert fake.call_count == 7 and len(fake.calls) <= 4 and fake.calls[-1][1][-1] == "d6"
    assert seen == [(i, i + 1) for i in range(7)]
