"""Ray Data: the batch on a local Ray (2 CPUs), with results identical to the single-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry from tests
pytest.importorskip("ray.data")

import ray
import yaml
from integrations_support import API_KEY, api_config, make_requests, read_jsonl, write_jsonl

from router import Router
from router.batch import run_batch_file
from router.cli import main
from router.testing import FakeBackend, LoopbackRerankServer

# What must agree between runs (timings and the latency model's online corrections may not).
STABLE = ("indices", "ids", "scores", "top_n", "backends", "chosen", "degraded", "actual_cost_usd")


@pytest.fixture(scope="module")
def local_ray():
    # Workers take the environment of the process that starts Ray: the API key must be there first.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CO_API_KEY", API_KEY)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
        ray.shutdown()


def stable(record):
    if not record["ok"]:
        return record
    return {"id": record["id"], "ok": True, **{k: record["result"][k] for k in STABLE}}


def test_two_thousand_requests_on_ray_match_the_single_process_run(local_ray, tmp_path, monkeypatch, capsys):
    from router.integrations.ray import run_batch_ray

    monkeypatch.setenv("CO_API_KEY", API_KEY)
    requests = make_requests(2000)
    inp = write_jsonl(tmp_path / "requests.jsonl", requests)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        config = api_config(server, resilience={"backends": {"cohere": {"limits": {"rpm": 1_000_000}}}})
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        router = Router(config)
        try:
            single = run_batch_file(router, inp, tmp_path / "single.jsonl", concurrency=16, progress=False)
        finally:
            router.close()
        assert single.ok + single.failed == 2000
        out = tmp_path / "ray.jsonl"
        args = ["--config", str(path), "batch", "--input", str(inp), "--output", str(out), "--ray", "--actors", "2"]
        assert main([*args, "--no-progress", "--batch-size", "100"]) == 0
        assert "0 already answered, 1980 ok, 20 failed; 2000 results" in capsys.readouterr().err
        # resumable like the single-process command: a complete output is left as it is
        stats = run_batch_ray(inp, out, config=path, actors=2, progress=False)
        assert (stats.skipped, stats.ok, stats.written) == (2000, 0, 2000)
    on_ray, alone = read_jsonl(out), read_jsonl(tmp_path / "single.jsonl")
    assert [r["id"] for r in on_ray] == [r["id"] for r in requests]
    assert [stable(r) for r in on_ray] == [stable(r) for r in alone]
    assert {tuple(r["result"]["backends"]) for r in on_ray if r["ok"]} == {("cohere",)}


def test_rate_limits_are_divided_across_actors(tmp_path):
    from router.integrations.ray import split_rate_limits

    with LoopbackRerankServer() as server:
        config = api_config(server, resilience={"backends": {"bm25": {"limits": {"max_concurrency": 4}}}})
        per_actor = split_rate_limits(config, 4)
        assert per_actor.resilience_for("cohere").limits.rpm == 250  # the catalog's 1,000 rpm, over 4 actors
        assert per_actor.resilience_for("bm25").limits.rpm is None  # no limit to divide
        assert per_actor.resilience_for("bm25").limits.max_concurrency == 4
        config["resilience"] = {"backends": {"cohere": {"limits": {"rpm": 10, "tpm": 9000}}}}
        limits = split_rate_limits(config, 2).resilience_for("cohere").limits
        assert (limits.rpm, limits.tpm) == (5, 4500)
        assert split_rate_limits(config, 1).resilience_for("cohere").limits.rpm == 10


def test_rerank_dataset_with_a_router_factory_and_policy_replay(local_ray):
    from router.batch import BatchRequest
    from router.integrations.ray import replay_dataset, request_line, rerank_dataset

    def factory(config):
        fakes = {
            "strong": FakeBackend("strong", spec={"quality": {"web": 0.9}}),
            "weak": FakeBackend("weak", score=lambda q, d: float(len(d)) / 100, spec={"quality": {"web": 0.5}}),
        }
        return Router(config, backends=fakes)

    lines = [{"request": request_line(BatchRequest(f"r{i}", "green tea", ["green tea", "milk", "tea"]))} for i in range(20)]
    lines.append({"request": "{not json"})
    ds = ray.data.from_items(lines)
    rows = rerank_dataset(ds, {"backends": {}}, actors=2, batch_size=8, router_factory=factory).take_all()
    records = sorted(rows, key=lambda r: r["id"])
    assert len(records) == 21
    import json

    parsed = [json.loads(r["record"]) for r in records]
    assert all(p["result"]["backends"] == ["strong"] for p in parsed if p["ok"])
    assert sum(not p["ok"] for p in parsed) == 1
    # the same requests replayed under another policy
    replayed = replay_dataset(
        ds, {"backends": {}}, policy={"name": "fixed", "params": {"backend": "weak"}}, actors=1, router_factory=factory
    ).take_all()
    assert {tuple(json.loads(r["record"])["result"]["backends"]) for r in replayed if json.loads(r["record"])["ok"]} == {
        ("weak",)
    }


def test_eval_per_query_work_as_a_ray_map(local_ray, tmp_path):
    pytest.importorskip("ir_measures")
    from router.offline.evaluation import EvalHarness, load_jsonl
    from router.offline.evaluation.distributed import run_on_ray

    rows, qrels = [], []
    for i in range(12):
        topic = ["green tea", "black tea", "oolong leaf", "hot water"][i % 4]
        texts = [f"{topic} facts {j}" if j % 3 == 0 else f"unrelated filler {j}" for j in range(6)]
        rows.append({"qid": f"q{i}", "query": topic, "candidates": [{"id": f"q{i}d{j}", "text": t} for j, t in enumerate(texts)]})
        qrels += [f"q{i} 0 q{i}d{j} {1 if j % 3 == 0 else 0}" for j in range(6)]
    write_jsonl(tmp_path / "set.jsonl", rows)
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    dataset = load_jsonl(tmp_path / "set.jsonl", tmp_path / "qrels.txt")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"backends": {"bm25": {"type": "lexical"}}}), encoding="utf-8")
    from policies import create_policy

    with EvalHarness(dataset, config) as harness:
        alone = harness.run("constrained", create_policy("constrained"))
    on_ray = run_on_ray(dataset, config, "constrained", actors=2, batch_size=4)
    assert [r.qid for r in on_ray.records] == [r.qid for r in alone.records]
    assert [(r.ranking, r.served, r.planned) for r in on_ray.records] == [(r.ranking, r.served, r.planned) for r in alone.records]
    assert on_ray.metrics == alone.metrics


def test_missing_ray_names_the_extra():
    code = (
        "import sys\nsys.modules['ray'] = None\n"
        "try:\n    import router.integrations.ray\nexcept ImportError as e:\n"
        "    from router.errors import MissingDependencyError\n"
        "    assert isinstance(e, MissingDependencyError), type(e)\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "rerank-router[ray]" in out.stdout
