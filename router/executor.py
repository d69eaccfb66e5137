"""Step 5: run a plan's options in order against the deadline; never lose a document.

Each option is tried in turn (primary, then fallbacks). Within an option, stage i scores the top
``candidates_in`` of the order so far; everything below keeps its place. An adaptive stage runs
only when the stage before it is unsure (small top-1 margin). A failure or timeout in the first
stage moves on to the next option; in a later stage it keeps the order in hand. Fallbacks that
cannot finish in the time left, or that reuse a backend that already failed in this request, are
skipped. If nothing completes, the retriever's order is returned. Any exception a backend raises
is caught here, so the result is always a permutation of the input.

Every backend call goes through its circuit breaker, rate and concurrency limits, retries
(tenacity, never past the deadline) and, where enabled and affordable, a hedged second call
after the backend's observed p95. Every await is bounded by the remaining budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import operator
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.accounting import Accounting
from router.backends.base import Backend, Scores, Usage, attach_billed, billed_of
from router.cache import CacheView, Coalescer
from router.cost import billed_cost_usd, predict_cost_usd
from router.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConstraintViolationError,
    DeadlineExceededError,
    MalformedResponseError,
    RateLimitedError,
)
from router.features import Features, TokenStats
from router.latency import item_tokens, stage_sums
from router.plan import Estimate, Evidence, Option, Plan, Rejection, Stage
from router.resilience import BackendLimits, CircuitBreaker, LatencyWindow, LimitPolicy, ResiliencePolicy, hedged, retrying
from router.resilience.breaker import BreakerState, BreakerStore
from router.resilience.cutoff import Cutoff
from router.resilience.retry import release
from router.result import StageReport, new_stage_report
from router.secrets import redact

__all__ = ["FALLBACK_MARGIN_MS", "Execution", "Executor"]

Clock = Callable[[], float]

# Slack kept beyond a fallback's predicted latency when reserving time for it.
FALLBACK_MARGIN_MS = 10.0

# Costs within this of the ceiling fit it: float noise in summed prices must not flip a decision.
CEILING_TOLERANCE_USD = 1e-9


@dataclass(slots=True)
class Execution:
    order: list[int]
    scores: dict[int, float] = field(default_factory=dict)
    """Document index -> the score of the last stage that scored it (router.scores maps them;
    empty where ``sole`` is set)."""
    scored_by: dict[int, str] = field(default_factory=dict)
    """Document index -> the backend that gave its score (empty where ``sole`` is set)."""
    sole: str | None = None
    """Set where one stage scored every document and served alone: its backend gave every score,
    ``order`` is its ranking and ``ranked`` its scores in that order (non-increasing), so neither
    map is built."""
    ranked: list[float] = field(default_factory=list)
    """Where ``sole`` is set: the score of each document of ``order``, in that order."""
    stages: list[StageReport] = field(default_factory=list)
    served_by: Option | None = None
    degraded: bool = False
    degraded_reason: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    scores: Scores
    attempts: int
    hedged: bool


@dataclass(slots=True)
class _Tally:
    attempts: int = 0
    last_error: str = ""
    rejected: Usage | None = None
    """Units billed for responses that were then rejected (malformed), retries included."""
    cut_usd: float = 0.0
    """Predicted cost of calls whose bill cannot be read: cut by a timeout (the provider may still
    finish and bill them) or answered with a body too broken to read its billed units."""

    def bill(self, usage: Usage | None) -> None:
        if usage is not None:
            self.rejected = usage if self.rejected is None else self.rejected + usage


@dataclass(slots=True)
class _Spend:
    """The request's ceiling and what its calls have been billed so far, rejected responses too."""

    ceiling: float | None
    spent: float = 0.0

    def left(self) -> float | None:
        return None if self.ceiling is None else self.ceiling - self.spent

    def fits(self, usd: float | None) -> bool:
        left = self.left()
        return left is None or usd is None or usd <= left + CEILING_TOLERANCE_USD

    def add(self, usd: float | None) -> None:
        if usd is not None:
            self.spent += usd


