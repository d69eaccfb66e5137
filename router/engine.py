"""The Router: steps 1-5 of DESIGN.md for one request, each handed to its own module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from policies.base import BackendView, PlanningContext, Policy
from policies.registry import create_policy
from router.backends import build_backend
from router.backends.base import Availability, Backend
from router.batch import BatchOutcome, BatchRequest, arerank_many
from router.calibration import apply_profile
from router.config import RouterConfig, check_fixed_backends, load_config, policies_by_path
from router.constraints import Constraints
from router.cost import UsageCalibrator
from router.deadline import DeadlineGuard
from router.decisions import DecisionLog, DecisionLogConfig, build_decision_log, decision_from_result
from router.errors import ConfigError, RerankRouterError
from router.estimate import OptionEstimator
from router.executor import Executor
from router.experiments.assignment import Assignment, assign, unit_interval
from router.experiments.config import ShadowConfig
from router.experiments.spend import RedisSpendCap, SpendCap, SpendLimiter
from router.features import Features, extract_features
from router.latency import LatencyEstimator
from router.plan import Plan
from router.request import RerankRequest, build_request
from router.resilience.breaker import BreakerState, BreakerStore
from router.result import Explanation, RankedItem, RerankResult
from router.settings import Budgets
from router.tokens import TokenCounters

__all__ = ["Router"]

T = TypeVar("T")

# Backend work stops at least this long before the request's deadline (router.deadline).
DEADLINE_GUARD_MS = 5.0

_log = logging.getLogger("rerank_router")
# What records hold when a DecisionLog is passed to Router() without a `decision_log:` block.
_LOG_DEFAULTS = DecisionLogConfig(sink="none")

# Candidates longer than this in total (about 11,000 WordPiece tokens, ~3 ms to count exactly
# here) are counted in a worker thread rather than on the event loop (Router._afeatures).
OFFLOAD_FEATURES_CHARS = 50_000


def _loop_clock() -> float:
    """The running event loop's clock (so deadlines and asyncio timeouts agree, also under a
    test loop with virtual time); time.monotonic outside a loop, which is what asyncio uses."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


Clock = Callable[[], float]


