"""Frontier summaries and threshold calibration: pure functions with known answers."""

from __future__ import annotations

import math

import pytest

from policies.cascade import cascade_quality
from router.offline.calibration import fit_constrained
from router.offline.evaluation.frontier import Point, apgr, cost_to_reach, curve, pareto_frontier, pgr, strong_and_weak
from router.offline.fitting import calibrate_margin_threshold, calibrate_tradeoff, fit_saturation_k

WEAK = Point("weak", 0.0, 0.5)
STRONG = Point("strong", 1.0, 0.7)


def test_pareto_frontier_drops_dominated_points():
    points = [Point("a", 0.0, 0.5), Point("b", 0.3, 0.6), Point("c", 0.4, 0.55), Point("d", 0.3, 0.58), Point("e", 0.9, 0.72)]
    assert [p.label for p in pareto_frontier(points)] == ["a", "b", "e"]


def test_strong_is_the_best_tier_and_weak_the_cheapest():
    tiers = [Point("bm25", 0.0, 0.50), Point("bi", 0.0, 0.64), Point("vic", 0.005, 0.667), Point("gpt", 0.009, 0.68)]
    strong, weak = strong_and_weak(tiers)
    assert (strong.label, weak.label) == ("gpt", "bi")


def test_apgr_on_a_known_curve():
    # Curve: (0, .5) -> (.2, .65) -> (.5, .70), flat to 1. PGR = (q - .5) / .2: 0, .75, 1, 1.
    # Area: .2 * (0 + .75) / 2 + .3 * (.75 + 1) / 2 + .5 * 1 = .075 + .2625 + .5
    points = [Point("p0", 0.0, 0.5), Point("p1", 0.2, 0.65), Point("p2", 0.5, 0.7), Point("worse", 0.6, 0.6)]
    assert apgr(points, STRONG, WEAK) == pytest.approx(0.8375)


def test_random_mixing_of_weak_and_strong_scores_one_half():
    assert apgr([WEAK, STRONG], STRONG, WEAK) == pytest.approx(0.5)


def test_apgr_credits_the_weak_tier_below_a_policys_cheapest_point_and_can_exceed_one():
    # Starts at cost .5 with quality .8 (beats the strong tier): PGR 0 on [0, .5), 1.5 on [.5, 1].
    assert apgr([Point("late", 0.5, 0.8)], STRONG, WEAK) == pytest.approx(0.75)
    assert curve([Point("late", 0.5, 0.8)], WEAK)[:2] == [(0.0, 0.5), (0.5, 0.5)]
    assert pgr(0.8, STRONG, WEAK) == pytest.approx(1.5)


def test_cost_to_reach_interpolates_between_frontier_points():
    points = [Point("p0", 0.0, 0.5), Point("p1", 0.2, 0.65), Point("p2", 0.5, 0.7)]
    assert cost_to_reach(points, 0.95 * STRONG.quality, WEAK) == pytest.approx(0.29)  # .665: 30% of the way .2 -> .5
    assert cost_to_reach(points, 0.5 + 0.95 * 0.2, WEAK) == pytest.approx(0.44)  # 95% PGR = .69
    assert cost_to_reach(points, 0.5, WEAK) == 0.0
    assert cost_to_reach(points, 0.71, WEAK) is None


def test_no_gap_means_no_apgr():
    assert math.isnan(apgr([WEAK], Point("s", 1.0, 0.5), WEAK))


# -- thresholds ---------------------------------------------------------------------------------------
def test_one_quantile_calibration_for_escalation_shares():
    # RouteLLM's threshold for a share of strong calls and the cascade's margin threshold for a
    # share of escalations are one quantile: policies.cascade.calibrate_margin_threshold keeps it.
    import router.offline.calibration

    assert not hasattr(router.offline.calibration, "calibrate_threshold")
    margins = [float(i) for i in range(100)]
    t = calibrate_margin_threshold(margins, 0.2)
    assert sum(m < t for m in margins) == 20


