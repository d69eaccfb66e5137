"""A fitted per-query router: predicted quality of each option from request features, priced.

For every option in its model (single tiers, the retriever's order, cascades ``cheap@N -> strong@k``)
the policy predicts the request's nDCG@10 with a ridge-regression model over features known before
anything runs (query length, candidate count, candidate length and spread, in the model's
tokenizer family), takes cost and latency from the router's own estimator (``ctx.estimate``), and
picks, among the options that pass every hard rule, the one with the highest
``predicted quality - tradeoff * predicted cost``. ``tradeoff`` (nDCG points per dollar) is a
calibrated output (:func:`router.calibration.calibrate_tradeoff`): the cheapest setting that
reaches a target quality on the training queries, or the best quality within a target cost.
Configured backends the model does not know are still assessed and serve as fallbacks.

How to fit it on your own labelled data (queries with their candidates in first-stage order, as
JSON Lines ``{"qid", "query", "candidates": [{"id", "text"}]}``, and TREC qrels):

    rerank-router --config my.yaml eval --dataset my-queries.jsonl --qrels my-qrels.txt --cv 5
    rerank-router --config my.yaml calibrate --dataset my-queries.jsonl --qrels my-qrels.txt \
        --fit-learned --target-quality-share 1.0 --out my-profile.yaml

The first reports the policy honestly (each query routed by a model fitted on the other folds);
the second fits it on all your queries: it runs every option of the grid (:func:`option_grid`:
the retriever's order, each backend, each free@N -> priced@k cascade) on each query through the
router, fits the per-option models and the tradeoff (here: reach the best single tier's nDCG@10 at
the least cost; ``--target-cost-share 0.3`` buys the best quality for 30% of its cost instead),
and writes them to the profile's ``learned:`` section. Then point the config at it::

    profile: my-profile.yaml
    policy: {name: learned, params: {profile: my-profile.yaml}}

In Python: :func:`router.evaluation.cross_validate`, or :func:`fit_learned` over :class:`Example` rows.

On TREC DL19 the features carry no signal the fit can find (the one-standard-error rule keeps no
feature weight, so every option's model is its mean quality and the policy picks the option with
the best measured quality per predicted dollar); the structure is there for traffic where length
or candidate count does predict which option pays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.base import PlanningContext, assess, by_quality, plan_by, single_stage_options
from router.catalog import BackendSpec
from router.errors import ConfigError
from router.features import Features, TokenStats
from router.plan import RETRIEVER_ORDER, Assessed, Option, Plan, Stage

__all__ = [
    "ALPHAS",
    "FEATURES",
    "Example",
    "LearnedModel",
    "LearnedParams",
    "LearnedPolicy",
    "OptionModel",
    "StageSpec",
    "fit_learned",
    "option_grid",
    "option_key",
    "request_features",
]

FEATURES: tuple[str, ...] = ("log_query_tokens", "log_candidates", "log_mean_doc_tokens", "doc_tokens_cv", "long_doc_share")
"""Request features known before any model runs (see :func:`request_features`)."""

StageSpec = tuple[str, int | None]
"""(backend, candidates in); None: all N."""


def _stats(features: Features, family: str) -> TokenStats:
    if family in features.tokens:
        return features.tokens[family]
    return next(iter(features.tokens.values())) if features.tokens else TokenStats(family, False, 0, ())


def request_features(features: Features, family: str = "bert-wordpiece") -> tuple[float, ...]:
    """:data:`FEATURES` for one request, from the router's own :class:`~router.features.Features`."""
    stats = _stats(features, family)
    docs = stats.docs or (0,)
    mean = sum(docs) / len(docs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in docs) / len(docs)) / mean if mean > 0 else 0.0
    return (
        math.log1p(stats.query),
        math.log1p(features.n_candidates),
        math.log1p(mean),
        spread,
        sum(1 for d in docs if d > 2 * mean) / len(docs),
    )


def option_key(stages: Sequence[StageSpec]) -> str:
    """A stable name for an option of the grid: ``retriever-order``, ``a``, ``a@all -> b@20``."""
    if not stages:
        return RETRIEVER_ORDER
    if len(stages) == 1 and stages[0][1] is None:
        return stages[0][0]
    return " -> ".join(f"{b}@{'all' if k is None else k}" for b, k in stages)


class OptionModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: tuple[tuple[str, int | None], ...]
    intercept: float
    weights: tuple[float, ...]
    alpha: float | None = None
    """The ridge penalty chosen for this option (inf: no feature weights)."""
    train_quality: float | None = None
    """Mean measured quality on the fitting queries (for the record)."""
    train_cost_usd: float | None = None

    @property
    def key(self) -> str:
        return option_key(self.stages)


class LearnedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenizer_family: str = "bert-wordpiece"
    features: tuple[str, ...] = FEATURES
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    options: tuple[OptionModel, ...]
    tradeoff: float = Field(ge=0)
    """nDCG@10 points per US dollar: choose argmax(quality - tradeoff * cost)."""
    target: str = ""
    """What the tradeoff was calibrated for, e.g. 'quality >= 1.00 x rankgpt (0.6812)'."""
    fitted_on: str = ""

    def predict(self, x: Sequence[float]) -> dict[str, float]:
        z = [(v - m) / s for v, m, s in zip(x, self.mean, self.scale, strict=True)]
        return {
            o.key: min(1.0, max(0.0, o.intercept + sum(w * v for w, v in zip(o.weights, z, strict=True)))) for o in self.options
        }


class LearnedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = None
    """A profile file (router.calibration) whose ``learned:`` section holds the model."""
    model: LearnedModel | None = None
    """The model inline, instead of ``profile``."""
    tradeoff: float | None = Field(None, ge=0)
    """Override the fitted tradeoff (nDCG points per dollar)."""


def _load_model(profile: str | None, model: LearnedModel | Mapping[str, Any] | None) -> LearnedModel:
    if model is not None:
        return model if isinstance(model, LearnedModel) else LearnedModel.model_validate(dict(model))
    if profile is None:
        raise ConfigError(
            "policy 'learned' needs params.profile (a profile with a fitted `learned:` section) or params.model; "
            "fit one with: rerank-router calibrate --fit-learned --dataset ... --out PROFILE"
        )
    from router.calibration import load_profile

    section = load_profile(profile).learned
    if section is None:
        raise ConfigError(f"profile {profile} has no `learned:` section; fit one with rerank-router calibrate --fit-learned")
    try:
        return LearnedModel.model_validate(section)
    except ValidationError as exc:
        lines = [f"learned.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid learned model in {profile}:\n  " + "\n  ".join(lines)) from exc


class LearnedPolicy:
    """Best predicted quality minus tradeoff x predicted cost, per request, within the hard rules."""

    def __init__(
        self,
        profile: str | None = None,
        model: LearnedModel | Mapping[str, Any] | None = None,
        tradeoff: float | None = None,
        name: str = "learned",
    ) -> None:
        self.name = name
        self.model = _load_model(profile, model)
        self.tradeoff = self.model.tradeoff if tradeoff is None else tradeoff

    def __repr__(self) -> str:
        return f"LearnedPolicy(options={len(self.model.options)}, tradeoff={self.tradeoff:g})"

    def _utility(self, option: Option) -> float:
        quality = option.estimate.quality
        cost = option.estimate.cost_usd
        if quality is None:
            return -math.inf
        if cost is None:
            return quality if self.tradeoff == 0 else -math.inf
        return quality - self.tradeoff * cost

    def plan(self, ctx: PlanningContext) -> Plan:
        n = ctx.features.n_candidates
        predicted = self.model.predict(request_features(ctx.features, self.model.tokenizer_family))
        modelled: list[Option] = []
        for om in self.model.options:
            if any(b not in ctx.backends for b, _ in om.stages):
                continue
            if len(om.stages) > 1 and any(k is not None and k >= n for _, k in om.stages[1:]):
                continue  # a later stage over every candidate: the cascade degenerates here
            stages = tuple(Stage(b, n if k is None else min(k, n)) for b, k in om.stages)
            option = ctx.estimate(stages)
            q = predicted[om.key]
            note = f"learned: predicted nDCG@10 {q:.3f} ({om.key})"
            modelled.append(replace(option, estimate=replace(option.estimate, quality=q), notes=(*option.notes, note)))
        names = {o.name for o in modelled}
        others = [o for o in single_stage_options(ctx) if o.name not in names]
        assessed: list[Assessed] = assess([*modelled, *others], ctx)
        utility = {o.name: self._utility(o) for o in modelled}

        def key(option: Option) -> tuple[float, ...]:
            u = utility.get(option.name)
            return (0.0 if u is not None else 1.0, -(u if u is not None else 0.0), *by_quality(option))

        feasible = [a.option for a in assessed if a.feasible and a.option.name in utility and utility[a.option.name] > -math.inf]
        if not feasible:
            reason = "no modelled option passes the constraints: best feasible predicted quality"
            return plan_by(self.name, assessed, key, reason)
        best = min(feasible, key=key)
        cost = best.estimate.cost_usd
        reason = (
            f"{best.name}: predicted nDCG@10 {best.estimate.quality:.3f} at "
            f"{'unknown cost' if cost is None else f'${cost:.6f}'} maximises quality - {self.tradeoff:.4g} x cost "
            f"over {len(feasible)} feasible modelled option(s)"
        )
        return plan_by(self.name, assessed, key, reason, first=best)


