"""A rerank server on loopback that speaks each provider's documented wire format, and fails on cue.

Run the real SDKs and httpx against it to test a config offline: responses, billing and errors
have the providers' shapes (see ``../shared/facts/providers.md``). Each provider is mounted under
its own prefix, so one server serves them all:

| provider      | base URL to configure          | endpoints                                      |
|---------------|--------------------------------|------------------------------------------------|
| ``cohere``    | ``srv.base_url("cohere")``     | ``POST /v2/rerank``                            |
| ``voyage``    | ``srv.base_url("voyage")``     | ``POST /v1/rerank`` (the base URL ends in ``/v1``) |
| ``vllm``      | ``srv.base_url("vllm")``       | ``POST /rerank``, ``/v1/rerank``, ``/v2/rerank``, ``/score`` |
| ``tei``       | ``srv.base_url("tei")``        | ``POST /rerank``                               |
| ``infinity``  | ``srv.base_url("infinity")``   | ``POST /rerank``                               |
| ``zeroentropy`` | ``srv.base_url("zeroentropy")`` | ``POST /v1/models/rerank``                  |
| ``jina``      | ``srv.base_url("jina")``       | ``POST /v1/rerank``                            |
| ``nim``       | ``srv.base_url("nim")``        | ``POST /v1/ranking`` (NVIDIA NIM, raw logits)  |
| ``mixedbread`` | ``srv.base_url("mixedbread")`` | ``POST /v1/reranking``                        |

Scores come from ``score(query, document)`` (default: :func:`~router.testing.word_overlap`, on
[0, 1]; TEI and Infinity return its logit when asked for raw scores, NIM always, as the real one
answers ``rankings[].logit``). NIM with ``truncate: NONE`` refuses a request holding a pair longer than
the model's context (its catalog ``max_tokens_per_doc``, 8,192 for a model it does not know) with
400 ``Input length N exceeds maximum allowed token size M``, as NIM does. Mixedbread refuses more than
1,000 inputs and answers errors as ``{type, url, message, details}`` (the shape of its documented 429). Billing is computed the way
each provider documents it: Cohere search units (one per query and up to 100 documents, a document
longer than the model's context counting as several chunks), Voyage ``total_tokens`` = query tokens
x documents + document tokens, prompt tokens for vLLM, ZeroEntropy, Jina, NIM and Mixedbread, and characters for
Infinity (whose ``usage.prompt_tokens`` counts characters, as a real infinity-emb 0.0.78 does). Tokens are counted by
``token_counter(family, text)``; the default is the router's own estimate for the tokenizer family
of the requested model (router.tokens), so predicted and billed units agree exactly when the
router's counts are the same as the provider's.

With ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets the provider's
401. ``script([...])`` queues one entry per coming request (None: answer normally; a
:class:`Fault`: fail as it says). ``requests`` records every request with its headers, so tests can
check that a key is sent; nothing is logged.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from router.testing.fake import word_overlap

__all__ = ["PROVIDERS", "Fault", "LoopbackRerankServer", "RecordedRequest"]

PROVIDERS = ("cohere", "voyage", "vllm", "tei", "infinity", "zeroentropy", "jina", "nim", "mixedbread")

IndexFault = Literal["out_of_range", "negative", "duplicate", "missing", "string"]

# Context per Cohere model for search-unit chunking (facts: v4 32,768 tokens, v3.5 4,096).
_COHERE_CONTEXT = {"rerank-v4.0-pro": 32_768, "rerank-v4.0-fast": 32_768, "rerank-v3.5": 4_096}
_COHERE_DEFAULT_MAX_TOKENS_PER_DOC = 4_096
# Most documents per request: Cohere 10,000 (docs x chunks), Voyage 1,000 (facts), Infinity 2,048 (seen),
# Mixedbread 1,000 inputs (its API reference).
_MAX_DOCUMENTS = {"cohere": 10_000, "voyage": 1_000, "infinity": 2_048, "mixedbread": 1_000}
# Providers whose request validation answers 422 (FastAPI / axum) rather than 400.
_VALIDATION_422 = ("tei", "infinity", "nim")
# Tokenizer family used for billing when the requested model is not in the catalog.
_DEFAULT_FAMILY = {"cohere": "cohere", "voyage": "voyage", "zeroentropy": "qwen3", "jina": "xlm-roberta", "nim": "llama3"}
# NIM: the context of a model the catalog does not know (NVIDIA's 8,192-token rerankers; stargate/data-api #2532).
_NIM_DEFAULT_CONTEXT = 8_192
# Mixedbread's error "type" per status: 429's is documented (api-reference/rate-limits); the rest follow it.
_MIXEDBREAD_TYPES = {
    400: "bad_request_error",
    401: "unauthorized_error",
    402: "payment_required_error",
    403: "forbidden_error",
    404: "not_found_error",
    422: "unprocessable_entity_error",
    429: "too_many_requests_error",
}


@dataclass(frozen=True)
class Fault:
    """How to answer one scripted request. Combine fields freely (e.g. a delay and a 503).

    status: answer with this HTTP status and the provider's error body (``message``).
    retry_after: a ``Retry-After`` header value (seconds, or an HTTP date string).
    delay_s: wait this long before answering (a slow response; the client may time out first).
    body: answer 200 with these raw bytes instead (e.g. malformed JSON).
    indices: corrupt the result indices of an otherwise normal answer.
    disconnect: close the connection without answering.
    """

    status: int | None = None
    message: str = "scripted failure"
    retry_after: float | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None
    indices: IndexFault | None = None
    disconnect: bool = False

    @classmethod
    def error(cls, status: int, message: str | None = None, retry_after: float | str | None = None) -> Fault:
        return cls(status=status, message=message or f"scripted HTTP {status}", retry_after=retry_after)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1) -> Fault:
        return cls(status=429, message="Too many requests: rate limit exceeded", retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(status=status, message="internal server error")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay_s=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        return cls(body=b'{"results": [{"index": 0, "relevance_score": 0.5},')

    @classmethod
    def bad_indices(cls, kind: IndexFault) -> Fault:
        return cls(indices=kind)

    @classmethod
    def dropped_connection(cls) -> Fault:
        return cls(disconnect=True)


@dataclass(frozen=True)
class RecordedRequest:
    provider: str
    method: str
    path: str
    """Path below the provider prefix, e.g. ``/v2/rerank``."""
    headers: Mapping[str, str]
    """Lower-cased header names."""
    json: Any
    received_at: float
    client: tuple[str, int] = ("", 0)
    """The client's address: requests from one port came over one pooled connection."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LoopbackRerankServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled clients reuse connections
    server: _Server
    timeout = 30
    wbufsize = -1  # headers and body leave in one write (no 40 ms delayed-ACK stall per response)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None  # never log: requests carry API keys

    def do_GET(self) -> None:
        self._reply(404, {"detail": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.owner._handle(self, raw)

    def _reply(self, status: int, payload: Any, headers: Mapping[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True


class LoopbackRerankServer:
    """``with LoopbackRerankServer() as srv: srv.url; srv.script([...]); srv.requests``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        score: Callable[[str, str], float] = word_overlap,
        token_counter: Callable[[str, str], int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self._score = score
        self._count = token_counter or _estimated_tokens
        self._host, self._port = host, port
        self._script: deque[Fault | None] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        """Most requests handled at once so far (proves that split calls run concurrently)."""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LoopbackRerankServer(url={self.url if self._server else None!r})"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> LoopbackRerankServer:
        server = _Server((self._host, self._port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-rerank-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackRerankServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running: use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, provider: str) -> str:
        """The base URL a backend config (or SDK) should use for ``provider``."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
        return f"{self.url}/{provider}/v1" if provider == "voyage" else f"{self.url}/{provider}"

    # -- scripting and inspection -----------------------------------------------------------------
    def script(self, entries: Iterable[Fault | None]) -> None:
        """Queue how to answer the next requests, one entry each (None: normally)."""
        with self._lock:
            self._script.extend(entries)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self.max_in_flight = 0

    # -- handling ---------------------------------------------------------------------------------
    def _handle(self, handler: _Handler, raw: bytes) -> None:
        _, _, rest = handler.path.partition("/")
        provider, _, sub = rest.partition("/")
        sub = "/" + sub.split("?")[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            fault = self._script.popleft() if self._script else None
            self._requests.append(
                RecordedRequest(
                    provider=provider,
                    method="POST",
                    path=sub,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    json=body,
                    received_at=time.monotonic(),
                    client=(str(handler.client_address[0]), int(handler.client_address[1])),
                )
            )
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._answer(handler, provider, sub, body, fault)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, handler: _Handler, provider: str, path: str, body: Any, fault: Fault | None) -> None:
        if fault is not None and fault.delay_s > 0:
            time.sleep(fault.delay_s)
        if fault is not None and fault.disconnect:
            handler.close_connection = True
            return
        if provider not in PROVIDERS:
            handler._reply(404, {"detail": f"unknown provider prefix {provider!r}"})
            return
        if self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._error(handler, provider, 401, "invalid api token")
            return
        if fault is not None and fault.status is not None:
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._error(handler, provider, fault.status, fault.message, headers)
            return
        if fault is not None and fault.body is not None:
            handler._reply(200, None, raw=fault.body)
            return
        try:
            status, payload = self._respond(provider, path, body)
        except _RequestError as exc:
            self._error(handler, provider, exc.status, exc.message)
            return
        if fault is not None and fault.indices is not None and status == 200:
            _corrupt(payload, fault.indices)
        handler._reply(status, payload)

    def _error(
        self, handler: _Handler, provider: str, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        handler._reply(status, _error_body(provider, status, message), headers)

    def _respond(self, provider: str, path: str, body: Any) -> tuple[int, Any]:
        routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("cohere", "/v2/rerank"): self._cohere,
            ("voyage", "/v1/rerank"): self._voyage,
            ("vllm", "/rerank"): self._vllm_rerank,
            ("vllm", "/v1/rerank"): self._vllm_rerank,
            ("vllm", "/v2/rerank"): self._vllm_rerank,
            ("vllm", "/score"): self._vllm_score,
            ("tei", "/rerank"): self._tei,
            ("infinity", "/rerank"): self._infinity,
            ("zeroentropy", "/v1/models/rerank"): self._zeroentropy,
            ("jina", "/v1/rerank"): self._jina,
            ("nim", "/v1/ranking"): self._nim,
            ("mixedbread", "/v1/reranking"): self._mixedbread,
        }
        route = routes.get((provider, path))
        if route is None:
            raise _RequestError(404, f"no route POST {path} for {provider}")
        if not isinstance(body, dict):
            raise _RequestError(400, "the body must be a JSON object")
        return 200, route(body)

    # -- providers --------------------------------------------------------------------------------
    def _inputs(
        self, provider: str, body: Mapping[str, Any], query_key: str = "query", docs_key: str = "documents"
    ) -> tuple[str, list[str]]:
        query, documents = body.get(query_key), body.get(docs_key)
        status = 422 if provider in _VALIDATION_422 else 400
        if not isinstance(query, str) or not query:
            raise _RequestError(status, f"{query_key} must be a non-empty string")
        if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
            raise _RequestError(status, f"{docs_key} must be a non-empty list of strings")
        limit = _MAX_DOCUMENTS.get(provider)
        if limit is not None and len(documents) > limit:
            raise _RequestError(status, f"too many documents: {len(documents)} > {limit}")
        return query, documents

    def _tokens(self, provider: str, model: object, text: str) -> int:
        return self._count(_family(provider, model), text)

    def _ranked(self, query: str, documents: list[str], top_n: object, score_key: str, raw: bool = False) -> list[dict[str, Any]]:
        scores = [float(self._score(query, d)) for d in documents]
        if raw:
            scores = [_logit(s) for s in scores]
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
            order = order[:top_n]
        return [{"index": i, score_key: scores[i]} for i in order]

    def _cohere(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("cohere", body)
        model = body.get("model")
        context = _COHERE_CONTEXT.get(str(model), 4_096)
        cap = body.get("max_tokens_per_doc") or _COHERE_DEFAULT_MAX_TOKENS_PER_DOC
        q = self._tokens("cohere", model, query)
        chunks = sum(max(1, math.ceil((q + min(self._tokens("cohere", model, d), cap)) / context)) for d in documents)
        if chunks > _MAX_DOCUMENTS["cohere"]:
            raise _RequestError(400, f"too many documents x chunks: {chunks} > 10000")
        return {
            "id": str(uuid.uuid4()),
            "results": self._ranked(query, documents, body.get("top_n"), "relevance_score"),
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": math.ceil(chunks / 100)}},
        }

    def _voyage(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("voyage", body)
        model = body.get("model")
        q = self._tokens("voyage", model, query)
        total = q * len(documents) + sum(self._tokens("voyage", model, d) for d in documents)
        return {
            "object": "list",
            "data": self._ranked(query, documents, body.get("top_k"), "relevance_score"),
            "model": model,
            "usage": {"total_tokens": total},
        }

    def _prompt_tokens(self, provider: str, model: object, query: str, documents: list[str]) -> int:
        q = self._tokens(provider, model, query)
        return sum(q + self._tokens(provider, model, d) for d in documents)

    def _vllm_rerank(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("vllm", body)
        model = body.get("model")
        tokens = self._prompt_tokens("vllm", model, query, documents)
        results = self._ranked(query, documents, body.get("top_n"), "relevance_score")
        for r in results:
            r["document"] = {"text": documents[r["index"]]}
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "results": results,
        }

    def _vllm_score(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("vllm", body, "text_1", "text_2")
        model = body.get("model")
        tokens = self._prompt_tokens("vllm", model, query, documents)
        data = [{"index": i, "object": "score", "score": float(self._score(query, d))} for i, d in enumerate(documents)]
        return {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _tei(self, body: Mapping[str, Any]) -> Any:
        query, texts = self._inputs("tei", body, "query", "texts")
        results = self._ranked(query, texts, None, "score", raw=bool(body.get("raw_scores")))
        if body.get("return_text"):
            for r in results:
                r["text"] = texts[r["index"]]
        return results

    def _infinity(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("infinity", body)
        model = body.get("model")
        # Infinity 0.0.78 reports characters (query + document, stripped) as its "prompt_tokens".
        tokens = sum(len(query.strip()) + len(d.strip()) for d in documents)
        results = self._ranked(query, documents, body.get("top_n"), "relevance_score", raw=bool(body.get("raw_scores")))
        for r in results:
            r["document"] = documents[r["index"]] if body.get("return_documents") else None
        return {
            "object": "rerank",
            "results": results,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": f"infinity-{uuid.uuid4()}",
            "created": int(time.time()),
        }

    def _zeroentropy(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("zeroentropy", body)
        started = time.monotonic()
        tokens = self._prompt_tokens("zeroentropy", body.get("model"), query, documents)
        results = self._ranked(query, documents, body.get("top_n"), "relevance_score")
        return {"results": results, "total_tokens": tokens, "e2e_latency": time.monotonic() - started}

    def _jina(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("jina", body)
        model = body.get("model")
        tokens = self._prompt_tokens("jina", model, query, documents)
        return {
            "model": model,
            "usage": {"total_tokens": tokens},
            "results": self._ranked(query, documents, body.get("top_n"), "relevance_score"),
        }

    def _nim(self, body: Mapping[str, Any]) -> Any:
        query_obj, passages = body.get("query"), body.get("passages")
        query = query_obj.get("text") if isinstance(query_obj, dict) else None
        if not isinstance(query, str) or not query:
            raise _RequestError(422, "query.text must be a non-empty string")
        if not isinstance(passages, list) or not passages or not all(isinstance(p, dict) for p in passages):
            raise _RequestError(422, "passages must be a non-empty list of {text} objects")
        documents = [p.get("text") for p in passages]
        if not all(isinstance(d, str) for d in documents):
            raise _RequestError(422, "passages must be a non-empty list of {text} objects")
        truncate = body.get("truncate", "NONE")
        if truncate not in ("END", "NONE"):
            raise _RequestError(422, "truncate must be one of 'END', 'NONE'")
        model = body.get("model")
        context = _nim_context(model)
        q = self._tokens("nim", model, query)
        lengths = [q + self._tokens("nim", model, d) for d in documents]
        if truncate == "NONE" and max(lengths) > context:
            raise _RequestError(400, f"Input length {max(lengths)} exceeds maximum allowed token size {context}")
        tokens = sum(min(n, context) for n in lengths)
        rankings = [{"index": r["index"], "logit": _logit(r["score"])} for r in self._ranked(query, documents, None, "score")]
        return {"rankings": rankings, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _mixedbread(self, body: Mapping[str, Any]) -> Any:
        query, documents = self._inputs("mixedbread", body, "query", "input")
        model = body.get("model")
        tokens = self._prompt_tokens("mixedbread", model, query, documents)
        top_k = body.get("top_k")
        data = self._ranked(query, documents, top_k, "score")
        for r in data:
            r["object"] = "rank_result"
            if body.get("return_input"):
                r["input"] = documents[r["index"]]
        return {
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "model": model,
            "data": data,
            "object": "list",
            "top_k": top_k if isinstance(top_k, int) and not isinstance(top_k, bool) else len(documents),
            "return_input": bool(body.get("return_input")),
        }


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _error_body(provider: str, status: int, message: str) -> Any:
    """The error body each provider documents."""
    if provider == "cohere":
        return {"id": str(uuid.uuid4()), "message": message}
    if provider == "tei":
        kind = {413: "Validation", 422: "Validation", 424: "Backend", 429: "Overloaded"}.get(status, "Backend")
        return {"error": message, "error_type": kind}
    if provider == "infinity" and status == 422:  # FastAPI request validation (captured from infinity-emb 0.0.78)
        return {"detail": [{"type": "value_error", "loc": ["body"], "msg": message, "input": None}]}
    if provider in ("vllm", "infinity"):
        kind = "BadRequestError" if status < 500 else "InternalServerError"
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    if provider == "mixedbread":
        kind = _MIXEDBREAD_TYPES.get(status, "internal_server_error" if status >= 500 else "bad_request_error")
        return {"type": kind, "url": "https://www.mixedbread.com/api-reference", "message": message, "details": {}}
    if provider == "nim" and status == 422:  # NIM serves with uvicorn / FastAPI: request validation
        return {"detail": [{"type": "value_error", "loc": ["body"], "msg": message, "input": None}]}
    return {"detail": message}  # Voyage, ZeroEntropy, Jina, NIM (FastAPI style)


def _corrupt(payload: Any, kind: IndexFault) -> None:
    items: list[dict[str, Any]] = (
        payload if isinstance(payload, list) else payload.get("results") or payload.get("data") or payload.get("rankings") or []
    )
    if not items:
        return
    n = len(items)
    if kind == "out_of_range":
        items[0]["index"] = n + 5
    elif kind == "negative":
        items[0]["index"] = -1
    elif kind == "duplicate" and n > 1:
        items[-1]["index"] = items[0]["index"]
    elif kind == "missing":
        items.pop()
    elif kind == "string":
        items[0]["index"] = str(items[0]["index"])


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _nim_context(model: object) -> int:
    from router.catalog import load_catalog

    spec = load_catalog().get(str(model)) if model is not None else None
    return spec.max_tokens_per_doc if spec is not None and spec.max_tokens_per_doc else _NIM_DEFAULT_CONTEXT


def _family(provider: str, model: object) -> str:
    from router.catalog import load_catalog

    spec = load_catalog().get(str(model)) if model is not None else None
    return spec.tokenizer_family if spec is not None else _DEFAULT_FAMILY.get(provider, "qwen3")


def _estimated_tokens(family: str, text: str) -> int:
    from router.tokens import TokenCounters

    return TokenCounters().get(family).count([text])[0]