def test_saturation_k_recovers_the_curve_that_made_the_cascades():
    tiers = {"cheap": 0.6, "strong": 0.7, "worse": 0.5}
    made = {("cheap", "strong", k): cascade_quality(0.6, 0.7, k, 20) for k in (10, 20, 30, 50)}
    assert fit_saturation_k(tiers, made) == 20
    # A pair the planner never forms (strong stage below the cheap one) does not pull the fit.
    assert fit_saturation_k(tiers, {**made, ("cheap", "worse", 10): 0.9}) == 20
    # Saturated at every measured k (here even above the strong tier): the largest k that says so.
    assert fit_saturation_k(tiers, {("cheap", "strong", k): 0.72 for k in (10, 20, 50)}) == 10
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_saturation_k(tiers, {("cheap", "worse", 10): 0.55})


def test_fit_constrained_reads_tier_means_and_fits_the_curve_on_cascades():
    options = [(), (("cheap", None),), (("strong", None),), *((("cheap", None), ("strong", k)) for k in (10, 20, 30))]
    rows = [
        {
            "retriever-order": 0.3,
            "cheap": 0.6 + d,
            "strong": 0.7 + d,
            **{f"cheap@all -> strong@{k}": cascade_quality(0.6, 0.7, k, 20) + d for k in (10, 20, 30)},
        }
        for d in (-0.05, 0.05)
    ]
    fit = fit_constrained(options, rows, fitted_on="two queries")
    assert fit.quality == pytest.approx({"cheap": 0.6, "strong": 0.7})
    assert fit.saturation_k == 20 and fit.queries == 2 and fit.fitted_on == "two queries"
    assert fit.profile_backends("web") == {"cheap": {"quality": {"web": 0.6}}, "strong": {"quality": {"web": 0.7}}}
    assert fit.thresholds() == {"cascade.saturation_k": 20.0}
    assert fit.policy_params() == {"saturation_k": 20}
    with pytest.raises(ValueError, match="lack a measurement"):
        fit_constrained(options, [{"cheap": 0.5}])
    # Strong tier measured below the cheap one: no cascade the planner would form, nothing to fit.
    flipped = [{**row, "strong": 0.5} for row in rows]
    unfitted = fit_constrained(options, flipped)
    assert unfitted.saturation_k is None and unfitted.thresholds() == {} and unfitted.policy_params() == {}


def _two_options():
    # Ten queries: the cheap option scores .5 for free; the strong one costs $1 and gains .01 .. .10.
    gains = [0.01 * (i + 1) for i in range(10)]
    predicted = [[0.5, 0.5 + g] for g in gains]
    cost = [[0.0, 1.0] for _ in gains]
    return predicted, cost, gains


def test_tradeoff_for_a_target_cost_escalates_the_largest_gains():
    predicted, cost, _ = _two_options()
    fit = calibrate_tradeoff(predicted, cost, target_cost=0.3)
    assert fit.mean_cost == pytest.approx(0.3)
    assert fit.choices == (0, 0, 0, 0, 0, 0, 0, 1, 1, 1)
    assert fit.mean_quality == pytest.approx(0.5 + (0.08 + 0.09 + 0.10) / 10)
    # The tradeoff sits just above the 7th gain: that gain no longer pays its dollar, the 8th does.
    assert 0.07 < fit.tradeoff < 0.08


def test_tradeoff_for_a_target_quality_is_the_cheapest_that_reaches_it():
    predicted, cost, _ = _two_options()
    fit = calibrate_tradeoff(predicted, cost, target_quality=0.5 + 0.19 / 10)
    assert fit.choices == (0, 0, 0, 0, 0, 0, 0, 0, 1, 1)  # .09 + .10 = .19
    unreachable = calibrate_tradeoff(predicted, cost, target_quality=0.9)
    assert unreachable.tradeoff == 0.0 and unreachable.mean_cost == pytest.approx(1.0)
    # Measured quality may disagree with the prediction: the target is checked on what a choice measures.
    measured = [[0.5, 0.5] for _ in predicted]
    assert calibrate_tradeoff(predicted, cost, target_quality=0.51, measured=measured).tradeoff == 0.0


def test_tradeoff_needs_exactly_one_target():
    predicted, cost, _ = _two_options()
    with pytest.raises(ValueError):
        calibrate_tradeoff(predicted, cost)
    with pytest.raises(ValueError):
        calibrate_tradeoff(predicted, cost, target_cost=1, target_quality=1)
