"""Escalation from first-stage evidence: pay for the strong model on the queries where it pays.

The plan is a cascade whose second stage is decided after the first has run. The policy plans
the cheap stage on all N candidates and a *menu* of strong options (which strong backend, which k),
each checked against every rule (ceiling, deadline, license, residency) at planning time; the
costliest of them is the planned second stage, so the plan's predicted cost and latency are the
worst case and ceilings and deadlines hold whatever is chosen. Once the cheap stage's scores are in,
:class:`Menu` computes :func:`escalation_features` (the score distribution: top-1 margin, top-1 to
top-10 margin, spread, entropy of the top 10; agreement between the retriever's order and the cheap
stage's; the top score; the query's length), predicts each strong option's gain in nDCG@10 over the
cheap stage alone with a fitted linear model, and buys the option with the best predicted gain net
of its price (``gain - min_gain_per_usd * cost``), or none when no option's gain is worth its price.
The decision is a note in the explanation: ``escalated to rankgpt@20: predicted gain 0.041 for
$0.0011``.

``min_gain_per_usd`` is the price of quality: calibrated (router.offline.fitting.fit_adaptive, with
``rerank-router calibrate --fit-adaptive``) so that the training queries' mean cost meets a target
(a share of a tier's cost), which lets hard queries take more and easy ones less while the mean
stays near the target. With no model, or one fitted on fewer than ``min_queries`` labelled queries,
the policy is the constrained policy with today's cascade curve (``saturation_k``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.base import PlanningContext, assess, by_quality, plan_by, single_stage_options
from policies.cascade import CascadeParams
from policies.rules import COST_TOLERANCE_USD
from policies.simple import ConstrainedPolicy
from router.budget import BudgetSignal
from router.plan import Estimate, Evidence, Option, Plan, Stage

__all__ = [
    "FEATURES",
    "MIN_QUERIES",
    "RETRIEVER_FEATURES",
    "AdaptiveModel",
    "AdaptiveParams",
    "AdaptivePolicy",
    "GainModel",
    "Menu",
    "MenuItem",
    "WithoutSignal",
    "escalation_features",
]

FEATURES: tuple[str, ...] = (
    "margin_1_2",
    "margin_1_10",
    "spread",
    "entropy_top10",
    "overlap_top10",
    "retriever_top1_rank",
    "top_score",
    "query_words",
)
"""What :func:`escalation_features` returns, in order."""

WithoutSignal = Literal["curve", "means"]
"""What a model that kept no slope does (AdaptiveModel.without_signal)."""

MIN_QUERIES = 20
"""A model fitted on fewer labelled queries than this is not used: the constrained policy plans instead."""


RETRIEVER_FEATURES: tuple[str, ...] = (
    "retriever_margin_1_2",
    "retriever_margin_1_10",
    "retriever_cv",
    "retriever_agreement",
)
"""Features of the retriever's own scores (documents' ``score``), when every candidate carries one."""


def _cheap_features(query: str, scores: Sequence[float]) -> tuple[float, ...]:
    n = len(scores)
    words = math.log1p(len(query.split()))
    if n < 2:
        return (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, float(scores[0]) if n else 0.0, words)
    order = sorted(range(n), key=lambda i: -scores[i])
    sd = statistics.pstdev(scores) or 1.0
    top = [scores[i] for i in order[:10]]
    z = [(v - top[0]) / sd for v in top]
    weights = [math.exp(v) for v in z]
    total = sum(weights)
    entropy = -sum(w / total * math.log(w / total) for w in weights if w > 0) / math.log(len(top)) if len(top) > 1 else 0.0
    overlap = len(set(order[:10]) & set(range(min(10, n)))) / min(10, n)
    return (
        (top[0] - top[1]) / sd,
        (top[0] - top[-1]) / sd,
        sd,
        entropy,
        overlap,
        math.log1p(order.index(0)),
        float(top[0]),
        words,
    )


def _ranks(values: Sequence[float]) -> list[float]:
    out = [0.0] * len(values)
    for rank, i in enumerate(sorted(range(len(values)), key=lambda i: values[i])):
        out[i] = float(rank)
    return out


def _retriever_features(retriever: Sequence[float], scores: Sequence[float]) -> tuple[float, ...]:
    """Margins of the retriever's own scores (in units of their sd), their coefficient of variation
    (sd / |mean|, the normalised query commitment of query-performance prediction without a corpus
    score) and the Spearman correlation of the retriever's scores with the first stage's."""
    n = len(retriever)
    if n < 2:
        return (0.0, 0.0, 0.0, 1.0)
    top = sorted(retriever, reverse=True)
    sd = statistics.pstdev(retriever)
    mean = statistics.fmean(retriever)
    unit = sd or 1.0
    agreement = 1.0
    if len(scores) == n:
        a, b = _ranks(retriever), _ranks(scores)
        sa, sb = statistics.pstdev(a), statistics.pstdev(b)
        if sa > 0 and sb > 0:
            ma, mb = statistics.fmean(a), statistics.fmean(b)
            agreement = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / (n * sa * sb)
    return (
        (top[0] - top[1]) / unit,
        (top[0] - top[min(9, n - 1)]) / unit,
        sd / abs(mean) if abs(mean) > 1e-12 else 0.0,
        agreement,
    )


def escalation_features(
    query: str,
    scores: Sequence[float],
    retriever_scores: Sequence[float] | None = None,
    names: Sequence[str] = FEATURES,
) -> tuple[float, ...]:
    """Features of a first stage's scores (in the retriever's order) that exist only once it has run.

    Margins are in units of the query's score standard deviation (comparable across queries);
    ``entropy_top10``: of the softmax of the top 10's standardised scores, over log(10) (1: flat, unsure);
    ``overlap_top10``: share of the retriever's top 10 in the cheap stage's top 10;
    ``retriever_top1_rank``: log(1 + rank) of the retriever's first candidate in the cheap order.
    ``names`` may also ask for :data:`RETRIEVER_FEATURES` (from ``retriever_scores``, one per candidate;
    NaN where they are missing: the model then holds those features at its training mean)."""
    values = dict(zip(FEATURES, _cheap_features(query, scores), strict=True))
    if any(name in RETRIEVER_FEATURES for name in names):
        if retriever_scores is not None and len(retriever_scores) == len(scores):
            values.update(zip(RETRIEVER_FEATURES, _retriever_features(retriever_scores, scores), strict=True))
        else:
            values.update(dict.fromkeys(RETRIEVER_FEATURES, math.nan))
    return tuple(values[name] for name in names)


class GainModel(BaseModel):
    """One strong option's predicted gain: ``intercept + slopes . (x - mean) / scale``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    k: int = Field(ge=1)
    intercept: float
    """Mean measured gain (nDCG@10 over the cheap stage alone) on the training queries."""


