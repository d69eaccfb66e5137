"""Fitting routing parameters on labelled queries: pure functions from measurements to values.

Thresholds are calibrated outputs, not magic numbers (RouteLLM's ``calibrate_threshold``): each
function here turns measurements into the value that meets a target share, cost or quality, and
``rerank-router calibrate`` (router.offline.cli_eval) is a thin layer over them that writes the
values into a profile (router.profile), which config hands to the policies.

- :func:`calibrate_margin_threshold`: the cascade's escalation threshold for a target share;
- :func:`fit_saturation_k`: the cascade curve of the constrained policy;
- :func:`calibrate_tradeoff`: quality per dollar for a cost or quality target;
- :func:`fit_learned`: the learned policy's per-option ridge models and tradeoff;
- :func:`fit_adaptive`: the adaptive policy's escalation model (gain per strong option from first-stage
  evidence) and its price of quality for a mean-cost target (:func:`calibrate_price`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.adaptive import FEATURES, MIN_QUERIES, AdaptiveModel, GainModel
from policies.cascade import cascade_quality
from policies.learned import LearnedModel, OptionModel, StageSpec, option_key
from router.catalog import BackendSpec

__all__ = [
    "ALPHAS",
    "MIN_ADAPTIVE_QUERIES",
    "EscalationExample",
    "Example",
    "TradeoffFit",
    "calibrate_margin_threshold",
    "calibrate_price",
    "calibrate_tradeoff",
    "fit_adaptive",
    "fit_learned",
    "fit_saturation_k",
    "option_grid",
]


# -- the cascade -----------------------------------------------------------------------------------
def calibrate_margin_threshold(margins: Sequence[float], escalation_share: float) -> float:
    """The margin threshold under which ``escalation_share`` of requests escalate.

    ``margins`` are first-stage top-1 minus top-2 scores observed on representative traffic (see
    router.executor.top_margin). Escalating when margin < threshold sends about that share on.
    """
    if not 0 < escalation_share <= 1:
        raise ValueError("escalation_share must be in (0, 1]")
    finite = sorted(m for m in margins if math.isfinite(m))
    if not finite:
        raise ValueError("no finite margins to calibrate on")
    if escalation_share == 1:
        return math.inf
    position = escalation_share * (len(finite) - 1)
    low, high = math.floor(position), math.ceil(position)
    value = finite[low] + (finite[high] - finite[low]) * (position - low)
    # Strictly above the quantile's value, so ties at it escalate too.
    return math.nextafter(value, math.inf)


def fit_saturation_k(
    tiers: Mapping[str, float], cascades: Mapping[tuple[str, str, int], float], candidates: Iterable[int] = range(1, 201)
) -> int:
    """The ``saturation_k`` whose curve fits measured cascades best (least squares).

    ``tiers``: backend -> its measured mean quality alone on all candidates; ``cascades``:
    (cheap, strong, k) -> the measured mean quality of cheap@N -> strong@k on the same queries.
    Only pairs the planner forms (strong better than cheap) count. The sum of squared errors over
    the means equals that over the queries up to a constant, so this is the per-query fit. Ties
    (e.g. every measured k already saturated) go to the largest ``saturation_k``: the curve that
    claims the least for shallow cascades.
    """
    points = [
        (tiers[c], tiers[s], k, q) for (c, s, k), q in cascades.items() if c in tiers and s in tiers and tiers[s] > tiers[c]
    ]
    if not points:
        raise ValueError("no measured cascade whose strong stage beats its cheap one: nothing to fit saturation_k on")
    grid = sorted(set(candidates))
    if not grid or grid[0] < 1:
        raise ValueError("saturation_k candidates must be positive integers")

    def error(s: int) -> float:
        return sum((cascade_quality(qc, qs, k, s) - q) ** 2 for qc, qs, k, q in points)

    errors = [(error(s), s) for s in grid]
    least = min(e for e, _ in errors)
    return max(s for e, s in errors if e <= least + 1e-15)


# -- thresholds ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TradeoffFit:
    tradeoff: float
    """Quality points given up per dollar saved: choose argmax(quality - tradeoff * cost)."""
    mean_cost: float
    mean_quality: float
    choices: tuple[int, ...]
    """Chosen option per query at this tradeoff."""


def calibrate_tradeoff(
    predicted: Sequence[Sequence[float]],
    cost: Sequence[Sequence[float]],
    *,
    target_cost: float | None = None,
    target_quality: float | None = None,
    measured: Sequence[Sequence[float]] | None = None,
) -> TradeoffFit:
    """The tradeoff (quality per dollar) that meets a target, for a chooser of argmax(q - t*c).

    ``predicted[i][j]`` / ``cost[i][j]``: predicted quality and cost of option j on query i;
    ``measured`` (default: ``predicted``) is what a choice actually scores, for the target check.
    - ``target_cost``: the smallest tradeoff whose mean cost is <= the target (the best quality
      that budget buys);
    - ``target_quality``: the largest tradeoff whose mean measured quality is >= the target (the
      cheapest way to reach it); if none reaches it, the tradeoff 0 (best quality regardless of cost).
    The choice only changes where two options' utilities cross, so those crossings are the
    candidates: exact on the given data, no grid. Ties go to the cheaper option.
    """
    import numpy as np

    if (target_cost is None) == (target_quality is None):
        raise ValueError("give exactly one of target_cost, target_quality")
    if not predicted:
        raise ValueError("no queries to calibrate on")
    q = np.asarray(predicted, dtype=float)
    c = np.asarray(cost, dtype=float)
    truth = np.asarray(measured if measured is not None else predicted, dtype=float)
    n, m = q.shape
    dq = q[:, :, None] - q[:, None, :]
    dc = c[:, :, None] - c[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = dq / dc
    found = crossing[(dc != 0) & np.isfinite(crossing) & (crossing > 0)]
    # Between crossings the choice is constant: test 0 and the right side of each crossing.
    candidates = np.unique(np.concatenate([[0.0], found * (1 + 1e-9) + 1e-12]))
    rows = np.arange(n)
    block = max(1, 2_000_000 // max(1, n * m))
    costs: list[float] = []
    qualities: list[float] = []
    for start in range(0, len(candidates), block):
        t = candidates[start : start + block, None, None]
        choice = np.argmax(q[None] - t * c[None] - 1e-12 * c[None], axis=2)  # (block, n)
        costs.extend(c[rows, choice].mean(axis=1).tolist())
        qualities.extend(truth[rows, choice].mean(axis=1).tolist())
    if target_cost is not None:
        within = [i for i, v in enumerate(costs) if v <= target_cost + 1e-15]
        pick = min(within) if within else len(candidates) - 1
    else:
        assert target_quality is not None
        reaching = [i for i, v in enumerate(qualities) if v >= target_quality - 1e-12]
        pick = max(reaching) if reaching else 0
    tradeoff = float(candidates[pick])
    choices = np.argmax(q - tradeoff * c - 1e-12 * c, axis=1)
    return TradeoffFit(tradeoff, costs[pick], qualities[pick], tuple(int(j) for j in choices))


# -- the learned policy ----------------------------------------------------------------------------------------
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


# -- the adaptive policy ---------------------------------------------------------------------------------------
MIN_ADAPTIVE_QUERIES = MIN_QUERIES
"""Below this many labelled queries :func:`fit_adaptive`'s model is not used by the policy
(``AdaptiveParams.min_queries``): it falls back to the constrained policy's cascade curve."""


