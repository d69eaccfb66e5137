"""Cost per pricing scheme: predicted before a call from token estimates, actual after it from
the units the provider billed.

- per_search_unit (Cohere): one search unit = one query with up to ``docs_per_unit`` (100)
  documents; a query + document longer than ``chunk_tokens`` counts as several chunks.
- per_token (Voyage, ZeroEntropy, Mixedbread): billed tokens = query tokens x documents + Σ doc tokens.
- per_gpu_hour (self-hosted): $/GPU-hour x the seconds the call held the GPU.
- per_call: a flat price per request.
- free: local models on hardware you already pay for.
A price of None means unknown: the cost is None and a request with a cost ceiling rejects it.

Token counts for closed APIs are estimates (router.tokens). :class:`UsageCalibrator` learns, per
backend, the ratio of billed to predicted tokens from each response (an exponentially weighted
mean of its logarithm) and predictions apply it, so the estimator corrects itself.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from router.backends.base import Usage, new_usage
from router.backends.batching import split_request
from router.catalog import BackendSpec, Pricing

__all__ = ["UsageCalibrator", "billed_cost_usd", "predict_cost_usd", "predict_usage"]


def predict_usage(
    spec: BackendSpec, query_tokens: int, doc_tokens: Sequence[int], token_correction: float = 1.0, longest: int | None = None
) -> Usage:
    """``token_correction``: billed / estimated tokens learnt for this backend (UsageCalibrator);
    ``longest``: ``max(doc_tokens)``, where the caller knows it."""
    pricing = spec.pricing
    if pricing.scheme not in ("per_search_unit", "per_token"):
        return Usage()  # billed by the call or the hour: no pass over the documents
    cap = spec.max_tokens_per_doc
    if longest is None:
        longest = max(doc_tokens, default=0)
    docs = [min(d, cap) for d in doc_tokens] if cap and longest > cap else doc_tokens
    if pricing.scheme == "per_search_unit":
        chunk = pricing.chunk_tokens
        # The split the backend will make; each provider call is billed on its own, so a split
        # list can cost one unit more per call.
        batches = split_request(spec, query_tokens, docs)
        if not chunk or query_tokens + min(longest, cap or longest) <= chunk:  # one chunk per document
            if len(batches) == 1:  # one call (the common case): no generator
                units = -(-len(batches[0]) // pricing.docs_per_unit)  # ceil, exactly, in integers
            else:
                units = sum(math.ceil(len(b) / pricing.docs_per_unit) for b in batches)
        else:
            chunks = [max(1, math.ceil((query_tokens + d) / chunk)) for d in docs]
            units = sum(math.ceil(sum(chunks[b.start : b.stop]) / pricing.docs_per_unit) for b in batches)
        return new_usage(search_units=units, requests=len(batches))
    if pricing.scheme == "per_token":
        tokens = query_tokens * len(docs) + sum(docs)
        if token_correction != 1.0:
            tokens = round(tokens * token_correction)
        return new_usage(tokens=tokens, requests=len(split_request(spec, query_tokens, docs)))
    return Usage()


def _price(pricing: Pricing, usage: Usage, latency_ms: float) -> float | None:
    if pricing.scheme == "free":
        return 0.0
    if pricing.usd is None:
        return None
    if pricing.scheme == "per_search_unit":
        return None if usage.search_units is None else usage.search_units * pricing.usd
    if pricing.scheme == "per_token":
        return None if usage.tokens is None else usage.tokens * pricing.usd
    if pricing.scheme == "per_gpu_hour":
        return pricing.usd * latency_ms / 3_600_000.0
    return pricing.usd * usage.requests  # per_call


def predict_cost_usd(
    spec: BackendSpec,
    query_tokens: int,
    doc_tokens: Sequence[int],
    latency_ms: float,
    token_correction: float = 1.0,
    longest: int | None = None,
) -> float | None:
    return _price(spec.pricing, predict_usage(spec, query_tokens, doc_tokens, token_correction, longest), latency_ms)


def billed_cost_usd(spec: BackendSpec, usage: Usage, latency_ms: float) -> float | None:
    """Cost from what the provider reported. Self-hosted GPU time is the observed latency."""
    return _price(spec.pricing, usage, latency_ms)


class UsageCalibrator:
    """Per backend: billed tokens / predicted tokens, learnt online. Thread-safe.

    The correction is exp of an exponentially weighted mean of log(billed / predicted), clamped to
    [1/max_correction, max_correction]; 1.0 until a backend has reported billed tokens.
    """

    def __init__(self, alpha: float = 0.2, max_correction: float = 4.0) -> None:
        self._alpha = alpha
        self._max_log = math.log(max_correction)
        self._log_ratio: dict[str, float] = {}
        self._lock = threading.Lock()

    def correction(self, backend: str) -> float:
        return math.exp(self._log_ratio.get(backend, 0.0))

    def observe(self, backend: str, predicted_tokens: int | None, billed_tokens: int | None) -> None:
        if not predicted_tokens or not billed_tokens or predicted_tokens <= 0 or billed_tokens <= 0:
            return
        sample = max(-self._max_log, min(self._max_log, math.log(billed_tokens / predicted_tokens)))
        with self._lock:
            old = self._log_ratio.get(backend)
            self._log_ratio[backend] = sample if old is None else old + self._alpha * (sample - old)
