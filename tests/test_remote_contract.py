"""The wire paths of the Cohere and Voyage backends against their SDK paths: the same scripted server
answers (success, every error status, Retry-After, malformed bodies, timeouts, dropped connections)
must give the same scores, billed units, error classes and messages through ``transport: sdk`` as
through ``aiohttp`` and ``httpx``.

Two differences are allowed, and pinned:

- a dropped connection names the transport library's exception ("connection failed:
  ServerDisconnectedError" on aiohttp, "RemoteProtocolError" on httpx): the class and the text
  before the name must match;
- the voyageai SDK reads a 5xx other than 500 and 502-504 (501, 529) as a result and then fails on
  its shape (a MalformedResponseError, not retried); the wire path reports the status (a
  ServerError, retried like any 5xx).
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import build_remote

from router.backends.cohere import CohereBackend
from router.backends.remote import RemoteBackend
from router.backends.voyage import VoyageBackend
from router.errors import BackendError

KEY = "contract-key-9c4b"
QUERY = "green tea health benefits"
DOCS = ["black tea is fermented", "green tea has health benefits", "coffee beans are roasted", "tea grows on hills"]
TRANSPORTS = ("sdk", "aiohttp", "httpx")
SCORES = [0.25, 0.875, 0.125, 0.5]


@dataclass(frozen=True)
class Answer:
    """One scripted reply: a status, headers and raw body, or a body built from the request."""

    status: int = 200
    body: bytes | Callable[[dict[str, Any]], bytes] = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0
    disconnect: bool = False


class ScriptedServer:
    """Answers every POST with the current Answer, whatever the path (one answer per test case)."""

    def __init__(self) -> None:
        self.answer = Answer()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = owner.answer
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if answer.disconnect:
                    self.close_connection = True
                    return
                body = answer.body(json.loads(raw)) if callable(answer.body) else answer.body
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def cohere_ok(results: Callable[[int], list[Any]] | None = None, meta: Any = "default") -> Callable[[dict[str, Any]], bytes]:
    def build(request: dict[str, Any]) -> bytes:
        n = len(request["documents"])
        items = results(n) if results else [{"index": i, "relevance_score": SCORES[i % 4]} for i in reversed(range(n))]
        body: dict[str, Any] = {"id": "r-1", "results": items}
        if meta == "default":
            body["meta"] = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        elif meta is not None:
            body["meta"] = meta
        return _json(body)

    return build


def voyage_ok(data: Callable[[int], Any] | None = None, usage: Any = "default", **top: Any) -> Callable[[dict[str, Any]], bytes]:
    def build(request: dict[str, Any]) -> bytes:
        n = len(request["documents"])
        items = data(n) if data else [{"index": i, "relevance_score": SCORES[i % 4]} for i in reversed(range(n))]
        body: dict[str, Any] = {"object": "list", "data": items, "model": request["model"], **top}
        if usage == "default":
            body["usage"] = {"total_tokens": 123}
        elif usage is not None:
            body["usage"] = usage
        return _json(body)

    return build


def error(status: int, body: Any, **headers: str) -> Answer:
    raw = body if isinstance(body, bytes) else _json(body)
    return Answer(status, raw, {"Content-Type": "application/json", **headers})


HTTP_DATE = email.utils.formatdate(time.time() + 3600, usegmt=True)
STATUSES = (400, 401, 402, 403, 404, 405, 408, 409, 413, 415, 422, 429, 498, 499, 500, 501, 502, 503, 504, 529)


# Answers both providers get; the error bodies are each provider's documented shape.
def common(message_key: str) -> dict[str, Answer]:
    cases = {f"status {s}": error(s, {message_key: f"scripted {s}"}) for s in STATUSES}
    cases |= {
        "429 Retry-After seconds": error(429, {message_key: "slow down"}, **{"Retry-After": "7"}),
        "429 Retry-After date": error(429, {message_key: "slow down"}, **{"Retry-After": HTTP_DATE}),
        "429 retry-after-ms": error(429, {message_key: "slow down"}, **{"retry-after-ms": "1500"}),
        "503 Retry-After": error(503, {message_key: "overloaded"}, **{"Retry-After": "2"}),
        "502 html body": error(502, b"<html><body>Bad Gateway</body></html>", **{"Content-Type": "text/html"}),
        "500 empty body": error(500, b""),
        "400 non-JSON body": error(400, b"bad things happened"),
        "401 text/plain": error(401, b"invalid api token", **{"Content-Type": "text/plain"}),
        "422 validation list": error(422, {"detail": [{"loc": ["body", "query"], "msg": "Field required"}]}),
        "200 invalid JSON": Answer(200, b'{"results": [{"index": 0,'),
        "200 empty body": Answer(200, b""),
        "200 JSON list": Answer(200, b"[1, 2, 3]"),
        "200 JSON string": Answer(200, b'"ok"'),
        "200 JSON null": Answer(200, b"null"),
        "timeout": Answer(delay_s=1.5, body=b"{}"),
        "dropped connection": Answer(disconnect=True),
    }
    return cases


COHERE = common("message") | {
    "success": Answer(body=cohere_ok()),
    "success, no meta": Answer(body=cohere_ok(meta=None)),
    "success, meta without billed units": Answer(body=cohere_ok(meta={"api_version": {"version": "2"}})),
    "billed units a string": Answer(body=cohere_ok(meta={"billed_units": {"search_units": "1"}})),
    "billed units a bool": Answer(body=cohere_ok(meta={"billed_units": {"search_units": True}})),
    "billed units a float": Answer(body=cohere_ok(meta={"billed_units": {"search_units": 2.0}})),
    "billed units not an object": Answer(body=cohere_ok(meta={"billed_units": 3})),
    "no results": Answer(body=_json({"id": "x", "meta": {}})),
    "results an object": Answer(body=_json({"results": {"index": 0}})),
    "result not an object": Answer(body=cohere_ok(lambda n: [1, 2, 3, 4])),
    "index a string": Answer(body=cohere_ok(lambda n: [{"index": str(i), "relevance_score": 0.5} for i in range(n)])),
    "index a float": Answer(body=cohere_ok(lambda n: [{"index": float(i), "relevance_score": 0.5} for i in range(n)])),
    "index a bool": Answer(body=cohere_ok(lambda n: [{"index": i == 1, "relevance_score": 0.5} for i in range(n)])),
    "index missing": Answer(body=cohere_ok(lambda n: [{"relevance_score": 0.5} for i in range(n)])),
    "index out of range": Answer(body=cohere_ok(lambda n: [{"index": i + 1, "relevance_score": 0.5} for i in range(n)])),
    "index negative": Answer(body=cohere_ok(lambda n: [{"index": i - 1, "relevance_score": 0.5} for i in range(n)])),
    "index twice": Answer(body=cohere_ok(lambda n: [{"index": 0, "relevance_score": 0.5} for i in range(n)])),
    "a document unscored": Answer(body=cohere_ok(lambda n: [{"index": i, "relevance_score": 0.5} for i in range(n - 1)])),
    "score a string": Answer(body=cohere_ok(lambda n: [{"index": i, "relevance_score": "0.5"} for i in range(n)])),
    "score null": Answer(body=cohere_ok(lambda n: [{"index": i, "relevance_score": None} for i in range(n)])),
    "score missing": Answer(body=cohere_ok(lambda n: [{"index": i} for i in range(n)])),
    "score an int": Answer(body=cohere_ok(lambda n: [{"index": i, "relevance_score": 1} for i in range(n)])),
    "score above 1": Answer(body=cohere_ok(lambda n: [{"index": i, "relevance_score": 3.5} for i in range(n)])),
    "score NaN": Answer(body=b'{"results": [{"index": 0, "relevance_score": NaN}], "meta": {}}'),
    "index a huge integer": Answer(body=b'{"results": [{"index": 123456789012345678901234567890, "relevance_score": 0.5}]}'),
    "extra fields": Answer(
        body=cohere_ok(lambda n: [{"index": i, "relevance_score": 0.5, "document": {"text": "x"}} for i in range(n)])
    ),
}

VOYAGE = common("detail") | {
    "success": Answer(body=voyage_ok()),
    "4xx without detail": error(429, {"message": "slow down"}, **{"Retry-After": "7"}),
    "no usage": Answer(body=voyage_ok(usage=None)),
    "usage without total": Answer(body=voyage_ok(usage={})),
    "usage not an object": Answer(body=voyage_ok(usage=5)),
    "total tokens a string": Answer(body=voyage_ok(usage={"total_tokens": "12"})),
    "total tokens a float": Answer(body=voyage_ok(usage={"total_tokens": 12.0})),
    "no data": Answer(body=_json({"object": "list", "usage": {"total_tokens": 1}})),
    "data an object": Answer(body=voyage_ok(lambda n: {"index": 0})),
    "data null": Answer(body=voyage_ok(lambda n: None)),
    "item a number": Answer(body=voyage_ok(lambda n: [1, 2, 3, 4])),
    "item a string": Answer(body=voyage_ok(lambda n: ["a", "b", "c", "d"])),
    "item a list": Answer(body=voyage_ok(lambda n: [[0, 0.5]] * n)),
    "index a string": Answer(body=voyage_ok(lambda n: [{"index": str(i), "relevance_score": 0.5} for i in range(n)])),
    "index a float": Answer(body=voyage_ok(lambda n: [{"index": float(i), "relevance_score": 0.5} for i in range(n)])),
    "index a bool": Answer(body=voyage_ok(lambda n: [{"index": i == 1, "relevance_score": 0.5} for i in range(n)])),
    "index missing": Answer(body=voyage_ok(lambda n: [{"relevance_score": 0.5} for i in range(n)])),
    "index out of range": Answer(body=voyage_ok(lambda n: [{"index": i + 1, "relevance_score": 0.5} for i in range(n)])),
    "index negative": Answer(body=voyage_ok(lambda n: [{"index": i - 1, "relevance_score": 0.5} for i in range(n)])),
    "index far negative": Answer(body=voyage_ok(lambda n: [{"index": i - 9, "relevance_score": 0.5} for i in range(n)])),
    "index twice": Answer(body=voyage_ok(lambda n: [{"index": 0, "relevance_score": 0.5} for i in range(n)])),
    "a document unscored": Answer(body=voyage_ok(lambda n: [{"index": i, "relevance_score": 0.5} for i in range(n - 1)])),
    "score a string": Answer(body=voyage_ok(lambda n: [{"index": i, "relevance_score": "0.5"} for i in range(n)])),
    "score null": Answer(body=voyage_ok(lambda n: [{"index": i, "relevance_score": None} for i in range(n)])),
    "score missing": Answer(body=voyage_ok(lambda n: [{"index": i} for i in range(n)])),
    "score above 1": Answer(body=voyage_ok(lambda n: [{"index": i, "relevance_score": 3.5} for i in range(n)])),
    "score NaN": Answer(body=b'{"data": [{"index": 0, "relevance_score": NaN}], "usage": {"total_tokens": 1}}'),
}


def outcome(backend: RemoteBackend, loop_run: Callable[[Any], Any]) -> tuple[Any, ...]:
    """What the caller sees: scores and usage, or the error's class, text and Retry-After."""
    try:
        scores = loop_run(backend.rerank(QUERY, DOCS))
    except BackendError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "retry_after", None))
    return ("ok", scores.values, scores.usage)


