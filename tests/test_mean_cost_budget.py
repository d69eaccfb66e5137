"""The budget across requests (``budgets.mean_cost``): the window and its controller (router.accounting.budget),
the adaptive policy steered by it through a real Router, shared across two Routers in a real Redis, and
falling back to this process's window when Redis is down."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from policies.adaptive import FEATURES, AdaptiveModel, AdaptivePolicy, GainModel
from router import Router
from router.accounting.budget import MeanCostWindow, RedisMeanCostWindow, WindowState, step
from router.budget import BudgetSignal, MeanCostBudget
from router.errors import ConfigError
from router.testing import FakeBackend

STRONG_USD = 0.01
N_DOCS = 30


def _score(query: str, document: str) -> float:
    """The cheap stage: the first candidate leads the second by the gap the query names ("q 17 gap 0.25")."""
    gap = float(query.split()[-1])
    j = int(document.split()[-1])
    if j == 0:
        return 1.0 + gap
    return 1.0 - 0.03 * (j - 1)


def _model() -> AdaptiveModel:
    """Gain 0.1 - 0.05 x (top-1 margin in sd): unsure first stages (small margins) gain, sure ones lose."""
    slopes = tuple(-0.05 if f == "margin_1_2" else 0.0 for f in FEATURES)
    return AdaptiveModel(
        first_stage="cheap",
        mean=(0.0,) * len(FEATURES),
        scale=(1.0,) * len(FEATURES),
        slopes=slopes,
        options=(GainModel(backend="strong", k=10, intercept=0.1),),
        min_gain_per_usd=0.0,
        queries=40,
    )


def _router(budget: dict[str, object] | None, **config: object) -> Router:
    backends = {
        "cheap": FakeBackend("cheap", score=_score),
        "strong": FakeBackend("strong", spec={"pricing": {"scheme": "per_call", "usd": STRONG_USD}, "quality": {"web": 0.9}}),
    }
    cfg: dict[str, object] = {"budgets": {} if budget is None else {"mean_cost": budget}, **config}
    return Router(cfg, backends=backends, policy=AdaptivePolicy(model=_model()))


def _stream(n: int, hard_share: float, seed: int = 0) -> list[tuple[str, bool]]:
    """Queries as (text, hard?): hard ones have a first stage that is unsure (gap 0-0.3), easy ones a sure one."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = rng.random() < hard_share
        gap = rng.uniform(0.0, 0.3) if hard else rng.uniform(2.0, 3.0)
        out.append((f"q {i} gap {gap:.4f}", hard))
    return out


DOCS = [f"doc {j}" for j in range(N_DOCS)]


def _serve(routers: list[Router], stream: list[tuple[str, bool]], **options: object) -> list[tuple[bool, float, str]]:
    """(hard?, cost, escalation note) per request, the stream dealt to the routers in turn."""
    out = []
    for i, (query, hard) in enumerate(stream):
        result = routers[i % len(routers)].rerank(query, DOCS, top_n=10, **options)  # type: ignore[arg-type]
        note = next((n for n in result.explanation.notes if "escalated" in n), "")
        out.append((hard, result.actual_cost_usd or 0.0, note))
    return out


def test_config_takes_one_target_and_a_known_backend():
    assert MeanCostBudget(target_usd=0.001).describe() == "mean cost <= $0.001/request over 200 requests"
    assert MeanCostBudget(share=0.3, of="strong", window_s=60).describe() == "mean cost <= 30% of strong's cost over 60 s"
    for bad in (
        {},
        {"target_usd": 0.1, "share": 0.3, "of": "x"},
        {"share": 0.3},
        {"target_usd": 0.1, "of": "x"},
        {"target_usd": 0.1, "window": True},
    ):
        with pytest.raises(ValueError):
            MeanCostBudget.model_validate(bad)
    with pytest.raises(ConfigError, match=r"budgets\.mean_cost\.of: 'nope' is not a backend"):
        _router({"share": 0.3, "of": "nope"})
    with pytest.raises(ConfigError, match="top-level budgets"):
        Router({"experiment": {"name": "e", "arms": {"a": {"budgets": {"mean_cost": {"target_usd": 0.1}}}}}})


