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
