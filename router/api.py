"""``route_rerank`` / ``aroute_rerank``: one call in app code, on a process-wide default Router.

The default Router is built on first use from ``$RERANK_ROUTER_CONFIG`` if set, else from the
packaged default config (``configs/default.yaml``), which runs offline. ``set_default_router``
replaces it (e.g. with ``Router("configs/production.yaml")`` at app start).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from router.constraints import Constraints
from router.engine import Router
from router.result import RerankResult

__all__ = ["aroute_rerank", "get_default_router", "record_feedback", "route_rerank", "set_default_router"]

_default: Router | None = None
_default_lock = threading.Lock()


def get_default_router() -> Router:
    global _default
    with _default_lock:
        if _default is None:
            _default = Router()
        return _default


def set_default_router(router: Router | None) -> None:
    """Replace the process default (None: rebuild from config on next use); closes the old one."""
    global _default
    with _default_lock:
        old, _default = _default, router
    if old is not None and old is not router:
        old.close()


def route_rerank(
    query: str,
    documents: Any,
    *,
    top_n: int | None = None,
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
    constraints: Constraints | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> RerankResult:
    """Rerank ``documents`` for ``query``; returns every document once, best first.

    documents: strings, or mappings with ``text`` (and optional ``id``, ``metadata``), or Documents.
    latency_budget_ms: a deadline; the call returns by it, degraded to the best order in hand if need be.
    max_cost_usd: the most this one request may be planned to cost.
    constraints: e.g. ``{"on_premise": True}``; can only tighten the config's.
    context: free-form; ``domain`` picks quality figures, ``request_id`` names the request.
    """
    return get_default_router().rerank(
        query,
        documents,
        top_n=top_n,
        latency_budget_ms=latency_budget_ms,
        max_cost_usd=max_cost_usd,
        constraints=constraints,
        context=context,
    )


async def aroute_rerank(
    query: str,
    documents: Any,
    *,
    top_n: int | None = None,
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
    constraints: Constraints | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> RerankResult:
    """Async twin of :func:`route_rerank`."""
    return await get_default_router().arerank(
        query,
        documents,
        top_n=top_n,
        latency_budget_ms=latency_budget_ms,
        max_cost_usd=max_cost_usd,
        constraints=constraints,
        context=context,
    )


def record_feedback(
    request_id: str,
    *,
    clicked: Sequence[str] = (),
    relevance: Mapping[str, float] | None = None,
) -> None:
    """Join an outcome to a logged decision (``result.request_id``): clicked doc ids in click order
    and/or graded judgements ``{doc_id: grade}``. Never blocks. Needs ``decision_log:`` in config."""
    get_default_router().record_feedback(request_id, clicked=clicked, relevance=relevance)