Admissible = Callable[[Option], Sequence[Rejection]]
"""The hard rules an option must pass before any of its stages is called (policies.rules.CONSTRAINT_RULES)."""


_PLAIN_NUMBERS = frozenset({float, int})


def _validate(scores: Scores, expected: int, backend: str) -> tuple[float, ...]:
    values = scores.values
    if len(values) != expected:
        raise MalformedResponseError(f"returned {len(values)} scores for {expected} documents", backend=backend)
    try:  # the common case in two C-level passes: plain numbers whose sum is finite are all finite
        if set(map(type, values)) <= _PLAIN_NUMBERS and math.isfinite(sum(values)):
            return values
    except (OverflowError, TypeError):
        pass  # the checks below say what is wrong (or raise as they always did)
    if any(not isinstance(v, int | float) for v in values):
        raise MalformedResponseError("returned a non-numeric score", backend=backend)
    if any(not math.isfinite(v) for v in values):
        raise MalformedResponseError("returned a non-finite score", backend=backend)
    return values


def top_margin(values: Sequence[float]) -> float:
    """Top-1 minus top-2 score: how sure a stage is of its best answer (inf with one document)."""
    if len(values) < 2:
        return math.inf
    first, second = sorted(values, reverse=True)[:2]
    return first - second


class Executor:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        accounting: Accounting,
        clock: Clock,
        *,
        resilience: Mapping[str, ResiliencePolicy] | None = None,
        breaker_store: BreakerStore | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._backends = backends
        self._accounting = accounting
        self._clock = clock
        self._policies = {name: (resilience or {}).get(name, ResiliencePolicy()) for name in backends}
        self.breakers = {
            name: CircuitBreaker(name, self._policies[name].breaker, clock=clock, store=breaker_store) for name in backends
        }
        self._limits = {name: BackendLimits(self._limit_policy(name)) for name in backends}
        self._windows = {name: LatencyWindow() for name in backends}
        self._rng = rng or random.Random()
        self._sleep = sleep

    def _limit_policy(self, name: str) -> LimitPolicy:
        """Config limits, with the provider's published rate limits from the catalog as defaults."""
        limits = self._policies[name].limits
        spec = self._backends[name].spec
        return limits.model_copy(update={"rpm": limits.rpm or spec.rpm, "tpm": limits.tpm or spec.tpm})

    def open_breaker(self, name: str) -> str | None:
        """Why ``name``'s circuit breaker keeps it out of planning, or None while it is not open."""
        state, why = self.breakers[name].status()
        return why if state is BreakerState.OPEN else None

    # -- options ------------------------------------------------------------------------------
    async def run(
        self,
        plan: Plan,
        query: str,
        texts: Sequence[str],
        features: Features,
        deadline: float | None,
        max_cost_usd: float | None = None,
        admissible: Admissible | None = None,
        cache: CacheView | None = None,
    ) -> Execution:
        """Run the plan's options in order until one serves. ``max_cost_usd`` caps everything the
        request is billed, over every option and retry, rejected responses included;
        ``admissible`` re-checks the hard rules before an option's first call; ``cache`` is the
        request's score-cache view (router.cache): its backends get only the documents it misses."""
        failed: list[StageReport] = []
        failed_backends: set[str] = set()
        skipped: list[str] = []
        spend = _Spend(max_cost_usd)
        options = plan.options_in_order
        for position, option in enumerate(options):
            if not option.stages:
                break
            if failed_backends.intersection(option.backends):
                skipped.append(f"{option.name} skipped: a backend in it already failed")
                continue
            rejections = admissible(option) if admissible is not None else ()
            if rejections:
                why = "; ".join(f"{r.rule}: {r.reason}" for r in rejections)
                error = ConstraintViolationError(f"refused {option.name}: {why}", backend=option.stages[0].backend)
                failed.append(self._refusal(option, error))
                failed_backends.add(option.stages[0].backend)
                continue
            if not spend.fits(option.estimate.cost_usd):
                skipped.append(
                    f"{option.name} skipped: predicted ${option.estimate.cost_usd:.6f}, "
                    f"${spend.left():.6f} left under the ceiling after ${spend.spent:.6f} billed"
                )
                continue
            now = None
            if deadline is not None:
                now = self._clock()
                left_ms = (deadline - now) * 1000
                if left_ms <= 0:
                    skipped.append("deadline reached")
                    break
                if position > 0 and option.estimate.latency_ms > left_ms:
                    skipped.append(f"{option.name} skipped: predicted {option.estimate.latency_ms:.0f} ms, {left_ms:.0f} ms left")
                    continue
            execution, failure = await self._run_option(
                option,
                query,
                texts,
                features,
                deadline,
                spend,
                self._option_deadline(deadline, option, options[position + 1 :], now),
                cache,
            )
            if execution is None:
                assert failure is not None
                spend.add(failure.cost_usd)
                failed.append(failure)
                failed_backends.add(failure.backend)
                continue
            if failed:
                execution.stages[:0] = failed
            if skipped:
                execution.notes[:0] = skipped
            if option is not plan.primary or execution.degraded:
                reasons = [r.error or "" for r in failed] + skipped
                if execution.degraded_reason:
                    reasons.append(execution.degraded_reason)
                execution.degraded = True
                execution.degraded_reason = "; ".join([*reasons, f"served by {option.name}"])
            return execution
        execution = Execution(order=list(range(len(texts))), stages=failed, notes=skipped)
        if plan.primary.stages:  # the retriever's order was not the plan: say why we ended here
            execution.degraded = True
            execution.degraded_reason = "; ".join([r.error or "" for r in failed] + skipped + ["kept the retriever's order"])
        return execution

    def _option_deadline(
        self, deadline: float | None, option: Option, later: Sequence[Option], now: float | None = None
    ) -> float | None:
        """The first stage's deadline: leave time for the quickest later fallback that could still
        run if it fails (not one reusing its backend), when there is time to leave. Later stages
        have no fallback (a failure keeps the order in hand), so they run to the deadline.
        ``now``: the clock as the caller just read it (else it is read here)."""
        if deadline is None:
            return deadline
        first = option.stages[0].backend
        staged = [o.estimate.latency_ms for o in later if o.stages and first not in o.backends]
        if not staged:
            return deadline
        reserved = deadline - (min(staged) + FALLBACK_MARGIN_MS) / 1000
        return reserved if reserved > (self._clock() if now is None else now) else deadline

    async def _run_option(
        self,
        option: Option,
        query: str,
        texts: Sequence[str],
        features: Features,
        deadline: float | None,
        spend: _Spend,
        first_deadline: float | None,
        cache: CacheView | None = None,
    ) -> tuple[Execution | None, StageReport | None]:
        """The option's execution, or (None, the failed first stage's report)."""
        n = len(texts)
        execution = Execution(order=[], served_by=option)  # the first stage sets the order (or the option fails)
        left = spend.left()
        spare_usd = None if left is None else left - (option.estimate.cost_usd or 0.0)  # room for a hedge
        previous: Sequence[float] = ()
        for position, stage in enumerate(option.stages):
            if position > 0 and stage.escalation is not None:  # escalation from first-stage evidence
                chosen, why = stage.escalation.choose(Evidence(query, tuple(previous), features.retriever_scores))
                execution.notes.append(why)
                if chosen is None:
                    break
                stage = chosen
            if position > 0 and stage.escalate_below_margin is not None:
                margin = top_margin(previous)
                if margin >= stage.escalate_below_margin:
                    execution.notes.append(
                        f"{stage.backend} not needed: {option.stages[position - 1].backend} is sure "
                        f"(top-1 margin {margin:.3f} >= {stage.escalate_below_margin:.3f})"
                    )
                    break
            backend = self._backends[stage.backend]
            # At the first stage the order is still the retriever's: the subset is the prefix 0..k-1.
            subset: Sequence[int] = (
                range(min(stage.candidates_in, n)) if position == 0 else execution.order[: stage.candidates_in]
            )
            predicted = option.stage_estimates[position] if position < len(option.stage_estimates) else None
            stats = features.token_stats(backend.spec.tokenizer_family)
            entry = None if cache is None else cache.backends.get(stage.backend)
            if entry is not None and cache is not None:  # the score cache serves what it can (router.cache)
                stage_deadline = first_deadline if position == 0 else deadline
                values, report = await self._cached_stage(
                    stage, subset, texts, query, stage_deadline, predicted, spare_usd, spend, stats, cache, entry.hits
                )
                if values is None:
                    if position == 0:
                        return None, report  # run() books its cost
                    spend.add(report.cost_usd)
                    execution.stages.append(report)
                    execution.degraded = True
                    execution.degraded_reason = f"{report.error}; kept the order of the stages before it"
                    return execution, None
                ranked = sorted(range(len(subset)), key=values.__getitem__, reverse=True)
                head = ranked if position == 0 else [subset[k] for k in ranked]
                execution.order = _reordered(head, execution.order, position, n)
                execution.scores.update(zip(subset, values, strict=True))
                execution.scored_by.update(dict.fromkeys(subset, stage.backend))
                spend.add(report.cost_usd)
                execution.stages.append(report)
                previous = values
                continue
            doc_tokens: Sequence[int]
            if position == 0:  # the order is still the retriever's: the subset is a prefix
                doc_tokens = stats.docs[: len(subset)]
                stage_texts = list(texts) if len(subset) == len(texts) else list(texts[: len(subset)])
                sums = stage_sums(backend.spec, stats, len(subset))  # from the request's sums where it can
            else:
                doc_tokens = [stats.docs[i] for i in subset]
                stage_texts = [texts[i] for i in subset]
                sums = None
            if sums is None:
                sums = _item_sums(item_tokens(backend.spec, stats, doc_tokens))
            started = self._clock()
            tally = _Tally()
            try:
                call = await self._call(
                    stage,
                    stage_texts,
                    query,
                    first_deadline if position == 0 else deadline,
                    sums[1],
                    predicted,
                    spare_usd,
                    tally,
                    spend,
                )
            except Exception as exc:
                report = self._failed(stage, backend, len(subset), started, predicted, exc, tally)
                _drop_tracebacks(exc)
                if position == 0:
                    return None, report
                spend.add(report.cost_usd)
                execution.stages.append(report)
                execution.degraded = True
                execution.degraded_reason = f"{report.error}; kept the order of the stages before it"
                return execution, None
            elapsed = (self._clock() - started) * 1000
            self._learn(stage.backend, backend, call, sums, stats.query, doc_tokens, elapsed)
            values = call.scores.values
            # Best first; reverse=True keeps a sort stable, so ties keep the prior order. The key is
            # a list's __getitem__ (a tuple's goes through a slot wrapper, slower per call).
            ranked = sorted(range(len(subset)), key=list(values).__getitem__, reverse=True)
            # At the first stage the subset is the prefix 0..k-1: its positions are the ranks themselves.
            head = ranked if position == 0 else [subset[k] for k in ranked]
            execution.order = _reordered(head, execution.order, position, n)
            if position == 0 and len(option.stages) == 1 and len(subset) == len(texts):
                # Every score is this stage's: its scores in rank order, no index -> score / backend maps.
                # The scores sorted the same way are the scores at ``ranked``, the same objects in the
                # same order (the same comparisons, and both sorts are stable), without a call per item.
                execution.sole, execution.ranked = stage.backend, sorted(values, reverse=True)
            else:
                execution.scores.update(zip(subset, values, strict=True))
                execution.scored_by.update(dict.fromkeys(subset, stage.backend))
            report = self._report(
                stage,
                backend,
                len(subset),
                started,
                predicted,
                call=call,
                rejected=tally.rejected,
                cut_usd=tally.cut_usd,
                elapsed_ms=elapsed,
            )
            spend.add(report.cost_usd)
            execution.stages.append(report)
            previous = values
        return execution, None

    async def _cached_stage(
        self,
        stage: Stage,
        subset: Sequence[int],
        texts: Sequence[str],
        query: str,
        deadline: float | None,
        predicted: Estimate | None,
        spare_usd: float | None,
        spend: _Spend,
        stats: TokenStats,
        cache: CacheView,
        hits: Mapping[int, float],
    ) -> tuple[tuple[float, ...] | None, StageReport]:
        """One stage of a cached backend: the cached scores of ``subset``, the rest from one call
        (shared with an identical call in flight, where coalescing is on), written back to the
        cache. The scores in ``subset``'s order (None if the call failed) and the stage's report."""
        name = stage.backend
        backend = self._backends[name]
        started = self._clock()
        missing = [i for i in subset if i not in hits]
        n_cached = len(subset) - len(missing)
        if not missing:
            values = tuple(hits[i] for i in subset)
            report = self._report(stage, backend, len(subset), started, predicted, attempts=0)
            saved = self._saved_usd(name, stats, subset, ())
            return values, dataclasses.replace(report, ok=True, cost_usd=0.0, cached=n_cached, saved_usd=saved)
        if spend.ceiling is not None and hits:
            # The plan may have assumed which of a later stage's documents were cached: price what is missing.
            due = self._predicted_usd(name, stats, missing)
            if not spend.fits(due):
                report = self._report(stage, backend, len(subset), started, predicted, attempts=0)
                error = (
                    f"{name}: not called: its {len(missing)} uncached document(s) are predicted at ${due or 0:.6f}, "
                    f"over the ${spend.left() or 0:.6f} left under the cost ceiling"
                )
                return None, dataclasses.replace(report, error=error, cached=n_cached, cache_misses=0)
        sent = [texts[i] for i in missing]
        doc_tokens = [stats.docs[i] for i in missing]
        sums = _item_sums(item_tokens(backend.spec, stats, doc_tokens))
        tally = _Tally()

        async def call() -> _Call:
            result = await self._call(stage, sent, query, deadline, sums[1], predicted, spare_usd, tally, spend)
            cache.store(name, missing, result.scores.values)  # even if the caller stopped waiting
            return result

        coalescer = cache.cache.coalescer
        try:
            if coalescer is None:
                result, followed = await call(), False
            else:
                result, followed = await self._shared(coalescer, cache.flight_key(name, missing), call, deadline, name)
        except Exception as exc:
            report = self._failed(stage, backend, len(subset), started, predicted, exc, tally)
            _drop_tracebacks(exc)
            return None, dataclasses.replace(report, cached=n_cached, cache_misses=len(missing))
        fresh = dict(zip(missing, result.scores.values, strict=True))
        values = tuple(fresh[i] if i in fresh else hits[i] for i in subset)
        if followed:  # another request's call: it was billed there
            report = self._report(stage, backend, len(subset), started, predicted, attempts=0)
            saved = self._saved_usd(name, stats, subset, ())
            return values, dataclasses.replace(report, ok=True, cost_usd=0.0, cached=len(subset), coalesced=True, saved_usd=saved)
        self._learn(name, backend, result, sums, stats.query, doc_tokens, (self._clock() - started) * 1000)
        report = self._report(
            stage, backend, len(subset), started, predicted, call=result, rejected=tally.rejected, cut_usd=tally.cut_usd
        )
        saved = self._saved_usd(name, stats, subset, missing) if n_cached else None
        return values, dataclasses.replace(report, cached=n_cached, cache_misses=len(missing), saved_usd=saved)

    async def _shared(
        self, coalescer: Coalescer, key: bytes, call: Callable[[], Coroutine[Any, Any, _Call]], deadline: float | None, name: str
    ) -> tuple[_Call, bool]:
        """``call`` through the coalescer, a follower's wait bounded by its own deadline."""
        timeout = None if deadline is None else deadline - self._clock()
        try:
            async with asyncio.timeout(timeout):
                return await coalescer.run(key, call, _leaders_deadline)
        except TimeoutError as exc:
            raise DeadlineExceededError("timed out at the deadline (waiting on an identical call)", backend=name) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller's own cancellation
            raise BackendError("the shared call was cancelled", backend=name) from None

    def _predicted_usd(self, name: str, stats: TokenStats, indices: Sequence[int]) -> float | None:
        """The predicted cost of scoring ``indices`` on ``name`` (None: its price is unknown)."""
        if not indices:
            return 0.0
        spec = self._backends[name].spec
        if spec.pricing.scheme == "free":
            return 0.0
        docs = [stats.docs[i] for i in indices]
        ms = self._accounting.latency.predict(name, spec.latency, item_tokens(spec, stats, docs))
        return predict_cost_usd(spec, stats.query, docs, ms, self._accounting.usage.correction(name))

    def _saved_usd(self, name: str, stats: TokenStats, subset: Sequence[int], sent: Sequence[int]) -> float | None:
        """Predicted cost of scoring ``subset`` minus that of scoring only ``sent``: what the cache spared."""
        full, rest = self._predicted_usd(name, stats, subset), self._predicted_usd(name, stats, sent)
        if full is None or rest is None:
            return None
        return max(0.0, full - rest)

    def _learn(
        self,
        name: str,
        backend: Backend,
        call: _Call,
        sums: tuple[int, int, int],
        query_tokens: int,
        doc_tokens: Sequence[int],
        ms: float,
    ) -> None:
        """``sums``: (n, Σt, Σt²) of the items sent (:func:`_item_sums`)."""
        if call.scores.cold_start or call.attempts > 1 or call.hedged:
            return  # load time, retry waits or a hedge race say nothing about one call's latency
        self._windows[name].add(ms)
        self._accounting.observe_call(name, backend.spec, sums, ms, call.scores.usage, query_tokens, doc_tokens)

    def _report(
        self,
        stage: Stage,
        backend: Backend,
        n: int,
        started: float,
        predicted: Estimate | None,
        *,
        call: _Call | None = None,
        error: str | None = None,
        attempts: int = 1,
        rejected: Usage | None = None,
        cut_usd: float = 0.0,
        elapsed_ms: float | None = None,
    ) -> StageReport:
        """``elapsed_ms``: the stage's time as the caller just measured it from ``started`` (else measured here)."""
        elapsed = (self._clock() - started) * 1000 if elapsed_ms is None else elapsed_ms
        billed = rejected if call is None else (call.scores.usage if rejected is None else call.scores.usage + rejected)
        cost = None if billed is None else billed_cost_usd(backend.spec, billed, elapsed)
        if cut_usd:
            cost = cut_usd + (cost or 0.0)
        return new_stage_report(
            backend=stage.backend,
            model=backend.spec.model,
            candidates_in=n,
            ok=call is not None,
            latency_ms=elapsed,
            predicted_latency_ms=predicted.latency_ms if predicted else 0.0,
            cost_usd=cost,
            predicted_cost_usd=predicted.cost_usd if predicted else None,
            error=error,
            attempts=call.attempts if call else attempts,
            hedged=call.hedged if call else False,
        )

    def _failed(
        self, stage: Stage, backend: Backend, n: int, started: float, predicted: Estimate | None, exc: Exception, tally: _Tally
    ) -> StageReport:
        """A failed stage's report: the error, the calls made and what they were billed (rejected or unreadable)."""
        return self._report(
            stage,
            backend,
            n,
            started,
            predicted,
            error=_describe(exc, stage.backend),
            attempts=tally.attempts,
            rejected=tally.rejected,
            cut_usd=tally.cut_usd,
        )

    def _refusal(self, option: Option, error: ConstraintViolationError) -> StageReport:
        stage = option.stages[0]
        predicted = option.stage_estimates[0] if option.stage_estimates else None
        return self._report(
            stage, self._backends[stage.backend], stage.candidates_in, self._clock(), predicted, error=str(error), attempts=0
        )

    # -- one backend call: breaker, limits, retries, hedging, deadline ----------------------------
    async def _call(
        self,
        stage: Stage,
        texts: list[str],
        query: str,
        deadline: float | None,
        tokens: int,
        predicted: Estimate | None,
        spare_usd: float | None,
        tally: _Tally,
        spend: _Spend,
    ) -> _Call:
        name = stage.backend
        breaker = self.breakers[name]
        if not breaker.try_acquire():
            raise BackendUnavailableError(breaker.status()[1], backend=name)
        policy = self._policies[name]
        hedge_ms = self._windows[name].hedge_delay_ms(policy.hedge) if _can_afford_hedge(predicted, spare_usd) else None
        retry = None
        try:
            failed: Exception | None = None
            try:  # the first attempt, outside the retry loop (it nearly always succeeds)
                scores, was_hedged = await self._try(
                    name, query, texts, deadline, policy, tokens, hedge_ms, predicted, tally, spend
                )
            except Exception as exc:
                failed = exc
            if failed is not None:  # out of the except block, so later errors do not chain to it
                retry = retrying(policy.retries, deadline=deadline, clock=self._clock, rng=self._rng, sleep=self._sleep)
                retry.resume(failed)
                failed = None
                async for attempt in retry:
                    with attempt:
                        scores, was_hedged = await self._try(
                            name, query, texts, deadline, policy, tokens, hedge_ms, predicted, tally, spend
                        )
        except asyncio.CancelledError:
            breaker.release_probe()
            raise
        except Exception as exc:
            if isinstance(exc, BadRequestError | RateLimitedError | DeadlineExceededError):
                # Refused input, a quota, or our own deadline: no sign the backend is unhealthy.
                breaker.release_probe()
            else:
                breaker.on_failure()
            raise
        finally:
            if retry is not None:
                release(retry)
        breaker.on_success()
        return _Call(scores=scores, attempts=tally.attempts, hedged=was_hedged)

    async def _try(
        self,
        name: str,
        query: str,
        texts: list[str],
        deadline: float | None,
        policy: ResiliencePolicy,
        tokens: int,
        hedge_ms: float | None,
        predicted: Estimate | None,
        tally: _Tally,
        spend: _Spend,
    ) -> tuple[Scores, bool]:
        """One attempt of :meth:`_call`, counted in ``tally``; a retry only where the ceiling leaves
        room for what it may bill."""
        if tally.attempts and not self._retry_fits(predicted, tally, spend, name):
            raise BackendError(f"{tally.last_error}; not retried: the cost ceiling leaves too little for another call")
        tally.attempts += 1
        try:
            return await self._attempt(name, query, texts, deadline, policy, tokens, hedge_ms)
        except Exception as exc:
            _tally_failure(exc, predicted, tally)
            raise

    def _retry_fits(self, predicted: Estimate | None, tally: _Tally, spend: _Spend, name: str) -> bool:
        """Another attempt may bill the stage's predicted cost again: only within what is left."""
        if predicted is None or predicted.cost_usd is None or spend.ceiling is None:
            return True
        already = tally.cut_usd
        if tally.rejected is not None:
            already += billed_cost_usd(self._backends[name].spec, tally.rejected, 0.0) or 0.0
        return spend.fits(already + predicted.cost_usd)

    async def _attempt(
        self,
        name: str,
        query: str,
        texts: list[str],
        deadline: float | None,
        policy: ResiliencePolicy,
        tokens: int,
        hedge_ms: float | None,
    ) -> tuple[Scores, bool]:
        timeout = None if deadline is None else deadline - self._clock()
        cut = "at the deadline"
        if policy.attempt_timeout_ms is not None:
            per_attempt = policy.attempt_timeout_ms / 1000
            if timeout is None or per_attempt < timeout:
                timeout, cut = per_attempt, f"after its {policy.attempt_timeout_ms:.0f} ms attempt timeout"
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("no time left in the latency budget", backend=name)
        backend, limits = self._backends[name], self._limits[name]

        async def one_call() -> Scores:
            # Each call, a hedge included, takes its own concurrency slot and rate-limit budget.
            async with limits.slot(tokens):
                return await backend.rerank(query, texts)

        try:
            async with Cutoff(timeout) as scope:
                # Without a delay hedged() awaits one_call() in place: no task, no wait set.
                scores, was_hedged = await hedged(one_call, None if hedge_ms is None else hedge_ms / 1000)
        except TimeoutError as exc:
            if not scope.expired():
                raise BackendTimeoutError(f"timed out ({str(exc) or 'TimeoutError'})", backend=name) from exc
            error = DeadlineExceededError if cut == "at the deadline" else BackendTimeoutError
            raise error(f"timed out {cut}", backend=name) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller's own cancellation: the request stops
            # A backend that raises CancelledError itself must not cancel the request.
            raise BackendError("raised CancelledError", backend=name) from None
        try:
            _validate(scores, len(texts), name)
        except MalformedResponseError as exc:
            attach_billed(exc, scores.usage)  # charged for, then rejected: it still counts
            raise
        return scores, was_hedged


