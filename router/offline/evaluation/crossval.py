"""Fit a policy on some queries, measure it on others: k-fold cross-validation.

1. :func:`evaluate_options` runs every option of a grid (tiers and cascades) on every query
   through the harness's router: measured nDCG@10 and cost per query per option, and each
   request's features as the router computed them.
2. :func:`cross_validate` splits the queries into k folds; for each, it fits
   :func:`policies.learned.fit_learned` on the other k-1 folds only (models and tradeoff), then
   routes the held-out fold's queries through a Router running that fitted policy.
   :func:`cross_validate_constrained` does the same for the constrained policy: per fold,
   :func:`router.offline.calibration.fit_constrained` (what ``rerank-router calibrate --fit-constrained``
   writes to a profile: each backend's quality, the cascade curve's ``saturation_k``) on the other
   folds, then the held-out queries go through a Router planning with those values, under the
   user's budget (a per-query cost ceiling is a choice, not a fit).
   The held-out runs are merged and measured together: no reported query was seen by the fit
   that routed it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from policies.adaptive import FEATURES, RETRIEVER_FEATURES, AdaptiveModel, AdaptivePolicy, WithoutSignal, escalation_features
from policies.learned import LearnedModel, LearnedPolicy, StageSpec, option_key, request_features
from policies.registry import create_policy
from router.accounting.budget import BudgetWindow
from router.datasets import Dataset
from router.offline.calibration import ConstrainedFit, fit_constrained
from router.offline.evaluation.runner import Budgets, EvalHarness, QueryBudget, RunResult
from router.offline.fitting import ALPHAS, EscalationExample, Example, fit_adaptive, fit_learned

__all__ = [
    "CrossValidation",
    "cross_validate",
    "cross_validate_adaptive",
    "cross_validate_constrained",
    "escalation_evidence",
    "escalation_examples",
    "evaluate_options",
    "examples_from_runs",
    "first_stage_of",
    "kfold",
]

Fit = TypeVar("Fit")


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
class CrossValidation(Generic[Fit]):
    run: RunResult
    """Held-out folds merged: every query routed by a model that never saw it."""
    models: tuple[Fit, ...]
    """What was fitted on each fold's training queries (a LearnedModel, a ConstrainedFit)."""
    folds: tuple[dict[str, object], ...]


def _fitted_on(harness: EvalHarness, i: int, folds: int, train: Sequence[str]) -> str:
    return f"{harness.dataset.name}: fold {i + 1}/{folds} training queries ({len(train)})"


def _fold_row(i: int, train: Sequence[str], test: Sequence[str], run: RunResult, **fitted: object) -> dict[str, object]:
    """One fold's line in the report: sizes, what was fitted, and the held-out result."""
    return {
        "fold": i + 1,
        "train": len(train),
        "test": len(test),
        **fitted,
        "held_out_ndcg@10": run.ndcg,
        "held_out_cost_usd": run.cost_mean,
        "tier_mix": run.tier_mix,
    }


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
) -> CrossValidation[LearnedModel]:
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
            fitted_on=_fitted_on(harness, i, folds, train),
        )
        run = harness.run(f"{name} fold {i + 1}", LearnedPolicy(model=model), qids=test, budget=budget)
        held_out.append(run)
        models.append(model)
        table.append(_fold_row(i, train, test, run, tradeoff=model.tradeoff, target=model.target))
    merged = RunResult.merge(name, "policy", "learned", held_out, harness.dataset.qrels)
    return CrossValidation(merged, tuple(models), tuple(table))


def _fit_curve(
    options: Sequence[tuple[StageSpec, ...]], runs: Mapping[str, RunResult], qids: Sequence[str], *, fitted_on: str = ""
) -> ConstrainedFit:
    """The constrained policy's inputs (fit_constrained) from each option's primary measure on ``qids``."""
    primary = next(iter(runs.values())).measures.primary
    quality = [{key: run.per_query[q].get(primary, 0.0) for key, run in runs.items()} for q in qids]
    return fit_constrained(options, quality, fitted_on=fitted_on)


