"""The decision log: one record per request (and per feedback) to a pluggable sink, off the request path.

    from router.decisions import DecisionLog, JsonlSink, decision_from_result

    log = DecisionLog(JsonlSink("decisions.jsonl"))
    log.record(decision_from_result(result, query=q, ..., include_text=False, timestamp=time.time()))
    log.record_feedback(result.request_id, clicked=["doc-7"], relevance={"doc-7": 3})
    log.close()

- :mod:`~router.decisions.record`: the record schema (what is stored; no text or key by default).
- :mod:`~router.decisions.log`: :class:`DecisionLog` (bounded queue + writer thread) and the
  :class:`DecisionSink` seam.
- sinks: :class:`JsonlSink` (default), :class:`SqliteSink` (for queries), :class:`OtelSink` (spans; extra ``otel``).
- :mod:`~router.decisions.capture`: :func:`decision_from_result`; :mod:`~router.decisions.config`: the config section and the builder.
"""

from router.decisions.capture import decision_from_result
from router.decisions.config import SINKS, DecisionLogConfig, build_decision_log, build_sink
from router.decisions.jsonl import JsonlSink
from router.decisions.log import DecisionLog, DecisionSink, InvalidFeedbackError, LogRecord, feedback_record
from router.decisions.otel import OtelSink
from router.decisions.record import SCHEMA_VERSION, DecisionRecord, FeedbackRecord, StageRecord, key_digest
from router.decisions.sqlite import SqliteSink

__all__ = [
    "SCHEMA_VERSION",
    "SINKS",
    "DecisionLog",
    "DecisionLogConfig",
    "DecisionRecord",
    "DecisionSink",
    "FeedbackRecord",
    "InvalidFeedbackError",
    "JsonlSink",
    "LogRecord",
    "OtelSink",
    "SqliteSink",
    "StageRecord",
    "build_decision_log",
    "build_sink",
    "decision_from_result",
    "feedback_record",
    "key_digest",
]
