"""The Router: one request through the seven steps of DESIGN.md, each in its own module.

1. request (router.request)  2. features (router.features)  3. arm (router.experiments)
4. plan (policies)  5. execute (router.executor)  6. account (router.accounting)
7. record (router.decisions)

What the Router is made of is built by router.compose; the sync bridge is router.sync; loading
models is router.warmup; the shadow arm is router.experiments.shadow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, Unpack

from policies.base import BackendView, PlanningContext, Policy
from policies.context import NOTHING_CACHED, RuleVerdicts, new_backend_view, new_planning_context
from policies.rules import CONSTRAINT_RULES, check_all
from router.accounting import Accounting
from router.accounting.budget import BudgetWindow, observe_request, plan_signal
from router.admission import Admission, queued_callbacks
from router.backends.base import Availability, Backend
from router.batch import BatchOutcome, BatchRequest, arerank_many
from router.cache import CacheView
from router.catalog import BackendSpec
from router.compose import Clock, compose, default_wall_clock
from router.config import RouterConfig, load_config
from router.constraints import Constraints
from router.cost import UsageCalibrator
from router.deadline import DeadlineGuard
from router.decisions import DecisionLog, DecisionLogConfig, decision_from_result
from router.errors import ConfigError, RerankRouterError
from router.estimate import OptionEstimator
from router.experiments.assignment import Assignment, assign
from router.experiments.shadow import ShadowArm
from router.features import Features, extract_features
from router.latency import LatencyEstimator
from router.plan import Estimate, Option, Plan
from router.request import RequestOptions, RerankRequest, build_request
from router.resilience.breaker import BreakerStore
from router.result import Explanation, RankedItem, RerankResult, StageReport, new_rerank_result
from router.scores import NO_SCORES_NOTE, ScoreBook
from router.settings import Budgets
from router.sync import LoopThread
from router.warmup import BackgroundLoader, freeze_heap
from router.warmup import warm_up as load_backends

__all__ = ["Router"]

T = TypeVar("T")

# Backend work stops at least this long before the request's deadline (router.deadline).
DEADLINE_GUARD_MS = 5.0

# What records hold when a DecisionLog is passed to Router() without a `decision_log:` block.
_LOG_DEFAULTS = DecisionLogConfig(sink="none")

# Candidates longer than this in total (about 11,000 WordPiece tokens, ~3 ms to count exactly
# here) are counted in a worker thread rather than on the event loop (Router._afeatures).
OFFLOAD_FEATURES_CHARS = 50_000

Documents = Sequence[str | Mapping[str, Any]] | Any
"""Strings, or mappings with ``text`` and optional ``id`` / ``metadata`` (router.documents)."""


_NONE_COLD: frozenset[str] = frozenset()


def _loop_clock() -> float:
    """The running event loop's clock (so deadlines and asyncio timeouts agree, also under a
    test loop with virtual time); time.monotonic outside a loop, which is what asyncio uses."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Router:
    """Routes rerank requests through a policy to backends. Safe to share across threads and tasks.

    ``backends`` adds or replaces configured backends by name (e.g. ``router.testing.FakeBackend``);
    ``policy`` replaces the configured one. ``clock`` (monotonic seconds; default: the running
    loop's), ``sleep`` (retry back-off) and ``rng`` (retry jitter) are injectable so tests never
    wait or flake; ``breaker_store`` lets replicas share circuit-breaker state.
    ``decision_log`` replaces the one the config's ``decision_log:`` block builds; ``budget_window``
    the mean-cost window ``budgets.mean_cost`` builds (e.g. one window shared by several Routers).
    """

    def __init__(
        self,
        config: RouterConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        policy: Policy | None = None,
        clock: Clock | None = None,
        breaker_store: BreakerStore | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        decision_log: DecisionLog | None = None,
        budget_window: BudgetWindow | None = None,
    ) -> None:
        self.config = load_config(config)  # the profile, if any, is read and merged here (router.profile)
        self._clock = clock or _loop_clock
        parts = compose(
            self.config,
            backends=backends,
            policy=policy,
            clock=self._clock,
            wall_clock=default_wall_clock(clock),
            breaker_store=breaker_store,
            rng=rng,
            sleep=sleep,
            decision_log=decision_log,
            budget_window=budget_window,
        )
        self.backends: Mapping[str, Backend] = parts.backends
        self.policy: Policy = parts.policy
        self.accounting: Accounting = parts.accounting
        """Step 6: observed latency and billed usage feed the estimators (router.accounting)."""
        self.decisions: DecisionLog | None = parts.decisions
        """Where decisions and feedback go (router.decisions); None when no log is configured."""
        self._executor = parts.executor
        self._counters = parts.counters
        self._redis = parts.redis
        self._cache = parts.cache
        """The score cache (config ``cache:``, router.cache); None when off."""
        self.budget_window: BudgetWindow | None = parts.budget_window
        """The mean-cost budget's window (``budgets.mean_cost``; router.accounting.budget); None when not configured."""
        self._arm_policies = parts.arm_policies
        self._shadow: ShadowArm | None = None
        if parts.shadow is not None:
            shadow_config, shadow_policy, cap = parts.shadow
            self._shadow = ShadowArm(shadow_config, shadow_policy, cap, self.config.budgets.latency_ms, self)
        self._loader = BackgroundLoader(self.backends)
        self._admission = Admission(self.config.admission)
        self._last_shed_task = 0
        self._read_tokens = _read_tokens(self.backends)
        self._last_views: _Views | None = None
        self._verdicts: RuleVerdicts | None = None
        self._scores = ScoreBook(self.config.scores)
        """Score maps per backend and domain, built once (router.scores)."""
        self._sync = LoopThread()
        self.deadline_guard = DeadlineGuard(DEADLINE_GUARD_MS)
        """How early backend work stops before a deadline: 5 ms, raised to the p99 of how late
        recent deadline-bound requests came back (router.deadline), at most 20% of the budget."""

    @classmethod
    def from_config(
        cls,
        source: RouterConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        policy: Policy | None = None,
    ) -> Router:
        return cls(source, backends=backends, policy=policy)

    def __repr__(self) -> str:
        return f"Router(policy={self.policy.name!r}, backends={list(self.backends)!r})"

    @property
    def latency(self) -> LatencyEstimator:
        """The latency model, corrected online from observed calls."""
        return self.accounting.latency

    @property
    def usage(self) -> UsageCalibrator:
        """Billed / estimated tokens per token-billed backend, learnt from responses (router.cost)."""
        return self.accounting.usage

    def clock(self) -> float:
        return self._clock()

    # -- the call: steps 1-7 ----------------------------------------------------------------------
    async def arerank(
        self,
        query: str,
        documents: Documents,
        *,
        top_n: int | None = None,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: Constraints | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        cache: bool | None = None,
    ) -> RerankResult:
        """``cache=False``: neither read nor write the score cache for this call (config ``cache:``)."""
        options = RequestOptions(
            top_n=top_n,
            latency_budget_ms=latency_budget_ms,
            max_cost_usd=max_cost_usd,
            constraints=constraints,
            context=context,
        )
        if cache is not None:
            options["cache"] = cache
        return await self._arerank(self._clock(), query, documents, options)

    async def _arerank(self, started: float, query: str, documents: Documents, options: RequestOptions) -> RerankResult:
        """Steps 1-7 for a call made at ``started`` (the caller's moment, also for sync calls)."""
        request = self._request(query, documents, **options)  # 1
        admission = self._admission
        if admission.may_shed():
            shed = admission.admit(self._time_left_ms(request, started), queued_callbacks())
        else:  # too few in flight to shed: neither the time left nor the queue is read
            shed = admission.admit(None)
        if shed is not None:
            result = self._shed(request, started, shed.reason)
            self._admission.shed_done()
            # Answered in this step: yielding would put the answer behind everything queued (a
            # burst of thousands). Only a caller that loops on shed answers without ever awaiting
            # anything else is made to yield, or it would keep the loop from every admitted request.
            task = id(asyncio.current_task())
            if task == self._last_shed_task:
                await asyncio.sleep(0)
            self._last_shed_task = task
            return result
        try:
            latency_default, cost_default = options.get("latency_budget_ms") is None, options.get("max_cost_usd") is None
            return await self._admitted(request, started, latency_default, cost_default)
        finally:
            self._admission.done()

    async def _admitted(self, request: RerankRequest, started: float, latency_default: bool, cost_default: bool) -> RerankResult:
        features = await self._afeatures(request, started)  # 2
        assignment = self._assign(request)  # 3
        policy = self.policy
        if assignment is not None and self.config.experiment is not None:
            arm = self.config.experiment.arms[assignment.arm]
            request = _with_arm_budgets(request, arm.budgets, latency_default, cost_default)
            policy = self._arm_policies[assignment.arm]
        cached = self._cache_view(request)
        ctx = self._context(request, features, cached)
        plan = policy.plan(ctx)  # 4
        result = await self.execute(request, features, plan, started, assignment, ctx=ctx, policy=policy, cache=cached)  # 5, 6
        if self.budget_window is not None:  # 6: the mean-cost window (router.accounting.budget)
            observe_request(self.budget_window, ctx, result.actual_cost_usd, result.predicted_cost_usd)
        self.record(result, request, features, assignment, shadow=False)  # 7
        if assignment is not None and self._shadow is not None:
            self._shadow.maybe_start(request, features, assignment)
        return result

    def rerank(self, query: str, documents: Documents, **options: Unpack[RequestOptions]) -> RerankResult:
        """Blocking twin of :meth:`arerank` (same keyword arguments); runs on the router's own event
        loop thread. The deadline runs from this call, not from when the loop thread picks it up."""
        return self._run_sync(self._arerank(self._clock(), query, documents, options))

    def plan(self, query: str, documents: Documents, **options: Unpack[RequestOptions]) -> Plan:
        """Steps 1-4 only: what would run and why, without calling any backend (the keyword
        arguments of :meth:`arerank`)."""
        request = self._request(query, documents, **options)
        return self.policy.plan(self._context(request, self._features(request), self._cache_view(request)))

    # -- step 1: request; step 2: features --------------------------------------------------------
    def _request(self, query: object, documents: object, **kwargs: Any) -> RerankRequest:
        c = self.config
        return build_request(
            query,
            documents,
            limits=c.limits,
            default_constraints=c.constraints,
            default_latency_budget_ms=c.budgets.latency_ms,
            default_max_cost_usd=c.budgets.max_cost_usd,
            retriever_score_key=c.retriever_score_key,
            **kwargs,
        )

    def _features(self, request: RerankRequest, started: float | None = None) -> Features:
        """Step 2. With ``started`` (the call's moment) and a latency budget, exact token counts
        are used only where they fit the time left (router.features)."""
        for backend in self.backends.values():
            counter = backend.token_counter()
            if counter is not None:
                self._counters.register(counter)
        # The time left decides only whether an exact counter counts: none registered, none read.
        time_left_ms = None
        if started is not None and self._counters.any_exact():
            time_left_ms = self._time_left_ms(request, started)
        return extract_features(
            request,
            self._read_tokens,
            self._counters,
            default_domain=self.config.domain,
            max_document_chars=self.config.limits.max_document_chars,
            read_tokens=self._read_tokens,
            time_left_ms=time_left_ms,
        )

    def _time_left_ms(self, request: RerankRequest, started: float) -> float | None:
        """What is left of the request's latency budget, from the moment the caller called."""
        if request.latency_budget_ms is None:
            return None
        return request.latency_budget_ms - (self._clock() - started) * 1000

    async def _afeatures(self, request: RerankRequest, started: float | None = None) -> Features:
        """Step 2 off the event loop when it is long: exact token counts for many long candidates
        take tens of milliseconds (tokenizers releases the GIL), time in which every other request
        on this loop would otherwise wait, deadline timers included."""
        # The clipped texts' characters (known from step 1): a document clipped is itself over the line.
        if not self._counters.any_exact():  # estimates only: quick whatever the length
            return self._features(request, started)
        chars = request.scoring_chars_for(self.config.limits.max_document_chars)
        if chars < OFFLOAD_FEATURES_CHARS:
            return self._features(request, started)
        return await asyncio.to_thread(self._features, request, started)

    def _shed(self, request: RerankRequest, started: float, reason: str) -> RerankResult:
        """The retriever's order at once: admission control said the deadline cannot be met."""
        keep = Option(stages=(), estimate=Estimate(0.0, 0.0, None))
        plan = Plan(policy="admission", primary=keep, fallbacks=(), assessed=(), reason=reason)
        result = RerankResult(
            request_id=request.request_id,
            items=RankedItem._many(request.documents, range(len(request.documents)), _no_score),
            top_n=request.top_n,
            stages=(),
            latency_ms=(self._clock() - started) * 1000,
            predicted_latency_ms=0.0,
            predicted_cost_usd=0.0,
            actual_cost_usd=0.0,
            degraded=True,
            degraded_reason=f"{reason}; kept the retriever's order",
            explanation=Explanation.from_plan(plan, (*request.notes, NO_SCORES_NOTE)),
        )
        domain = str(request.context.get("domain") or self.config.domain)
        self.record(
            result, request, Features(len(request.documents), request.top_n, domain, MappingProxyType({})), None, shadow=False
        )
        return result

    # -- step 3: arm --------------------------------------------------------------------------------
    def _assign(self, request: RerankRequest) -> Assignment | None:
        experiment = self.config.experiment
        if experiment is None:
            return None
        return assign(experiment, request.context, request.query, request.request_id)

    # -- step 4: plan -------------------------------------------------------------------------------
    def plan_request(self, request: RerankRequest, features: Features, policy: Policy | None = None) -> Plan:
        """Step 4 for a built request: the policy's plan over every backend as it stands now."""
        return (policy or self.policy).plan(self._context(request, features))

    def _cache_view(self, request: RerankRequest) -> CacheView | None:
        """What the score cache holds for this request, read once before planning (router.cache)."""
        if self._cache is None or not request.cache:
            return None
        texts = request.texts_for_scoring(self.config.limits.max_document_chars)
        return self._cache.view(self._cache.namespace(request.context), request.query, texts)

    def _context(self, request: RerankRequest, features: Features, cached: CacheView | None = None) -> PlanningContext:
        views = self._views()
        for name in views.cold:
            self._loader.start(name)
        hits = None if cached is None else cached.hits()
        estimator = OptionEstimator(views.specs, self.latency, features, views.cold, self.usage, hits)
        verdicts = self._verdicts
        constraints = request.constraints
        if verdicts is None or verdicts.backends is not views.views or not _same(verdicts.constraints, constraints):
            verdicts = self._verdicts = RuleVerdicts(views.views, constraints)
        ctx = new_planning_context(
            features=features,
            constraints=verdicts.constraints,  # the same object the verdicts are bound to (an equal one)
            latency_budget_ms=request.latency_budget_ms,
            max_cost_usd=request.max_cost_usd,
            backends=views.views,
            estimate=estimator.estimate,
            cached=NOTHING_CACHED if hits is None else hits,
            verdicts=verdicts,
        )
        if self.budget_window is None:
            return ctx
        return dataclasses.replace(ctx, budget=plan_signal(self.budget_window, ctx))  # router.accounting.budget

    def _views(self) -> _Views:
        """Every backend as planning sees it now. The last call's objects while every backend's spec
        and availability are the same, so the rule verdicts bound to them (policies.context.RuleVerdicts)
        still hold; new ones as soon as one differs (a breaker opened, a model loaded, a spec replaced)."""
        seen = [(b.spec, self._availability(name)) for name, b in self.backends.items()]
        last = self._last_views
        if last is not None and last.seen == seen:  # frozen values: equal ones plan alike
            return last
        views: dict[str, BackendView] = {}
        specs: dict[str, BackendSpec] = {}
        warming: list[str] = []
        for name, (spec, availability) in zip(self.backends, seen, strict=True):
            views[name] = new_backend_view(name, spec, availability)
            specs[name] = spec
            if availability.ok and not availability.warm:
                warming.append(name)
        self._last_views = made = _Views(seen, MappingProxyType(views), specs, frozenset(warming) or _NONE_COLD)
        return made

    def _availability(self, name: str) -> Availability:
        """The backend's own availability, closed off while its circuit breaker is open."""
        availability = self.backends[name].availability()
        why = self._executor.open_breaker(name)
        if availability.ok and why is not None:
            return _BreakerClosed(False, why, warm=availability.warm)
        return availability

    def _breaker_degradation(self, ctx: PlanningContext, plan: Plan, policy: Policy) -> str | None:
        """Why the plan is not what the policy would choose with every backend healthy (an open
        circuit breaker took a backend out), or None when it is. Reads the breakers as planning
        saw them (a shared breaker store costs a Redis round trip per read)."""
        open_ = {n: v.availability.reason for n, v in ctx.backends.items() if isinstance(v.availability, _BreakerClosed)}
        if not open_:
            return None
        healthy = policy.plan(
            dataclasses.replace(
                ctx,
                backends=MappingProxyType(
                    {
                        name: dataclasses.replace(view, availability=self.backends[name].availability())
                        if name in open_
                        else view
                        for name, view in ctx.backends.items()
                    }
                ),
            )
        )
        if healthy.primary.name == plan.primary.name:
            return None
        names = ", ".join(f"{n} ({why})" for n, why in sorted(open_.items()))
        return f"planned {plan.primary.name} instead of {healthy.primary.name}: circuit open for {names}"

    # -- steps 5 and 6: execute, account --------------------------------------------------------------
    async def execute(
        self,
        request: RerankRequest,
        features: Features,
        plan: Plan,
        started: float,
        assignment: Assignment | None,
        arm: str | None = None,
        *,
        ctx: PlanningContext | None = None,
        policy: Policy | None = None,
        cache: CacheView | None = None,
    ) -> RerankResult:
        """Run ``plan`` against the request's deadline and build the accounted result. The hard
        rules are re-checked on every option before it is called (``ctx``: the plan's context;
        ``cache``: the score cache's view the plan was made with)."""
        ctx = ctx or self._context(request, features)
        breaker_note = self._breaker_degradation(ctx, plan, policy or self.policy)
        deadline = None
        if request.latency_budget_ms is not None:
            # Stop backend work a little early: the event loop wakes timers late under load, and
            # the result still has to be assembled (router.deadline learns by how much).
            deadline = started + (request.latency_budget_ms - self.deadline_guard.guard_ms(request.latency_budget_ms)) / 1000
        texts = request.texts_for_scoring(self.config.limits.max_document_chars)
        execution = await self._executor.run(
            plan,
            request.query,
            texts,
            features,
            deadline,
            request.max_cost_usd,
            admissible=lambda option: check_all(option, ctx, CONSTRAINT_RULES),
            cache=cache,
        )
        degraded, degraded_reason = execution.degraded, execution.degraded_reason
        if breaker_note is not None:
            served = f"served by {plan.primary.name}" if plan.primary.stages else "kept the retriever's order"
            degraded, degraded_reason = True, f"{breaker_note}; {degraded_reason or served}"
        if deadline is not None and (late_s := self._clock() - deadline) >= 0:
            self.deadline_guard.observe(late_s * 1000)
        after = None
        if self._scores.contextual:  # which stage each later stage ran after, for calibrations fitted per cascade
            ran = [s.backend for s in execution.stages if s.ok]
            after = dict(zip(ran[1:], ran, strict=False))
        sole = execution.sole
        if sole is None:
            scored = self._scores.assemble(execution.order, execution.scores, execution.scored_by, features.domain, after)
            raw_of = execution.scores.get
            score_of = raw_of if scored.scores is execution.scores else scored.scores.get  # the same: one lookup each
            items = RankedItem._many(request.documents, execution.order, score_of, raw_of, execution.scored_by.get)
            calibrated, note = scored.calibrated, scored.note
        else:  # one stage scored them all: its scores in rank order, no maps
            ranked, calibrated, note = self._scores.assemble_ranked(execution.ranked, sole, features.domain, after)
            items = RankedItem._ranked(request.documents, execution.order, ranked, execution.ranked, sole)
        notes = (*request.notes, *features.notes, *execution.notes)
        if note is not None:
            notes = (*notes, note)
        if assignment is not None and arm is None:
            notes = (*notes, f"experiment {assignment.experiment}: arm {assignment.arm} ({assignment.reason})")
        return new_rerank_result(
            request_id=request.request_id,
            items=items,
            top_n=request.top_n,
            stages=tuple(execution.stages),
            latency_ms=(self._clock() - started) * 1000,
            predicted_latency_ms=plan.primary.estimate.latency_ms,
            predicted_cost_usd=plan.primary.estimate.cost_usd,
            actual_cost_usd=Accounting.billed_usd(execution.stages),
            degraded=degraded,
            degraded_reason=degraded_reason,
            explanation=Explanation.from_plan(plan, notes),
            experiment=None if assignment is None else assignment.experiment,
            arm=arm or (None if assignment is None else assignment.arm),
            **({} if cache is None else _cache_totals(execution.stages)),
            scores_calibrated=calibrated,
        )

    # -- step 7: record -------------------------------------------------------------------------------
    def record(
        self, result: RerankResult, request: RerankRequest, features: Features, assignment: Assignment | None, *, shadow: bool
    ) -> None:
        if self.decisions is None:
            return
        settings = self.config.decision_log or _LOG_DEFAULTS
        self.decisions.record(
            decision_from_result(
                result,
                query=request.query,
                latency_budget_ms=request.latency_budget_ms,
                max_cost_usd=request.max_cost_usd,
                domain=features.domain,
                top_k=settings.top_k,
                include_text=settings.include_text,
                timestamp=time.time(),
                experiment=result.experiment,
                arm=result.arm,
                shadow=shadow,
                assignment_key=None if assignment is None else assignment.key_digest,
                tenant=None if assignment is None else assignment.tenant,
                query_salt=settings.query_salt,
            )
        )

    def record_feedback(
        self,
        request_id: str,
        *,
        clicked: Sequence[str] = (),
        relevance: Mapping[str, float] | None = None,
    ) -> None:
        """Join an outcome to a logged decision: clicked doc ids (in click order) and/or graded
        judgements {doc_id: grade}. Never blocks; needs a ``decision_log`` in config."""
        if self.decisions is None:
            raise ConfigError("no decision log: add `decision_log: {sink: jsonl, path: decisions.jsonl}` to the config")
        self.decisions.record_feedback(request_id, clicked=clicked, relevance=relevance)

    # -- lifecycle ------------------------------------------------------------------------------------
    def warm_up(self, *, freeze_gc: bool = True) -> dict[str, str]:
        """Load every available in-process model now, so first requests do not pay for it.

        ``freeze_gc``: then move everything alive (modules, models, this router) out of the cyclic
        garbage collector's view (``gc.collect(); gc.freeze()``); its full passes otherwise pause
        the event loop long enough to miss tight deadlines on a busy machine. Pass False to leave the
        collector alone (e.g. if your app freezes the heap itself before forking workers).

        Returns backend name -> "ready" or the reason it is not.
        """
        status = load_backends(self.backends, freeze_gc=False)
        self._run_sync(self._prepare())  # clients for the loop sync calls run on
        if freeze_gc:
            freeze_heap()
        return status

    async def awarm_up(self, *, freeze_gc: bool = True) -> dict[str, str]:
        """:meth:`warm_up` from async code: models and SDK imports load in a worker thread (the
        loop keeps serving), then each remote tier's client is built on the running loop."""
        status = await asyncio.to_thread(load_backends, self.backends, freeze_gc=False)
        await self._prepare()
        if freeze_gc:
            freeze_heap()
        return status

    async def _prepare(self) -> None:
        for backend in self.backends.values():
            with contextlib.suppress(RerankRouterError):  # a tier that cannot prepare says so in availability()
                await backend.prepare()

    async def adrain(self) -> None:
        """Wait for shadow runs in flight, then for the decision log to write what it holds."""
        if self._shadow is not None:
            await self._shadow.drain()
        if self.decisions is not None:
            await asyncio.to_thread(self.decisions.flush)

    def drain(self) -> None:
        """Blocking twin of :meth:`adrain` (e.g. before reading the log in a script)."""
        self._run_sync(self.adrain())

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._sync.run(coro)

    async def aclose(self) -> None:
        if self._shadow is not None:  # shadow runs: cancel, settle their reservations
            await self._shadow.cancel()
        for backend in self.backends.values():
            await backend.aclose()
        if self.decisions is not None:
            await asyncio.to_thread(self.decisions.close)
        if self._redis is not None:
            self._redis.close()

    def close(self) -> None:
        """Close every backend's connections and stop the sync loop thread."""
        self._run_sync(self.aclose())  # works from any thread, even one running its own loop
        self._sync.stop()

    # -- batch (router.batch) ------------------------------------------------------------------------
    async def arerank_many(
        self, requests: Iterable[BatchRequest | Mapping[str, Any] | BatchOutcome], **kwargs: Any
    ) -> list[BatchOutcome]:
        """Many requests, bounded concurrency, one outcome per request in input order (router.batch)."""
        return await arerank_many(self, requests, **kwargs)

    def rerank_many(
        self, requests: Iterable[BatchRequest | Mapping[str, Any] | BatchOutcome], **kwargs: Any
    ) -> list[BatchOutcome]:
        """Blocking twin of :meth:`arerank_many`, on the router's own event loop thread."""
        return self._run_sync(self.arerank_many(requests, **kwargs))

    def breaker_states(self) -> dict[str, str]:
        """Each backend's circuit-breaker state: ``closed``, ``open`` or ``half_open``."""
        return {name: str(breaker.status()[0].value) for name, breaker in self._executor.breakers.items()}


