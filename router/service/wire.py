"""The wire formats the gateway speaks: parse a body into a :class:`WireRequest`, render a result
or an error in the caller's own shape. No web framework here: bodies are plain JSON values.

| format   | endpoint                  | answer                                                        | error body |
|----------|---------------------------|---------------------------------------------------------------|------------|
| cohere   | ``POST /v2/rerank``       | ``{id, results: [{index, relevance_score}], meta}``           | ``{id, message}`` (what the cohere SDK reads) |
| jina     | ``POST /v1/rerank``, ``/rerank`` | ``{id, model, usage, results: [{index, relevance_score, document}]}`` | ``{error: {message, type, param, code}}`` (vLLM / OpenAI style) |
| tei      | ``POST /rerank`` with ``texts`` | bare array ``[{index, score, text?}]``                  | ``{error, error_type}`` |
| native   | ``POST /v1/route_rerank`` | the whole :class:`~router.result.RerankResult` (:func:`result_to_json`) | ``{error: {code, type, message}}`` |
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from router.result import RerankResult

__all__ = [
    "FORMATS",
    "WireError",
    "WireFormat",
    "WireRequest",
    "error_body",
    "parse",
    "render",
    "result_to_json",
]

WireFormat = Literal["cohere", "jina", "tei", "native"]
FORMATS: tuple[WireFormat, ...] = ("cohere", "jina", "tei", "native")


class WireError(Exception):
    """An answer other than 200: HTTP status, message, and extra fields for the error body."""

    def __init__(
        self, status: int, message: str, *, retry_after: int | None = None, valid: Sequence[str] | None = None, kind: str = ""
    ) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.valid = tuple(valid) if valid is not None else None
        self.kind = kind or _KINDS.get(status, "error")
        super().__init__(message)


_KINDS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
_TEI_KINDS = {429: "Overloaded", 503: "Unhealthy", 500: "Backend"}


@dataclass(frozen=True, slots=True)
class WireRequest:
    """What any format's body asks for, in the router's terms."""

    query: Any
    documents: Any
    top_n: int | None = None
    model: str | None = None
    return_documents: bool = False
    raw_scores: bool = False
    latency_budget_ms: Any = None
    max_cost_usd: Any = None
    constraints: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    cache: bool | None = None
    """Native format only: ``"cache": false`` skips the score cache for this request."""


def _invalid(fmt: WireFormat, message: str) -> WireError:
    # Cohere answers 400 to a bad body; TEI, vLLM and FastAPI servers answer 422.
    return WireError(400 if fmt == "cohere" else 422, message)


def _top_n(fmt: WireFormat, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(fmt, f"top_n must be a positive integer, got {value!r}")
    return value or None  # vLLM: 0 means all


def _text_of(fmt: WireFormat, item: Any, position: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("text"), str):
        return str(item["text"])
    raise _invalid(fmt, f"documents[{position}] must be a string or an object with a 'text' string")


def parse(fmt: WireFormat, body: Any) -> WireRequest:
    """``body`` (parsed JSON) as a WireRequest, or a WireError saying what is wrong with it."""
    if not isinstance(body, Mapping):
        raise _invalid(fmt, "the body must be a JSON object")
    query = body.get("query")
    if not isinstance(query, str):
        raise _invalid(fmt, "query must be a string")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid(fmt, "model must be a string")
    if fmt == "tei":
        texts = body.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _invalid(fmt, "texts must be a list of strings")
        return WireRequest(
            query=query,
            documents=texts,
            model=model,
            return_documents=bool(body.get("return_text")),
            raw_scores=bool(body.get("raw_scores")),
        )
    documents = body.get("documents")
    if not isinstance(documents, list):
        raise _invalid(fmt, "documents must be a list")
    top_n = _top_n(fmt, body.get("top_n"))
    if fmt == "cohere":
        if not all(isinstance(d, str) for d in documents):
            raise _invalid(fmt, "documents must be a list of strings")
        return WireRequest(query=query, documents=documents, top_n=top_n, model=model)
    if fmt == "jina":
        texts = [_text_of(fmt, d, i) for i, d in enumerate(documents)]
        return_documents = body.get("return_documents", True)
        return WireRequest(query=query, documents=texts, top_n=top_n, model=model, return_documents=bool(return_documents))
    constraints = body.get("constraints")
    if constraints is not None and not isinstance(constraints, Mapping):
        raise _invalid(fmt, "constraints must be an object")
    context = body.get("context") or {}
    if not isinstance(context, Mapping):
        raise _invalid(fmt, "context must be an object")
    cache = body.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise _invalid(fmt, "cache must be true or false")
    return WireRequest(
        query=query,
        documents=documents,
        top_n=top_n,
        model=model,
        latency_budget_ms=body.get("latency_budget_ms"),
        max_cost_usd=body.get("max_cost_usd"),
        constraints=constraints,
        context=dict(context),
        cache=cache,
    )


def document_texts(request: WireRequest) -> list[str]:
    """The documents' texts (native documents may be records with ``text``)."""
    out = []
    for d in request.documents:
        if isinstance(d, str):
            out.append(d)
        elif isinstance(d, Mapping) and isinstance(d.get("text"), str):
            out.append(str(d["text"]))
        else:
            out.append("")
    return out


