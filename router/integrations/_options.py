"""What every framework component shares: which Router, and the per-request settings.

A component holds defaults for ``top_n``, budgets, constraints and context; a call may override
any of them (constraints and context are merged key by key, the call's keys winning). The Router
is the one passed in, else one built once from ``config``, else the process default
(``router.get_default_router()``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from router import RerankResult, Router, get_default_router

__all__ = ["RerankOptions", "RouterHandle", "result_info"]


@dataclass(frozen=True)
class RerankOptions:
    top_n: int | None = None
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    def merged(
        self,
        *,
        top_n: int | None = None,
        latency_budget_ms: float | None = None,
        max_cost_usd: float | None = None,
        constraints: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> RerankOptions:
        """These settings with a call's overrides (None: keep the component's)."""
        return replace(
            self,
            top_n=self.top_n if top_n is None else top_n,
            latency_budget_ms=self.latency_budget_ms if latency_budget_ms is None else latency_budget_ms,
            max_cost_usd=self.max_cost_usd if max_cost_usd is None else max_cost_usd,
            constraints={**self.constraints, **(constraints or {})},
            context={**self.context, **(context or {})},
        )

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Router.rerank`` / ``arerank`` (top_n is applied by the caller)."""
        return {
            "latency_budget_ms": self.latency_budget_ms,
            "max_cost_usd": self.max_cost_usd,
            "constraints": dict(self.constraints) or None,
            "context": dict(self.context) or None,
        }


class RouterHandle:
    """The Router a component uses, built on first use (so building a component stays light)."""

    def __init__(self, router: Router | None, config: str | os.PathLike[str] | Mapping[str, Any] | None) -> None:
        if router is not None and config is not None:
            raise ValueError("pass either router= or config=, not both")
        self._router = router
        self._config = config
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> RouterHandle:
        return self  # a copied component shares its Router (threads, loops and pools are not copied)

    def get(self) -> Router:
        with self._lock:  # components are shared across threads: build one Router, not one per thread
            if self._router is None:
                self._router = get_default_router() if self._config is None else Router(self._config)
            return self._router


def result_info(result: RerankResult, index: int, rank: int) -> dict[str, Any]:
    """What a component writes beside each returned document: who scored it, at what cost, and
    where it was before and after (``index``: its position in the input; ``rank``: from 0)."""
    return {
        "request_id": result.request_id,
        "backends": list(result.backends),
        "cost_usd": result.actual_cost_usd,
        "degraded": result.degraded,
        "degraded_reason": result.degraded_reason,
        "index": index,
        "rank": rank,
    }
