"""Resilience rules per backend: retries, circuit breaker, hedging, concurrency and rate limits."""

from pydantic import BaseModel, ConfigDict, Field

from router.resilience.breaker import BreakerPolicy, BreakerState, BreakerStore, CircuitBreaker, InMemoryBreakerStore
from router.resilience.hedging import HedgePolicy, LatencyWindow, hedged
from router.resilience.limits import BackendLimits, LimitPolicy
from router.resilience.retry import RETRYABLE, RetryPolicy, retrying

__all__ = [
    "RETRYABLE",
    "BackendLimits",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "HedgePolicy",
    "InMemoryBreakerStore",
    "LatencyWindow",
    "LimitPolicy",
    "ResiliencePolicy",
    "RetryPolicy",
    "hedged",
    "retrying",
]


class ResiliencePolicy(BaseModel):
    """Config `resilience.default` and `resilience.backends.<name>` (the latter replaces the former)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    hedge: HedgePolicy = HedgePolicy()
    limits: LimitPolicy = LimitPolicy()
    attempt_timeout_ms: float | None = Field(None, gt=0)
    """Bound on one attempt, so a hung call leaves time to retry; default: the remaining budget."""