class AdaptiveModel(BaseModel):
    """A fitted escalation model (router.offline.fitting.fit_adaptive): what a profile's ``adaptive:`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_stage: str
    features: tuple[str, ...] = FEATURES
    """Which of :data:`FEATURES` and :data:`RETRIEVER_FEATURES` the slopes are over, in order."""
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    slopes: tuple[float, ...]
    """Shared by every option (gains centred per option): few queries fit one set of slopes better than one per option."""
    options: tuple[GainModel, ...]
    min_gain_per_usd: float = Field(0.0, ge=0)
    """Calibrated price of quality: escalate when predicted gain - this x cost > 0."""
    alpha: float = math.inf
    """Ridge penalty chosen by leave-one-query-out error (inf: no feature kept, each option's mean gain)."""
    queries: int = 0
    """Labelled queries it was fitted on."""
    target: str = ""
    without_signal: WithoutSignal = "curve"
    """What the policy does if the fit kept no slope (its features told no query's gain from another's):
    ``curve``: today's curve plans, under ``target_cost_usd`` as a per-request ceiling; ``means``: every query
    is escalated alike by the options' measured mean gains. ``calibrate --fit-adaptive`` chooses by
    cross-validation on the labelled queries."""
    target_cost_usd: float | None = Field(None, ge=0)
    """The mean cost per query the price was calibrated for (None: no target); the curve's ceiling when it plans."""
    fitted_on: str = ""

    @model_validator(mode="after")
    def _features_match(self) -> AdaptiveModel:
        unknown = [f for f in self.features if f not in FEATURES and f not in RETRIEVER_FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join((*FEATURES, *RETRIEVER_FEATURES))}")
        if not len(self.mean) == len(self.scale) == len(self.slopes) == len(self.features):
            raise ValueError("mean, scale and slopes need one value per feature")
        return self

    def predict(self, features: Sequence[float]) -> list[float]:
        lift = sum(
            w * (x - m) / s for w, x, m, s in zip(self.slopes, features, self.mean, self.scale, strict=True) if not math.isnan(x)
        )
        return [g.intercept + lift for g in self.options]

    @property
    def has_signal(self) -> bool:
        """Whether the fit kept a slope: whether its features tell one query's gain from another's."""
        return any(w != 0 for w in self.slopes)


class AdaptiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: AdaptiveModel | None = None
    """The fitted model (a profile's ``adaptive:`` section); None: today's curve (the constrained policy)."""
    min_gain_per_usd: float | None = Field(None, ge=0)
    """Override the model's calibrated price of quality (nDCG@10 per US$)."""
    min_queries: int = Field(MIN_QUERIES, ge=1)
    """A model fitted on fewer labelled queries than this is not used: the constrained policy plans instead."""
    saturation_k: int = Field(CascadeParams().saturation_k, ge=1)
    """The fallback's cascade curve (a profile's ``cascade.saturation_k``)."""


@dataclass(frozen=True, slots=True)
class MenuItem:
    stage: Stage
    cost_usd: float
    latency_ms: float


@dataclass(frozen=True)
class Menu:
    """The escalation rule the executor calls after the first stage (router.plan.Escalation)."""

    model: AdaptiveModel
    items: tuple[MenuItem, ...]
    """Feasible strong options, one per model option that passed every rule."""
    gain_index: tuple[int, ...]
    """For each item, its option's position in ``model.options``."""
    min_gain_per_usd: float

    budget: BudgetSignal | None = None
    """The cross-request budget as planning saw it (its line closes the decision's note)."""

    def choose(self, evidence: Evidence) -> tuple[Stage | None, str]:
        stage, why = self._choose(evidence)
        if self.budget is not None:
            why = f"{why}; {self.budget.describe()}"
        return stage, why

    def _choose(self, evidence: Evidence) -> tuple[Stage | None, str]:
        names = self.model.features
        x = escalation_features(evidence.query, evidence.scores, evidence.retriever_scores, names)
        missing = any(math.isnan(v) for v in x)
        gains = self.model.predict(x)
        best: tuple[float, MenuItem, float] | None = None
        headroom = None if self.budget is None else self.budget.headroom_usd
        dearer: list[MenuItem] = []
        for item, j in zip(self.items, self.gain_index, strict=True):
            if headroom is not None and item.cost_usd > headroom + COST_TOLERANCE_USD:
                dearer.append(item)  # it would take the window's mean over its target
                continue
            gain = gains[j]
            value = gain - self.min_gain_per_usd * item.cost_usd
            if best is None or value > best[0]:
                best = (value, item, gain)
        if best is None and dearer:
            cheapest = min(dearer, key=lambda item: item.cost_usd)
            return None, (
                f"not escalated: the budget window's headroom ${headroom:.4g} does not cover "
                f"{cheapest.stage.backend}@{cheapest.stage.candidates_in} (${cheapest.cost_usd:.4g})"
            )
        if best is None:
            return None, "not escalated: no strong option fits the request's rules"
        value, item, gain = best
        name = f"{item.stage.backend}@{item.stage.candidates_in}"
        held = " (no retriever scores: their features held at the training mean)" if missing else ""
        if value <= 0 or gain <= 0:
            return None, (
                f"not escalated: best predicted gain {gain:.3f} ({name}) for ${item.cost_usd:.4g} is below "
                f"{self.min_gain_per_usd:.4g} nDCG@10 per ${held}"
            )
        return item.stage, f"escalated to {name}: predicted gain {gain:.3f} for ${item.cost_usd:.4g}{held}"


def reference_price(model: AdaptiveModel, items: Sequence[MenuItem], gain_index: Sequence[int]) -> float:
    """The scale of a price of quality when the model's own is 0: the best mean gain per dollar on the menu
    (at that price a query of average features is just not worth escalating)."""
    ratios = [
        model.options[j].intercept / item.cost_usd
        for item, j in zip(items, gain_index, strict=True)
        if item.cost_usd > 0 and model.options[j].intercept > 0
    ]
    return max(ratios, default=0.0)


class AdaptivePolicy:
    """Cheap stage on all, then the strong option with the best predicted gain per dollar, per query."""

    def __init__(
        self,
        model: AdaptiveModel | Mapping[str, Any] | None = None,
        min_gain_per_usd: float | None = None,
        min_queries: int = MIN_QUERIES,
        saturation_k: int = CascadeParams().saturation_k,
        name: str = "adaptive",
    ) -> None:
        self.model = model if model is None or isinstance(model, AdaptiveModel) else AdaptiveModel.model_validate(dict(model))
        self.min_gain_per_usd = min_gain_per_usd
        self.min_queries = min_queries
        self.saturation_k = saturation_k
        self.name = name
        self._curve = ConstrainedPolicy(saturation_k=saturation_k)

    def __repr__(self) -> str:
        fitted = "none" if self.model is None else f"{len(self.model.options)} options, {self.model.queries} queries"
        return f"AdaptivePolicy(model={fitted}, min_gain_per_usd={self.min_gain_per_usd})"

    def _todays_curve(self, ctx: PlanningContext, why: str) -> Plan:
        """The constrained policy's plan (today's cascade curve), with why the model is not used.

        A mean cost the model or the config targets becomes the curve's per-request ceiling (the curve
        has no price of a dollar to steer): the budget window's headroom where one is configured, else
        the model's target; the request's own ceiling still holds where it is lower."""
        ceiling, source = None, ""
        budget = ctx.budget
        headroom = None if budget is None else budget.headroom_usd
        if headroom is not None:
            ceiling, source = max(0.0, headroom), "the budget window's headroom"
        elif self.model is not None and self.model.target_cost_usd is not None:
            ceiling, source = self.model.target_cost_usd, "the model's mean-cost target"
        capped = ctx
        if ceiling is not None and (ctx.max_cost_usd is None or ceiling < ctx.max_cost_usd):
            capped = dataclasses.replace(ctx, max_cost_usd=ceiling)
            why = f"{why}; ceiling ${ceiling:.4g} ({source})"
        inner = self._curve.plan(capped)
        reason = f"{why}: today's curve; {inner.reason}"
        if budget is not None:
            applied = "applied as the ceiling" if headroom is not None else "not applied: no headroom known"
            reason = f"{reason}; {budget.describe()} ({applied})"
        return Plan(self.name, inner.primary, inner.fallbacks, inner.assessed, reason)

    def plan(self, ctx: PlanningContext) -> Plan:
        model = self.model
        if model is None or model.queries < self.min_queries:
            why = "no fitted model" if model is None else f"model fitted on {model.queries} < {self.min_queries} queries"
            return self._todays_curve(ctx, why)
        if model.without_signal == "curve" and not model.has_signal:
            return self._todays_curve(ctx, f"model kept no feature slope on its {model.queries} queries (no per-query signal)")
        n, top_n = ctx.features.n_candidates, ctx.features.top_n
        singles = assess(single_stage_options(ctx), ctx)
        cheap = next((a for a in singles if a.option.backends == (model.first_stage,) and a.feasible), None)
        if cheap is None:
            return self._todays_curve(ctx, f"first stage {model.first_stage} not feasible")
        first = Stage(model.first_stage, n)
        menu: list[tuple[MenuItem, int, Option]] = []
        assessed = list(singles)
        for j, g in enumerate(model.options):
            k = min(g.k, n)
            if k < top_n or g.k >= n or g.backend not in ctx.backends:
                continue
            [a] = assess([ctx.estimate((first, Stage(g.backend, k)))], ctx)
            assessed.append(a)
            if a.feasible and a.option.estimate.cost_usd is not None:
                menu.append(
                    (MenuItem(Stage(g.backend, k), a.option.estimate.cost_usd, a.option.estimate.latency_ms), j, a.option)
                )
        if not menu:
            return plan_by(self.name, assessed, by_quality, f"{model.first_stage}: no strong option fits", first=cheap.option)
        price = self.min_gain_per_usd if self.min_gain_per_usd is not None else model.min_gain_per_usd
        items, index = tuple(m[0] for m in menu), tuple(m[1] for m in menu)
        budget = ctx.budget
        if budget is not None:  # the cross-request budget scales the price of a dollar (router.accounting.budget)
            # x1 is the policy's own price; a price of 0 rises from the menu's mean gain per $ once over target
            ref = reference_price(model, items, index)
            price = price * budget.multiplier if price > 0 else ref * max(0.0, budget.multiplier - 1.0)
        worst = max(menu, key=lambda m: (m[0].cost_usd, m[0].latency_ms))[2]
        rule = Menu(model, items, index, price, budget)
        estimate = Estimate(
            latency_ms=max(m[0].latency_ms for m in menu),
            cost_usd=max(m[0].cost_usd for m in menu),
            quality=cheap.option.estimate.quality,
        )
        stages = (worst.stages[0], Stage(worst.stages[1].backend, worst.stages[1].candidates_in, escalation=rule))
        primary = Option(stages, estimate, notes=worst.notes, stage_estimates=worst.stage_estimates)
        reason = (
            f"{model.first_stage} on all {n}, then per query the best of {len(menu)} strong option(s) by predicted gain "
            f"net of {price:.4g} nDCG@10 per $ (worst case ${estimate.cost_usd:.4g})"
        )
        if budget is not None:
            reason = f"{reason}; {budget.describe()}"
        fallbacks = [cheap.option, *(a.option for a in singles if a.feasible and not a.option.stages)]
        return Plan(self.name, primary, tuple(fallbacks), tuple(assessed), reason)
