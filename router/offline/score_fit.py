"""Fitting score calibrations: a backend's [0, 1] score -> P(relevant), from labelled pairs.

Two methods, written here with numpy (no extra dependency):

- isotonic: pool adjacent violators over the pairs sorted by score (tied scores pooled first),
  giving a non-decreasing step function; stored as the points where each pooled block starts and
  ends, which router.scores interpolates linearly between.
- Platt: ``sigmoid(a * s + b)`` by Newton's method on the log-loss, with Platt's smoothed targets
  ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)) so that perfectly separated data has a finite fit; a
  fitted ``a < 0`` (scores that fall as relevance rises) is not kept: the method is then isotonic.

:func:`fit_score_calibration` picks between them by query-grouped k-fold cross-validation (folds
of queries, never of pairs: a query's documents are correlated), on held-out log-loss (or Brier
score), then fits the winner on every pair and records how it was chosen. Pure functions; the
command (``rerank-router calibrate --scores``, router.offline.cli_eval) collects the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from router.offline.evaluation.crossval import kfold
from router.profile import ScoreCalibration
from router.scores import build_map

__all__ = [
    "Metric",
    "ScorePair",
    "brier",
    "fit_isotonic",
    "fit_platt",
    "fit_score_calibration",
    "log_loss",
]

Metric = Literal["log-loss", "brier"]
FloatArray = npt.NDArray[np.float64]

# Held-out probabilities are clipped to [EPS, 1 - EPS] for the log-loss: a step function that
# says 0 for a relevant document would otherwise cost an infinite loss.
EPS = 1e-3


@dataclass(frozen=True, slots=True)
class ScorePair:
    qid: str
    score: float
    relevant: bool


def fit_isotonic(scores: Sequence[float], labels: Sequence[bool]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(x, y) points of the non-decreasing least-squares fit of ``labels`` on ``scores``."""
    if not scores:
        raise ValueError("no pairs to fit")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    unique, start, counts = np.unique(s, return_index=True, return_counts=True)
    sums = np.add.reduceat(y, start)
    # Blocks: [sum, count, lowest x, highest x]; pool while a block's mean is below the one before.
    blocks: list[list[float]] = []
    for total, count, x in zip(sums.tolist(), counts.tolist(), unique.tolist(), strict=True):
        block = [total, float(count), x, x]
        while blocks and blocks[-1][0] * block[1] >= block[0] * blocks[-1][1]:
            prev = blocks.pop()
            block = [prev[0] + block[0], prev[1] + block[1], prev[2], block[3]]
        blocks.append(block)
    xs: list[float] = []
    ys: list[float] = []
    for total, count, low, high in blocks:
        value = total / count
        xs.append(low)
        ys.append(value)
        if high > low:
            xs.append(high)
            ys.append(value)
    return tuple(xs), tuple(ys)


def fit_platt(scores: Sequence[float], labels: Sequence[bool], *, max_iter: int = 100) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a * s + b)`` minimising log-loss against Platt's smoothed targets."""
    if not scores:
        raise ValueError("no pairs to fit")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    t = np.where(y, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    a, b = 0.0, math.log((positives + 1) / (negatives + 1))

    def loss(a: float, b: float) -> float:
        z = a * s + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))  # -t log p - (1 - t) log(1 - p)

    current = loss(a, b)
    for _ in range(max_iter):
        p = _sigmoid(a * s + b)
        g = np.array([np.sum((p - t) * s), np.sum(p - t)])
        w = p * (1 - p)
        h = np.array([[np.sum(w * s * s), np.sum(w * s)], [np.sum(w * s), np.sum(w)]]) + 1e-10 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:  # backtracking: Newton's step may overshoot far from the optimum
            na, nb = a - scale * float(step[0]), b - scale * float(step[1])
            candidate = loss(na, nb)
            if candidate <= current:
                break
            scale /= 2
        else:
            break
        converged = abs(current - candidate) < 1e-12 * max(1.0, abs(current))
        a, b, current = na, nb, candidate
        if converged:
            break
    return a, b


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = np.exp(-np.logaddexp(0.0, -z))
    return out


def log_loss(p: Sequence[float] | FloatArray, y: Sequence[bool] | npt.NDArray[np.bool_]) -> float:
    """Mean negative log-likelihood, ``p`` clipped to [EPS, 1 - EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    labels = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(labels, np.log(q), np.log(1 - q))))


def brier(p: Sequence[float] | FloatArray, y: Sequence[bool] | npt.NDArray[np.bool_]) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def _fit(method: str, scores: Sequence[float], labels: Sequence[bool]) -> ScoreCalibration | None:
    if method == "isotonic":
        x, y = fit_isotonic(scores, labels)
        return ScoreCalibration(method="isotonic", x=x, y=y)
    a, b = fit_platt(scores, labels)
    if a < 0:
        return None
    return ScoreCalibration(method="platt", a=a, b=b)


def fit_score_calibration(
    pairs: Sequence[ScorePair],
    *,
    folds: int = 5,
    seed: int = 0,
    metric: Metric = "log-loss",
    relevant_grade: int | None = None,
    source: str = "",
) -> ScoreCalibration:
    """Isotonic or Platt, whichever has the lower held-out ``metric`` over query-grouped ``folds``
    (fewer queries than folds: one fold per query), fitted on every pair."""
    if not pairs:
        raise ValueError("no (score, relevant) pairs to fit")
    qids = sorted({p.qid for p in pairs})
    k = min(folds, len(qids))
    scored = {"log-loss": log_loss, "brier": brier}[metric]
    losses: dict[str, float] = {}
    if k >= 2:
        for method in ("isotonic", "platt"):
            held_p: list[float] = []
            held_y: list[bool] = []
            ok = True
            for train, test in kfold(qids, k, seed):
                keep = set(train)
                fit = _fit(method, [p.score for p in pairs if p.qid in keep], [p.relevant for p in pairs if p.qid in keep])
                if fit is None:
                    ok = False
                    break
                mapping = build_map(fit)
                held = set(test)
                held_p.extend(mapping(p.score) for p in pairs if p.qid in held)
                held_y.extend(p.relevant for p in pairs if p.qid in held)
            if ok:
                losses[method] = scored(held_p, held_y)
    scores, labels = [p.score for p in pairs], [p.relevant for p in pairs]
    platt_all = _fit("platt", scores, labels)
    if platt_all is None:
        losses.pop("platt", None)
    method = min(losses, key=losses.__getitem__) if losses else "isotonic"
    chosen = _fit(method, scores, labels)
    assert chosen is not None
    if losses:
        how = ", ".join(f"{m} {v:.4f}" for m, v in sorted(losses.items()))
        chosen_by = f"{metric} over {k}-fold query-grouped cross-validation (seed {seed}): {how}"
    else:
        chosen_by = "isotonic: too few queries to cross-validate" if k < 2 else "isotonic: Platt fits a falling map"
    return chosen.model_copy(
        update={
            "n": len(pairs),
            "queries": len(qids),
            "relevant_grade": relevant_grade,
            "source": source,
            "chosen_by": chosen_by,
        }
    )