# -- fitting ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Example:
    """One labelled query: its request features and, per option key, measured quality and cost."""

    qid: str
    features: tuple[float, ...]
    quality: Mapping[str, float]
    cost: Mapping[str, float]


def option_grid(specs: Mapping[str, BackendSpec], ks: Sequence[int] = (10, 20, 30, 50)) -> list[tuple[StageSpec, ...]]:
    """Options to fit: the retriever's order, each backend on all candidates, and every cascade
    from a free backend on all candidates to a priced one on the top k."""
    free = [n for n, s in specs.items() if s.pricing.scheme == "free"]
    priced = [n for n, s in specs.items() if s.pricing.scheme != "free"]
    grid: list[tuple[StageSpec, ...]] = [()]
    grid.extend(((n, None),) for n in specs)
    grid.extend(((cheap, None), (strong, k)) for cheap in free for strong in priced for k in ks)
    return grid


ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, math.inf)
"""Ridge penalties :func:`fit_learned` chooses from per option (inf: the option's mean alone)."""


def _ridge(z: Any, y: Any, alphas: Sequence[float]) -> tuple[Any, float]:
    """Weights on standardised (centred) features, and the penalty chosen by leave-one-out error.

    Closed form: with the intercept unpenalised and z centred, the hat matrix is 11'/n + z(z'z + aI)^-1 z',
    and the leave-one-out residual is (y - fit) / (1 - h_ii). One-standard-error rule: the largest
    penalty whose error is within one standard error of the least, so weights are kept only where
    the features earn them (few queries make the least error itself noisy)."""
    import numpy as np

    n, f = z.shape
    centred = y - y.mean()
    tried: list[tuple[float, Any, Any]] = []
    for a in sorted(alphas, reverse=True):
        if math.isinf(a):
            w = np.zeros(f)
            leverage = np.full(n, 1.0 / n)
        else:
            inverse = np.linalg.inv(z.T @ z + a * np.eye(f))
            w = inverse @ z.T @ centred
            leverage = 1.0 / n + np.einsum("ij,jk,ik->i", z, inverse, z)
        squared = ((centred - z @ w) / np.maximum(1.0 - leverage, 1e-9)) ** 2
        tried.append((float(a), w, squared))
    best = min(tried, key=lambda t: float(t[2].mean()))
    bound = float(best[2].mean()) + float(best[2].std()) / math.sqrt(n)
    for a, w, squared in tried:  # largest penalty first
        if float(squared.mean()) <= bound:
            return w, a
    return best[1], best[0]


def _fit_predict(x_train: Any, y_train: Any, x_test: Any, alphas: Sequence[float]) -> Any:
    """Per option: standardise on the training rows, ridge with the LOO-chosen penalty, predict the test rows."""
    import numpy as np

    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z_train, z_test = (x_train - mean) / scale, (x_test - mean) / scale
    out = np.zeros((len(x_test), y_train.shape[1]))
    for j in range(y_train.shape[1]):
        w, _ = _ridge(z_train, y_train[:, j], alphas)
        out[:, j] = np.clip(y_train[:, j].mean() + z_test @ w, 0.0, 1.0)
    return out


