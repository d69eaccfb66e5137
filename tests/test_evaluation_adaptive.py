"""The adaptive policy (escalation from first-stage evidence), its fit, and the eval's user-facing options
(--max-cost-share/--of, --seeds, a dataset folder's recorded runs) on a tiny labelled set in tmp_path."""

from __future__ import annotations

import json

import pytest
import yaml

from policies import create_policy
from policies.adaptive import FEATURES, AdaptiveModel, GainModel, Menu, MenuItem, escalation_features
from policies.rules import COST_TOLERANCE_USD
from router.cli import main
from router.offline.evaluation import (
    EvalHarness,
    cross_validate_adaptive,
    evaluate_options,
    load_trec_dl,
)
from router.offline.evaluation.paired import parse_seeds
from router.offline.fitting import EscalationExample, calibrate_price, fit_adaptive, option_grid
from router.plan import Evidence, Stage
from router.profile import load_profile
from router.testing import planning_context

pytest.importorskip("ir_measures")
pytest.importorskip("bm25s")

TOPICS = ["solar power", "river floods", "jazz music", "mountain goats", "tea leaves", "chess openings"]


@pytest.fixture
def folder(tmp_path):
    """A TREC DL-style folder: bm25-top100.json, qrels.txt and runs/strong.run (6 queries x 6 candidates)."""
    data, qrels, run = [], [], []
    for i, topic in enumerate(TOPICS):
        qid = str(100 + i)
        word = topic.split()[0]
        texts = [f"{word} filler {j} about other things" if j < 4 else f"all about {topic} {j}" for j in range(6)]
        if i % 2:
            texts[4], texts[5] = f"passage {i} four", f"passage {i} five"
        hits = [
            {"content": t, "qid": int(qid), "docid": f"d{qid}-{j}", "rank": j + 1, "score": 10.0 - j} for j, t in enumerate(texts)
        ]
        data.append({"query": topic, "hits": hits})
        qrels += [f"{qid} 0 d{qid}-{j} {2 if j >= 4 else 0}" for j in range(6)]
        run += [f"{qid} Q0 d{qid}-{j} {rank} {10 - rank} strong" for rank, j in enumerate([5, 4, 0, 1, 2, 3], 1)]
    (tmp_path / "bm25-top100.json").write_text(json.dumps(data))
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "strong.run").write_text("\n".join(run) + "\n")
    config = {"backends": {"bm25": {"type": "lexical"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    priced = {
        "backends": {
            "bm25": {"type": "lexical"},
            "strong": {
                "type": "replay",
                "run": str(tmp_path / "runs" / "strong.run"),
                "spec": {"license": "Apache-2.0", "pricing": {"scheme": "per_call", "usd": 0.01}, "quality": {"web": 0.9}},
            },
        }
    }
    (tmp_path / "priced.yaml").write_text(yaml.safe_dump(priced))
    return tmp_path


def test_features_are_scale_free_margins_and_agreement():
    x = escalation_features("a b c", [0.1, 0.9, 0.2, 0.3])
    assert len(x) == len(FEATURES)
    named = dict(zip(FEATURES, x, strict=True))
    assert named["overlap_top10"] == 1.0  # 4 candidates: both top-10s hold them all
    assert named["retriever_top1_rank"] == pytest.approx(__import__("math").log1p(3))
    assert named["top_score"] == 0.9 and named["margin_1_2"] > 0
    small, large = escalation_features("a", [1.0, 2.0, 0.5]), escalation_features("a", [10.0, 20.0, 5.0])
    assert small[:2] == pytest.approx(large[:2]) and small[3] == pytest.approx(large[3])  # margins, entropy: scale-free


def _model(price: float, slope: float = 0.0) -> AdaptiveModel:
    return AdaptiveModel(
        first_stage="cheap",
        mean=(0.0,) * len(FEATURES),
        scale=(1.0,) * len(FEATURES),
        slopes=(-slope,) + (0.0,) * (len(FEATURES) - 1),  # a small top-1 margin: more gain
        options=(GainModel(backend="strong", k=10, intercept=0.02), GainModel(backend="strong", k=20, intercept=0.04)),
        min_gain_per_usd=price,
        queries=40,
    )


def test_menu_buys_the_best_gain_net_of_price_and_says_so():
    items = (MenuItem(Stage("strong", 10), 0.001, 10.0), MenuItem(Stage("strong", 20), 0.002, 20.0))
    stage, why = Menu(_model(0.0), items, (0, 1), 0.0).choose(Evidence("q", (0.1, 0.2, 0.9)))
    assert stage == Stage("strong", 20) and why.startswith("escalated to strong@20: predicted gain 0.040 for $0.002")
    stage, why = Menu(_model(0.0), items, (0, 1), 30.0).choose(Evidence("q", (0.1, 0.2, 0.9)))
    assert stage is None and why.startswith("not escalated")  # 0.04 - 30 x 0.002 < 0 and 0.02 - 0.03 < 0
    sure, unsure = Evidence("q", (0.0, 0.0, 5.0)), Evidence("q", (0.0, 4.9, 5.0))
    menu = Menu(_model(15.0, slope=0.02), items, (0, 1), 15.0)
    assert menu.choose(unsure)[0] is not None and menu.choose(sure)[0] is None


def test_calibrated_price_meets_the_mean_cost_target():
    gains = [[0.01, 0.05], [0.10, 0.20], [0.0, 0.01], [0.05, 0.06]]
    costs = [[1.0, 2.0]] * 4
    assert calibrate_price(gains, costs, None) == 0.0
    assert calibrate_price(gains, costs, 10.0) == 0.0
    price = calibrate_price(gains, costs, 0.5)
    value = [[g - price * c for g, c in zip(gr, cr, strict=True)] for gr, cr in zip(gains, costs, strict=True)]
    spent = sum(cr[max(range(2), key=lambda j: v[j])] for v, cr in zip(value, costs, strict=True) if max(v) > 0) / 4
    assert spent <= 0.5 + 1e-9 and price > 0


def test_fit_keeps_no_slope_without_signal_and_finds_one_with_it():
    rows = []
    for i in range(30):
        margin = (i % 10) / 10
        x = (margin,) + (float(i % 3),) * (len(FEATURES) - 1)
        gain = 0.1 * (1 - margin)
        rows.append(EscalationExample(str(i), x, {("s", 10): gain, ("s", 20): gain + 0.01}, {("s", 10): 1.0, ("s", 20): 2.0}))
    model = fit_adaptive(rows, "cheap")
    assert model.slopes[0] < 0 and model.queries == 30 and model.min_gain_per_usd == 0.0
    flat = [EscalationExample(r.qid, r.features, {k: 0.05 for k in r.gain}, r.cost) for r in rows]
    assert fit_adaptive(flat, "cheap").slopes == (0.0,) * len(FEATURES)


def test_too_few_queries_fall_back_to_the_curve():
    policy = create_policy("adaptive", {"model": _model(0.0).model_copy(update={"queries": 5}).model_dump()})
    ctx = planning_context({"a": {"quality": {"web": 0.6}}})
    plan = policy.plan(ctx)
    assert "today's curve" in plan.reason and plan.policy == "adaptive"


def test_a_model_without_signal_plans_with_the_curve_under_its_mean_cost_target():
    """No slope kept: every query would get the same predicted gains, so the curve plans instead, with the
    model's mean-cost target as the per-request ceiling; a model with a slope routes per query."""
    backends = {
        "cheap": {"license": "Apache-2.0", "pricing": {"scheme": "free"}, "quality": {"web": 0.5}},
        "strong": {"license": "Apache-2.0", "pricing": {"scheme": "per_call", "usd": 0.01}, "quality": {"web": 0.9}},
    }
    ctx = planning_context(backends, n=30, top_n=5)
    flat = _model(0.0).model_copy(update={"first_stage": "cheap", "target_cost_usd": 0.005})
    plan = create_policy("adaptive", {"model": flat.model_dump()}).plan(ctx)
    assert "model kept no feature slope on its 40 queries (no per-query signal); ceiling $0.005" in plan.reason
    assert "today's curve" in plan.reason and plan.primary.backends == ("cheap",)
    rich = create_policy("adaptive", {"model": flat.model_copy(update={"target_cost_usd": 0.02}).model_dump()}).plan(ctx)
    assert "strong" in rich.primary.backends and "today's curve" in rich.reason
    routed = create_policy("adaptive", {"model": {**flat.model_dump(), "without_signal": "means"}}).plan(ctx)
    assert "per query the best of" in routed.reason and routed.primary.stages[1].escalation is not None
    sloped = create_policy("adaptive", {"model": _model(0.0, slope=0.02).model_dump()}).plan(ctx)
    assert "today's curve" not in sloped.reason


def test_cost_ceiling_tolerance_is_stated_and_small():
    assert 0 < COST_TOLERANCE_USD <= 1e-9


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("3,1") == [1, 3] and parse_seeds("2") == [2]


def test_dataset_runs_become_unpriced_replay_tiers(folder, capsys):
    code = main(
        ["--config", str(folder / "config.yaml"), "eval", "--dataset", str(folder), "--no-progress", "--policy", "cheapest"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "| strong | tier |" in captured.out
    assert "recorded runs strong added as replay tiers with no price" in captured.err and "type: replay" in captured.err
    code = main(["--config", str(folder / "config.yaml"), "eval", "--dataset", str(folder), "--no-progress", "--no-dataset-runs"])
    assert code == 0 and "| strong | tier |" not in capsys.readouterr().out


def test_share_seeds_and_adaptive_cv_end_to_end(folder, capsys):
    report = folder / "report.json"
    code = main(
        ["--config", str(folder / "priced.yaml"), "eval", "--dataset", str(folder), "--no-progress", "--policy", "cheapest",
         "--max-cost-share", "0.5", "--of", "strong", "--cv", "2", "--seeds", "0-2", "--ks", "2",
         "--cv-policies", "constrained,adaptive", "--out", str(report)]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "ceiling: 0.5 x strong's $0.01/query = $0.005/query" in captured.err
    assert "adaptive (2-fold CV, fold seeds 0,1,2): nDCG@10 mean" in captured.out
    assert "95% paired bootstrap interval" in captured.out
    cv = json.loads(report.read_text())["cv"]
    assert cv["seeds"] == [0, 1, 2] and set(cv["by_policy"]) == {"constrained", "adaptive"}
    assert len(cv["by_policy"]["adaptive"]["seeds"]["ndcg@10"]["per_seed"]) == 3
    assert cv["by_policy"]["adaptive"]["paired"]["reference"] == "strong"
    code = main(
        ["--config", str(folder / "priced.yaml"), "eval", "--dataset", str(folder), "--max-cost-share", "0.3", "--of", "nope"]
    )
    assert code == 2 and "--of nope: not a tier" in capsys.readouterr().err


def test_adaptive_cv_routes_held_out_queries_and_explains(folder):
    dataset = load_trec_dl(folder)
    with EvalHarness(dataset, folder / "priced.yaml") as harness:
        specs = {n: harness.backends[n].spec for n in harness.available()}
        options = option_grid(specs, (2, 4))
        runs = evaluate_options(harness, options)
        cv = cross_validate_adaptive(
            harness, runs, options, folds=2, seed=0, target_cost=0.005, min_queries=1, without_signal="cv"
        )
        assert len(cv.run.records) == len(dataset) and len(cv.models) == 2
        assert all(m.first_stage == "bm25" for m in cv.models)
        for fold, fitted in zip(cv.folds, cv.models, strict=True):  # 3 training queries: no slope kept
            assert not fitted.has_signal and fold["without_signal"] == fitted.without_signal
            assert set(fold["inner_cv"]) == {"curve", "means"}  # chosen by CV on that fold's training queries
        model = cv.models[0]
        policy = create_policy("adaptive", {"model": {**model.model_dump(), "without_signal": "means"}, "min_queries": 1})
        result = harness.router(policy).rerank(dataset.queries[0].text, dataset.queries[0].documents(), top_n=2)
        notes = " ".join(result.explanation.notes)
        assert "escalated" in notes  # 'escalated to strong@..' or 'not escalated: ...'
        assert sorted(i.index for i in result.items) == list(range(6))


def test_calibrate_fit_adaptive_writes_the_model_and_config_reads_it(folder, capsys):
    profile = folder / "profile.yaml"
    code = main(
        ["--config", str(folder / "priced.yaml"), "calibrate", "--dataset", str(folder), "--no-progress", "--fit-adaptive",
         "--target-cost-share", "0.3", "--of", "strong", "--ks", "2", "--out", str(profile)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr()
    assert "adaptive: first stage bm25" in out.out and "< 20" in out.err  # 6 queries: the fallback is announced
    found = load_profile(profile)
    assert found.adaptive is not None and found.adaptive["queries"] == 6
    from router.profile import policy_params

    params = policy_params("adaptive", {}, profile)
    assert params["model"]["first_stage"] == "bm25" and "saturation_k" in params  # --fit-adaptive fits the curve too
    assert params["model"]["target_cost_usd"] == pytest.approx(0.3 * 0.01)
    assert params["model"]["without_signal"] == "curve" and "no slope: it plans by the curve" in out.out
    code = main(
        ["--config", str(folder / "priced.yaml"), "calibrate", "--dataset", str(folder), "--no-progress", "--fit-adaptive",
         "--without-signal", "cv", "--target-cost-share", "0.3", "--of", "strong", "--ks", "2", "--out", str(profile)]
    )  # fmt: skip
    assert code == 0 and load_profile(profile).adaptive["without_signal"] in ("curve", "means")
    assert any("by 3-fold CV (nDCG@10 curve" in note for note in load_profile(profile).meta["notes"])


def test_the_executor_runs_the_stage_the_rule_picks_and_keeps_a_permutation():
    """A Router whose adaptive plan's costliest strong option is 'dear': the rule buys 'cheap-strong' instead."""
    from router import Router
    from router.testing import FakeBackend

    spec = {"license": "Apache-2.0", "pricing": {"scheme": "per_call", "usd": 0.01}, "quality": {"web": 0.9}}
    dear = {**spec, "pricing": {"scheme": "per_call", "usd": 0.05}}
    backends = {
        "first": FakeBackend("first", spec={"license": "Apache-2.0", "quality": {"web": 0.5}}),
        "cheap-strong": FakeBackend("cheap-strong", spec=spec),
        "dear": FakeBackend("dear", spec=dear),
    }
    model = AdaptiveModel(
        first_stage="first",
        mean=(0.0,) * len(FEATURES),
        scale=(1.0,) * len(FEATURES),
        slopes=(0.0,) * len(FEATURES),
        options=(GainModel(backend="dear", k=3, intercept=0.06), GainModel(backend="cheap-strong", k=3, intercept=0.05)),
        min_gain_per_usd=0.5,  # net of price: dear 0.06 - 0.5 x 0.05 = 0.035, cheap-strong 0.05 - 0.5 x 0.01 = 0.045
        queries=40,
    )
    router = Router(
        {"backends": {}},
        backends=backends,
        policy=create_policy("adaptive", {"model": {**model.model_dump(), "without_signal": "means"}}),
    )
    docs = [f"doc {i} about words" for i in range(6)]
    result = router.rerank("words", docs, top_n=2)
    assert sorted(item.index for item in result.items) == list(range(6))
    assert [s.backend for s in result.stages] == ["first", "cheap-strong"]
    assert "escalated to cheap-strong@3: predicted gain 0.050 for $0.01" in " ".join(result.explanation.notes)
    assert backends["dear"].calls == []  # planned as the worst case (cost, latency), never called


def test_cross_validation_fits_on_the_retrievers_scores_and_shares_one_budget_window(folder):
    from policies.adaptive import RETRIEVER_FEATURES
    from router.accounting.budget import MeanCostWindow
    from router.budget import MeanCostBudget

    dataset = load_trec_dl(folder)
    assert dataset.queries[0].retriever_scores() == (10.0, 9.0, 8.0, 7.0, 6.0, 5.0)  # the hits' BM25 `score`
    with EvalHarness(dataset, folder / "priced.yaml") as harness:
        specs = {n: harness.backends[n].spec for n in harness.available()}
        options = option_grid(specs, (2, 4))
        runs = evaluate_options(harness, options)
        window = MeanCostWindow(MeanCostBudget(target_usd=0.004, window=1000))
        cv = cross_validate_adaptive(harness, runs, options, folds=2, seed=0, target_cost=0.004, min_queries=1, window=window)
        assert all(m.features[-len(RETRIEVER_FEATURES) :] == RETRIEVER_FEATURES for m in cv.models)
        assert window.state.n == pytest.approx(len(dataset), rel=0.01)  # both folds' held-out queries: one stream
        assert sum(r.cost_usd or 0.0 for r in cv.run.records) / len(dataset) <= 0.004 + 1e-12
        plain = cross_validate_adaptive(harness, runs, options, folds=2, seed=0, min_queries=1, retriever_features=False)
        assert all(m.features == FEATURES for m in plain.models)
