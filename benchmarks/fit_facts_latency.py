"""Fit the latency model to the MiniLM-L6 grid measured on this kind of machine, and check the catalog.

The grid is the facts table "Measured on this kind of machine" (../shared/facts/providers.md: a
MiniLM-L6 cross-encoder, sentence-transformers CrossEncoder.predict, batch 32, 2 CPU cores, torch
2.13 CPU, fp32, median of 3). Each cell is N candidates of t tokens, read as t tokens per scored
(query, document) pair. :func:`router.latency.fit_latency_params` fits
overhead + per_doc·N + per_token·Σt + per_token_sq·Σt² by non-negative least squares; the result
should be what ``router/catalog.yaml`` holds for cross-encoder/ms-marco-MiniLM-L6-v2.

    python benchmarks/fit_facts_latency.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.catalog import load_catalog
from router.latency import fit_latency_params, predict_latency_ms

# (candidates, tokens per pair) -> seconds, from the facts table.
FACTS_GRID: dict[tuple[int, int], float] = {
    (10, 128): 0.31,
    (50, 128): 1.31,
    (100, 128): 2.45,
    (200, 128): 4.39,
    (50, 60): 0.52,
    (50, 250): 2.49,
    (50, 500): 5.04,
}
CATALOG_ENTRY = "cross-encoder/ms-marco-MiniLM-L6-v2"
FIELDS = ("overhead_ms", "per_doc_ms", "per_token_ms", "per_token_sq_ms")
# The catalog keeps five significant figures.
REL_TOL = 5e-4


def main() -> int:
    samples = [([tokens] * n, seconds * 1000) for (n, tokens), seconds in FACTS_GRID.items()]
    fitted = fit_latency_params(samples, source="fit of the facts grid")
    shipped = load_catalog()[CATALOG_ENTRY].latency

    print(f"fit of the facts grid ({len(samples)} cells) vs catalog {CATALOG_ENTRY}")
    print(f"{'coefficient':<16} {'fitted':>12} {'catalog':>12}  match")
    ok = True
    for field in FIELDS:
        a, b = getattr(fitted, field), getattr(shipped, field)
        same = math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)
        ok &= same
        print(f"{field:<16} {a:>12.6g} {b:>12.6g}  {'yes' if same else 'NO'}")

    print()
    print(f"{'cands x tokens':<15} {'measured ms':>11} {'fitted ms':>10} {'error':>7}")
    errors = []
    for (n, tokens), seconds in FACTS_GRID.items():
        measured = seconds * 1000
        predicted = predict_latency_ms(fitted, [tokens] * n)
        errors.append(abs(predicted - measured) / measured)
        print(f"{f'{n} x {tokens}':<15} {measured:>11.0f} {predicted:>10.0f} {(predicted - measured) / measured:>+7.1%}")
    print(f"mean absolute relative error {sum(errors) / len(errors):.1%}, max {max(errors):.1%}")
    print()
    print(
        "MATCH: the catalog holds this fit"
        if ok
        else "MISMATCH: update router/catalog.yaml (cross-encoder/ms-marco-MiniLM-L6-v2 latency) with the fitted values"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
