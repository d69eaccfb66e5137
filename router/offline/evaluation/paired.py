"""Several fold seeds of one cross-validated policy, and how far the queries pin its difference down.

:func:`seed_summary`: mean, standard deviation, min and max of a metric over the runs of each fold seed.
:func:`paired_bootstrap`: per query, the runs' mean (over seeds) minus a reference run's; wins, ties,
losses and a percentile bootstrap interval of the mean difference, resampling queries (the runs are
paired: the same queries, so per-query difficulty cancels).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from router.offline.evaluation.runner import RunResult

__all__ = ["TIE", "describe_paired", "paired_bootstrap", "parse_seeds", "seed_summary"]

TIE = 1e-9
"""Per-query differences within this are ties."""


def parse_seeds(text: str) -> list[int]:
    """``0-4`` -> [0, 1, 2, 3, 4]; ``0,2,5`` -> [0, 2, 5]; ``3`` -> [3]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    if not out:
        raise ValueError(f"--seeds {text!r}: no seeds")
    return sorted(set(out))


def seed_summary(runs: Sequence[RunResult], reference_cost: float | None = None) -> dict[str, Any]:
    """Mean / sd / min / max of nDCG@10 (and of mean cost, as a share of ``reference_cost`` when given)."""
    ndcg = [r.ndcg for r in runs]
    cost = [r.cost_mean for r in runs]
    out: dict[str, Any] = {
        "seeds": len(runs),
        "ndcg@10": {
            "mean": statistics.fmean(ndcg),
            "sd": statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0,
            "min": min(ndcg),
            "max": max(ndcg),
            "per_seed": ndcg,
        },
        "cost_usd": {"mean": statistics.fmean(cost), "max": max(cost), "per_seed": cost},
    }
    if reference_cost:
        out["cost_share"] = {"mean": statistics.fmean(cost) / reference_cost, "max": max(cost) / reference_cost}
    return out


def paired_bootstrap(
    runs: Sequence[RunResult], reference: RunResult, *, seed: int = 0, resamples: int = 10_000, level: float = 0.95
) -> dict[str, Any]:
    """The runs' per-query mean minus ``reference``'s, on the reference's queries: wins/ties/losses,
    mean difference and its bootstrap interval at ``level`` (queries resampled with replacement)."""
    import numpy as np

    primary = reference.measures.primary
    qids = sorted(reference.per_query)
    ours = np.asarray([[r.per_query.get(q, {}).get(primary, 0.0) for q in qids] for r in runs]).mean(axis=0)
    theirs = np.asarray([reference.per_query[q].get(primary, 0.0) for q in qids])
    diff = ours - theirs
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "reference": reference.label,
        "queries": len(qids),
        "wins": int((diff > TIE).sum()),
        "ties": int((abs(diff) <= TIE).sum()),
        "losses": int((diff < -TIE).sum()),
        "mean_difference": float(diff.mean()),
        "ci95" if level == 0.95 else f"ci{round(100 * level)}": [float(low), float(high)],
        "excludes_zero": bool(low > 0 or high < 0),
        "resamples": resamples,
    }


def describe_paired(p: dict[str, Any]) -> str:
    low, high = p["ci95"]
    return (
        f"vs {p['reference']}: {p['wins']} better, {p['ties']} tied, {p['losses']} worse; mean difference "
        f"{p['mean_difference']:+.4f} nDCG@10, 95% paired bootstrap interval [{low:+.4f}, {high:+.4f}] over {p['queries']} queries"
    )
