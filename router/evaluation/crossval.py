"""Fit the learned policy on some queries, measure it on others: k-fold cross-validation.

1. :func:`evaluate_options` runs every option of a grid (tiers and cascades) on every query
   through the harness's router: measured nDCG@10 and cost per query per option, and each
   request's features as the router computed them.
2. :func:`cross_validate` splits the queries into k folds; for each, it fits
   :func:`policies.learned.fit_learned` on the other k-1 folds only (models and tradeoff), then
   routes the held-out fold's queries through a Router running that fitted policy. The held-out
   runs are merged and measured together: no reported query was seen by the model that routed it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.learned import ALPHAS, Example, LearnedModel, LearnedPolicy, StageSpec, fit_learned, option_key, request_features
from router.evaluation.runner import EvalHarness, QueryBudget, RunResult

__all__ = ["CrossValidation", "cross_validate", "evaluate_options", "examples_from_runs", "kfold"]


def kfold(qids: Sequence[str], k: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(train, test) qid lists for k folds of a seeded shuffle; every qid is tested exactly once."""
    if not 2 <= k <= len(qids):
        raise ValueError(f"need 2 <= folds <= {len(qids)} queries, got {k}")
    shuffled = sorted(qids)
    random.Random(seed).shuffle(shuffled)
    folds = [shuffled[i::k] for i in range(k)]
    return [([q for j, f in enumerate(folds) if j != i for q in f], folds[i]) for i in range(k)]


def evaluate_options(harness: EvalHarness, options: Sequence[tuple[StageSpec, ...]]) -> dict[str, RunResult]:
    """Option key -> its run over the whole set (each a fixed option through a real Router)."""
    return {option_key(o): harness.run_option(list(o), label=option_key(o)) for o in options}


def examples_from_runs(runs: Mapping[str, RunResult], tokenizer_family: str = "bert-wordpiece") -> dict[str, Example]:
    """Per query: the features its request had, each option's measured nDCG@10 and predicted cost."""
    first = next(iter(runs.values()))
    primary = first.measures.primary
    out: dict[str, Example] = {}
    for record in first.records:
        if record.features is None:
            continue
        quality = {key: run.per_query.get(record.qid, {}).get(primary, 0.0) for key, run in runs.items()}
        cost = {key: _cost(run, record.qid) for key, run in runs.items()}
        out[record.qid] = Example(record.qid, request_features(record.features, tokenizer_family), quality, cost)
    return out


def _cost(run: RunResult, qid: str) -> float:
    """The cost the router predicted when it planned the query (what a policy sees), else the billed one."""
    for record in run.records:
        if record.qid == qid:
            value = record.predicted_cost_usd if record.predicted_cost_usd is not None else record.cost_usd
            return float("inf") if value is None else value
    raise KeyError(qid)


@dataclass(frozen=True)
class CrossValidation:
    run: RunResult
    """Held-out folds merged: every query routed by a model that never saw it."""
    models: tuple[LearnedModel, ...]
    folds: tuple[dict[str, object], ...]


def cross_validate(
    harness: EvalHarness,
    runs: Mapping[str, RunResult],
    options: Sequence[tuple[StageSpec, ...]],
    *,
    folds: int = 5,
    seed: int = 0,
    target_quality_share: float | None = None,
    target_cost_share: float | None = None,
    alpha: float | Sequence[float] = ALPHAS,
    tokenizer_family: str = "bert-wordpiece",
    label: str | None = None,
    budget: QueryBudget | None = None,
) -> CrossValidation:
    """k-fold CV of the learned policy; see the module docstring."""
    examples = examples_from_runs(runs, tokenizer_family)
    qids = [q for q in harness.dataset.qids if q in examples]
    held_out: list[RunResult] = []
    models: list[LearnedModel] = []
    table: list[dict[str, object]] = []
    name = label or f"learned ({folds}-fold CV)"
    for i, (train, test) in enumerate(kfold(qids, folds, seed)):
        model = fit_learned(
            [examples[q] for q in train],
            options,
            target_quality_share=target_quality_share,
            target_cost_share=target_cost_share,
            alpha=alpha,
            tokenizer_family=tokenizer_family,
            fitted_on=f"{harness.dataset.name}: fold {i + 1}/{folds} training queries ({len(train)})",
        )
        run = harness.run(f"{name} fold {i + 1}", LearnedPolicy(model=model), qids=test, budget=budget)
        held_out.append(run)
        models.append(model)
        table.append(
            {
                "fold": i + 1,
                "train": len(train),
                "test": len(test),
                "tradeoff": model.tradeoff,
                "target": model.target,
                "held_out_ndcg@10": run.ndcg,
                "held_out_cost_usd": run.cost_mean,
                "tier_mix": run.tier_mix,
            }
        )
    merged = RunResult.merge(name, "policy", "learned", held_out, harness.dataset.qrels)
    return CrossValidation(merged, tuple(models), tuple(table))
