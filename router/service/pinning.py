"""``model: <backend>`` on a compatible endpoint: the request runs the ``fixed`` policy for that
backend (within every hard rule; its fallbacks are the constrained choice), other requests the
configured policy. The pin rides on a context variable set around the one ``arerank`` call, so one
Router (one set of breakers, estimators, pooled clients) serves pinned and routed requests alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from policies.base import PlanningContext, Policy
from policies.simple import FixedPolicy
from router.plan import Plan

__all__ = ["PinnablePolicy", "pinned"]

_PIN: ContextVar[str | None] = ContextVar("rerank_router_service_pin", default=None)


@contextlib.contextmanager
def pinned(backend: str | None) -> Iterator[None]:
    """Within the block (and tasks it starts), plans pin ``backend``; None: no pin."""
    token = _PIN.set(backend)
    try:
        yield
    finally:
        _PIN.reset(token)


class PinnablePolicy:
    """The configured policy, or ``fixed`` for the backend pinned in the current context."""

    def __init__(self, base: Policy) -> None:
        self.base = base
        self.name: str = base.name
        self._fixed: dict[str, FixedPolicy] = {}

    def plan(self, ctx: PlanningContext) -> Plan:
        backend = _PIN.get()
        if backend is None:
            return self.base.plan(ctx)
        policy = self._fixed.get(backend)
        if policy is None:
            policy = self._fixed[backend] = FixedPolicy(backend)
        return policy.plan(ctx)
