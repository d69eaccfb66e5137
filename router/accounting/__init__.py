"""Step 6 of a request: account for what it cost and how long it took.

- :class:`Accounting`: observed calls into the estimators (latency model, billed-vs-estimated
  tokens) and each request's billed total over every stage that was billed;
- :mod:`router.accounting.spend`: spend caps over a window (in process, or shared in Redis), used
  by the shadow arm.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.backends.base import Usage
from router.catalog import BackendSpec
from router.cost import UsageCalibrator, predict_usage
from router.latency import LatencyEstimator
from router.result import StageReport

__all__ = ["Accounting"]


class Accounting:
    """What the router has learnt from its calls, and the arithmetic of a request's bill."""

    def __init__(self, latency: LatencyEstimator | None = None, usage: UsageCalibrator | None = None) -> None:
        self.latency = latency or LatencyEstimator()
        """The per-backend latency model, corrected online from observed calls (router.latency)."""
        self.usage = usage or UsageCalibrator()
        """Billed / estimated tokens per token-billed backend, learnt from responses (router.cost)."""

    def observe_call(
        self,
        name: str,
        spec: BackendSpec,
        sums: tuple[int, int, int],
        ms: float,
        usage: Usage,
        query_tokens: int,
        doc_tokens: Sequence[int],
    ) -> None:
        """One clean call (no cold start, retry or hedge): its latency and its billed tokens.
        ``sums``: (n, Σt, Σt²) of the items sent, as the model sees them (router.latency)."""
        self.latency.observe_sums(name, spec.latency, *sums, ms)
        if usage.tokens is not None:
            estimated = predict_usage(spec, query_tokens, list(doc_tokens)).tokens
            self.usage.observe(name, estimated, usage.tokens)

    @staticmethod
    def billed_usd(stages: Sequence[StageReport]) -> float | None:
        """The request's actual cost: every billed call, failed stages' rejected responses included;
        None if the price of a stage that ran is unknown."""
        served = [s.cost_usd for s in stages if s.ok]
        if None in served:
            return None
        return sum(c for s in stages if (c := s.cost_usd) is not None)