def test_the_controller_raises_the_price_over_target_and_lowers_it_under():
    config = MeanCostBudget(target_usd=1.0, window=10)
    over = under = WindowState()
    for t in range(20):
        over, under = step(over, config, 2.0, 1.0, t), step(under, config, 0.0, 1.0, t)
    assert over.signal(config).multiplier > 2 and under.signal(config).multiplier < 0.5
    assert over.signal(config).window_mean_usd == pytest.approx(2.0) and under.signal(config).target_usd == pytest.approx(1.0)
    timed = MeanCostBudget(target_usd=1.0, window_s=10)
    state = step(step(WindowState(), timed, 5.0, 1.0, 0.0), timed, 0.0, 1.0, 1000.0)  # 100 windows later
    assert state.s == pytest.approx(0.0, abs=1e-9) and state.n == pytest.approx(1.0)


def test_the_mean_stays_within_target_and_the_hardest_queries_get_the_strong_tier():
    target = 0.2 * STRONG_USD  # 35% of the queries are hard and want the strong tier: the budget allows 20%
    router = _router({"target_usd": target, "window": 200})
    stream = _stream(400, 0.35)
    served = _serve([router], stream)
    mean = sum(c for _, c, _ in served) / len(served)
    assert 0.8 * target <= mean <= target + 1e-12
    assert not any(c > 0 for h, c, _ in served if not h)  # easy queries never escalate
    gaps = [(float(q.split()[-1]), c > 0) for (q, h), (_, c, _) in zip(stream, served, strict=True) if h]
    bought = [g for g, paid in gaps if paid]
    refused = [g for g, paid in gaps if not paid]
    assert len(bought) > 0.45 * len(gaps)
    assert sum(bought) / len(bought) < 0.7 * sum(refused) / len(refused)  # the unsurest first stages get the money
    # Unbudgeted, every hard query escalates: the budget is what held the mean down.
    free = _serve([_router(None)], _stream(400, 0.35))
    assert sum(c for _, c, _ in free) / len(free) > 1.5 * target
    router.close()


def test_a_generous_budget_buys_every_hard_query_and_the_ceiling_still_caps():
    router = _router({"target_usd": 1.0, "window": 20})
    served = _serve([router], _stream(60, 0.5))
    assert all((c > 0) == h for h, c, _ in served)  # hard: escalated; easy: not (their predicted gain is negative)
    capped = _serve([router], _stream(40, 1.0, seed=1), max_cost_usd=STRONG_USD / 2)
    assert all(c == 0 for _, c, _ in capped)  # the per-request ceiling is a hard cap on top of the mean
    router.close()


def test_the_explanation_carries_the_budget_line():
    router = _router({"target_usd": 0.02, "window": 20})
    [(_, _, first)] = _serve([router], [("q 0 gap 0.1", True)])
    assert first.startswith("escalated to strong@10: predicted gain") and first.endswith(
        "budget: window empty (no request accounted yet)"
    )
    [(_, _, second)] = _serve([router], [("q 1 gap 0.1", True)])
    assert "; budget: window mean $0.01 vs target $0.02" in second
    plan = router.plan("q 2 gap 0.1", DOCS, top_n=10)
    assert "budget: window mean $" in plan.reason
    tight = _router({"target_usd": 0.002, "window": 20})
    [(_, _, refused)] = _serve([tight], [("q 0 gap 0.1", True)])
    assert refused.startswith("not escalated: the budget window's headroom $0.002 does not cover strong@10 ($0.01)")
    for r in (router, tight):
        r.close()


def test_a_share_of_a_backends_cost_is_the_target_per_request():
    router = _router({"share": 0.25, "of": "strong", "window": 200})
    served = _serve([router], _stream(300, 0.5, seed=3))
    mean = sum(c for _, c, _ in served) / len(served)
    assert 0.7 * 0.25 * STRONG_USD <= mean <= 0.25 * STRONG_USD + 1e-12
    signal = router.budget_window.signal()  # type: ignore[union-attr]
    assert signal.target_usd == pytest.approx(0.25 * STRONG_USD)
    router.close()


