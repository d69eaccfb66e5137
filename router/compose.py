"""Composition: everything a Router is made of, built once from its config.

Backends (configured, then the caller's), the policy and the experiment's arm policies, the
executor with its breakers and limits, the estimators (router.accounting), shared state in Redis,
the shadow arm's spend cap and the decision log. :class:`~router.engine.Router` only runs requests
through what this builds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from policies.base import Policy
from policies.registry import create_policy
from router.accounting import Accounting
from router.accounting.budget import BudgetWindow, build_window
from router.accounting.spend import RedisSpendCap, SpendCap, SpendLimiter
from router.backends.base import Backend
from router.backends.registry import build_backend
from router.cache import MemoryScoreStore, ScoreCache, ScoreStore
from router.config import RouterConfig, check_fixed_backends, policies_by_path
from router.decisions import DecisionLog, build_decision_log
from router.errors import ConfigError
from router.executor import Executor
from router.experiments.config import ShadowConfig
from router.resilience.breaker import BreakerStore
from router.tokens import TokenCounters

__all__ = ["Clock", "Composition", "compose"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Composition:
    config: RouterConfig
    backends: Mapping[str, Backend]
    policy: Policy
    arm_policies: Mapping[str, Policy]
    shadow: tuple[ShadowConfig, Policy, SpendLimiter] | None
    executor: Executor
    accounting: Accounting
    counters: TokenCounters
    decisions: DecisionLog | None
    redis: Any
    cache: ScoreCache | None = None
    budget_window: BudgetWindow | None = None
    """The mean-cost budget's window (``budgets.mean_cost``; router.accounting.budget), shared in Redis where configured."""


def compose(
    config: RouterConfig,
    *,
    backends: Mapping[str, Backend] | None,
    policy: Policy | None,
    clock: Clock,
    wall_clock: Clock,
    breaker_store: BreakerStore | None,
    rng: random.Random | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    decision_log: DecisionLog | None = None,
    budget_window: BudgetWindow | None = None,
) -> Composition:
    built: dict[str, Backend] = {name: build_backend(name, cfg) for name, cfg in config.backends.items()}
    built.update(backends or {})
    unknown = sorted(set(config.resilience.backends) - set(built))
    if unknown:
        raise ConfigError(f"resilience.backends: {', '.join(unknown)} is not a backend ({', '.join(built)})")
    check_fixed_backends(policies_by_path(config), built)

    redis: Any = None
    shared = config.shared_state
    redis_url = None
    if shared is not None:  # replicas share breakers and the shadow spend cap (router.resilience.redis_store)
        from router.resilience.redis_store import RedisBreakerStore, SharedStateOutage, redis_client

        redis_url = shared.url()  # read from the environment once
        redis = redis_client(redis_url)
        if breaker_store is None:
            outage = SharedStateOutage("circuit breakers fall back to closed, not shared", redis_url)
            breaker_store = RedisBreakerStore(redis, prefix=shared.key_prefix, clock=clock, wall_clock=wall_clock, outage=outage)

    accounting = Accounting()
    view = MappingProxyType(built)
    cache = _score_cache(config, view, clock, redis, redis_url)
    executor = Executor(
        view,
        accounting,
        clock,
        resilience={name: config.resilience_for(name) for name in built},
        breaker_store=breaker_store,
        rng=rng,
        sleep=sleep,
    )

    arm_policies: dict[str, Policy] = {}
    shadow: tuple[ShadowConfig, Policy, SpendLimiter] | None = None
    experiment = config.experiment
    if experiment is not None:
        arm_policies = {name: create_policy(arm.policy.name, arm.policy.params) for name, arm in experiment.arms.items()}
        if experiment.shadow is not None:
            s = experiment.shadow
            cap: SpendLimiter
            if shared is not None and redis_url is not None:
                from router.resilience.redis_store import SharedStateOutage

                cap = RedisSpendCap(
                    s.max_spend_usd,
                    s.spend_window_s,
                    client=redis,
                    key=f"{shared.key_prefix}:spend:{experiment.name}:{s.name}",
                    outage=SharedStateOutage(f"shadow arm {s.name} skipped", redis_url),
                )
            else:
                cap = SpendCap(s.max_spend_usd, s.spend_window_s)
            shadow = (s, create_policy(s.policy.name, s.policy.params), cap)

    if budget_window is None:
        budget_window = build_window(
            config.budgets.mean_cost,
            built,
            client=redis,
            url=redis_url or "",
            key_prefix=shared.key_prefix if shared is not None else "rerank-router",
        )

    decisions = decision_log
    if decisions is None and config.decision_log is not None:
        decisions = build_decision_log(config.decision_log)
    return Composition(
        config=config,
        backends=view,
        policy=policy or create_policy(config.policy.name, config.policy.params),
        arm_policies=MappingProxyType(arm_policies),
        shadow=shadow,
        executor=executor,
        accounting=accounting,
        counters=TokenCounters(config.token_estimates),
        decisions=decisions,
        redis=redis,
        cache=cache,
        budget_window=budget_window,
    )


def _score_cache(
    config: RouterConfig, backends: Mapping[str, Backend], clock: Clock, redis: Any, redis_url: Any
) -> ScoreCache | None:
    """The score cache (config ``cache:``): this process's LRU, in front of Redis with ``shared_state:``."""
    settings = config.cache
    if not settings.enabled:
        return None
    local = MemoryScoreStore(max_entries=settings.max_entries, max_bytes=settings.max_bytes, ttl_s=settings.ttl_s, clock=clock)
    store: ScoreStore = local
    shared = config.shared_state
    if shared is not None and settings.shared and redis is not None:
        from router.cache.shared import RedisScoreStore, TieredScoreStore
        from router.resilience.redis_store import SharedStateOutage

        outage = SharedStateOutage("score cache kept in this process only", redis_url)
        store = TieredScoreStore(local, RedisScoreStore(redis, prefix=shared.key_prefix, ttl_s=settings.ttl_s, outage=outage))
    return ScoreCache(settings, backends, store)


def default_wall_clock(clock: Clock | None) -> Clock:
    """Breaker records shared across replicas need wall time; an injected clock is shared as is."""
    return time.time if clock is None else clock
