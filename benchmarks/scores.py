"""Do result scores mean the same whichever tier served? Calibration error of ``RankedItem.score`` on a labelled set.

    .venv/bin/python benchmarks/scores.py [--dataset ../shared/data/trec-dl19] [--json PATH] [--quick]

Tiers (as benchmarks/dl19.py builds them, reusing its config): BM25 (the retriever's order and
ranks in the data, served as a replay tier: score 1 - (rank - 1) / 100), the all-MiniLM-L6-v2
bi-encoder run live on CPU (scores cached in ``benchmarks/results/cache/live-<set>.json``, the
file dl19.py uses), and the recorded RankVicuna and RankGPT runs replayed (rank-based scores, as
BM25's: their calibration maps P(relevant | recorded rank)). Routed rows: the cascades
BM25 -> RankGPT@20 and bi-encoder -> RankGPT@20, the shipped ``constrained`` policy on dl19.py's
config, and a mix that serves each query from a tier drawn at random (seeded), the case of a
router whose tier changes from request to request.

Per row: expected calibration error (ECE, 15 equal-width bins over every scored document of
every query: sum over bins of |mean score - share relevant| x share of documents) of
``RankedItem.score`` as a Router returns it, before calibration (each backend's own [0, 1] scale)
and after: query-grouped 5-fold cross-validation, each fold's calibrations fitted (router.offline.
score_fit, isotonic or Platt chosen by an inner CV on the training queries only) on the other four
folds' queries and applied by a Router to the held-out queries; fold seeds 0-4 (``--quick``: 0),
the mean reported with the range. Routed rows are also reported with cascade-stage fits added (each cascade's later
stage fitted on its own output in that cascade, ``"rankgpt after bm25"``, on the training folds too). Relevant: grade >= 2. Then the threshold check: per row, the
share of relevant candidates whose calibrated score is at or above a fixed threshold (0.5, 0.3)
and the precision above it; the issue's target is that this share is within 5 points whichever
tier served.

``--overhead``: the cost of score assembly on the request path instead (no data needed): median microseconds to
build a 100-item result the way the router did before scores were mapped (one score per item) against mapping and
pooling them (uncalibrated, calibrated, a two-stage cascade), in one process, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dl19 import dataset_config, short_name  # noqa: E402

from policies import create_policy  # noqa: E402
from router.datasets import Dataset, load_dataset  # noqa: E402
from router.offline.evaluation import EvalHarness, OptionPolicy, kfold  # noqa: E402
from router.offline.score_fit import ScorePair, fit_score_calibration  # noqa: E402
from router.profile import ScoreCalibration, after_key  # noqa: E402
from router.result import RerankResult  # noqa: E402

BINS = 15
THRESHOLDS = (0.5, 0.3)
ECE_TARGET = 0.05
THRESHOLD_TARGET = 0.05
TIERS = ("bm25", "bi-encoder", "rankvicuna", "rankgpt")
CASCADES: dict[str, tuple[tuple[str, int | None], ...]] = {
    "bm25 -> rankgpt@20": (("bm25", None), ("rankgpt", 20)),
    "bi-encoder -> rankgpt@20": (("bi-encoder", None), ("rankgpt", 20)),
}
MIX = "random tier per query"

Calibrations = dict[str, dict[str, ScoreCalibration]]
Items = list[tuple[float | None, bool, str | None]]
"""(score, relevant, scored_by) for every candidate of a query, best first."""


def bm25_run(dataset: Dataset, folder: Path) -> Path:
    """The dataset's first-stage order as a TREC run file, so BM25 is served (and scored) as a replay tier."""
    path = folder / f"bm25-{short_name(dataset)}.run"
    lines = [
        f"{q.qid} Q0 {c.docid} {rank} {len(q.candidates) - rank} bm25"
        for q in dataset.queries
        for rank, c in enumerate(q.candidates, 1)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config_for(dataset: Dataset, cache: Path) -> dict[str, Any]:
    config = dataset_config(dataset)
    config["backends"]["bm25"] = {
        "type": "replay",
        "run": str(bm25_run(dataset, cache)),
        "spec": {"provider": "local", "license": "Apache-2.0", "pricing": {"scheme": "free"}, "latency": {"per_doc_ms": 0.0}},
    }
    return config


def ece(items: Sequence[tuple[float, bool]], bins: int = BINS) -> float:
    """Expected calibration error over equal-width bins of [0, 1]."""
    if not items:
        return float("nan")
    totals = [[0.0, 0.0, 0] for _ in range(bins)]
    for score, relevant in items:
        b = totals[min(int(score * bins), bins - 1)]
        b[0] += score
        b[1] += relevant
        b[2] += 1
    return sum(abs(s - r) for s, r, n in totals if n) / len(items)


def threshold_row(queries: Sequence[Items], t: float) -> dict[str, float]:
    relevant = sum(r for items in queries for _, r, _ in items)
    kept = [(s, r) for items in queries for s, r, _ in items if s is not None and s >= t]
    hits = sum(r for _, r in kept)
    return {
        "recall": hits / relevant if relevant else float("nan"),
        "precision": hits / len(kept) if kept else float("nan"),
        "kept_per_query": len(kept) / len(queries) if queries else float("nan"),
    }


def labelled(results: Mapping[str, RerankResult], dataset: Dataset, grade: int) -> dict[str, Items]:
    return {
        qid: [(item.score, dataset.qrels.get(qid, {}).get(item.id, 0) >= grade, item.scored_by) for item in result.items]
        for qid, result in results.items()
    }


def scored(queries: Sequence[Items]) -> list[tuple[float, bool]]:
    return [(s, r) for items in queries for s, r, _ in items if s is not None]


def by_scorer(runs: Sequence[Mapping[str, Items]]) -> dict[str, dict[str, float]]:
    """Per backend that scored the items: mean calibrated score against the share relevant (over every seed)."""
    acc: dict[str, list[float]] = {}
    for run in runs:
        for items in run.values():
            for s, r, by in items:
                if s is not None and by is not None:
                    a = acc.setdefault(by, [0.0, 0.0, 0.0])
                    a[0] += s
                    a[1] += r
                    a[2] += 1
    return {by: {"mean_score": a[0] / a[2], "relevant_share": a[1] / a[2], "items": a[2]} for by, a in acc.items()}


def fit_all(pairs: Mapping[str, Sequence[ScorePair]], qids: set[str], domain: str, seed: int, grade: int) -> Calibrations:
    return {
        tier: {domain: fit_score_calibration([p for p in ps if p.qid in qids], folds=5, seed=seed, relevant_grade=grade)}
        for tier, ps in pairs.items()
    }


def overhead(rounds: int = 200, n: int = 100) -> dict[str, float]:
    """Median microseconds per 100-item result: the old build (items with one score each) and the new one."""
    import time

    from router.documents import normalize_documents
    from router.result import RankedItem
    from router.scores import ScoreBook

    rng = random.Random(0)
    docs = normalize_documents([f"passage {i}" for i in range(n)])
    raw = {i: rng.random() for i in range(n)}
    order = sorted(raw, key=raw.__getitem__, reverse=True)
    single = dict.fromkeys(raw, "a")
    cascade = {i: ("b" if pos < 20 else "a") for pos, i in enumerate(order)}
    iso = ScoreCalibration(method="isotonic", x=tuple(i / 40 for i in range(41)), y=tuple(i / 40 for i in range(41)))
    books = {"uncalibrated": ScoreBook({}), "calibrated": ScoreBook({"a": {"*": iso}, "b": {"*": iso}})}

    def new(book: ScoreBook, by: Mapping[int, str]) -> None:
        scored = book.assemble(order, raw, by, "web")
        RankedItem._many(docs, order, scored.scores.get, raw.get, by.get)

    variants: dict[str, Any] = {
        "before (one score per item)": lambda: RankedItem._many(docs, order, raw.get),
        "uncalibrated, one stage": lambda: new(books["uncalibrated"], single),
        "calibrated, one stage": lambda: new(books["calibrated"], single),
        "calibrated, cascade 100 -> 20": lambda: new(books["calibrated"], cascade),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            for _ in range(20):
                run()
            times[name].append((time.perf_counter() - started) / 20 * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def fit_stages(
    uncalibrated: Mapping[str, Mapping[str, RerankResult]], qids: set[str], dataset: Dataset, domain: str, seed: int, grade: int
) -> Calibrations:
    """Each cascade's later stage fitted on its own output in that cascade (``"<b> after <a>"``), training queries only."""
    out: Calibrations = {}
    for label, stages in CASCADES.items():
        if label not in uncalibrated:
            continue
        (first, _), (second, _) = stages
        pairs = [
            ScorePair(qid, item.raw_score, dataset.qrels.get(qid, {}).get(item.id, 0) >= grade)
            for qid, result in uncalibrated[label].items()
            if qid in qids
            for item in result.items
            if item.scored_by == second and item.raw_score is not None
        ]
        out[after_key(second, first)] = {domain: fit_score_calibration(pairs, folds=5, seed=seed, relevant_grade=grade)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "trec-dl19"))
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--quick", action="store_true", help="one fold seed (0) instead of five")
    parser.add_argument("--relevant-grade", type=int, default=2)
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / "results" / "cache"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overhead", action="store_true", help="time score assembly on the request path instead")
    args = parser.parse_args(argv)
    if args.overhead:
        medians = overhead()
        base = medians["before (one score per item)"]
        for name, us in medians.items():
            print(f"{name:<32} {us:8.1f} us  ({us / base:.2f}x)")
        if args.json:
            Path(args.json).write_text(json.dumps(medians, indent=2), encoding="utf-8")
        return 0
    dataset = load_dataset(args.dataset)
    grade = args.relevant_grade
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    cache = Path(args.cache)
    config = config_for(dataset, cache)
    domain = dataset.domain
    rows: dict[str, dict[str, Any]] = {}
    with EvalHarness(dataset, config, cache=cache / f"live-{short_name(dataset)}.json", progress=not args.no_progress) as harness:
        print(f"{dataset.name}: {len(dataset)} queries; backends: {harness.warm_up()}", flush=True)
        tiers = [t for t in TIERS if t in harness.available()]
        policies: dict[str, Any] = {t: OptionPolicy(((t, None),)) for t in tiers}
        policies.update(
            {label: OptionPolicy(stages) for label, stages in CASCADES.items() if {s for s, _ in stages} <= set(tiers)}
        )
        policies["constrained"] = create_policy("constrained")
        candidates = {q.qid: q.candidates for q in dataset.queries}
        pairs = {
            tier: [
                ScorePair(qid, s, dataset.qrels.get(qid, {}).get(c.docid, 0) >= grade)
                for qid, values in harness.first_stage_scores(tier).items()
                for c, s in zip(candidates[qid], values, strict=True)
            ]
            for tier in tiers
        }
        harness.save_cache()
        uncalibrated = {label: harness.results(policy, scores={}) for label, policy in policies.items()}
        before = {label: labelled(results, dataset, grade) for label, results in uncalibrated.items()}
        routed = [label for label in policies if label not in tiers]
        served = {
            qid: [s.backend for s in r.stages if s.ok] for qid, r in harness.results(policies["constrained"], scores={}).items()
        }
        after: dict[str, list[dict[str, Items]]] = {label: [] for label in [*policies, MIX]}
        staged_after: dict[str, list[dict[str, Items]]] = {label: [] for label in routed}
        methods: dict[str, list[str]] = {t: [] for t in tiers}
        for seed in seeds:
            held: dict[str, dict[str, Items]] = {label: {} for label in policies}
            held_staged: dict[str, dict[str, Items]] = {label: {} for label in routed}
            for train, test in kfold(list(dataset.qids), 5, seed):
                fits = fit_all(pairs, set(train), domain, seed, grade)
                staged = {**fits, **fit_stages(uncalibrated, set(train), dataset, domain, seed, grade)}
                for tier in tiers:
                    methods[tier].append(fits[tier][domain].method)
                for label, policy in policies.items():
                    held[label].update(labelled(harness.results(policy, qids=test, scores=fits), dataset, grade))
                    if label in routed:
                        results = harness.results(policy, qids=test, scores=staged)
                        held_staged[label].update(labelled(results, dataset, grade))
            rng = random.Random(seed)
            mix = {qid: held[rng.choice(tiers)][qid] for qid in dataset.qids}
            for label in policies:
                after[label].append(held[label])
            for label in routed:
                staged_after[label].append(held_staged[label])
            after[MIX].append(mix)
        rng0 = random.Random(0)
        before[MIX] = {qid: before[rng0.choice(tiers)][qid] for qid in dataset.qids}
        for label in after:
            kind = "tier" if label in tiers else "routed"
            per_seed = [ece(scored(list(run.values()))) for run in after[label]]
            row: dict[str, Any] = {
                "kind": kind,
                "ece_before": ece(scored(list(before[label].values()))),
                "ece_after": statistics.mean(per_seed),
                "ece_after_range": [min(per_seed), max(per_seed)],
                "thresholds": {
                    str(t): {
                        key: statistics.mean(threshold_row(list(run.values()), t)[key] for run in after[label])
                        for key in ("recall", "precision", "kept_per_query")
                    }
                    for t in THRESHOLDS
                },
                "thresholds_before": {str(t): threshold_row(list(before[label].values()), t) for t in THRESHOLDS},
            }
            if kind == "routed":
                row["after_by_scorer"] = by_scorer(after[label])
            if label in staged_after:
                staged_ece = [ece(scored(list(run.values()))) for run in staged_after[label]]
                row["ece_after_stage_fits"] = statistics.mean(staged_ece)
                row["ece_after_stage_fits_range"] = [min(staged_ece), max(staged_ece)]
                row["after_stage_fits_by_scorer"] = by_scorer(staged_after[label])
            if label in methods:
                row["methods"] = {m: methods[label].count(m) for m in sorted(set(methods[label]))}
            rows[label] = row
        mix_served: dict[str, int] = {}
        for backends in served.values():
            key = " -> ".join(backends) or "retriever order"
            mix_served[key] = mix_served.get(key, 0) + 1
        rows["constrained"]["served"] = mix_served
    report = summarise(dataset, rows, tiers, seeds, grade)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"\nreport: {args.json}")
    return 0


def summarise(
    dataset: Dataset, rows: dict[str, dict[str, Any]], tiers: Sequence[str], seeds: Sequence[int], grade: int
) -> dict[str, Any]:
    spread = {}
    for t in THRESHOLDS:
        recalls = {label: rows[label]["thresholds"][str(t)]["recall"] for label in tiers}
        routed = {label: row["thresholds"][str(t)]["recall"] for label, row in rows.items() if row["kind"] == "routed"}
        every = {**recalls, **routed}
        spread[str(t)] = {
            "tiers": max(recalls.values()) - min(recalls.values()),
            "tiers_and_routed": max(every.values()) - min(every.values()),
        }
    worst = max(row["ece_after"] for row in rows.values())
    worst_staged = max(row.get("ece_after_stage_fits", row["ece_after"]) for row in rows.values())
    return {
        "dataset": dataset.name,
        "queries": len(dataset),
        "relevant": f"grade >= {grade}",
        "ece_bins": f"{BINS} equal-width bins on [0, 1]",
        "cross_validation": f"query-grouped 5 folds, fold seeds {list(seeds)}; inner 5-fold CV on the training queries picks the method",
        "rows": rows,
        "recall_spread": spread,
        "targets": {
            "ece_after_max": worst,
            "ece_met": worst <= ECE_TARGET,
            "ece_after_stage_fits_max": worst_staged,
            "ece_met_with_stage_fits": worst_staged <= ECE_TARGET,
            "threshold_met": {t: s["tiers_and_routed"] <= THRESHOLD_TARGET for t, s in spread.items()},
        },
        "notes": [
            "BM25, RankVicuna and RankGPT scores are recorded ranks (1 - (rank - 1) / 100): calibration maps P(relevant | rank)",
            "cascades over a replayed listwise model order the subset by the model's rank over all 100 candidates",
        ],
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['dataset']}: {report['queries']} queries, relevant {report['relevant']}, ECE over {report['ece_bins']}")
    print(f"calibration: {report['cross_validation']}")
    header = f"{'row':<28} {'ECE before':>10} {'ECE after':>10} {'(range)':>15}"
    for t in THRESHOLDS:
        header += f" {'rec@' + str(t):>8} {'prec@' + str(t):>9}"
    print(header)
    for label, row in report["rows"].items():
        lo, hi = row["ece_after_range"]
        line = f"{label:<28} {row['ece_before']:>10.3f} {row['ece_after']:>10.3f} {f'{lo:.3f}-{hi:.3f}':>15}"
        for t in THRESHOLDS:
            th = row["thresholds"][str(t)]
            line += f" {th['recall']:>8.3f} {th['precision']:>9.3f}"
        print(line)
    for label, row in report["rows"].items():
        if "ece_after_stage_fits" in row:
            lo, hi = row["ece_after_stage_fits_range"]
            print(f"  {label}: ECE after with cascade-stage fits {row['ece_after_stage_fits']:.3f} ({lo:.3f}-{hi:.3f})")
    for label, row in report["rows"].items():
        if "methods" in row:
            print(f"  {label}: methods chosen per fold {row['methods']}")
    print(f"  constrained served: {report['rows']['constrained'].get('served')}")
    for label, row in report["rows"].items():
        for fits, key in (("backend fits", "after_by_scorer"), ("stage fits", "after_stage_fits_by_scorer")):
            for by, split in row.get(key, {}).items():
                print(
                    f"  {label} ({fits}): items scored by {by}: mean score {split['mean_score']:.3f}, "
                    f"share relevant {split['relevant_share']:.3f} ({split['items']:.0f} items over the seeds)"
                )
    for t, s in report["recall_spread"].items():
        print(f"recall spread at threshold {t}: tiers {s['tiers']:.3f}, tiers and routed rows {s['tiers_and_routed']:.3f}")
    targets = report["targets"]
    print(
        f"targets: ECE <= {ECE_TARGET} after calibration for every row: {'met' if targets['ece_met'] else 'NOT met'} "
        f"(worst {targets['ece_after_max']:.3f}; with cascade-stage fits {targets['ece_after_stage_fits_max']:.3f}); same share of relevant kept within {THRESHOLD_TARGET:.0%} points: "
        + ", ".join(f"at {t}: {'met' if ok else 'NOT met'}" for t, ok in targets["threshold_met"].items())
    )


if __name__ == "__main__":
    raise SystemExit(main())
