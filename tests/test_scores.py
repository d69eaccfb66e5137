"""Result scores (router.scores) and their calibration (router.offline.score_fit, ``calibrate --scores``).

- Scores never rise against the order, in every result: cascades (adaptive stages too),
  fallbacks after failures, stages cut by the deadline, shed and retriever-order answers, with
  and without calibrations (a hypothesis property over scripted plans).
- The maps: isotonic interpolation, Platt, pooling; fits: isotonic is monotone and keeps the mean,
  Platt recovers the parameters of synthetic logits; the method chosen by held-out loss.
- Profiles: ``scores:`` round-trips, validation, config merge; ``calibrate --scores`` on a tiny
  labelled folder writes a profile a Router then uses (calibrated results, scores changed).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from policies.base import PlanningContext
from router import Router
from router.errors import BackendError, ConfigError
from router.offline.calibration import write_profile
from router.offline.score_fit import ScorePair, brier, fit_isotonic, fit_platt, fit_score_calibration, log_loss
from router.plan import Option, Plan, Stage
from router.profile import Profile, ScoreCalibration, after_key, load_profile
from router.result import RerankResult
from router.scores import NO_SCORES_NOTE, IsotonicMap, PlattMap, ScoreBook, build_map, pool_non_increasing
from router.testing import FakeBackend, FakeClock

# -- the maps ------------------------------------------------------------------------------------


def test_isotonic_map_interpolates_between_points_and_is_flat_beyond_them():
    m = IsotonicMap((0.2, 0.4, 0.4, 0.8), (0.1, 0.3, 0.5, 0.9))
    assert m(0.0) == 0.1 and m(0.2) == 0.1 and m(1.0) == 0.9 and m(0.8) == 0.9
    assert m(0.3) == pytest.approx(0.2)
    assert m(0.4) == 0.5  # a vertical step: the upper value from the step on
    assert m(0.6) == pytest.approx(0.7)


def test_platt_map_is_the_sigmoid_and_never_overflows():
    m = PlattMap(4.0, -2.0)
    assert m(0.5) == pytest.approx(0.5)
    assert m(1.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert PlattMap(1e6, 0.0)(-1.0) == 0.0 and PlattMap(1e6, 0.0)(1.0) == 1.0


@given(st.lists(st.floats(-5, 5), max_size=60))
def test_pooling_is_non_increasing_keeps_the_sum_and_leaves_falling_scores_alone(values):
    pooled = pool_non_increasing(values)
    assert len(pooled) == len(values)
    assert all(b <= a + 1e-9 for a, b in pairwise(pooled))
    assert sum(pooled) == pytest.approx(sum(values), abs=1e-6)
    if all(b <= a for a, b in pairwise(values)):
        assert pooled == values


@given(
    x=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    y=st.lists(st.floats(0, 1), min_size=20, max_size=20),
    probes=st.lists(st.floats(-0.5, 1.5), min_size=2, max_size=20),
)
def test_isotonic_maps_are_monotone_and_stay_on_the_unit_interval(x, y, probes):
    xs = sorted(x)
    ys = sorted(y[: len(xs)])
    m = IsotonicMap(tuple(xs), tuple(ys))
    out = [m(p) for p in sorted(probes)]
    assert all(b >= a - 1e-12 for a, b in pairwise(out))
    assert all(0 <= v <= 1 for v in out)


# -- the fits ------------------------------------------------------------------------------------


def test_isotonic_fit_is_monotone_and_keeps_the_mean():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 2000).round(2)  # ties
    y = rng.uniform(size=s.size) < s**2
    xs, ys = fit_isotonic(s.tolist(), y.tolist())
    assert list(xs) == sorted(xs) and list(ys) == sorted(ys)
    fitted = [IsotonicMap(xs, ys)(v) for v in s]
    assert np.mean(fitted) == pytest.approx(y.mean(), abs=1e-9)  # pooled blocks keep their label sums
    assert ys[0] >= 0 and ys[-1] <= 1


def test_platt_recovers_the_parameters_of_synthetic_logits():
    rng = np.random.default_rng(7)
    s = rng.uniform(0, 1, 40_000)
    y = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(6.0 * s - 3.5)))
    a, b = fit_platt(s.tolist(), y.tolist())
    assert a == pytest.approx(6.0, abs=0.3)
    assert b == pytest.approx(-3.5, abs=0.2)


def pairs_from(score_of, rel_prob, queries=30, docs=60, seed=0):
    rng = random.Random(seed)
    out = []
    for q in range(queries):
        for _ in range(docs):
            s = score_of(rng)
            out.append(ScorePair(f"q{q}", s, rng.random() < rel_prob(s)))
    return out


def test_the_method_is_chosen_by_held_out_loss_and_recorded():
    step = pairs_from(lambda r: r.random(), lambda s: 0.05 if s < 0.7 else 0.95)  # a step: isotonic fits, a sigmoid cannot
    fit = fit_score_calibration(step, folds=5, relevant_grade=2, source="synthetic")
    assert fit.method == "isotonic"
    assert fit.n == len(step) and fit.queries == 30 and fit.relevant_grade == 2 and fit.source == "synthetic"
    assert fit.chosen_by.startswith("log-loss over 5-fold query-grouped cross-validation") and "platt" in fit.chosen_by
    smooth = pairs_from(lambda r: r.random(), lambda s: 1 / (1 + math.exp(-(8 * s - 4))))
    assert fit_score_calibration(smooth, metric="brier").chosen_by.startswith("brier")
    falling = pairs_from(lambda r: r.random(), lambda s: 1 - s)
    assert fit_score_calibration(falling).method == "isotonic"  # Platt would fit a < 0: not kept
    assert fit_score_calibration(step[:60]).chosen_by == "isotonic: too few queries to cross-validate"
    with pytest.raises(ValueError, match="no"):
        fit_score_calibration([])


def test_losses():
    assert log_loss([0.5, 0.5], [True, False]) == pytest.approx(math.log(2))
    assert log_loss([0.0], [True]) == pytest.approx(-math.log(1e-3))  # clipped, finite
    assert brier([1.0, 0.0], [True, True]) == pytest.approx(0.5)


# -- profiles and config -------------------------------------------------------------------------

ISO = ScoreCalibration(method="isotonic", x=(0.0, 0.5, 1.0), y=(0.0, 0.2, 0.9), n=10, source="test")
PLATT = ScoreCalibration(method="platt", a=5.0, b=-4.0, n=10)


def test_profile_scores_round_trip_and_merge(tmp_path):
    path = tmp_path / "profile.yaml"
    write_profile(path, scores={"a": {"web": ISO}}, thresholds={"cascade.adaptive_margin": math.inf})
    write_profile(path, scores={"a": {"*": PLATT}, "b": {"web": PLATT}})
    profile = load_profile(path)
    assert profile.scores == {"a": {"web": ISO, "*": PLATT}, "b": {"web": PLATT}}
    assert profile.thresholds["cascade.adaptive_margin"] == math.inf  # the rest of the profile untouched
    assert Profile.model_validate(yaml.safe_load(path.read_text())) == profile


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"method": "isotonic", "x": [0.1, 0.0], "y": [0.1, 0.2]}, "non-decreasing"),
        ({"method": "isotonic", "x": [0.0, 1.0], "y": [0.5, 0.2]}, "non-decreasing"),
        ({"method": "isotonic", "x": [0.0], "y": [1.5]}, r"\[0, 1\]"),
        ({"method": "isotonic", "x": [], "y": []}, "non-empty"),
        ({"method": "platt", "a": -1.0, "b": 0.0}, "a must be >= 0"),
        ({"method": "platt", "a": 1.0}, "a and b"),
        ({"method": "sigmoid", "a": 1.0, "b": 0.0}, "method"),
    ],
)
def test_invalid_calibrations_are_config_errors(tmp_path, entry, problem):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"scores": {"a": {"web": entry}}}))
    with pytest.raises(ConfigError, match=problem):
        load_profile(path)


def test_config_scores_and_the_profile_merge_per_backend_and_domain(tmp_path):
    path = tmp_path / "profile.yaml"
    write_profile(path, scores={"a": {"web": PLATT}})
    inline = {"a": {"web": ISO.model_dump(), "*": ISO.model_dump()}, "b": {"*": ISO.model_dump()}}
    router = Router({"backends": {}, "profile": str(path), "scores": inline}, backends={"a": FakeBackend("a")})
    assert router.config.scores == {"a": {"web": PLATT, "*": ISO}, "b": {"*": ISO}}  # the profile wins where it speaks
    router.close()


# -- results -------------------------------------------------------------------------------------

DOCS = [f"doc {i}" for i in range(6)]
CHEAP = {"doc 0": 0.1, "doc 1": 0.9, "doc 2": 0.5, "doc 3": 0.7, "doc 4": 0.3, "doc 5": 0.2}
STRONG = {"doc 0": 0.0, "doc 1": 0.2, "doc 2": 0.8, "doc 3": 0.4, "doc 4": 0.9, "doc 5": 0.6}


@dataclass
class FixedPlan:
    """Always the same stages, then the given fallbacks (each a tuple of (backend, k, margin))."""

    stages: tuple[tuple[str, int | None, float | None], ...]
    fallbacks: tuple[tuple[tuple[str, int | None, float | None], ...], ...] = ()
    name: str = "fixed-plan"

    def _option(self, ctx: PlanningContext, stages: tuple[tuple[str, int | None, float | None], ...]) -> Option:
        n = ctx.features.n_candidates
        return ctx.estimate(tuple(Stage(b, n if k is None else min(k, n), m) for b, k, m in stages))

    def plan(self, ctx: PlanningContext) -> Plan:
        primary = self._option(ctx, self.stages)
        fallbacks = tuple(self._option(ctx, f) for f in self.fallbacks)
        return Plan(policy=self.name, primary=primary, fallbacks=fallbacks, assessed=(), reason="fixed for the test")


def table(values):
    return lambda query, document: values[document]


def assert_monotone(result: RerankResult) -> None:
    scores = [item.score for item in result.items]
    known = [s for s in scores if s is not None]
    assert scores == known + [None] * (len(scores) - len(known)), "unscored items come last"
    assert all(b <= a for a, b in pairwise(known)), scores
    assert all(0.0 <= s <= 1.0 for s in known)
    for item in result.items:
        assert (item.score is None) == (item.raw_score is None) == (item.scored_by is None)


async def test_a_calibrated_cascade_maps_each_stage_by_its_own_backend_and_pools_where_they_disagree():
    cheap, strong = FakeBackend("cheap", score=table(CHEAP)), FakeBackend("strong", score=table(STRONG))
    scores = {"strong": {"web": ISO.model_dump()}, "cheap": {"*": PLATT.model_dump()}}
    router = Router(
        {"backends": {}, "scores": scores},
        backends={"cheap": cheap, "strong": strong},
        policy=FixedPlan((("cheap", None, None), ("strong", 3, None))),
    )
    result = await router.arerank("q", DOCS)
    assert result.scores_calibrated
    assert not any(n.startswith("scores uncalibrated") for n in result.explanation.notes)
    assert result.indices == (2, 3, 1, 4, 5, 0)
    assert [i.scored_by for i in result.items] == ["strong"] * 3 + ["cheap"] * 3
    assert [i.raw_score for i in result.items] == [0.8, 0.4, 0.2, 0.3, 0.2, 0.1]
    iso, platt = IsotonicMap(ISO.x, ISO.y), PlattMap(5.0, -4.0)
    mapped = [iso(0.8), iso(0.4), iso(0.2), platt(0.3), platt(0.2), platt(0.1)]
    assert [i.score for i in result.items] == pytest.approx(pool_non_increasing(mapped))
    assert_monotone(result)
    other = await router.arerank("q", DOCS, context={"domain": "legal"})  # strong has no legal (nor any-domain) map
    assert not other.scores_calibrated
    [note] = [n for n in other.explanation.notes if n.startswith("scores uncalibrated")]
    assert "strong" in note and "cheap" not in note and "'legal'" in note
    assert other.to_dict()["scores_calibrated"] is False and result.to_dict()["scores_calibrated"] is True
    await router.aclose()


async def test_an_uncalibrated_single_tier_keeps_its_scores_and_says_so():
    router = Router({"backends": {}}, backends={"a": FakeBackend("a", score=table(CHEAP))})
    result = await router.arerank("q", DOCS)
    assert [i.score for i in result.items] == [i.raw_score for i in result.items] == sorted(CHEAP.values(), reverse=True)
    assert not result.scores_calibrated
    assert any(n.startswith("scores uncalibrated: no score calibration for a in domain 'web'") for n in result.explanation.notes)
    await router.aclose()


async def test_a_backend_off_its_scale_is_clipped_and_its_raw_score_kept():
    router = Router({"backends": {}}, backends={"a": FakeBackend("a", scores_override=lambda call, n: [3.0, -1.0, 0.5][:n])})
    result = await router.arerank("q", DOCS[:3])
    assert [i.raw_score for i in result.items] == [3.0, 0.5, -1.0]
    assert [i.score for i in result.items] == [1.0, 0.5, 0.0]
    await router.aclose()


async def test_the_retriever_order_has_no_scores_and_says_so():
    failing = FakeBackend("a", fail=lambda call: BackendError("down"))
    router = Router({"backends": {}}, backends={"a": failing}, policy=FixedPlan((("a", None, None),)))
    result = await router.arerank("q", DOCS)
    assert result.degraded and all(i.score is None for i in result.items) and not result.scores_calibrated
    assert NO_SCORES_NOTE in result.explanation.notes
    shed = router._shed(router._request("q", DOCS), router.clock(), "overloaded")
    assert all(i.score is None and i.scored_by is None for i in shed.items) and NO_SCORES_NOTE in shed.explanation.notes
    await router.aclose()


def test_the_score_book_looks_up_domain_then_any():
    book = ScoreBook({"a": {"web": ISO, "*": PLATT}, "b": {"news": ISO}})
    assert isinstance(book.lookup("a", "web"), IsotonicMap)
    assert isinstance(book.lookup("a", "legal"), PlattMap)
    assert book.lookup("b", "web") is None and book.lookup("c", "web") is None
    assert not ScoreBook({}) and book


# -- the property: monotone in rank whatever ran -------------------------------------------------

stage_spec = st.tuples(st.sampled_from("abc"), st.one_of(st.none(), st.integers(1, 12)), st.one_of(st.none(), st.floats(0, 0.5)))
calibration = st.one_of(
    st.builds(
        lambda pts: ScoreCalibration(method="isotonic", x=tuple(sorted(p[0] for p in pts)), y=tuple(sorted(p[1] for p in pts))),
        st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=8),
    ),
    st.builds(lambda a, b: ScoreCalibration(method="platt", a=a, b=b), st.floats(0, 20), st.floats(-10, 10)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 12),
    values=st.lists(st.lists(st.floats(0, 1), min_size=12, max_size=12), min_size=3, max_size=3),
    primary=st.lists(stage_spec, min_size=1, max_size=3),
    fallbacks=st.lists(st.lists(stage_spec, min_size=1, max_size=2), max_size=2),
    fails=st.lists(st.sets(st.integers(0, 3), max_size=3), min_size=3, max_size=3),
    latencies=st.lists(st.sampled_from([0.0, 5.0, 50.0, 500.0]), min_size=3, max_size=3),
    budget=st.one_of(st.none(), st.sampled_from([30.0, 120.0, 800.0])),
    calibrations=st.dictionaries(
        st.sampled_from(["a", "b", "c", "b after a", "c after a", "a after c", "c after b"]),
        st.dictionaries(st.sampled_from(["web", "*"]), calibration, min_size=1),
    ),
)
def test_scores_never_rise_against_the_order(n, values, primary, fallbacks, fails, latencies, budget, calibrations):
    """Cascades (adaptive stages: a margin on a later stage), fallbacks after failing calls, stages
    cut by the deadline on a fake clock, calibrated or not: every result's scores fall with rank."""
    clock = FakeClock()
    texts = [f"t{i}" for i in range(12)]
    backends = {}
    for name, vals, failing, latency in zip("abc", values, fails, latencies, strict=True):
        backends[name] = FakeBackend(
            name,
            score=(lambda v: lambda query, document, v=v: v[texts.index(document)])(vals),
            fail=(lambda f: lambda call: BackendError("scripted") if call in f else None)(failing),
            latency_ms=latency,
            sleep=clock.sleep,
        )
    scores = {b: {d: c.model_dump() for d, c in by.items()} for b, by in calibrations.items()}
    router = Router(
        {"backends": {}, "scores": scores, "admission": {"enabled": False}},
        backends=backends,
        policy=FixedPlan(tuple(primary), tuple(tuple(f) for f in fallbacks)),
        clock=clock,
        sleep=clock.sleep,
    )
    try:
        result = router.rerank("q", texts[:n], latency_budget_ms=budget)
        assert sorted(result.indices) == list(range(n))
        assert_monotone(result)
        used = {i.scored_by for i in result.items if i.scored_by is not None}
        ran = [s.backend for s in result.stages if s.ok]
        after = dict(zip(ran[1:], ran, strict=False))
        fitted = {b for b in used if b in calibrations or after_key(b, after.get(b, "")) in calibrations}
        assert result.scores_calibrated == (bool(used) and fitted == used)
        event(f"stages ok: {sum(s.ok for s in result.stages)}, degraded: {result.degraded}")
        event(
            f"mapped or pooled: {any(i.score != min(1.0, max(0.0, i.raw_score)) for i in result.items if i.raw_score is not None)}"
        )
    finally:
        router.close()