class Router:
    """Routes rerank requests through a policy to backends. Safe to share across threads and tasks.

    ``backends`` adds or replaces configured backends by name (e.g. ``router.testing.FakeBackend``);
    ``policy`` replaces the configured one. ``clock`` (monotonic seconds; default: the running
    loop's), ``sleep`` (retry back-off) and ``rng`` (retry jitter) are injectable so tests never
    wait or flake; ``breaker_store`` lets replicas share circuit-breaker state.
    ``decision_log`` replaces the one the config's ``decision_log:`` block builds.
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
    ) -> None:
        self.config = apply_profile(load_config(config))  # measured overrides (router.calibration)
        built: dict[str, Backend] = {name: build_backend(name, cfg) for name, cfg in self.config.backends.items()}
        built.update(backends or {})
        unknown = sorted(set(self.config.resilience.backends) - set(built))
        if unknown:
            raise ConfigError(f"resilience.backends: {', '.join(unknown)} is not a backend ({', '.join(built)})")
        self.backends: Mapping[str, Backend] = MappingProxyType(built)
        self.policy: Policy = policy or create_policy(self.config.policy.name, self.config.policy.params)
        self._clock = clock or _loop_clock
        self._redis: Any = None
        shared = self.config.shared_state
        if shared is not None:  # replicas share breakers and the shadow spend cap (router.resilience.redis_store)
            from router.resilience.redis_store import RedisBreakerStore, SharedStateOutage, redis_client

            redis_url = shared.url()
            self._redis = redis_client(redis_url)
            if breaker_store is None:
                outage = SharedStateOutage("circuit breakers fall back to closed, not shared", redis_url)
                breaker_store = RedisBreakerStore(
                    self._redis,
                    prefix=shared.key_prefix,
                    clock=self._clock,
                    wall_clock=time.time if clock is None else clock,  # an injected clock is shared as is
                    outage=outage,
                )
        self._counters = TokenCounters(self.config.token_estimates)
        self.latency = LatencyEstimator()
        self.usage = UsageCalibrator()
        """Billed / estimated tokens per token-billed backend, learnt from responses (router.cost)."""
        self._executor = Executor(
            self.backends,
            self.latency,
            self._clock,
            self.usage,
            resilience={name: self.config.resilience_for(name) for name in self.backends},
            breaker_store=breaker_store,
            rng=rng,
            sleep=sleep,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._warming: set[str] = set()
        # Step 3 (arms) and step 7 (record): router.experiments and router.decisions.
        experiment = self.config.experiment
        check_fixed_backends(policies_by_path(self.config), self.backends)
        self._arm_policies: dict[str, Policy] = {}
        self._shadow_policy: Policy | None = None
        self._shadow_cap: SpendLimiter | None = None
        if experiment is not None:
            self._arm_policies = {
                name: create_policy(arm.policy.name, arm.policy.params) for name, arm in experiment.arms.items()
            }
            if experiment.shadow is not None:
                shadow = experiment.shadow
                self._shadow_policy = create_policy(shadow.policy.name, shadow.policy.params)
                if shared is not None:
                    from router.resilience.redis_store import SharedStateOutage

                    self._shadow_cap = RedisSpendCap(
                        shadow.max_spend_usd,
                        shadow.spend_window_s,
                        client=self._redis,
                        key=f"{shared.key_prefix}:spend:{experiment.name}:{shadow.name}",
                        outage=SharedStateOutage(f"shadow arm {shadow.name} skipped", redis_url),
                    )
                else:
                    self._shadow_cap = SpendCap(shadow.max_spend_usd, shadow.spend_window_s)
        self.decisions: DecisionLog | None = decision_log
        """Where decisions and feedback go (router.decisions); None when no log is configured."""
        if self.decisions is None and self.config.decision_log is not None:
            self.decisions = build_decision_log(self.config.decision_log)
        self._background: set[asyncio.Task[None]] = set()
        self.deadline_guard = DeadlineGuard(DEADLINE_GUARD_MS)
        """How early backend work stops before a deadline: 5 ms, raised to the p99 of how late
        recent deadline-bound requests came back (router.deadline), at most 20% of the budget."""

    @classmethod
    def from_config(
        cls, source: RouterConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Router:
        return cls(source, **kwargs)

    def __repr__(self) -> str:
        return f"Router(policy={self.policy.name!r}, backends={list(self.backends)!r})"

    # -- steps 1-4 ------------------------------------------------------------------------------
    def _request(self, query: object, documents: object, **kwargs: Any) -> RerankRequest:
        c = self.config
        return build_request(
            query,
            documents,
            limits=c.limits,
            default_constraints=c.constraints,
            default_latency_budget_ms=c.budgets.latency_ms,
            default_max_cost_usd=c.budgets.max_cost_usd,
            **kwargs,
        )

    def _features(self, request: RerankRequest) -> Features:
        for backend in self.backends.values():
            counter = backend.token_counter()
            if counter is not None:
                self._counters.register(counter)
        families = {b.spec.tokenizer_family for b in self.backends.values()}
        return extract_features(
            request,
            families,
            self._counters,
            default_domain=self.config.domain,
            max_document_chars=self.config.limits.max_document_chars,
        )

    async def _afeatures(self, request: RerankRequest) -> Features:
        """Step 2 off the event loop when it is long: exact token counts for many long candidates
        take tens of milliseconds (tokenizers releases the GIL), time in which every other request
        on this loop would otherwise wait, deadline timers included."""
        chars = sum(len(d.text) for d in request.documents)
        if chars < OFFLOAD_FEATURES_CHARS or not self._counters.any_exact():
            return self._features(request)
        return await asyncio.to_thread(self._features, request)

    def _plan(self, request: RerankRequest, features: Features, policy: Policy | None = None) -> Plan:
        views = {
            name: BackendView(name=name, spec=b.spec, availability=self._availability(name)) for name, b in self.backends.items()
        }
        cold = frozenset(name for name, view in views.items() if view.availability.ok and not view.availability.warm)
        for name in cold:
            self._load_in_background(name)
        estimator = OptionEstimator({n: b.spec for n, b in self.backends.items()}, self.latency, features, cold, self.usage)
        ctx = PlanningContext(
            features=features,
            constraints=request.constraints,
            latency_budget_ms=request.latency_budget_ms,
            max_cost_usd=request.max_cost_usd,
            backends=MappingProxyType(views),
            estimate=estimator.estimate,
        )
        return (policy or self.policy).plan(ctx)

    def _availability(self, name: str) -> Availability:
        """The backend's own availability, closed off while its circuit breaker is open."""
        availability = self.backends[name].availability()
        state, why = self._executor.breakers[name].status()
        if availability.ok and state is BreakerState.OPEN:
            return Availability(False, why, warm=availability.warm)
        return availability

    def plan(self, query: object, documents: object, **kwargs: Any) -> Plan:
        """Steps 1-4 only: what would run and why, without calling any backend."""
        request = self._request(query, documents, **kwargs)
        return self._plan(request, self._features(request))

    # -- the call ---------------------------------------------------------------------------------
    async def arerank(
        self,
        query: str,
        documents: Any,
        *,
        top_n: int | None = None,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: Constraints | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> RerankResult:
        started = self._clock()
        request = self._request(
            query,
            documents,
            top_n=top_n,
            latency_budget_ms=latency_budget_ms,
            max_cost_usd=max_cost_usd,
            constraints=constraints,
            context=context,
        )
        assignment = self._assign(request)
        policy = self.policy
        if assignment is not None and self.config.experiment is not None:
            arm = self.config.experiment.arms[assignment.arm]
            request = _with_arm_budgets(request, arm.budgets, latency_budget_ms is None, max_cost_usd is None)
            policy = self._arm_policies[assignment.arm]
        features = await self._afeatures(request)
        result = await self._execute(request, features, policy, started, assignment)
        self._record(result, request, features, assignment, shadow=False)
        if assignment is not None:
            self._maybe_shadow(request, features, assignment)
        return result

    async def _execute(
        self,
        request: RerankRequest,
        features: Features,
        policy: Policy,
        started: float,
        assignment: Assignment | None,
        arm_name: str | None = None,
        plan: Plan | None = None,
    ) -> RerankResult:
        """Steps 4-6: plan (unless given), run against the deadline, account."""
        plan = plan or self._plan(request, features, policy)
        deadline = None
        if request.latency_budget_ms is not None:
            # Stop backend work a little early: the event loop wakes timers late under load, and
            # the result still has to be assembled (router.deadline learns by how much).
            deadline = started + (request.latency_budget_ms - self.deadline_guard.guard_ms(request.latency_budget_ms)) / 1000
        texts = request.texts_for_scoring(self.config.limits.max_document_chars)
        execution = await self._executor.run(plan, request.query, texts, features, deadline, request.max_cost_usd)
        if deadline is not None and (late_s := self._clock() - deadline) >= 0:
            self.deadline_guard.observe(late_s * 1000)
        items = tuple(
            RankedItem(index=i, id=d.id, score=execution.scores.get(i), text=d.text, metadata=d.metadata)
            for i, d in ((i, request.documents[i]) for i in execution.order)
        )
        billed = [s.cost_usd for s in execution.stages if s.ok]
        actual = None if None in billed else sum(c for c in billed if c is not None)
        notes = (*request.notes, *execution.notes)
        if assignment is not None and arm_name is None:
            notes = (*notes, f"experiment {assignment.experiment}: arm {assignment.arm} ({assignment.reason})")
        return RerankResult(
            request_id=request.request_id,
            items=items,
            top_n=request.top_n,
            stages=tuple(execution.stages),
            latency_ms=(self._clock() - started) * 1000,
            predicted_latency_ms=plan.primary.estimate.latency_ms,
            predicted_cost_usd=plan.primary.estimate.cost_usd,
            actual_cost_usd=actual,
            degraded=execution.degraded,
            degraded_reason=execution.degraded_reason,
            explanation=Explanation.from_plan(plan, notes),
            experiment=None if assignment is None else assignment.experiment,
            arm=arm_name or (None if assignment is None else assignment.arm),
        )

    # -- step 3: arms; step 7: record ---------------------------------------------------------------
    def _assign(self, request: RerankRequest) -> Assignment | None:
        experiment = self.config.experiment
        if experiment is None:
            return None
        return assign(experiment, request.context, request.query, request.request_id)

    def _record(
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

    def _maybe_shadow(self, request: RerankRequest, features: Features, assignment: Assignment) -> None:
        shadow = self.config.experiment.shadow if self.config.experiment is not None else None
        if shadow is None or unit_interval(f"{assignment.experiment}:shadow", request.request_id) >= shadow.sample:
            return
        task = asyncio.get_running_loop().create_task(self._run_shadow(shadow, request, features, assignment))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_shadow(self, shadow: ShadowConfig, request: RerankRequest, features: Features, assignment: Assignment) -> None:
        """Score the request with the shadow arm in the background: same documents and hard
        constraints, its own budgets, its spend held within the cap. Never touches the response."""
        cap, policy = self._shadow_cap, self._shadow_policy
        assert cap is not None and policy is not None
        shadow_request = dataclasses.replace(
            request,
            latency_budget_ms=shadow.budgets.latency_ms or self.config.budgets.latency_ms,
            max_cost_usd=shadow.budgets.max_cost_usd,
        )
        started = self._clock()
        try:
            plan = self._plan(shadow_request, features, policy)
            predicted = plan.primary.estimate.cost_usd
            # Unknown prices cannot be capped; a run that does not fit the cap is skipped whole
            # (a degraded stand-in would only pollute the shadow arm's figures).
            if predicted is None or not cap.reserve(predicted):
                _log.debug("shadow arm %s skipped: spend cap", shadow.name)
                return
            spent = predicted
            try:
                # The reservation is the run's ceiling: hedges cannot spend past it, and only
                # fallbacks predicted to cost no more than it stay in the plan.
                capped = dataclasses.replace(shadow_request, max_cost_usd=predicted)
                affordable = tuple(
                    o for o in plan.fallbacks if o.estimate.cost_usd is not None and o.estimate.cost_usd <= predicted
                )
                plan = dataclasses.replace(plan, fallbacks=affordable)
                result = await self._execute(capped, features, policy, started, assignment, arm_name=shadow.name, plan=plan)
                spent = result.actual_cost_usd if result.actual_cost_usd is not None else predicted
            finally:
                cap.settle(predicted, spent)
            self._record(result, capped, features, assignment, shadow=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a shadow run must never surface; record the type only
            _log.warning("shadow arm %s failed: %s", shadow.name, type(exc).__name__)

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

    async def adrain(self) -> None:
        """Wait for shadow runs in flight, then for the decision log to write what it holds."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self.decisions is not None:
            await asyncio.to_thread(self.decisions.flush)

    def drain(self) -> None:
        """Blocking twin of :meth:`adrain` (e.g. before reading the log in a script)."""
        self._run_sync(self.adrain())

    def rerank(self, query: str, documents: Any, **kwargs: Any) -> RerankResult:
        """Blocking twin of :meth:`arerank`; runs on the router's own event loop thread."""
        return self._run_sync(self.arerank(query, documents, **kwargs))

    def _load_in_background(self, name: str) -> None:
        """Start loading a cold backend once, so later requests can use it without waiting."""
        load = getattr(self.backends[name], "load", None)
        with self._loop_lock:
            if load is None or name in self._warming:
                return
            self._warming.add(name)

        def run() -> None:
            # A failure is recorded by the backend; availability() reports it to the planner.
            with contextlib.suppress(RerankRouterError):
                load()

        threading.Thread(target=run, name=f"rerank-router-load-{name}", daemon=True).start()

    def warm_up(self, *, freeze_gc: bool = True) -> dict[str, str]:
        """Load every available in-process model now, so first requests do not pay for it.

        ``freeze_gc``: then move everything alive (modules, models, this router) out of the cyclic
        garbage collector's view (``gc.collect(); gc.freeze()``). Its full passes otherwise scan
        that whole heap and pause the event loop for 15-25 ms on a busy 2-core machine, the main
        cause of missed deadlines in ``benchmarks/faults.py``. Pass False to leave the collector alone
        (e.g. if your app freezes the heap itself before forking workers).

        Returns backend name -> "ready" or the reason it is not.
        """
        status: dict[str, str] = {}
        for name, backend in self.backends.items():
            availability = backend.availability()
            load = getattr(backend, "load", None)
            if not availability.ok:
                status[name] = availability.reason
                continue
            if load is not None:
                try:
                    load()
                except RerankRouterError as exc:
                    status[name] = str(exc)
                    continue
            status[name] = "ready"
        if freeze_gc:
            gc.collect()
            gc.freeze()
        return status

    # -- sync bridge and lifecycle -----------------------------------------------------------------
    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        # One long-lived loop per router, so pooled async clients stay bound to one loop and sync
        # calls work from any thread, even one that already runs an event loop.
        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="rerank-router-loop", daemon=True).start()
                self._loop = loop
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def aclose(self) -> None:
        for task in list(self._background):  # shadow runs: cancel, settle their reservations
            task.cancel()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        for backend in self.backends.values():
            await backend.aclose()
        if self.decisions is not None:
            await asyncio.to_thread(self.decisions.close)

    def close(self) -> None:
        """Close every backend's connections and stop the sync loop thread."""
        self._run_sync(self.aclose())  # works from any thread, even one running its own loop
        if self._redis is not None:
            self._redis.close()
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            for _ in range(200):  # the loop thread exits within a tick of stop(); then close it
                if not loop.is_running():
                    loop.close()
                    break
                time.sleep(0.005)

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
