"""An A/B test of two routing policies over the TREC DL19 queries, end to end.

    python examples/ab_dl19.py                 # ~1-2 min on a laptop CPU; writes examples/out/
    rerank-router report examples/out/decisions.jsonl --plot examples/out/ab.png

What it does:

1. Builds a Router from ``examples/ab_dl19.yaml``: arm ``api`` sends every candidate to the
   closed-API tier (RankGPT, replayed from its recorded run); arm ``cascade`` runs the local
   bi-encoder on all 100 candidates and the API on its top k, under a cost ceiling; a shadow arm
   scores 20% of requests with the self-hosted tier (RankVicuna, replayed) in the background,
   within a spend cap. Users are assigned sticky by a hash of their id.
2. Replays traffic: ``--requests`` searches, each a DL19 query issued by one of ``--users``
   simulated users. Recorded tiers take their modelled latency on the evaluation harness's
   simulated clock (``router.offline.evaluation.EvalHarness``), so nothing sleeps; the bi-encoder runs
   live, once per query (later calls replay its scores and measured time).
3. Simulates clicks from the qrels with a cascade click model: the user scans the top 10 in
   order, clicks a document with a probability that grows with its relevance grade, and stops
   after a click with probability ``--stop``. Each outcome goes to ``record_feedback`` with the
   clicks and the query's graded judgements.
4. Runs ``rerank-router report`` on the log: per arm latency, cost and quality with bootstrap
   intervals, and a verdict only where a difference is significant.

Requests repeat queries (43 queries, many users), so intervals computed over requests are
narrower than a per-query analysis would give; the shadow comparison is paired (same requests).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from router import RankedItem, Router
from router.cli import main as cli_main
from router.offline.evaluation import EvalHarness, load_trec_dl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# P(click | grade) for TREC DL grades 0-3 (a position-independent attractiveness per grade).
CLICK_PROBABILITY = {0: 0.05, 1: 0.25, 2: 0.6, 3: 0.9}


def simulate_clicks(top: Sequence[RankedItem], grades: Mapping[str, int], rng: random.Random, stop: float) -> list[str]:
    """Cascade click model over the shown results: scan in order, click by grade, maybe stop."""
    clicks = []
    for item in top:
        if rng.random() < CLICK_PROBABILITY.get(grades.get(item.id, 0), 0.05):
            clicks.append(item.id)
            if rng.random() < stop:
                break
    return clicks


def load_config(path: Path, data: Path, log_path: Path) -> dict[str, Any]:
    """The YAML, with the replayed runs found under ``data`` and the log written to ``log_path``."""
    config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    for backend in config["backends"].values():
        if backend.get("type") == "replay":
            backend["run"] = str(data / "trec-dl19" / "runs" / Path(backend["run"]).name)
            backend["dataset"] = str(data / "trec-dl19")
    config["decision_log"] = {**config.get("decision_log", {}), "path": str(log_path)}
    return config


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "decisions.jsonl"
    log_path.unlink(missing_ok=True)
    data = Path(args.data)
    config = load_config(Path(args.config), data, log_path)
    dataset = load_trec_dl(data / "trec-dl19")
    grades = {q.qid: dict(dataset.qrels.get(q.qid, {})) for q in dataset.queries}

    # The harness supplies the backends (recorded tiers bound to its simulated clock, the live
    # bi-encoder memoised per query) and the clock; the Router is the production one, experiment
    # block and decision log included.
    harness_config = {k: v for k, v in config.items() if k not in ("experiment", "decision_log")}
    with EvalHarness(dataset, harness_config, cache=out / "live-calls.json") as harness:
        print(f"backends: {harness.warm_up()}", flush=True)
        router = Router({**config, "backends": {}}, backends=harness.backends, clock=harness.clock, sleep=harness.clock.sleep)
        rng = random.Random(args.seed)
        users = [f"user-{i}" for i in range(args.users)]
        served: dict[str, int] = {}
        for i in range(args.requests):
            query = rng.choice(dataset.queries)
            result = router.rerank(query.text, query.documents(), top_n=10, context={"user": rng.choice(users)})
            served[result.arm or "-"] = served.get(result.arm or "-", 0) + 1
            clicks = simulate_clicks(result.top(10), grades[query.qid], rng, args.stop)
            router.record_feedback(result.request_id, clicked=clicks, relevance=grades[query.qid])
            # Let this request's shadow run finish first: all tiers share one simulated clock, and
            # a replayed wait overlapping the next request would be counted in its latency too.
            router.drain()
            if (i + 1) % 100 == 0:
                print(f"  {i + 1}/{args.requests} requests; by arm: {served}", flush=True)
        router.close()  # flushes the decision log

    print(f"\ndecision log: {log_path}\n")
    report = ["report", str(log_path), "--json", str(out / "ab-report.json"), "--plot", str(out / "ab.png")]
    status = cli_main([*report, "--seed", str(args.seed)])
    print("\nthe same comparison on click MRR@10 (what production traffic without judgements gives):\n")
    return status or cli_main(["report", str(log_path), "--metric", "mrr@10", "--seed", str(args.seed)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "ab_dl19.yaml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding trec-dl19/")
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--stop", type=float, default=0.5, help="probability the user stops after a click")
    parser.add_argument("--seed", type=int, default=0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