# -- calibrate --scores end to end ---------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path):
    """12 queries x 8 candidates; a recorded model ranks the relevant ones high, not always first."""
    pytest.importorskip("ir_measures")
    rows, qrels, run, cheap = [], [], [], []
    rng = random.Random(5)
    for i in range(12):
        qid = f"q{i}"
        candidates = [{"id": f"{qid}d{j}", "text": f"passage {j} of topic {i}"} for j in range(8)]
        rows.append({"qid": qid, "query": f"topic {i}", "candidates": candidates})
        relevant = set(rng.sample(range(8), 3))
        qrels += [f"{qid} 0 {qid}d{j} {rng.choice([2, 3]) if j in relevant else rng.choice([0, 1])}" for j in range(8)]
        order = sorted(range(8), key=lambda j: (j not in relevant) + rng.random() * 1.2)
        run += [f"{qid} Q0 {qid}d{j} {rank} {10 - rank} strong" for rank, j in enumerate(order, 1)]
        weak = sorted(range(8), key=lambda j: (j not in relevant) + rng.random() * 3)
        cheap += [f"{qid} Q0 {qid}d{j} {rank} {10 - rank} cheap" for rank, j in enumerate(weak, 1)]
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    (tmp_path / "strong.run").write_text("\n".join(run) + "\n")
    (tmp_path / "cheap.run").write_text("\n".join(cheap) + "\n")
    replay = {"type": "replay", "spec": {"license": "MIT"}}
    config = {
        "backends": {
            "strong": {**replay, "run": str(tmp_path / "strong.run")},
            "cheap": {**replay, "run": str(tmp_path / "cheap.run")},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_calibrate_scores_writes_a_profile_a_router_then_uses(labelled, capsys):
    from router.cli import main
    from router.offline.evaluation import load_jsonl

    d = labelled
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress"]
    profile = d / "profile.yaml"
    code = main(["--config", str(d / "config.yaml"), "calibrate", *data, "--scores", "--score-folds", "3", "--out", str(profile)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "scores strong (web)" in out.out
    fit = load_profile(profile).scores["strong"]["web"]
    assert fit.n == 96 and fit.queries == 12 and fit.relevant_grade == 2
    assert "3-fold query-grouped" in fit.chosen_by

    dataset = load_jsonl(d / "set.jsonl", d / "qrels.txt")
    config = {**yaml.safe_load((d / "config.yaml").read_text()), "profile": str(profile)}
    config["backends"]["strong"]["dataset"] = str(d / "set.jsonl")
    config["backends"]["strong"]["simulate_latency"] = False
    router = Router(config)
    try:
        q = dataset.queries[0]
        result = router.rerank(q.text, q.documents())
    finally:
        router.close()
    assert result.scores_calibrated
    assert [i.score for i in result.items] != [i.raw_score for i in result.items]
    assert_monotone(result)

    # a stricter grade: fewer relevant pairs, a lower estimate at the top
    strict = d / "strict.yaml"
    args = ["--config", str(d / "config.yaml"), "calibrate", *data, "--scores", "--relevant-grade", "3", "--out", str(strict)]
    assert main(args) == 0
    assert load_profile(strict).scores["strong"]["web"].relevant_grade == 3
    assert main(["--config", str(d / "config.yaml"), "calibrate", "--scores", "--out", str(strict)]) == 2
    assert "--scores needs --dataset" in capsys.readouterr().err
    args = ["--config", str(d / "config.yaml"), "calibrate", *data, "--scores", "--backends", "nope", "--out", str(strict)]
    assert main(args) == 2
    assert "not available: nope (available: cheap, strong)" in capsys.readouterr().err
    args = ["--config", str(d / "config.yaml"), "calibrate", *data, "--scores", "--scores-domain", "*", "--out", str(strict)]
    assert main(args) == 0
    assert set(load_profile(strict).scores["strong"]) == {"web", "*"}  # merged into the profile beside the web fit


def test_calibrate_scores_fits_a_cascade_stage_and_the_router_uses_it_there_only(labelled, capsys):
    from router.cli import main
    from router.offline.evaluation import EvalHarness, OptionPolicy, load_jsonl

    d = labelled
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress", "--backends", "strong"]
    profile = d / "profile.yaml"
    args = ["--config", str(d / "config.yaml"), "calibrate", *data, "--scores", "--score-cascades", "cheap>strong@3"]
    assert main([*args, "--score-folds", "3", "--out", str(profile)]) == 0
    fits = load_profile(profile).scores
    assert set(fits) == {"strong", "strong after cheap"}
    staged = fits["strong after cheap"]["web"]
    assert staged.n == 12 * 3 and "top 3 of cheap" in staged.source
    with pytest.raises(SystemExit):  # argparse: K missing
        main([*args[:-2], "--score-cascades", "cheap>strong", "--out", str(profile)])
    assert "expected FIRST>SECOND@K" in capsys.readouterr().err

    dataset = load_jsonl(d / "set.jsonl", d / "qrels.txt")
    with EvalHarness(dataset, d / "config.yaml") as harness:
        cascade = harness.results(OptionPolicy((("cheap", None), ("strong", 3))), qids=["q2"], scores=fits)["q2"]
        alone = harness.results(OptionPolicy((("strong", None),)), qids=["q2"], scores=fits)["q2"]
        fallback = harness.results(OptionPolicy((("cheap", None),)), qids=["q2"], scores=fits)["q2"]
    head = [i for i in cascade.items if i.scored_by == "strong"]
    assert len(head) == 3 and not cascade.scores_calibrated  # cheap has no calibration of its own
    by_stage, by_alone = build_map(staged), build_map(fits["strong"]["web"])
    mapped = [by_stage(i.raw_score) if i.scored_by == "strong" else i.raw_score for i in cascade.items]
    assert [i.score for i in cascade.items] == pytest.approx(pool_non_increasing(mapped))
    assert [i.score for i in alone.items] == pytest.approx([by_alone(i.raw_score) for i in alone.items])
    assert all(i.scored_by == "cheap" for i in fallback.items)


def test_the_score_book_prefers_a_stage_calibration_after_the_stage_that_ran():
    book = ScoreBook({"b": {"*": ISO}, "b after a": {"web": PLATT}})
    assert book.contextual and not ScoreBook({"b": {"*": ISO}}).contextual
    assert isinstance(book.lookup("b", "web", after="a"), PlattMap)
    assert isinstance(book.lookup("b", "news", after="a"), IsotonicMap)  # no stage fit for news: b's own
    assert isinstance(book.lookup("b", "web", after="c"), IsotonicMap)
    assert isinstance(book.lookup("b", "web"), IsotonicMap)


def test_the_harness_returns_results_scored_by_the_calibrations_it_is_given(labelled):
    from router.offline.evaluation import EvalHarness, OptionPolicy, load_jsonl

    dataset = load_jsonl(labelled / "set.jsonl", labelled / "qrels.txt")
    with EvalHarness(dataset, labelled / "config.yaml") as harness:
        policy = OptionPolicy((("strong", None),))
        plain = harness.results(policy, qids=["q0", "q1"])
        fitted = harness.results(policy, qids=["q1"], scores={"strong": {"web": ISO}})
    assert set(plain) == {"q0", "q1"} and set(fitted) == {"q1"}
    assert not plain["q1"].scores_calibrated and fitted["q1"].scores_calibrated
    iso = IsotonicMap(ISO.x, ISO.y)
    assert [i.score for i in fitted["q1"].items] == [iso(i.raw_score) for i in plain["q1"].items]