def outcomes(kind: type[RemoteBackend], provider: str, url: str, case: str) -> dict[str, tuple[Any, ...]]:
    import asyncio

    timeout_s = 0.3 if case == "timeout" else 10.0  # generous elsewhere: a busy machine must not time out
    model = "rerank-v3.5" if provider == "cohere" else "rerank-2.5"
    results = {}
    for transport in TRANSPORTS:
        backend = build_remote(kind, provider, {"model": model, "base_url": url, "transport": transport, "timeout_s": timeout_s})

        async def run(coro: Any, backend: RemoteBackend = backend) -> Any:
            try:
                return await coro
            finally:
                await backend.aclose()

        results[transport] = outcome(backend, lambda coro: asyncio.run(run(coro)))
    return results


VOYAGE_SDK_MISREADS = ("status 501", "status 529")


def assert_same(results: dict[str, tuple[Any, ...]], case: str) -> None:
    sdk = results["sdk"]
    for transport, got in results.items():
        if "date" in case:  # Retry-After as an HTTP date: seconds from now, read a moment apart
            assert got[:3] == sdk[:3] and abs(got[3] - sdk[3]) < 2, transport
        elif case == "dropped connection":
            assert got[:2] == sdk[:2], transport
            assert got[2].split(": ")[:2] == sdk[2].split(": ")[:2], (transport, got[2], sdk[2])
        else:
            assert got == sdk, f"{transport} differs from the SDK path on {case!r}"