def cross_validate_constrained(
    harness: EvalHarness,
    runs: Mapping[str, RunResult],
    options: Sequence[tuple[StageSpec, ...]],
    *,
    folds: int = 5,
    seed: int = 0,
    budget: Budgets = None,
    label: str | None = None,
    cascade_k: Sequence[int] | None = None,
) -> CrossValidation[ConstrainedFit]:
    """k-fold CV of the constrained policy with fitted inputs; see the module docstring.

    ``runs``/``options``: :func:`evaluate_options` over a grid holding each backend alone and the
    cascades to fit the curve on. ``budget``: the user's (e.g. a per-query cost ceiling); the same
    for every fold. ``cascade_k``: the policy's cascade grid (default: ConstrainedPolicy's).
    """
    qids = [q for q in harness.dataset.qids if all(q in run.per_query for run in runs.values())]
    domain = harness.dataset.domain
    held_out: list[RunResult] = []
    fits: list[ConstrainedFit] = []
    rows: list[dict[str, object]] = []
    name = label or f"constrained ({folds}-fold CV)"
    for i, (train, test) in enumerate(kfold(qids, folds, seed)):
        fit = _fit_curve(options, runs, train, fitted_on=_fitted_on(harness, i, folds, train))
        params: dict[str, object] = fit.policy_params()
        if cascade_k:
            params["cascade_k"] = tuple(cascade_k)
        policy = create_policy("constrained", params)  # as a config's `policy:` builds it
        run = harness.run(f"{name} fold {i + 1}", policy, qids=test, budget=budget, specs=fit.profile_backends(domain))
        held_out.append(run)
        fits.append(fit)
        quality_by_backend = {k: round(v, 4) for k, v in fit.quality.items()}
        rows.append(_fold_row(i, train, test, run, quality=quality_by_backend, saturation_k=fit.saturation_k))
    merged = RunResult.merge(name, "policy", "constrained", held_out, harness.dataset.qrels)
    return CrossValidation(merged, tuple(fits), tuple(rows))


def first_stage_of(runs: Mapping[str, RunResult], options: Sequence[tuple[StageSpec, ...]], qids: Sequence[str]) -> str:
    """The free first stage of the grid's cascades with the best mean nDCG@10 alone on ``qids``."""
    firsts = sorted({o[0][0] for o in options if len(o) > 1})
    if not firsts:
        raise ValueError("the option grid has no cascade: no first stage to escalate from")
    primary = next(iter(runs.values())).measures.primary

    def alone(name: str) -> float:
        per = runs[option_key(((name, None),))].per_query
        return sum(per.get(q, {}).get(primary, 0.0) for q in qids) / max(1, len(qids))

    return max(firsts, key=alone)


def escalation_examples(
    runs: Mapping[str, RunResult],
    options: Sequence[tuple[StageSpec, ...]],
    first_stage: str,
    scores: Mapping[str, Sequence[float]],
    queries: Mapping[str, str],
    retriever: Mapping[str, Sequence[float] | None] | None = None,
    features: Sequence[str] = FEATURES,
) -> dict[str, EscalationExample]:
    """Per query: escalation features (``features``) of ``first_stage``'s scores and, for the retriever
    features, of ``retriever``'s scores by qid; and per cascade ``first_stage@all -> b@k`` of the grid its
    measured gain over ``first_stage`` alone and its predicted cost."""
    alone = runs[option_key(((first_stage, None),))]
    primary = alone.measures.primary
    strong = [o for o in options if len(o) == 2 and o[0][0] == first_stage and o[1][1] is not None]
    out: dict[str, EscalationExample] = {}
    for qid, values in scores.items():
        base = alone.per_query.get(qid, {}).get(primary, 0.0)
        gain: dict[tuple[str, int], float] = {}
        cost: dict[tuple[str, int], float] = {}
        for o in strong:
            backend, k = o[1][0], int(o[1][1] or 0)
            run = runs[option_key(o)]
            gain[(backend, k)] = run.per_query.get(qid, {}).get(primary, 0.0) - base
            cost[(backend, k)] = _cost(run, qid)
        given = None if retriever is None else retriever.get(qid)
        out[qid] = EscalationExample(qid, escalation_features(queries[qid], values, given, features), gain, cost)
    return out