@dataclass(frozen=True, slots=True)
class EscalationExample:
    """One labelled query: the first stage's escalation features, and per strong option (backend, k)
    its measured gain in nDCG@10 over the first stage alone and its predicted cost."""

    qid: str
    features: tuple[float, ...]
    gain: Mapping[tuple[str, int], float]
    cost: Mapping[tuple[str, int], float]


def calibrate_price(gains: Any, costs: Any, target_cost: float | None, *, iterations: int = 80) -> float:
    """The least price of quality (nDCG@10 per $) at which escalating by ``gain - price x cost`` keeps the
    mean cost per query within ``target_cost``; 0 when even buying the best gain everywhere stays within it.

    ``gains``/``costs``: (queries, options) arrays of predicted gain and cost; not escalating costs 0."""
    import numpy as np

    g, c = np.asarray(gains, dtype=float), np.asarray(costs, dtype=float)

    def spend(price: float) -> float:
        value = g - price * c
        pick = np.argmax(value, axis=1)
        rows = np.arange(len(g))
        escalate = (value[rows, pick] > 0) & (g[rows, pick] > 0)
        return float(np.where(escalate, c[rows, pick], 0.0).mean())

    if target_cost is None or spend(0.0) <= target_cost:
        return 0.0
    lo, hi = 0.0, 1.0
    while spend(hi) > target_cost and hi < 1e12:
        lo, hi = hi, hi * 10
    for _ in range(iterations):  # spend is non-increasing in the price
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spend(mid) > target_cost else (lo, mid)
    return hi