@pytest.mark.parametrize("case", sorted(COHERE))
def test_cohere_wire_paths_answer_as_the_sdk_does(scripted, monkeypatch, case):
    monkeypatch.setenv("CO_API_KEY", KEY)
    scripted.answer = COHERE[case]
    results = outcomes(CohereBackend, "cohere", scripted.url, case)
    assert_same(results, case)
    if case == "success":
        assert results["sdk"] == ("ok", tuple(SCORES), results["sdk"][2]) and results["sdk"][2].search_units == 1.0


@pytest.mark.parametrize("case", sorted(VOYAGE))
def test_voyage_wire_paths_answer_as_the_sdk_does(scripted, monkeypatch, case):
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    scripted.answer = VOYAGE[case]
    results = outcomes(VoyageBackend, "voyage", scripted.url + "/v1", case)
    if case in VOYAGE_SDK_MISREADS:
        status = case.split()[1]
        assert results["sdk"] == (
            "error",
            "MalformedResponseError",
            "voyage: Voyage response of the wrong shape (AttributeError)",
            None,
        )
        for transport in ("aiohttp", "httpx"):
            assert results[transport] == (
                "error",
                "ServerError",
                f"voyage: Voyage returned HTTP {status}: scripted {status}",
                None,
            )
        return
    assert_same(results, case)
    if case == "success":
        assert results["sdk"][:2] == ("ok", tuple(SCORES)) and results["sdk"][2].tokens == 123


def test_the_cases_cover_every_kind_of_answer():
    for cases in (COHERE, VOYAGE):
        assert {s for s in STATUSES} <= {int(c.split()[1]) for c in cases if c.startswith("status ")}
        assert "timeout" in cases and "dropped connection" in cases and "429 Retry-After seconds" in cases


@pytest.mark.parametrize(
    "body",
    [{"query": "q", "documents": ["caf\u00e9", "\u4e2d\u6587", "plain"]}, {"documents": ["lone \ud800 surrogate"]}, {"n": 2**70}],
)
def test_wire_bodies_encode_to_the_same_json_with_or_without_orjson(body, monkeypatch):
    from router.backends import wire

    fast = wire.dumps(body)
    monkeypatch.setattr(wire, "_ORJSON", None)
    assert json.loads(fast) == json.loads(wire.dumps(body)) == body


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe{", b"nul"])
def test_wire_answers_that_are_not_json_raise_value_error(content):
    from router.backends import wire

    with pytest.raises(ValueError):
        wire.loads(content)
