"""Batch reranking: Router.rerank_many in code, `rerank-router batch` on files, the same on Ray Data.

pip install 'rerank-router[ray]'; python examples/batch_ray.py   (offline: a fake backend, a local Ray)
"""

import json
import tempfile
from pathlib import Path

from router import Router
from router.testing import FakeBackend


def build(config):  # the Router each Ray actor builds once; here with a fake scorer, so no model is needed
    return Router(config, backends={"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})})


CONFIG = {"backends": {"bm25": {"type": "lexical"}}}
requests = [
    {"id": f"q{i}", "query": "green tea", "documents": ["black tea", "green tea leaves", "a bicycle"], "top_n": 2}
    for i in range(20)
]
requests.append({"id": "bad", "query": "", "documents": ["x"]})  # answered with its own error

# 1. In code: bounded concurrency, results in input order, errors per item.
router = build(CONFIG)
outcomes = router.rerank_many(requests, concurrency=8)
print(outcomes[0].result.backends, outcomes[0].result.indices, "|", outcomes[-1].error_type)
router.close()

# 2. On Ray Data: one Router per actor, the same result lines as `rerank-router batch --output`.
import ray  # noqa: E402

from router.integrations.ray import run_batch_ray  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    inp, out = Path(tmp) / "requests.jsonl", Path(tmp) / "results.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    stats = run_batch_ray(inp, out, config=CONFIG, actors=2, progress=False, router_factory=build)
    ray.shutdown()
    print(stats)
    print(out.read_text(encoding="utf-8").splitlines()[0][:160], "...")
    # the command line does the same: rerank-router batch --input requests.jsonl --output results.jsonl [--ray --actors 2]
