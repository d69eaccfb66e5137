"""The retriever's own scores (documents' ``score``) as escalation evidence: read from requests
(router.retrieval), refused when hostile, carried to the adaptive policy's features, and fitted on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.adaptive import FEATURES, RETRIEVER_FEATURES, AdaptiveModel, AdaptivePolicy, GainModel, escalation_features
from router import Document, Router
from router.errors import InvalidDocumentsError
from router.offline.fitting import EscalationExample, fit_adaptive
from router.retrieval import retriever_scores
from router.testing import FakeBackend

NAMES = (*FEATURES, *RETRIEVER_FEATURES)


def test_strings_carry_none_mappings_do_and_all_or_nothing():
    assert retriever_scores(["a", "b"]) is None
    assert retriever_scores([{"text": "a", "score": 3}, {"text": "b", "score": np.float32(1.5)}]) == (3.0, 1.5)
    assert retriever_scores([{"text": "a", "score": 3.0}, {"text": "b"}]) is None  # a margin over some means nothing
    assert retriever_scores([{"text": "a", "score": None}, {"text": "b", "score": 1.0}]) is None
    in_metadata = [{"text": "a", "metadata": {"bm25": 2.0}}, Document("b", "1", metadata={"bm25": 1.0})]
    assert retriever_scores(in_metadata) is None  # metadata is read only under a configured key
    assert retriever_scores(in_metadata, "bm25") == (2.0, 1.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "must be finite, got nan"),
        (math.inf, "must be finite, got inf"),
        (True, "must be a number, got bool"),
        (np.bool_(False), "must be a number, got bool"),
        ("12.5", "must be a number, got str"),
        ([1.0], "must be a number, got list"),
    ],
)
def test_a_hostile_score_is_refused_with_a_typed_error(value, message):
    docs = [{"text": "a", "score": 1.0}, {"text": "b"}, {"text": "c", "score": value}]
    with pytest.raises(InvalidDocumentsError, match=r"documents\[2\] retriever score " + message.replace("(", r"\(")):
        retriever_scores(docs)  # refused even though another document has no score
    router = Router({"backends": {"bm25": {"type": "lexical"}}})
    with pytest.raises(InvalidDocumentsError):
        router.rerank("q", docs)
    router.close()


def test_the_request_carries_them_to_the_features_and_a_key_reads_metadata():
    router = Router({"backends": {"bm25": {"type": "lexical"}}, "retriever_score_key": "bm25"})
    request = router._request("q", [{"text": "a", "score": 2.0}, {"text": "b", "metadata": {"bm25": 1.0}}])
    assert request.retriever_scores == (2.0, 1.0)
    assert router._features(request).retriever_scores == (2.0, 1.0)
    assert router._request("q", ["a", "b"]).retriever_scores is None
    router.close()


def test_retriever_features_margins_spread_and_agreement():
    cheap = [0.9, 0.1, 0.5, 0.3]
    x = dict(zip(NAMES, escalation_features("q", cheap, [10.0, 8.0, 7.0, 1.0], NAMES), strict=True))
    sd = float(np.std([10.0, 8.0, 7.0, 1.0]))
    assert x["retriever_margin_1_2"] == pytest.approx(2.0 / sd)
    assert x["retriever_margin_1_10"] == pytest.approx(9.0 / sd)  # fewer than 10: to the last
    assert x["retriever_cv"] == pytest.approx(sd / 6.5)
    assert -1.0 <= x["retriever_agreement"] <= 1.0
    agree = dict(zip(NAMES, escalation_features("q", [4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0], NAMES), strict=True))
    assert agree["retriever_agreement"] == pytest.approx(1.0)
    missing = escalation_features("q", cheap, None, NAMES)
    assert all(math.isnan(v) for v in missing[len(FEATURES) :]) and not any(math.isnan(v) for v in missing[: len(FEATURES)])
    assert escalation_features("q", cheap) == escalation_features("q", cheap, [1.0, 2.0, 3.0, 4.0])  # not asked: not used


def _model() -> AdaptiveModel:
    """Gain 0.05 - 0.05 x the retriever's top-1 margin (in sd): a retriever that is sure needs no strong stage."""
    return AdaptiveModel(
        first_stage="cheap",
        features=NAMES,
        mean=(0.0,) * len(NAMES),
        scale=(1.0,) * len(NAMES),
        slopes=tuple(-0.05 if f == "retriever_margin_1_2" else 0.0 for f in NAMES),
        options=(GainModel(backend="strong", k=10, intercept=0.05),),
        queries=40,
    )


def test_the_adaptive_policy_escalates_on_the_retrievers_evidence():
    backends = {
        "cheap": FakeBackend("cheap"),
        "strong": FakeBackend("strong", spec={"pricing": {"scheme": "per_call", "usd": 0.01}, "quality": {"web": 0.9}}),
    }
    router = Router({}, backends=backends, policy=AdaptivePolicy(model=_model()))

    def notes(docs: list[object]) -> str:
        result = router.rerank("q", docs, top_n=10)
        return next(n for n in result.explanation.notes if "escalated" in n)

    sure = [{"text": f"d {j}", "score": 100.0 if j == 0 else 10.0 - 0.1 * j} for j in range(30)]
    unsure = [{"text": f"d {j}", "score": 10.0 - 0.01 * j} for j in range(30)]
    assert notes(sure).startswith("not escalated")
    assert notes(unsure).startswith("escalated to strong@10")
    held = notes([f"d {j}" for j in range(30)])  # strings: no retriever scores, their features at the training mean
    assert held.startswith("escalated") and "no retriever scores: their features held at the training mean" in held
    router.close()


def test_the_fit_finds_a_slope_on_a_retriever_feature_that_carries_the_signal():
    rows = []
    rng = np.random.default_rng(0)
    for i in range(40):
        base = tuple(float(v) for v in rng.normal(size=len(FEATURES)))
        margin = i / 40
        x = (*base, margin, 2 * margin, 0.1, 0.5)
        gain = 0.1 * (1 - margin)
        rows.append(EscalationExample(str(i), x, {("s", 10): gain}, {("s", 10): 1.0}))
    model = fit_adaptive(rows, "cheap", features=NAMES)
    named = dict(zip(model.features, model.slopes, strict=True))
    assert model.features == NAMES and named["retriever_margin_1_2"] < 0
    with pytest.raises(ValueError, match="finite features"):
        fit_adaptive([EscalationExample("0", (math.nan,) * len(NAMES), {("s", 10): 0.1}, {("s", 10): 1.0})], "c", features=NAMES)
    with pytest.raises(ValueError, match="unknown feature"):
        AdaptiveModel(first_stage="c", features=("nope",), mean=(0.0,), scale=(1.0,), slopes=(0.0,), options=())