def _tally_failure(exc: Exception, predicted: Estimate | None, tally: _Tally) -> None:
    """A failed attempt in the stage's tally: what it billed, its predicted cost where its bill
    cannot be read (cut by a timeout, or a body too broken to read), its error."""
    billed = billed_of(exc)
    tally.bill(billed)
    unread = isinstance(exc, BackendTimeoutError) or (isinstance(exc, MalformedResponseError) and billed is None)
    if unread and predicted is not None and predicted.cost_usd:
        tally.cut_usd += predicted.cost_usd
    tally.last_error = str(exc)


def _reordered(head: list[int], order: list[int], position: int, n: int) -> list[int]:
    """The order after a stage ranked ``head`` (its subset, best first): below it, everything keeps
    its place. A first stage's subset is a prefix of the retriever's order 0..n-1."""
    if position == 0:
        return head if len(head) == n else head + list(range(len(head), n))
    return head + order[len(head) :]


def _item_sums(tokens: Sequence[int]) -> tuple[int, int, int]:
    """(n, Σt, Σt²) of a stage's items: what its limits, latency model and accounting read."""
    return len(tokens), sum(tokens), sum(map(operator.mul, tokens, tokens))


def _leaders_deadline(exc: BaseException) -> bool:
    """The shared call ran out of its leader's time: a follower with time left calls on its own."""
    return isinstance(exc, DeadlineExceededError)


def _can_afford_hedge(predicted: Estimate | None, spare_usd: float | None) -> bool:
    """A hedge may cost the call once more: only where that fits what the ceiling leaves over the
    whole option's predicted cost (every stage of a cascade, not just this one)."""
    if predicted is None or predicted.cost_usd is None:
        return False
    if predicted.cost_usd == 0:
        return True
    return spare_usd is None or predicted.cost_usd <= spare_usd


def _drop_tracebacks(exc: BaseException | None) -> None:
    """Detach the tracebacks of a handled error and its causes. The error is kept as text in the
    stage report; its traceback's frames would otherwise hold it in reference cycles (frame ->
    retry state -> error -> traceback -> frame), and cyclic garbage on every failed call makes
    the collector's full passes pause the event loop long enough to miss deadlines."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def _describe(exc: BaseException, backend: str) -> str:
    if isinstance(exc, BackendError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"{backend}: timed out"
    return redact(f"{backend}: {type(exc).__name__}: {exc}")  # a foreign error's text may echo a credential
