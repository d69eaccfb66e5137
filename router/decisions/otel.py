"""A sink to OpenTelemetry: one span per decision, so routing shows up next to the app's traces.

Spans are written after the fact (from the log's writer thread), with start and end times taken
from the record: the span ends at ``timestamp`` and lasts ``latency_ms``. Attributes carry ids,
names and numbers under the ``rerank_router.`` prefix; query and document text never go into a
span, even when the log was configured to keep it. Needs ``pip install 'rerank-router[otel]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ["DECISION_SPAN", "FEEDBACK_SPAN", "PREFIX", "OtelSink", "decision_attributes"]

PREFIX = "rerank_router."
DECISION_SPAN = "rerank_router.decision"
FEEDBACK_SPAN = "rerank_router.feedback"


def _prefixed(values: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    """OTel attributes cannot be None: unknown values (e.g. an unpriced cost) are left out."""
    return {PREFIX + k: v for k, v in values.items() if v is not None}


def decision_attributes(record: DecisionRecord) -> dict[str, AttributeValue]:
    """The span attributes of a decision: no query or document text, whatever the record holds."""
    return _prefixed(
        {
            "request_id": record.request_id,
            "experiment": record.experiment,
            "arm": record.arm,
            "shadow": record.shadow,
            "policy": record.policy,
            "chosen": record.chosen,
            "backends": list(record.backends),
            "latency_ms": record.latency_ms,
            "predicted_latency_ms": record.predicted_latency_ms,
            "predicted_cost_usd": record.predicted_cost_usd,
            "actual_cost_usd": record.actual_cost_usd,
            "latency_budget_ms": record.latency_budget_ms,
            "max_cost_usd": record.max_cost_usd,
            "degraded": record.degraded,
            "degraded_reason": record.degraded_reason,
            "n_documents": record.n_documents,
            "top_n": record.top_n,
            "top_ids": list(record.top_ids),
            "domain": record.domain,
            "tenant": record.tenant,
            "query_digest": record.query_digest,
        }
    )


class OtelSink:
    """Emits records as spans through ``tracer_provider`` (default: the global one)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.context import Context
        except ImportError as exc:
            raise MissingDependencyError("the otel decision sink needs opentelemetry: pip install 'rerank-router[otel]'") from exc
        self._provider = tracer_provider
        self._tracer: Tracer = trace.get_tracer("rerank_router.decisions", tracer_provider=tracer_provider)
        self._root = Context()  # records are spans of their own, not children of whatever runs the writer

    def write(self, records: Sequence[DecisionRecord | FeedbackRecord]) -> None:
        for record in records:
            if isinstance(record, DecisionRecord):
                self._decision(record)
            else:
                self._feedback(record)

    def _decision(self, record: DecisionRecord) -> None:
        end = int(record.timestamp * 1e9)
        start = end - int(max(record.latency_ms, 0.0) * 1e6)
        span = self._tracer.start_span(
            DECISION_SPAN, context=self._root, attributes=decision_attributes(record), start_time=start
        )
        for stage in record.stages:
            event: dict[str, AttributeValue | None] = {
                "backend": stage.backend,
                "model": stage.model,
                "candidates_in": stage.candidates_in,
                "ok": stage.ok,
                "latency_ms": stage.latency_ms,
                "cost_usd": stage.cost_usd,
                "attempts": stage.attempts,
                "hedged": stage.hedged,
                "error": stage.error,  # the typed error's message, scrubbed of secrets by the backend layer
            }
            span.add_event("rerank_router.stage", _prefixed(event), timestamp=end)
        span.end(end_time=end)

    def _feedback(self, record: FeedbackRecord) -> None:
        at = int(record.timestamp * 1e9)
        attributes = _prefixed(
            {"request_id": record.request_id, "clicked": list(record.clicked), "n_judgements": len(record.relevance)}
        )
        span = self._tracer.start_span(FEEDBACK_SPAN, context=self._root, attributes=attributes, start_time=at)
        span.end(end_time=at)

    def close(self) -> None:
        """Push out buffered spans; the provider itself belongs to the caller and stays open."""
        from opentelemetry import trace

        flush = getattr(self._provider or trace.get_tracer_provider(), "force_flush", None)
        if callable(flush):
            flush()
