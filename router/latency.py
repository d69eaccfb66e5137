"""Latency estimator: overhead + a·N + b·Σt + c·Σt² per backend, corrected online.

The quadratic term is the attention wall: cross-encoder time grows linearly with candidates and,
past a model-size-dependent length, quadratically with tokens. Parameters come from the catalog or
config (fitted on a measured grid by :func:`fit_latency_params`); each backend then carries a
multiplicative correction learnt from observed latencies (an exponentially weighted mean of
log(observed / predicted)), so a slower or faster machine is absorbed without refitting.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Sequence

from router.catalog import BackendSpec, LatencyParams
from router.features import TokenStats

__all__ = [
    "LatencyEstimator",
    "fit_latency_params",
    "item_extra",
    "item_tokens",
    "latency_from_sums",
    "predict_latency_ms",
    "stage_sums",
]

# Special tokens a pair input adds ([CLS] q [SEP] d [SEP]); a single input adds two.
_PAIR_SPECIAL = 3
_SINGLE_SPECIAL = 2


def item_extra(spec: BackendSpec, stats: TokenStats) -> int:
    """What an item adds to a document's tokens before truncation (the query and special tokens for a pair)."""
    return stats.query + _PAIR_SPECIAL if spec.input == "pair" else _SINGLE_SPECIAL


def item_tokens(spec: BackendSpec, stats: TokenStats, docs: Sequence[int] | None = None, *, truncate: bool = True) -> list[int]:
    """Tokens per scored item as the model sees them (truncated to its context unless told not to)."""
    cap = (spec.max_tokens_per_doc if truncate else None) or 10**9
    doc_tokens = stats.docs if docs is None else docs
    extra = stats.query + _PAIR_SPECIAL if spec.input == "pair" else _SINGLE_SPECIAL
    if not doc_tokens or max(doc_tokens) + extra <= cap:  # nothing to truncate: no min() per item
        return [d + extra for d in doc_tokens]
    return [min(d + extra, cap) for d in doc_tokens]


def predict_latency_ms(params: LatencyParams, tokens: Sequence[int]) -> float:
    return latency_from_sums(params, len(tokens), sum(tokens), sum(map(operator.mul, tokens, tokens)))


def latency_from_sums(params: LatencyParams, n: int, total: int, squares: int) -> float:
    """:func:`predict_latency_ms` from the number of items, Σt and Σt²."""
    return (
        params.overhead_ms + params.per_doc_ms * n + params.per_token_ms * float(total) + params.per_token_sq_ms * float(squares)
    )


def stage_sums(spec: BackendSpec, stats: TokenStats, candidates_in: int) -> tuple[int, int, int] | None:
    """(n, Σt, Σt²) of :func:`item_tokens` over the first ``candidates_in`` documents, from the
    stats' precomputed sums, exactly (integers); None where that needs a pass (items truncated,
    or only part of the documents)."""
    docs = stats.docs
    n = len(docs)
    if candidates_in < n:
        return None
    extra = stats.query + _PAIR_SPECIAL if spec.input == "pair" else _SINGLE_SPECIAL
    cap = spec.max_tokens_per_doc
    if n and cap is not None and stats.doc_max + extra > cap:
        return None
    total = stats.doc_sum + n * extra
    squares = stats.doc_sq_sum + 2 * extra * stats.doc_sum + n * extra * extra
    return n, total, squares


def fit_latency_params(samples: Sequence[tuple[Sequence[int], float]], source: str = "") -> LatencyParams:
    """Non-negative least squares over (tokens per item, observed ms) samples."""
    import numpy as np
    from scipy.optimize import nnls

    rows = [[1.0, len(t), float(sum(t)), float(sum(x * x for x in t))] for t, _ in samples]
    coef, _ = nnls(np.asarray(rows), np.asarray([ms for _, ms in samples], dtype=float))
    return LatencyParams(
        overhead_ms=float(coef[0]),
        per_doc_ms=float(coef[1]),
        per_token_ms=float(coef[2]),
        per_token_sq_ms=float(coef[3]),
        source=source,
    )


class LatencyEstimator:
    """Predicts per backend and learns a correction factor from observations. Thread-safe."""

    def __init__(self, alpha: float = 0.2, max_correction: float = 20.0) -> None:
        self._alpha = alpha
        self._max_log = math.log(max_correction)
        self._log_correction: dict[str, float] = {}
        self._lock = threading.Lock()

    def correction(self, backend: str) -> float:
        return math.exp(self._log_correction.get(backend, 0.0))

    def predict(self, backend: str, params: LatencyParams, tokens: Sequence[int]) -> float:
        return predict_latency_ms(params, tokens) * self.correction(backend)

    def predict_sums(self, backend: str, params: LatencyParams, n: int, total: int, squares: int) -> float:
        """:meth:`predict` from the number of items, Σt and Σt² (:func:`stage_sums`)."""
        return latency_from_sums(params, n, total, squares) * self.correction(backend)

    def observe(self, backend: str, params: LatencyParams, tokens: Sequence[int], observed_ms: float) -> None:
        self.observe_sums(backend, params, len(tokens), sum(tokens), sum(map(operator.mul, tokens, tokens)), observed_ms)

    def observe_sums(self, backend: str, params: LatencyParams, n: int, total: int, squares: int, observed_ms: float) -> None:
        """:meth:`observe` from the number of items, Σt and Σt² (:func:`stage_sums`)."""
        raw = latency_from_sums(params, n, total, squares)
        if raw <= 0 or observed_ms <= 0:
            return
        sample = max(-self._max_log, min(self._max_log, math.log(observed_ms / raw)))
        with self._lock:
            old = self._log_correction.get(backend, 0.0)
            self._log_correction[backend] = old + self._alpha * (sample - old)
