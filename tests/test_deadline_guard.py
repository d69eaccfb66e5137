"""The deadline guard: a floor, raised to a high quantile of recent lateness, capped by budget share."""

from __future__ import annotations

import pytest

from router.deadline import DeadlineGuard


def test_floor_until_anything_is_late() -> None:
    guard = DeadlineGuard(5.0)
    assert guard.guard_ms(1000) == 5.0
    for _ in range(100):
        guard.observe(0.3)
    assert guard.guard_ms(1000) == 5.0


def test_rises_to_the_quantile_of_recent_lateness_and_is_capped_by_the_budget() -> None:
    guard = DeadlineGuard(5.0, quantile=0.99, window=100, max_share=0.2)
    for i in range(100):
        guard.observe(40.0 if i == 99 else 12.0)  # one outlier in 100: p99 lands on it
    assert guard.guard_ms(1000) == 40.0
    assert guard.guard_ms(100) == pytest.approx(20.0)  # 20% of a 100 ms budget
    assert guard.guard_ms(10) == pytest.approx(2.0)


def test_forgets_old_lateness_outside_its_window() -> None:
    guard = DeadlineGuard(5.0, window=10)
    for _ in range(10):
        guard.observe(50.0)
    assert guard.guard_ms(1000) == 50.0
    for _ in range(10):
        guard.observe(1.0)
    assert guard.guard_ms(1000) == 5.0 and guard.samples == 10


def test_negative_lateness_counts_as_on_time() -> None:
    guard = DeadlineGuard(5.0, window=4)
    for _ in range(4):
        guard.observe(-3.0)
    assert guard.guard_ms(1000) == 5.0


def test_rejects_a_quantile_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="quantile"):
        DeadlineGuard(quantile=1.5)


def test_warm_up_freezes_the_start_up_heap_unless_told_not_to() -> None:
    import gc

    from router import Router

    router = Router({"backends": {"bm25": {"type": "lexical"}}})
    gc.unfreeze()
    try:
        router.warm_up(freeze_gc=False)
        assert gc.get_freeze_count() == 0
        router.warm_up()
        assert gc.get_freeze_count() > 1000  # modules and the router leave the collector's full passes
    finally:
        gc.unfreeze()
        router.close()


async def test_long_exact_token_counting_runs_off_the_event_loop() -> None:
    """With a real tokenizer registered, features for many long candidates are computed in a
    worker thread, so other requests' timers on the loop keep firing meanwhile."""
    import threading

    from router import Router
    from router.engine import OFFLOAD_FEATURES_CHARS
    from router.testing import FakeBackend

    threads: list[str] = []

    class SlowExactCounter:
        family = "fake-wordpiece"
        exact = True

        def count(self, texts: list[str]) -> list[int]:
            threads.append(threading.current_thread().name)
            return [len(t) // 4 for t in texts]

    class CountedFake(FakeBackend):
        def token_counter(self) -> SlowExactCounter:  # type: ignore[override]
            return SlowExactCounter()

    fake = CountedFake("f", spec={"tokenizer_family": "fake-wordpiece"})
    router = Router({"backends": {}}, backends={"f": fake})
    short, long = ["a b c"] * 3, ["word " * 1000] * (OFFLOAD_FEATURES_CHARS // 5000 + 1)
    await router.arerank("q", short)  # registers the counter; short: counted inline
    await router.arerank("q", short)
    await router.arerank("q", long)
    loop_thread = threading.current_thread().name
    assert threads[1] == loop_thread and threads[2] != loop_thread
    await router.aclose()
