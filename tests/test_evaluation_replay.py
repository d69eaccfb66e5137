"""The replay backend: any subset of candidates ordered by the recorded rank, priced and timed like the real call."""

from __future__ import annotations

import json
import math

import pytest

from router import Router
from router.backends.registry import build_backend
from router.backends.replay import ReplayBackend, ReplayConfig, ReplayIndex
from router.catalog import merge_spec
from router.errors import BadRequestError
from router.testing import FakeBackend

QUERY = "which docs are best"
TEXTS = {"d1": "alpha text", "d2": "beta text", "d3": "gamma text", "d4": "delta text", "d5": "epsilon text"}
# Recorded order: d3, d1, d5, d2 (d4 was not ranked by the model).
RUN = "q1 Q0 d3 1 9.0 rec\nq1 Q0 d1 2 8.0 rec\nq1 Q0 d5 3 7.0 rec\nq1 Q0 d2 4 6.0 rec\n"


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, s: float) -> None:
        self.seconds.append(s)


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "model.run"
    path.write_text(RUN)
    return path


def _backend(run_file, spec=None, sleep=None, **config):
    cfg = ReplayConfig(run=str(run_file), **config)
    full = merge_spec(None, "recorded", {"license": "Apache-2.0", **(spec or {})}, where="test")
    index = ReplayIndex.from_queries([("q1", QUERY, list(TEXTS.items()))])
    return ReplayBackend("rec", cfg, full, index=index, sleep=sleep or Sleeps())


def _order(texts, scores):
    return [t for _, t in sorted(zip(scores.values, texts, strict=True), key=lambda p: -p[0])]


async def test_orders_any_subset_by_recorded_rank(run_file):
    backend = _backend(run_file)
    every = list(TEXTS.values())
    assert _order(every, await backend.rerank(QUERY, every))[:4] == ["gamma text", "alpha text", "epsilon text", "beta text"]
    subset = ["beta text", "epsilon text", "alpha text"]
    assert _order(subset, await backend.rerank(QUERY, subset)) == ["alpha text", "epsilon text", "beta text"]
    scores = await backend.rerank(QUERY, ["delta text", "gamma text"])
    assert scores.values == (0.0, 1.0)  # unrecorded: 0; rank 1 of 4: 1.0
    assert all(0 <= v <= 1 for v in (await backend.rerank(QUERY, every)).values)


async def test_unknown_query_is_refused(run_file):
    with pytest.raises(BadRequestError, match="no recording"):
        await _backend(run_file).rerank("another query", ["alpha text"])


async def test_latency_and_units_are_modelled(run_file):
    sleeps = Sleeps()
    spec = {"latency": {"overhead_ms": 100, "per_doc_ms": 10}, "pricing": {"scheme": "per_token", "usd": 1e-6}}
    backend = _backend(run_file, spec=spec, sleep=sleeps, chars_per_token=2.0)
    scores = await backend.rerank(QUERY, ["alpha text", "beta text"])
    assert sleeps.seconds == [pytest.approx(0.12)]
    # per_token: query tokens x docs + doc tokens at 2 characters per token (rounded half to even): 10*2 + 5 + 4.
    assert scores.usage.tokens == 29
    quiet = _backend(run_file, spec=spec, sleep=sleeps, simulate_latency=False)
    await quiet.rerank(QUERY, ["alpha text"])
    assert len(sleeps.seconds) == 1


async def test_built_from_config_with_its_dataset(tmp_path, run_file, make_router):
    data = tmp_path / "set.jsonl"
    row = {"qid": "q1", "query": QUERY, "candidates": [{"id": d, "text": t} for d, t in TEXTS.items()]}
    data.write_text(json.dumps(row) + "\n")
    config = {"type": "replay", "run": str(run_file), "dataset": str(data), "simulate_latency": False}
    router = Router({"backends": {"rec": {**config, "spec": {"license": "Apache-2.0"}}}})
    assert router.backends["rec"].availability().ok
    result = await router.arerank(QUERY, ["beta text", "gamma text", "delta text"])
    assert [item.text for item in result.items] == ["gamma text", "beta text", "delta text"]
    missing = build_backend("rec", ReplayConfig(run=str(tmp_path / "nope.run"), dataset=str(data)))
    assert "no run file" in missing.availability().reason
    no_set = build_backend("rec", ReplayConfig(run=str(run_file)))
    assert "labelled set" in no_set.availability().reason


async def test_cascade_second_stage_orders_the_first_stage_top_k(run_file, make_router):
    """A cheap stage on all 5, the replayed model on its top 3: only those 3 are reordered."""
    from router.offline.evaluation import OptionPolicy

    cheap = FakeBackend("cheap", score=lambda q, d: {"delta": 0.9, "beta": 0.8, "gamma": 0.7}.get(d.split()[0], 0.1))
    policy = OptionPolicy((("cheap", None), ("rec", 3)))
    router: Router = make_router({"cheap": cheap, "rec": _backend(run_file)}, policy=policy)
    result = await router.arerank(QUERY, list(TEXTS.values()))
    # cheap: delta, beta, gamma, alpha, epsilon; rec reorders the top 3 (delta unrecorded -> last of them).
    assert [item.text.split()[0] for item in result.items] == ["gamma", "beta", "delta", "alpha", "epsilon"]
    assert [s.candidates_in for s in result.stages] == [5, 3]


def test_scores_are_on_the_unit_interval_for_long_runs(tmp_path):
    lines = "".join(f"q1 Q0 d{i} {i} 0 r\n" for i in range(1, 101))
    path = tmp_path / "long.run"
    path.write_text(lines)
    cfg = ReplayConfig(run=str(path))
    spec = merge_spec(None, "x", {}, where="t")
    index = ReplayIndex.from_queries([("q1", "q", [(f"d{i}", f"t{i}") for i in range(1, 101)])])
    backend = ReplayBackend("x", cfg, spec, index=index)
    values = backend._scores("q", [f"t{i}" for i in range(1, 101)])
    assert values[0] == 1.0 and math.isclose(values[-1], 0.01)
    assert values == sorted(values, reverse=True)
