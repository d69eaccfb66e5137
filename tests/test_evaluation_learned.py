"""The learned policy: fitted per-option quality models, a calibrated tradeoff, hard rules first."""

from __future__ import annotations

import pytest

from policies import create_policy
from policies.learned import (
    FEATURES,
    LearnedModel,
    LearnedPolicy,
    OptionModel,
    option_key,
    request_features,
)
from router.catalog import merge_spec
from router.config import build_policy
from router.errors import ConfigError
from router.features import Features, TokenStats
from router.offline.calibration import write_profile
from router.offline.evaluation import kfold
from router.offline.fitting import Example, fit_learned, option_grid
from router.testing import FakeBackend

DOCS = ["the cat sat", "a dog barked", "cats purr softly", "birds sing"]
CASCADE = (("cheap", None), ("strong", 2))


def _model(tradeoff: float, strong_quality: float = 0.8) -> LearnedModel:
    zeros = (0.0,) * len(FEATURES)
    return LearnedModel(
        mean=zeros,
        scale=(1.0,) * len(FEATURES),
        options=(
            OptionModel(stages=(("cheap", None),), intercept=0.5, weights=zeros),
            OptionModel(stages=(("strong", None),), intercept=strong_quality, weights=zeros),
            OptionModel(stages=CASCADE, intercept=0.75, weights=zeros),
        ),
        tradeoff=tradeoff,
    )


def _backends():
    cheap = FakeBackend("cheap", spec={"quality": {"web": 0.5}})
    strong = FakeBackend(
        "strong",
        spec={
            "quality": {"web": 0.8},
            "license": "proprietary",
            "data_leaves_premises": True,
            "pricing": {"scheme": "per_token", "usd": 1e-3},
        },
    )
    return {"cheap": cheap, "strong": strong}


@pytest.mark.parametrize(
    ("tradeoff", "chosen"),
    [(0.0, "strong"), (10.0, "cheap@4 -> strong@2"), (1000.0, "cheap")],
)
def test_choice_follows_the_tradeoff(make_router, tradeoff, chosen):
    router = make_router(_backends(), policy=LearnedPolicy(model=_model(tradeoff)))
    plan = router.plan("the cat", DOCS, top_n=2)
    assert plan.primary.name == chosen
    assert "maximises quality" in plan.reason
    assert plan.fallbacks[-1].name == "retriever-order"
    # The estimate carries the learned prediction, visible in the explanation.
    assert plan.primary.estimate.quality in (0.5, 0.75, 0.8)


def test_hard_rules_come_first(make_router):
    router = make_router(_backends(), policy=LearnedPolicy(model=_model(0.0)))
    result = router.rerank("the cat", DOCS, top_n=2, constraints={"on_premise": True})
    assert result.backends == ("cheap",)
    rejected = {o.name: o.rejected for o in result.explanation.options}
    assert any("on_premise" in r for r in rejected["strong"])


def test_options_whose_backends_are_not_configured_are_skipped(make_router):
    router = make_router({"cheap": _backends()["cheap"]}, policy=LearnedPolicy(model=_model(0.0)))
    assert router.plan("q", DOCS, top_n=2).primary.name == "cheap"


def test_a_cascade_needing_every_candidate_is_skipped(make_router):
    router = make_router(_backends(), policy=LearnedPolicy(model=_model(1.0)))
    plan = router.plan("q", DOCS[:2], top_n=1)  # k = 2 >= n = 2
    assert all(len(a.option.stages) < 2 for a in plan.assessed)


def test_created_from_config_via_a_profile(tmp_path, make_router):
    with pytest.raises(ConfigError, match="fit one"):
        create_policy("learned")
    profile = tmp_path / "p.yaml"
    write_profile(profile, learned=_model(1000.0).model_dump())
    policy = build_policy("learned", {"profile": str(profile)})
    assert isinstance(policy, LearnedPolicy) and policy.tradeoff == 1000.0
    assert build_policy("learned", {"profile": str(profile), "tradeoff": 0.0}).tradeoff == 0.0  # type: ignore[attr-defined]
    inline = create_policy("learned", {"model": _model(0.0).model_dump()})
    assert make_router(_backends(), policy=inline).plan("q", DOCS, top_n=2).primary.name == "strong"
    write_profile(tmp_path / "empty.yaml", thresholds={"x": 1.0})
    with pytest.raises(ConfigError, match="no `learned:`"):
        build_policy("learned", {"profile": str(tmp_path / "empty.yaml")})


def test_request_features_come_from_the_routers_features():
    stats = TokenStats("bert-wordpiece", True, 7, (10, 10, 70))
    features = Features(n_candidates=3, top_n=3, domain="web", tokens={"bert-wordpiece": stats})
    x = request_features(features)
    assert len(x) == len(FEATURES)
    assert x[1] == pytest.approx(1.3862943)  # log1p(3)
    assert x[4] == pytest.approx(1 / 3)  # one document over twice the mean length
    assert request_features(features, "other-family") == x  # falls back to the family it has


def _examples():
    # Option "strong" helps exactly on long queries (feature 0); it costs $1, "cheap" is free.
    rows = []
    for i in range(20):
        long = i % 2 == 0
        x = (3.0 if long else 1.0, 4.6, 4.0, 0.5, 0.0)
        rows.append(
            Example(
                str(i),
                x,
                {"cheap": 0.5, "strong": 0.9 if long else 0.5, "retriever-order": 0.3},
                {"cheap": 0.0, "strong": 1.0, "retriever-order": 0.0},
            )
        )
    return rows


def test_fit_learns_where_the_dear_option_pays():
    options = [(), (("cheap", None),), (("strong", None),)]
    model = fit_learned(_examples(), options, target_quality_share=1.0, alpha=0.01)
    assert [o.key for o in model.options] == ["retriever-order", "cheap", "strong"]
    predictions = [model.predict(e.features) for e in _examples()[:2]]
    assert predictions[0]["strong"] == pytest.approx(0.9, abs=0.01) and predictions[1]["strong"] == pytest.approx(0.5, abs=0.01)
    assert "strong" in model.target
    # Reaching the strong tier's quality (.7 on average) means escalating the long queries only.
    policy = LearnedPolicy(model=model)
    long_gain, short_gain = 0.4, 0.0
    assert short_gain < policy.tradeoff * 1.0 < long_gain + 1e-9
    cheap_fit = fit_learned(_examples(), options, target_cost_share=0.0, inner_folds=0)
    gains = [p["strong"] - p["cheap"] for p in (cheap_fit.predict(e.features) for e in _examples())]
    assert cheap_fit.tradeoff > max(gains)  # no query is worth a dollar: all stay free
    with pytest.raises(ValueError, match="lack measurements"):
        fit_learned(_examples(), [(("missing", None),)])


def test_option_grid_pairs_free_first_stages_with_priced_ones():
    specs = {
        "bm25": merge_spec(None, "bm25", {}, where="t"),
        "api": merge_spec(None, "api", {"pricing": {"scheme": "per_call", "usd": 0.01}}, where="t"),
    }
    keys = [option_key(o) for o in option_grid(specs, (10, 20))]
    assert keys == ["retriever-order", "bm25", "api", "bm25@all -> api@10", "bm25@all -> api@20"]


def test_kfold_tests_every_query_once():
    qids = [str(i) for i in range(11)]
    folds = kfold(qids, 3, seed=1)
    tested = [q for _, test in folds for q in test]
    assert sorted(tested) == sorted(qids)
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 11
    assert kfold(qids, 3, seed=1) == folds
    with pytest.raises(ValueError):
        kfold(qids, 1)