def fit_adaptive(
    examples: Sequence[EscalationExample],
    first_stage: str,
    *,
    target_cost: float | None = None,
    alpha: Sequence[float] = ALPHAS,
    fitted_on: str = "",
    features: Sequence[str] = FEATURES,
) -> AdaptiveModel:
    """The adaptive policy's escalation model and its price of quality.

    Each strong option's predicted gain is its mean measured gain plus one set of slopes shared by
    all options, fitted (ridge on standardised features) to each query's mean gain over the options
    centred per option: which queries the strong models help, not by how much each one does, which
    few queries cannot pin down per option. The penalty is chosen by leave-one-query-out error with
    the one-standard-error rule: where the features carry no signal, the slopes are 0 and each option
    predicts its mean gain (the measured curve, one point per k). ``target_cost``: mean $ per query
    the calibrated price keeps the examples within (in-sample predicted gains; costs are predictions,
    as the policy sees them); None: price 0 (buy the best predicted gain wherever it is positive).
    ``features``: the names the examples' feature vectors hold, in order (policies.adaptive.FEATURES,
    optionally followed by RETRIEVER_FEATURES).
    """
    import numpy as np

    if not examples:
        raise ValueError("fit_adaptive needs labelled queries")
    keys = sorted({key for e in examples for key in e.gain})
    keys = [key for key in keys if all(key in e.gain and key in e.cost for e in examples)]
    if not keys:
        raise ValueError("fit_adaptive: no strong option measured on every query")
    x = np.asarray([e.features for e in examples], dtype=float)
    if x.shape[1] != len(features) or not np.isfinite(x).all():
        raise ValueError(f"fit_adaptive: every example needs {len(features)} finite features ({', '.join(features)})")
    y = np.asarray([[e.gain[key] for key in keys] for e in examples], dtype=float)
    c = np.asarray([[e.cost[key] for key in keys] for e in examples], dtype=float)
    intercepts = y.mean(axis=0)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    target = (y - intercepts).mean(axis=1)
    slopes, chosen = (np.zeros(x.shape[1]), math.inf) if len(examples) < 3 else _ridge(z, target, alpha)
    predicted = intercepts[None, :] + (z @ slopes)[:, None]
    price = calibrate_price(predicted, c, target_cost)
    described = "buy the best predicted gain" if target_cost is None else f"mean cost <= ${target_cost:.6g}/query"
    return AdaptiveModel(
        first_stage=first_stage,
        features=tuple(features),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        slopes=tuple(float(v) for v in slopes),
        options=tuple(GainModel(backend=b, k=k, intercept=float(g)) for (b, k), g in zip(keys, intercepts, strict=True)),
        min_gain_per_usd=price,
        alpha=float(chosen),
        queries=len(examples),
        target=described,
        target_cost_usd=target_cost,
        fitted_on=fitted_on,
    )
