"""A fitted per-query router: predicted quality of each option from request features, priced.

For every option in its model (single tiers, the retriever's order, cascades ``cheap@N -> strong@k``)
the policy predicts the request's nDCG@10 with a ridge-regression model over features known before
anything runs (query length, candidate count, candidate length and spread, in the model's
tokenizer family), takes cost and latency from the router's own estimator (``ctx.estimate``), and
picks, among the options that pass every hard rule, the one with the highest
``predicted quality - tradeoff * predicted cost``. ``tradeoff`` (nDCG points per dollar) is a
calibrated output (:func:`router.offline.fitting.calibrate_tradeoff`): the cheapest setting that
reaches a target quality on the training queries, or the best quality within a target cost.
Configured backends the model does not know are still assessed and serve as fallbacks.

How to fit it on your own labelled data (queries with their candidates in first-stage order, as
JSON Lines ``{"qid", "query", "candidates": [{"id", "text"}]}``, and TREC qrels):

    rerank-router --config my.yaml eval --dataset my-queries.jsonl --qrels my-qrels.txt --cv 5
    rerank-router --config my.yaml calibrate --dataset my-queries.jsonl --qrels my-qrels.txt \
        --fit-learned --target-quality-share 1.0 --out my-profile.yaml

The first reports the policy honestly (each query routed by a model fitted on the other folds);
the second fits it on all your queries: it runs every option of the grid (:func:`router.offline.fitting.option_grid`:
the retriever's order, each backend, each free@N -> priced@k cascade) on each query through the
router, fits the per-option models and the tradeoff (here: reach the best single tier's nDCG@10 at
the least cost; ``--target-cost-share 0.3`` buys the best quality for 30% of its cost instead),
and writes them to the profile's ``learned:`` section. Then point the config at it::

    profile: my-profile.yaml        # its `learned:` section becomes the policy's `model` at load
    policy: {name: learned}

In Python: :func:`router.offline.evaluation.cross_validate`, or :func:`router.offline.fitting.fit_learned` over
:class:`~router.offline.fitting.Example` rows.

On TREC DL19 the features carry no signal the fit can find (the one-standard-error rule keeps no
feature weight, so every option's model is its mean quality and the policy picks the option with
the best measured quality per predicted dollar); the structure is there for traffic where length
or candidate count does predict which option pays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.base import PlanningContext, assess, by_quality, plan_by, single_stage_options
from router.errors import ConfigError
from router.features import Features, TokenStats
from router.plan import Assessed, Option, Plan, Stage, option_name

__all__ = [
    "FEATURES",
    "LearnedModel",
    "LearnedParams",
    "LearnedPolicy",
    "OptionModel",
    "StageSpec",
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
    return option_name(stages)


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

    model: LearnedModel | None = None
    """The fitted model (``rerank-router calibrate --fit-learned``); config fills it from the profile's ``learned:`` section."""
    tradeoff: float | None = Field(None, ge=0)
    """Override the fitted tradeoff (nDCG points per dollar)."""


class LearnedPolicy:
    """Best predicted quality minus tradeoff x predicted cost, per request, within the hard rules."""

    def __init__(
        self,
        model: LearnedModel | Mapping[str, Any] | None = None,
        tradeoff: float | None = None,
        name: str = "learned",
    ) -> None:
        self.name = name
        if model is None:
            raise ConfigError(
                "policy 'learned' needs a fitted model: point the config's `profile:` at a profile with a `learned:` "
                "section (fit one with: rerank-router calibrate --fit-learned --dataset ... --out PROFILE), or give params.model"
            )
        self.model = model if isinstance(model, LearnedModel) else LearnedModel.model_validate(dict(model))
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
