"""The Router: steps 1-5 of DESIGN.md for one request, each handed to its own module."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from policies.base import BackendView, PlanningContext, Policy
from policies.registry import create_policy
from router.backends import build_backend
from router.backends.base import Availability, Backend
from router.calibration import apply_profile
from router.config import RouterConfig, load_config
from router.constraints import Constraints
from router.cost import UsageCalibrator
from router.errors import ConfigError, RerankRouterError
from router.estimate import OptionEstimator
from router.executor import Executor
from router.features import Features, extract_features
from router.latency import LatencyEstimator
from router.plan import Plan
from router.request import RerankRequest, build_request
from router.resilience.breaker import BreakerState, BreakerStore
from router.result import Explanation, RankedItem, RerankResult
from router.tokens import TokenCounters

__all__ = ["Router"]

T = TypeVar("T")

# Backend work stops this long before the request's deadline (see arerank).
DEADLINE_GUARD_MS = 5.0


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

    def _plan(self, request: RerankRequest, features: Features) -> Plan:
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
        return self.policy.plan(ctx)

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
        features = self._features(request)
        plan = self._plan(request, features)
        deadline = None
        if request.latency_budget_ms is not None:
            # Stop backend work a little early: the event loop wakes timers late under load, and
            # the result still has to be assembled. The guard is at most 10% of the budget.
            guard_ms = min(DEADLINE_GUARD_MS, 0.1 * request.latency_budget_ms)
            deadline = started + (request.latency_budget_ms - guard_ms) / 1000
        texts = request.texts_for_scoring(self.config.limits.max_document_chars)
        execution = await self._executor.run(plan, request.query, texts, features, deadline, request.max_cost_usd)
        items = tuple(
            RankedItem(index=i, id=d.id, score=execution.scores.get(i), text=d.text, metadata=d.metadata)
            for i, d in ((i, request.documents[i]) for i in execution.order)
        )
        billed = [s.cost_usd for s in execution.stages if s.ok]
        actual = None if None in billed else sum(c for c in billed if c is not None)
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
            explanation=Explanation.from_plan(plan, (*request.notes, *execution.notes)),
        )

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

    def warm_up(self) -> dict[str, str]:
        """Load every available in-process model now, so first requests do not pay for it.

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
        for backend in self.backends.values():
            await backend.aclose()

    def close(self) -> None:
        """Close every backend's connections and stop the sync loop thread."""
        self._run_sync(self.aclose())  # works from any thread, even one running its own loop
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            for _ in range(200):  # the loop thread exits within a tick of stop(); then close it
                if not loop.is_running():
                    loop.close()
                    break
                time.sleep(0.005)
