"""From a :class:`~router.result.RerankResult` to the :class:`DecisionRecord` the log stores.

This is where text is kept out: documents are named by id and the query by a salted digest; text is
copied only when the caller passes ``include_text=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.decisions.record import DecisionRecord, StageRecord, key_digest

if TYPE_CHECKING:
    from router.result import RerankResult, StageReport

__all__ = ["decision_from_result", "stage_record"]


def stage_record(stage: StageReport) -> StageRecord:
    return StageRecord(
        backend=stage.backend,
        model=stage.model,
        candidates_in=stage.candidates_in,
        ok=stage.ok,
        latency_ms=stage.latency_ms,
        predicted_latency_ms=stage.predicted_latency_ms,
        cost_usd=stage.cost_usd,
        predicted_cost_usd=stage.predicted_cost_usd,
        attempts=stage.attempts,
        hedged=stage.hedged,
        error=stage.error,
        cached=stage.cached,
        coalesced=stage.coalesced,
        saved_usd=stage.saved_usd,
    )


def decision_from_result(
    result: RerankResult,
    *,
    query: str,
    latency_budget_ms: float | None,
    max_cost_usd: float | None,
    domain: str,
    top_k: int,
    include_text: bool,
    timestamp: float,
    experiment: str | None = None,
    arm: str | None = None,
    shadow: bool = False,
    assignment_key: str | None = None,
    tenant: str | None = None,
    query_salt: str = "",
) -> DecisionRecord:
    """The record of one request.

    assignment_key: the :func:`key_digest` of the key that chose the arm (the experiment layer's
        ``Assignment.key_digest``), stored as given: never pass the raw key.
    query_salt: salts the query's digest, so common queries cannot be looked up by hashing them.
    top_k: how many of the returned ids to keep, best first.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    top = result.items[:top_k]
    explanation = result.explanation
    return DecisionRecord(
        request_id=result.request_id,
        timestamp=timestamp,
        policy=explanation.policy,
        chosen=explanation.chosen,
        reason=explanation.reason,
        fallbacks=tuple(explanation.fallbacks),
        backends=result.backends,
        stages=tuple(stage_record(s) for s in result.stages),
        n_documents=len(result.items),
        top_n=result.top_n,
        top_ids=tuple(item.id for item in top),
        latency_ms=result.latency_ms,
        predicted_latency_ms=result.predicted_latency_ms,
        predicted_cost_usd=result.predicted_cost_usd,
        actual_cost_usd=result.actual_cost_usd,
        degraded=result.degraded,
        degraded_reason=result.degraded_reason,
        latency_budget_ms=latency_budget_ms,
        max_cost_usd=max_cost_usd,
        domain=domain,
        experiment=experiment,
        arm=arm,
        shadow=shadow,
        assignment_key=assignment_key,
        tenant=tenant,
        cache_hits=result.cache_hits,
        cache_misses=result.cache_misses,
        cache_saved_usd=result.cache_saved_usd,
        query_digest=key_digest(query, query_salt),
        query=query if include_text else None,
        top_texts=tuple(item.text for item in top) if include_text else None,
    )
