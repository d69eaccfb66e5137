"""The backend seam: one way to score (query, documents).

A backend is small on purpose (compare httpx's transport base): ``rerank`` scores every document
it is given, in order, on [0, 1] (higher = more relevant; each backend documents its mapping), and
reports the units it was billed for. Everything else (which documents, deadlines, fallbacks,
merging) belongs to the executor. Backends must not assume one event loop: the sync entry point
runs on the router's own loop, async callers on theirs.

Subclass :class:`Backend` to inherit the defaults of ``token_counter`` and ``load``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from router.catalog import BackendSpec
from router.shells import shell_of
from router.tokens import TokenCounter

__all__ = ["AVAILABLE", "Availability", "Backend", "Scores", "Usage", "attach_billed", "billed_of"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Units a provider billed (or a local run consumed) for one rerank call."""

    search_units: float | None = None
    tokens: int | None = None
    requests: int = 1

    def __add__(self, other: Usage) -> Usage:
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        tokens = add(self.tokens, other.tokens)
        return Usage(
            search_units=add(self.search_units, other.search_units),
            tokens=None if tokens is None else int(tokens),
            requests=self.requests + other.requests,
        )


@dataclass(frozen=True, slots=True)
class Scores:
    values: tuple[float, ...]
    usage: Usage = Usage()
    cold_start: bool = False
    """True when this call also loaded the model: its latency says nothing about scoring."""


new_usage: Callable[..., Usage] = shell_of(Usage)
"""Usage's constructor for every call (router.shells)."""
new_scores: Callable[..., Scores] = shell_of(Scores)
"""Scores' constructor for every call (router.shells)."""


@dataclass(frozen=True, slots=True)
class Availability:
    ok: bool
    reason: str = ""
    warm: bool = True
    """False while an in-process model is not loaded yet: its first call pays spec.cold_start_ms."""


AVAILABLE = Availability(True)
"""Usable and warm (frozen: one serves every backend's answer)."""


@runtime_checkable
class Backend(Protocol):
    name: str
    spec: BackendSpec

    def availability(self) -> Availability:
        """Cheap, cached: can this backend be used at all right now (model resolvable, SDK installed)?"""
        ...

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        """One score per document, in the given order. Raises router.errors.BackendError."""
        ...

    def token_counter(self) -> TokenCounter | None:
        """The real tokenizer once loaded, for exact features; None before or if there is none."""
        return None

    def load(self) -> None:
        """Load what the first call needs (weights, tokenizer, client), blocking; called by
        ``Router.warm_up`` and in a background thread for cold backends. Default: nothing to load.
        Raises router.errors.RerankRouterError if it cannot (availability() then says why)."""
        return None

    async def prepare(self) -> None:
        """Build what a call needs on the running event loop (a pooled client belongs to one
        loop), so the first request on it does not pay for it. Default: nothing."""
        return None

    async def aclose(self) -> None: ...


_BILLED = "_rerank_router_billed"


def attach_billed(exc: BaseException, usage: Usage) -> None:
    """Mark a failed call's error with units the provider billed anyway (a response it charged for
    that was then rejected, or the batches of a split request that succeeded before one failed):
    the executor counts them against the request's ceiling and in its actual cost."""
    prior = billed_of(exc)
    setattr(exc, _BILLED, usage if prior is None else prior + usage)


def billed_of(exc: BaseException) -> Usage | None:
    """Units billed for a failed call, as marked by :func:`attach_billed`; None if none were."""
    usage = getattr(exc, _BILLED, None)
    return usage if isinstance(usage, Usage) else None
