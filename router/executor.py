"""Step 5: run a plan's options in order against the deadline; never lose a document.

Each option is tried in turn (primary, then fallbacks). Within an option, stage i scores the top
``candidates_in`` of the order so far; everything below keeps its place. A failure or timeout in
the first stage moves on to the next option; in a later stage it keeps the order in hand. If no
option completes, the retriever's order is returned. Any exception a backend raises is caught
here, so the result is always a permutation of the input.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from router.backends.base import Backend, Scores
from router.cost import UsageCalibrator, billed_cost_usd, predict_usage
from router.errors import BackendError, BackendTimeoutError, MalformedResponseError
from router.features import Features
from router.latency import LatencyEstimator, item_tokens
from router.plan import Option, Plan
from router.result import StageReport

__all__ = ["Execution", "Executor"]

Clock = Callable[[], float]

# Slack kept beyond a fallback's predicted latency when reserving time for it.
FALLBACK_MARGIN_MS = 10.0


@dataclass
class Execution:
    order: list[int]
    scores: dict[int, float] = field(default_factory=dict)
    stages: list[StageReport] = field(default_factory=list)
    served_by: Option | None = None
    degraded: bool = False
    degraded_reason: str | None = None


def _validate(scores: Scores, expected: int, backend: str) -> tuple[float, ...]:
    values = scores.values
    if len(values) != expected:
        raise MalformedResponseError(f"returned {len(values)} scores for {expected} documents", backend=backend)
    if any(not math.isfinite(v) for v in values):
        raise MalformedResponseError("returned a non-finite score", backend=backend)
    return values


class Executor:
    def __init__(
        self, backends: Mapping[str, Backend], latency: LatencyEstimator, clock: Clock, usage: UsageCalibrator | None = None
    ) -> None:
        self._usage = usage
        self._backends = backends
        self._latency = latency
        self._clock = clock

    async def run(self, plan: Plan, query: str, texts: Sequence[str], features: Features, deadline: float | None) -> Execution:
        failed: list[StageReport] = []
        options = plan.options_in_order
        for position, option in enumerate(options):
            if not option.stages:
                break
            if deadline is not None and self._clock() >= deadline:
                break
            execution, failure = await self._run_option(
                option, query, texts, features, self._option_deadline(deadline, options[position + 1 :])
            )
            if execution is None:
                assert failure is not None
                failed.append(failure)
                continue
            execution.stages[:0] = failed
            if option is not plan.primary or execution.degraded:
                reasons = [r.error or "" for r in failed]
                if execution.degraded_reason:
                    reasons.append(execution.degraded_reason)
                execution.degraded = True
                execution.degraded_reason = "; ".join(reasons) + f"; served by {option.name}"
            return execution
        execution = Execution(order=list(range(len(texts))), stages=failed)
        if plan.primary.stages:  # the retriever's order was not the plan: say why we ended here
            reasons = [r.error or "" for r in failed]
            if deadline is not None and self._clock() >= deadline:
                reasons.append("deadline reached")
            execution.degraded = True
            execution.degraded_reason = "; ".join(reasons) + "; kept the retriever's order"
        return execution

    def _option_deadline(self, deadline: float | None, later: Sequence[Option]) -> float | None:
        """Leave time for the quickest later fallback to run, when there is time to leave."""
        staged = [o.estimate.latency_ms for o in later if o.stages]
        if deadline is None or not staged:
            return deadline
        reserved = deadline - (min(staged) + FALLBACK_MARGIN_MS) / 1000
        return reserved if reserved > self._clock() else deadline

    async def _run_option(
        self, option: Option, query: str, texts: Sequence[str], features: Features, deadline: float | None
    ) -> tuple[Execution | None, StageReport | None]:
        """The option's execution, or (None, the failed first stage's report)."""
        execution = Execution(order=list(range(len(texts))), served_by=option)
        for position, stage in enumerate(option.stages):
            backend = self._backends[stage.backend]
            subset = execution.order[: stage.candidates_in]
            predicted = option.stage_estimates[position] if position < len(option.stage_estimates) else None
            started = self._clock()
            try:
                remaining = None if deadline is None else deadline - started
                if remaining is not None and remaining <= 0:
                    raise BackendTimeoutError("no time left in the latency budget", backend=stage.backend)
                async with asyncio.timeout(remaining):
                    scores = await backend.rerank(query, [texts[i] for i in subset])
                values = _validate(scores, len(subset), stage.backend)
            except Exception as exc:
                report = StageReport(
                    backend=stage.backend,
                    model=backend.spec.model,
                    candidates_in=len(subset),
                    ok=False,
                    latency_ms=(self._clock() - started) * 1000,
                    predicted_latency_ms=predicted.latency_ms if predicted else 0.0,
                    cost_usd=None,
                    predicted_cost_usd=predicted.cost_usd if predicted else None,
                    error=_describe(exc, stage.backend),
                )
                if position == 0:
                    return None, report
                execution.stages.append(report)
                execution.degraded = True
                execution.degraded_reason = f"{report.error}; kept the order of the stages before it"
                return execution, None
            elapsed = (self._clock() - started) * 1000
            stats = features.token_stats(backend.spec.tokenizer_family)
            tokens = item_tokens(backend.spec, stats, [stats.docs[i] for i in subset])
            if not scores.cold_start:
                self._latency.observe(stage.backend, backend.spec.latency, tokens, elapsed)
            if self._usage is not None and scores.usage.tokens is not None:  # billed vs estimated tokens
                estimated = predict_usage(backend.spec, stats.query, [stats.docs[i] for i in subset]).tokens
                self._usage.observe(stage.backend, estimated, scores.usage.tokens)
            ranked = sorted(range(len(subset)), key=lambda k: -values[k])  # stable: ties keep the prior order
            execution.order = [subset[k] for k in ranked] + execution.order[len(subset) :]
            execution.scores.update({subset[k]: values[k] for k in range(len(subset))})
            execution.stages.append(
                StageReport(
                    backend=stage.backend,
                    model=backend.spec.model,
                    candidates_in=len(subset),
                    ok=True,
                    latency_ms=elapsed,
                    predicted_latency_ms=predicted.latency_ms if predicted else 0.0,
                    cost_usd=billed_cost_usd(backend.spec, scores.usage, elapsed),
                    predicted_cost_usd=predicted.cost_usd if predicted else None,
                )
            )
        return execution, None


def _describe(exc: BaseException, backend: str) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{backend}: timed out at the deadline"
    if isinstance(exc, BackendError):
        return str(exc)
    return f"{backend}: {type(exc).__name__}: {exc}"