def fit_learned(
    examples: Sequence[Example],
    options: Sequence[tuple[StageSpec, ...]],
    *,
    target_quality_share: float | None = None,
    target_cost_share: float | None = None,
    alpha: float | Sequence[float] = ALPHAS,
    inner_folds: int = 5,
    seed: int = 0,
    tokenizer_family: str = "bert-wordpiece",
    reference: str | None = None,
    fitted_on: str = "",
) -> LearnedModel:
    """Ridge model per option (standardised features) and the calibrated tradeoff.

    ``alpha``: the ridge penalty, or candidates to choose from per option by leave-one-out error on
    the examples (``inf`` = no feature weights, the option's mean): where the features carry no
    signal, the mean wins and the policy routes by measured quality per dollar alone.

    Targets are relative to the ``reference`` option (default: the single tier with the best mean
    quality on these examples): ``target_quality_share=1.0`` reaches its quality at the least cost;
    ``target_cost_share=0.3`` buys the best quality for 30% of its cost.

    The tradeoff is calibrated on out-of-fold predictions (``inner_folds``-fold within the
    examples; 0: in-sample): picking the option that looks best on the very queries it is judged on
    overstates what it delivers on new ones (the winner's curse), so the target is checked on
    choices made by models that did not see the query. ``Example.cost`` should be the cost the
    router *predicted* (what the policy sees when it plans), not the billed one.
    """
    import numpy as np

    from router.calibration import calibrate_tradeoff

    if not examples:
        raise ValueError("no examples to fit on")
    keys = [option_key(o) for o in options]
    missing = [k for k in keys if any(k not in e.quality or k not in e.cost for e in examples)]
    if missing:
        raise ValueError(f"examples lack measurements for option(s): {', '.join(sorted(set(missing)))}")
    x = np.asarray([e.features for e in examples], dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    alphas = [alpha] if isinstance(alpha, int | float) else list(alpha)
    models: list[OptionModel] = []
    quality = np.asarray([[e.quality[k] for k in keys] for e in examples])
    cost = np.asarray([[e.cost[k] for k in keys] for e in examples])
    for j, stages in enumerate(options):
        y = quality[:, j]
        w, chosen = _ridge(z, y, alphas)
        models.append(
            OptionModel(
                stages=tuple(stages),
                intercept=float(y.mean()),
                weights=tuple(float(v) for v in w),
                alpha=chosen,
                train_quality=float(y.mean()),
                train_cost_usd=float(cost[:, j].mean()),
            )
        )
    n = len(examples)
    if inner_folds >= 2 and n >= 2 * inner_folds:
        order = np.random.default_rng(seed).permutation(n)
        predictions = np.zeros_like(quality)
        for f in range(inner_folds):
            test = order[f::inner_folds]
            train = np.setdiff1d(order, test)
            predictions[test] = _fit_predict(x[train], quality[train], x[test], alphas)
        how = f"{inner_folds}-fold out-of-fold"
    else:
        predictions = _fit_predict(x, quality, x, alphas)
        how = "in-sample"
    singles = [j for j, o in enumerate(options) if len(o) == 1 and o[0][1] is None]
    ref = keys.index(reference) if reference is not None else max(singles or range(len(keys)), key=lambda j: quality[:, j].mean())
    ref_quality, ref_cost = float(quality[:, ref].mean()), float(cost[:, ref].mean())
    if target_cost_share is not None:
        fit = calibrate_tradeoff(
            predictions.tolist(), cost.tolist(), target_cost=target_cost_share * ref_cost, measured=quality.tolist()
        )
        target = f"cost <= {target_cost_share:.2f} x {keys[ref]} (${target_cost_share * ref_cost:.6f}/query)"
    else:
        share = 1.0 if target_quality_share is None else target_quality_share
        fit = calibrate_tradeoff(
            predictions.tolist(), cost.tolist(), target_quality=share * ref_quality, measured=quality.tolist()
        )
        target = f"nDCG@10 >= {share:.2f} x {keys[ref]} ({share * ref_quality:.4f})"
    return LearnedModel(
        tokenizer_family=tokenizer_family,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        options=tuple(models),
        tradeoff=float(fit.tradeoff),
        target=f"{target}; {how} on the fitting queries: nDCG@10 {fit.mean_quality:.4f} at ${fit.mean_cost:.6f}/query",
        fitted_on=fitted_on or f"{n} queries",
    )