def escalation_evidence(
    dataset: Dataset, qids: Sequence[str], *, retriever_features: bool = True
) -> tuple[tuple[str, ...], dict[str, tuple[float, ...] | None]]:
    """The escalation features to fit on (policies.adaptive.FEATURES, and RETRIEVER_FEATURES when every one of
    ``qids`` has the retriever's score on every candidate) and the retriever's scores by qid."""
    retriever = {q.qid: q.retriever_scores() for q in dataset.queries}
    use = retriever_features and bool(qids) and all(retriever.get(q) is not None for q in qids)
    return ((*FEATURES, *RETRIEVER_FEATURES) if use else FEATURES), retriever


def cross_validate_adaptive(
    harness: EvalHarness,
    runs: Mapping[str, RunResult],
    options: Sequence[tuple[StageSpec, ...]],
    *,
    folds: int = 5,
    seed: int = 0,
    budget: Budgets = None,
    target_cost: float | None = None,
    label: str | None = None,
    min_queries: int | None = None,
    scores: Mapping[str, Sequence[float]] | None = None,
    train_size: int | None = None,
    retriever_features: bool = True,
    window: BudgetWindow | None = None,
    without_signal: WithoutSignal | Literal["cv"] = "curve",
    qids: Sequence[str] | None = None,
) -> CrossValidation[AdaptiveModel]:
    """k-fold CV of the adaptive policy: per fold, :func:`router.offline.fitting.fit_adaptive` on the
    training queries (first stage: the free one best alone on them; slopes; price of quality for a mean
    cost of ``target_cost`` $/query on them), then the held-out queries through a Router running it
    under ``budget``. ``scores``: the first stage's scores by qid, if already computed. ``train_size``: fit
    each fold on a seeded sample of this many of its training queries (how much labelled data it needs);
    ``min_queries``: the policy's fallback threshold (1 to use the model however few queries fitted it).
    ``retriever_features``: also fit on the retriever's own scores (policies.adaptive.RETRIEVER_FEATURES) when
    every query's candidates carry one. ``window``: a mean-cost budget window (router.accounting.budget) that
    every fold's Router shares: the held-out queries are one request stream, fold after fold, each routed by
    its own fold's model, and the window's controller steers the price of a dollar across the whole stream.
    The policy's fallback (the curve) is fitted on each fold's training queries too (fit_constrained);
    ``without_signal``: the model's ``without_signal`` where a fold's fit keeps no slope: ``curve``, ``means``,
    or ``cv``: the one with the better nDCG@10 in an inner cross-validation on that fold's training queries
    (:func:`choose_without_signal`, as ``calibrate --fit-adaptive --without-signal cv`` chooses on all of them). ``qids``: only
    these queries (default: every query every run has)."""
    qids = [q for q in (harness.dataset.qids if qids is None else qids) if all(q in run.per_query for run in runs.values())]
    texts = {q.qid: q.text for q in harness.dataset.queries}
    cache: dict[str, dict[str, EscalationExample]] = {}  # by first stage: the same for every fold
    names, retriever = escalation_evidence(harness.dataset, qids, retriever_features=retriever_features)
    held_out: list[RunResult] = []
    models: list[AdaptiveModel] = []
    rows: list[dict[str, object]] = []
    name = label or f"adaptive ({folds}-fold CV)"
    for i, (full_train, test) in enumerate(kfold(qids, folds, seed)):
        train = full_train
        if train_size is not None and train_size < len(full_train):
            train = sorted(random.Random(1000 * seed + i).sample(full_train, train_size))
        first = first_stage_of(runs, options, train)
        if first not in cache:
            first_scores = scores if scores is not None else harness.first_stage_scores(first)
            cache[first] = escalation_examples(runs, options, first, first_scores, texts, retriever, names)
        examples = cache[first]
        model = fit_adaptive(
            [examples[q] for q in train],
            first,
            target_cost=target_cost,
            fitted_on=_fitted_on(harness, i, folds, train),
            features=names,
        )
        # The fallback's inputs (the curve: quality per backend, saturation_k) from the same training queries,
        # as `calibrate --fit-adaptive` writes them beside the model.
        curve = _fit_curve(options, runs, train)
        inner: dict[str, float] = {}
        if not model.has_signal:
            if without_signal != "cv":
                choice: WithoutSignal = without_signal
            else:
                choice, inner = choose_without_signal(
                    harness, runs, options, train, seed=seed, target_cost=target_cost, budget=budget,
                    min_queries=min_queries, scores=scores, retriever_features=retriever_features,
                )  # fmt: skip
            model = model.model_copy(update={"without_signal": choice})
        params: dict[str, Any] = {"model": model, **curve.policy_params()}
        if min_queries is not None:
            params["min_queries"] = min_queries
        policy = AdaptivePolicy(**params)
        specs = curve.profile_backends(harness.dataset.domain)
        run = harness.run(f"{name} fold {i + 1}", policy, qids=test, budget=budget, window=window, specs=specs)
        held_out.append(run)
        models.append(model)
        rows.append(
            _fold_row(
                i,
                train,
                test,
                run,
                first_stage=first,
                alpha=model.alpha,
                slopes=[round(w, 4) for w in model.slopes],
                min_gain_per_usd=model.min_gain_per_usd,
                without_signal=None if model.has_signal else model.without_signal,
                inner_cv={k: round(v, 4) for k, v in inner.items()},
            )
        )
    merged = RunResult.merge(name, "policy", "adaptive", held_out, harness.dataset.qrels)
    return CrossValidation(merged, tuple(models), tuple(rows))


