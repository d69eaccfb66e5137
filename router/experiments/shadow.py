"""The shadow arm: the same request, scored in the background by another policy, never returned.

After the response is built, a hash-of-request-id sample of requests is planned again with the
shadow's policy (same documents and hard constraints, its own budgets), its predicted cost
reserved on a spend cap (router.accounting.spend), run with that reservation as its ceiling, and
recorded under the same request id with ``shadow: true``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Protocol

from policies.base import Policy
from router.accounting.spend import SpendLimiter
from router.experiments.assignment import Assignment, unit_interval
from router.experiments.config import ShadowConfig
from router.features import Features
from router.plan import Plan
from router.request import RerankRequest
from router.result import RerankResult

__all__ = ["ShadowArm", "ShadowHost"]

_log = logging.getLogger("rerank_router")


class ShadowHost(Protocol):
    """What the shadow arm needs of the Router: plan, execute and record a request."""

    def clock(self) -> float: ...

    def plan_request(self, request: RerankRequest, features: Features, policy: Policy) -> Plan: ...

    async def execute(
        self, request: RerankRequest, features: Features, plan: Plan, started: float, assignment: Assignment, arm: str
    ) -> RerankResult: ...

    def record(
        self, result: RerankResult, request: RerankRequest, features: Features, assignment: Assignment, *, shadow: bool
    ) -> None: ...


class ShadowArm:
    def __init__(
        self, config: ShadowConfig, policy: Policy, cap: SpendLimiter, default_latency_ms: float | None, host: ShadowHost
    ) -> None:
        self.config = config
        self.policy = policy
        self.cap = cap
        self._default_latency_ms = default_latency_ms
        self._host = host
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_start(self, request: RerankRequest, features: Features, assignment: Assignment) -> None:
        """Start a background run if this request falls in the shadow's sample."""
        if unit_interval(f"{assignment.experiment}:shadow", request.request_id) >= self.config.sample:
            return
        task = asyncio.get_running_loop().create_task(self._run(request, features, assignment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: RerankRequest, features: Features, assignment: Assignment) -> None:
        shadow, host, cap = self.config, self._host, self.cap
        shadow_request = dataclasses.replace(
            request,
            latency_budget_ms=shadow.budgets.latency_ms or self._default_latency_ms,
            max_cost_usd=shadow.budgets.max_cost_usd,
        )
        started = host.clock()
        try:
            plan = host.plan_request(shadow_request, features, self.policy)
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
                result = await host.execute(capped, features, plan, started, assignment, shadow.name)
                spent = result.actual_cost_usd if result.actual_cost_usd is not None else predicted
            finally:
                cap.settle(predicted, spent)
            host.record(result, capped, features, assignment, shadow=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a shadow run must never surface; record the type only
            _log.warning("shadow arm %s failed: %s", shadow.name, type(exc).__name__)

    async def drain(self) -> None:
        """Wait for the runs in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel the runs in flight (their reservations are settled as they unwind)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