def test_routers_share_one_window_in_redis(redis_url: str):
    prefix = f"budget-{random.getrandbits(32)}"
    budget = {"target_usd": 0.2 * STRONG_USD, "window": 200}
    shared = {"shared_state": {"redis_url": redis_url, "key_prefix": prefix}}
    a, b = _router(budget, **shared), _router(budget, **shared)
    assert isinstance(a.budget_window, RedisMeanCostWindow)
    served = _serve([a, b], _stream(300, 0.35, seed=5))
    mean = sum(c for _, c, _ in served) / len(served)
    assert 0.16 * STRONG_USD <= mean <= 0.2 * STRONG_USD + 1e-12  # one window held both routers' mean
    sa, sb = a.budget_window.signal(), b.budget_window.signal()  # type: ignore[union-attr]
    assert sa == sb and sa.note is None  # one window, read alike by both
    local = a.budget_window.local.signal()  # type: ignore[union-attr]
    assert local.requests < sa.requests  # each process's own window saw only its half of the stream
    # Redis's step is the same arithmetic as step(): one window fed the same stream agrees with an in-process one.
    import redis

    client = redis.Redis.from_url(redis_url)
    for config in (MeanCostBudget(target_usd=0.5, window=7), MeanCostBudget(target_usd=0.5, window_s=3.0)):
        now = [0.0]
        remote = RedisMeanCostWindow(config, client=client, key=f"{prefix}:check:{config.window_s}", clock=lambda now=now: now[0])
        mirror = MeanCostWindow(config, clock=lambda now=now: now[0])
        for t, spent in enumerate((0.0, 1.0, 0.2, 3.0, 0.0, 0.7, 2.0)):
            now[0] = 1.5 * t
            remote.observe(spent, 0.5)
            mirror.observe(spent, 0.5)
        got, want = remote.signal(0.5), mirror.signal(0.5)
        assert got.multiplier == pytest.approx(want.multiplier, rel=1e-9)
        assert got.window_mean_usd == pytest.approx(want.window_mean_usd, rel=1e-9)
        assert got.headroom_usd == pytest.approx(want.headroom_usd, rel=1e-9)
    client.close()
    for r in (a, b):
        r.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_falls_back_to_this_processs_window_with_a_note(caplog: pytest.LogCaptureFixture):
    url = f"redis://:secret-pw@127.0.0.1:{_closed_port()}/0"
    router = _router({"target_usd": 0.2 * STRONG_USD, "window": 200}, shared_state={"redis_url": url})
    served = _serve([router], _stream(120, 0.35, seed=7))  # no exception
    notes = [n for _, _, n in served if n]
    assert notes and all("shared budget window unreachable (Redis): this process's window only" in n for n in notes[1:])
    mean = sum(c for _, c, _ in served) / len(served)
    assert 0 < mean <= 0.2 * STRONG_USD + 1e-12  # the local window still holds the mean
    assert "secret-pw" not in caplog.text
    router.close()


def test_signal_describes_itself():
    empty = BudgetSignal(1.0, 0.0, 0.001, 0.0)
    assert empty.describe() == "budget: window empty (no request accounted yet)"
    assert BudgetSignal(1.3, 0.0009, 0.001, 10.0, note="note").describe() == (
        "budget: window mean $0.0009 vs target $0.001 (price x1.3); note"
    )


def test_the_window_is_safe_across_threads():
    config = MeanCostBudget(target_usd=1.0, window=1_000_000)
    window = MeanCostWindow(config)

    async def many() -> None:
        await asyncio.gather(*(asyncio.to_thread(lambda: [window.observe(1.0, 1.0) for _ in range(200)]) for _ in range(8)))

    asyncio.run(many())
    assert window.state.n == pytest.approx(1600, rel=1e-3)


def test_without_a_fitted_model_the_window_caps_the_curve():
    """The curve has no price of a dollar: the window's headroom is its per-request ceiling."""
    for target, strong in ((STRONG_USD / 2, False), (STRONG_USD * 2, True)):
        router = _router({"target_usd": target})
        router.policy = AdaptivePolicy(model=None)
        plan = router.plan("q 0 gap 0.1", DOCS, top_n=10)
        assert "no fitted model; ceiling $" in plan.reason and "(the budget window's headroom): today's curve" in plan.reason
        assert plan.reason.endswith("(applied as the ceiling)")
        assert ("strong" in plan.primary.backends) is strong
        router.close()