def _cache_totals(stages: Sequence[StageReport]) -> dict[str, Any]:
    """RerankResult's cache fields from its stages: hits and savings of the stages that served."""
    return {
        "cache_hits": sum(s.cached for s in stages if s.ok),
        "cache_misses": sum(s.cache_misses for s in stages),
        "cache_saved_usd": sum(s.saved_usd or 0.0 for s in stages if s.ok),
    }


def _no_score(_: int) -> None:
    return None


def _same(kept: Constraints, constraints: Constraints) -> bool:
    return kept is constraints or kept == constraints


@dataclasses.dataclass(frozen=True, slots=True)
class _Views:
    """The backends as one planning saw them: what it read (spec, availability) and what it built."""

    seen: list[tuple[BackendSpec, Availability]]
    views: Mapping[str, BackendView]
    specs: dict[str, BackendSpec]
    """Read only (the estimator's): never changed once made."""
    cold: frozenset[str]


class _BreakerClosed(Availability):
    """Availability closed by an open circuit breaker (the backend itself would serve)."""

    __slots__ = ()


def _read_tokens(backends: Mapping[str, Backend]) -> dict[str, int | None]:
    """Per tokenizer family, the most tokens of a document any backend of it reads (None: no limit)."""
    out: dict[str, int | None] = {}
    for backend in backends.values():
        family, cap = backend.spec.tokenizer_family, backend.spec.max_tokens_per_doc
        if family not in out:
            out[family] = cap
        else:
            known = out[family]
            out[family] = None if known is None or cap is None else max(known, cap)
    return out


def _with_arm_budgets(request: RerankRequest, budgets: Budgets, latency_default: bool, cost_default: bool) -> RerankRequest:
    """An arm's budgets replace the config's defaults and can only tighten what the caller gave."""

    def pick(current: float | None, arm: float | None, defaulted: bool) -> float | None:
        if arm is None:
            return current
        if defaulted or current is None:
            return arm
        return min(current, arm)

    return dataclasses.replace(
        request,
        latency_budget_ms=pick(request.latency_budget_ms, budgets.latency_ms, latency_default),
        max_cost_usd=pick(request.max_cost_usd, budgets.max_cost_usd, cost_default),
    )
