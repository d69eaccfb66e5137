"""What the decision log stores: one :class:`DecisionRecord` per request (and per shadow run), one
:class:`FeedbackRecord` per outcome the app reports. Both are frozen, JSON-safe and versioned.

A record never holds an API key, and holds no document or query text unless the log is configured
with ``include_text: true``: documents are named by their ids, the query by a salted hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "DecisionRecord", "FeedbackRecord", "StageRecord", "key_digest"]

SCHEMA_VERSION = 1


def key_digest(value: str, salt: str = "") -> str:
    """A short, stable digest of a user/session/query key: joins records without storing the key."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StageRecord:
    backend: str
    model: str
    candidates_in: int
    ok: bool
    latency_ms: float
    predicted_latency_ms: float
    cost_usd: float | None
    predicted_cost_usd: float | None
    attempts: int = 1
    hedged: bool = False
    error: str | None = None
    """The typed error's message (already scrubbed of secrets by the backend layer)."""
    cached: int = 0
    """Scores served by the score cache or a coalesced call (router.cache)."""
    coalesced: bool = False
    saved_usd: float | None = None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    request_id: str
    timestamp: float
    """Wall-clock seconds since the epoch when the request finished."""
    policy: str
    chosen: str
    """The planned option's name (e.g. ``minilm`` or ``bm25>cohere@50``)."""
    reason: str
    fallbacks: tuple[str, ...]
    backends: tuple[str, ...]
    """Backends whose scores shaped the returned order."""
    stages: tuple[StageRecord, ...]
    n_documents: int
    top_n: int
    top_ids: tuple[str, ...]
    """Ids of the first ``top_k`` returned documents (the log's ``top_k``, 10 by default), best first."""
    latency_ms: float
    predicted_latency_ms: float
    predicted_cost_usd: float | None
    actual_cost_usd: float | None
    degraded: bool
    degraded_reason: str | None
    latency_budget_ms: float | None
    max_cost_usd: float | None
    domain: str
    experiment: str | None = None
    arm: str | None = None
    shadow: bool = False
    """True for a shadow arm's run: scored in the background, never returned to the caller."""
    assignment_key: str | None = None
    """:func:`key_digest` of the key that chose the arm (never the key itself)."""
    tenant: str | None = None
    query_digest: str | None = None
    query: str | None = None
    """Only with ``include_text: true``."""
    top_texts: tuple[str, ...] | None = None
    """Only with ``include_text: true``; aligned with ``top_ids``."""
    kind: str = "decision"
    schema_version: int = SCHEMA_VERSION
    cache_hits: int = 0
    """Scores the score cache (or a coalesced call) served instead of a backend call."""
    cache_misses: int = 0
    cache_saved_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRecord:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["stages"] = tuple(StageRecord(**s) for s in data.get("stages", ()))
        for name in ("fallbacks", "backends", "top_ids"):
            values[name] = tuple(data.get(name, ()))
        if data.get("top_texts") is not None:
            values["top_texts"] = tuple(data["top_texts"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    request_id: str
    timestamp: float
    clicked: tuple[str, ...] = ()
    """Ids of clicked documents, in click order."""
    relevance: Mapping[str, float] = field(default_factory=dict)
    """Graded judgements, doc id -> grade (e.g. TREC 0-3)."""
    kind: str = "feedback"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relevance"] = dict(self.relevance)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedbackRecord:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["clicked"] = tuple(data.get("clicked", ()))
        values["relevance"] = {str(k): float(v) for k, v in (data.get("relevance") or {}).items()}
        return cls(**values)
