"""Calibration: timing a backend on a grid, fitting its latency model, and the profile a config points to."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import yaml

from policies import create_policy
from router import Router
from router.backends.base import Availability, Scores
from router.catalog import merge_spec
from router.config import apply_profile, build_policy, load_config
from router.errors import ConfigError
from router.offline.calibration import (
    fit_backend_latency,
    quality_from_report,
    synthetic_documents,
    time_latency_grid,
    write_profile,
)
from router.profile import load_profile
from router.tokens import EstimatedTokenCounter, TokenCounter


class TimedBackend:
    """Takes overhead + a*N + c*sum(t^2) ms of a fake clock per call, t = query + doc + 3 tokens."""

    def __init__(self, overhead: float = 50.0, per_doc: float = 2.0, per_token_sq: float = 1e-4) -> None:
        self.name = "timed"
        self.spec = merge_spec(None, "timed", {"license": "MIT", "input": "pair"}, where="test")
        self.now = 0.0
        self.loaded = False
        self._counter = EstimatedTokenCounter("bert-wordpiece", 5.0)
        self.params = (overhead, per_doc, per_token_sq)

    def clock(self) -> float:
        return self.now

    def availability(self) -> Availability:
        return Availability(True)

    def load(self) -> None:
        self.loaded = True

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        q, *docs = self._counter.count([query, *documents])
        items = [q + d + 3 for d in docs]
        overhead, per_doc, sq = self.params
        self.now += (overhead + per_doc * len(items) + sq * sum(t * t for t in items)) / 1000
        return Scores(tuple(0.5 for _ in documents))

    def token_counter(self) -> TokenCounter | None:
        return self._counter if self.loaded else None

    async def aclose(self) -> None:
        return None


async def test_calibrate_times_a_grid_and_the_fit_recovers_the_model():
    backend = TimedBackend()
    samples = await time_latency_grid(backend, (5, 20, 40), (32, 64, 200), repeats=2, clock=backend.clock)
    assert backend.loaded and len(samples) == 9
    assert [len(tokens) for tokens, _ in samples] == [5, 5, 5, 20, 20, 20, 40, 40, 40]
    params = fit_backend_latency(samples, source="test grid")
    assert params.overhead_ms == pytest.approx(50.0, rel=1e-3)
    assert params.per_doc_ms == pytest.approx(2.0, rel=1e-3)
    assert params.per_token_sq_ms == pytest.approx(1e-4, rel=1e-3)
    assert params.per_token_ms == pytest.approx(0.0, abs=1e-6)
    assert params.source == "test grid"


def test_synthetic_documents_hit_the_token_length():
    counter = EstimatedTokenCounter("x", 4.0)
    docs = synthetic_documents(3, 50, lambda t: counter.count([t])[0])
    assert len(set(docs)) == 3
    assert all(counter.count([d])[0] <= 50 for d in docs)


def test_profile_round_trip_and_merge(tmp_path):
    path = tmp_path / "profile.yaml"
    write_profile(path, backends={"bm25": {"quality": {"web": 0.5}}}, thresholds={"a": 1.0}, notes=["first"])
    write_profile(path, backends={"bm25": {"quality": {"scientific": 0.35}, "latency": {"overhead_ms": 3.0}}}, notes=["second"])
    profile = load_profile(path)
    assert profile.backends["bm25"] == {"quality": {"web": 0.5, "scientific": 0.35}, "latency": {"overhead_ms": 3.0}}
    assert profile.thresholds == {"a": 1.0}
    assert profile.meta["notes"] == ["first", "second"]
    assert path.read_text().startswith("# rerank-router profile")
    (tmp_path / "bad.yaml").write_text("backends: [1, 2]\n")
    with pytest.raises(ConfigError, match="profile"):
        load_profile(tmp_path / "bad.yaml")


def test_a_config_pointing_to_a_profile_gets_its_measured_specs(tmp_path):
    profile = tmp_path / "profile.yaml"
    write_profile(
        profile,
        backends={
            "bm25": {"latency": {"overhead_ms": 7.0, "per_doc_ms": 0.25, "source": "measured"}, "quality": {"web": 0.61}},
            "elsewhere": {"quality": {"web": 0.1}},  # a backend this config does not have: ignored
        },
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {"profile": str(profile), "backends": {"bm25": {"type": "lexical", "spec": {"latency": {"overhead_ms": 1.0}}}}}
        )
    )
    config = apply_profile(load_config(config_path))
    assert config.backends["bm25"].spec["latency"]["overhead_ms"] == 7.0
    router = Router(config_path)
    spec = router.backends["bm25"].spec
    assert spec.latency.overhead_ms == 7.0 and spec.latency.per_doc_ms == 0.25 and spec.latency.source == "measured"
    assert spec.quality_for("web") == 0.61
    assert spec.quality_for("scientific") == 0.292  # the catalog's figure, untouched
    assert apply_profile(load_config({"backends": {}})).backends == {}


def test_quality_from_an_eval_report():
    report = {
        "dataset": {"domain": "scientific"},
        "runs": [
            {"label": "retriever-order", "kind": "tier", "metrics": {"nDCG@10": 0.35}},
            {"label": "bi", "kind": "tier", "metrics": {"nDCG@10": 0.39451}},
            {"label": "constrained", "kind": "policy", "metrics": {"nDCG@10": 0.9}},
        ],
    }
    assert quality_from_report(report) == {"bi": {"scientific": 0.3945}}


def test_the_constrained_policy_reads_its_fitted_curve_from_a_profile(tmp_path):
    path = tmp_path / "profile.yaml"
    write_profile(path, thresholds={"cascade.saturation_k": 20.0, "cascade.adaptive_margin": 0.1, "learned.tradeoff": 3.0})
    policy = build_policy("constrained", {"profile": str(path), "saturation_k": 50, "cascade_k": [10, 20]})
    # The profile's measured values win over the params beside it; the others stand.
    assert (policy.saturation_k, policy.adaptive_margin, policy.cascade_k) == (20, 0.1, (10, 20))
    assert create_policy("constrained", {"saturation_k": 50}).saturation_k == 50
    write_profile(tmp_path / "bad.yaml", thresholds={"cascade.expected_escalation": 0.0})
    with pytest.raises(ConfigError, match="expected_escalation"):
        build_policy("constrained", {"profile": str(tmp_path / "bad.yaml")})