def outcome(result: RerankResult) -> dict[str, Any]:
    """What the router did, in brief: for ``meta.rerank_router`` and the response headers."""
    return {
        "request_id": result.request_id,
        "backends": list(result.backends),
        "cost_usd": result.actual_cost_usd,
        "predicted_cost_usd": result.predicted_cost_usd,
        "degraded": result.degraded,
        "degraded_reason": result.degraded_reason,
        "latency_ms": round(result.latency_ms, 3),
        "policy": result.explanation.policy,
        "experiment": result.experiment,
        "arm": result.arm,
    }


def _score(value: float | None) -> float:
    return 0.0 if value is None else value


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def render(fmt: WireFormat, result: RerankResult, request: WireRequest, served_model: str) -> Any:
    """The success body for ``result`` in ``fmt``. Unscored items (a degraded answer) score 0."""
    if fmt == "native":
        return result_to_json(result)
    top = result.top()
    if fmt == "cohere":
        return {
            "id": result.request_id,
            "results": [{"index": item.index, "relevance_score": _score(item.score)} for item in top],
            "meta": {
                "api_version": {"version": "2"},
                # One search = one query and up to 100 documents (Cohere's unit), whoever scored it.
                "billed_units": {"search_units": max(1, math.ceil(len(result.items) / 100))},
                "rerank_router": outcome(result),
            },
        }
    if fmt == "tei":
        out: list[dict[str, Any]] = []
        for item in result.items:  # TEI answers every text
            score = _score(item.score)
            entry: dict[str, Any] = {"index": item.index, "score": _logit(score) if request.raw_scores else score}
            if request.return_documents:
                entry["text"] = item.text
            out.append(entry)
        return out
    # jina / vLLM: usage is an estimate (4 characters a token), the router does not report billed tokens.
    tokens = sum(math.ceil((len(str(request.query)) + len(item.text)) / 4) for item in result.items)
    results: list[dict[str, Any]] = []
    for item in top:
        entry = {"index": item.index, "relevance_score": _score(item.score)}
        if request.return_documents:
            entry["document"] = {"text": item.text}
        results.append(entry)
    return {
        "id": result.request_id,
        "model": served_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "results": results,
    }


def error_body(fmt: WireFormat, error: WireError) -> Any:
    """The error body ``fmt``'s clients expect for ``error``."""
    if fmt == "cohere":
        body: dict[str, Any] = {"id": uuid.uuid4().hex, "message": error.message}
    elif fmt == "tei":
        body = {"error": error.message, "error_type": _TEI_KINDS.get(error.status, "Validation")}
    elif fmt == "jina":
        body = {"error": {"message": error.message, "type": error.kind, "param": None, "code": error.status}}
    else:
        body = {"error": {"code": error.status, "type": error.kind, "message": error.message}}
    if error.valid is not None:
        if isinstance(body.get("error"), dict):
            body["error"]["valid_models"] = list(error.valid)
        else:
            body["valid_models"] = list(error.valid)
    return body


def result_to_json(result: RerankResult) -> dict[str, Any]:
    """The whole result as JSON (:meth:`RerankResult.to_dict`), plus ``backends`` and the
    explanation's text as the CLI prints it."""
    data = result.to_dict()
    data["backends"] = list(result.backends)
    data["explanation"]["text"] = str(result.explanation)
    return data