INNER_FOLDS = 3
"""Folds of :func:`choose_without_signal`'s inner cross-validation (on one outer fold's training queries)."""


def choose_without_signal(
    harness: EvalHarness,
    runs: Mapping[str, RunResult],
    options: Sequence[tuple[StageSpec, ...]],
    qids: Sequence[str],
    *,
    seed: int = 0,
    folds: int = INNER_FOLDS,
    target_cost: float | None = None,
    budget: Budgets = None,
    min_queries: int | None = None,
    scores: Mapping[str, Sequence[float]] | None = None,
    retriever_features: bool = True,
) -> tuple[WithoutSignal, dict[str, float]]:
    """Which fallback a model with no slope should use on data like ``qids``: the adaptive policy
    cross-validated on them both ways (``curve`` and ``means``), the one with the higher mean nDCG@10
    over the held-out queries (ties: ``curve``, the smaller model); with each one's mean."""
    primary = next(iter(runs.values())).measures.primary
    found: dict[str, float] = {}
    for mode in ("curve", "means"):
        cv = cross_validate_adaptive(
            harness, runs, options, folds=min(folds, len(qids)), seed=seed, budget=budget, target_cost=target_cost,
            label=f"adaptive inner CV ({mode})", min_queries=min_queries, scores=scores,
            retriever_features=retriever_features, without_signal=mode, qids=qids,
        )  # fmt: skip
        values = [cv.run.per_query[q].get(primary, 0.0) for q in qids if q in cv.run.per_query]
        found[mode] = sum(values) / max(1, len(values))
    return ("means" if found["means"] > found["curve"] else "curve"), found
