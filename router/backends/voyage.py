"""Voyage rerank: its documented wire format on the router's pooled client, or the official
``voyageai`` SDK (``AsyncClient``).

Score: Voyage's ``relevance_score`` on [0, 1] (identity mapping). Usage: ``total_tokens``, which
Voyage bills as query tokens x documents + the documents' tokens. Lists over 1,000 documents or
600K tokens (Voyage's per-request limits) are split into concurrent calls. The SDK's retries are
off (``max_retries=0``: the executor owns retries). Connections are pooled: one aiohttp session per
event loop, handed to the SDK through its ``voyageai.aiosession`` context variable for the
duration of each call only.

``transport``: ``auto`` (the default) posts ``/rerank`` on the router's own pooled aiohttp session
(httpx where aiohttp is not installed) and reads the answer the way the SDK reads it (same
results, errors and billed tokens; a contract test runs both); ``aiohttp`` or ``httpx`` pick that
client; ``sdk`` goes through ``voyageai.AsyncClient``.

```yaml
backends:
  voyage:
    type: voyage
    model: rerank-2.5             # or rerank-2.5-lite, rerank-2, rerank-2-lite
    api_key_env: VOYAGE_API_KEY
    transport: auto               # or aiohttp, httpx, sdk
```
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, SdkErrors, StatusReply
from router.backends.wire import Transport, WirePoster, WireReply, dumps, loads, new_poster, resolve_transport, text_of
from router.catalog import BackendSpec
from router.errors import MalformedResponseError

__all__ = ["VoyageBackend", "VoyageConfig"]


class VoyageConfig(RemoteConfig):
    type: Literal["voyage"] = "voyage"
    api_key_env: str = "VOYAGE_API_KEY"
    base_url: str = "https://api.voyageai.com/v1"
    max_request_tokens: int | None = Field(600_000, ge=1)
    """Voyage's limit per request (facts: <= 600K tokens); longer requests are split."""
    truncation: bool = True
    """Let Voyage truncate query + document to the model's context (else it rejects them)."""
    max_connections: int = Field(64, ge=1, le=1024)
    """Connection pool size per event loop (see CohereConfig.max_connections)."""
    transport: Transport = "auto"


class VoyageBackend(RemoteBackend):
    config_model = VoyageConfig
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "voyage",
        "license": "proprietary",
        "data_leaves_premises": True,
        "max_documents": 1000,
        "split_requests": True,
        "tokenizer_family": "voyage",
        "pricing": {"scheme": "per_token", "usd": None},
    }
    sdk = "voyageai"
    extra = "voyage"
    provider_label = "Voyage"
    config: VoyageConfig

    def __init__(self, name: str, config: VoyageConfig, spec: BackendSpec) -> None:
        super().__init__(name, config, spec)
        self.transport = resolve_transport(config.transport)
        if self.transport != "sdk":
            self.requires = None if self.transport == "httpx" else self.transport
        self._url = config.base_url.rstrip("/") + "/rerank"

    def _new_client(self) -> Any:
        if self.transport != "sdk":
            return new_poster(self.transport, self._wire_errors, self.config.max_connections)
        import aiohttp
        from voyageai.client_async import AsyncClient

        key = self._api_key(required=True)
        assert key is not None
        client = AsyncClient(
            api_key=key.get_secret_value(), max_retries=0, timeout=self.config.timeout_s, base_url=self.config.base_url
        )
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.config.max_connections))
        return client, session

    async def _close_client(self, client: Any) -> None:
        if self.transport != "sdk":
            await client.aclose()
            return
        _, session = client
        await session.close()

    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
        if self.transport != "sdk":
            return await self._post(query, documents)
        sdk = self._import_sdk(_sdk_errors)
        import voyageai  # importable: _sdk_errors has imported voyageai.error

        client, session = self._clients.get()
        token = voyageai.aiosession.set(session)
        try:
            result = await client.rerank(query, list(documents), self.config.model, top_k=None, truncation=self.config.truncation)
            pairs = [(r.index, r.relevance_score) for r in result.results]
            total_tokens = result.total_tokens
        except sdk.caught as exc:
            if isinstance(exc, voyageai.error.APIConnectionError) and exc.__cause__ is None:
                # No transport error behind it: the SDK got a null body and calls that "no response".
                raise MalformedResponseError(_NULL_BODY, backend=self.name) from exc
            raise self._sdk_error(exc, sdk) from exc
        finally:
            voyageai.aiosession.reset(token)
        return self._result(pairs, total_tokens, len(documents))

    async def _post(self, query: str, documents: Sequence[str]) -> BatchResult:
        """The wire path: the body the SDK sends, read the way the SDK reads the answer."""
        key = self._api_key(required=True)
        assert key is not None
        docs = documents if isinstance(documents, list) else list(documents)
        body = {
            "query": query,
            "documents": docs,
            "model": self.config.model,
            "top_k": None,
            "truncation": self.config.truncation,
        }
        headers = {"Authorization": f"Bearer {key.get_secret_value()}", "Content-Type": "application/json"}
        poster: WirePoster = self._clients.get()
        reply = await poster.post(self._url, dumps(body), headers)
        payload = self._payload(reply)
        if payload is None:
            raise MalformedResponseError(_NULL_BODY, backend=self.name)
        data = payload.get("data") if isinstance(payload, dict) else None
        values = self._fast_scores(data, len(docs), "relevance_score") if type(data) is list else None
        if values is not None:
            usage = payload.get("usage")
            total_tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
            if type(total_tokens) is int:
                return BatchResult(values, Usage(tokens=total_tokens))
        try:
            pairs, total_tokens = _read_reranking(payload, len(docs))
        except (AttributeError, KeyError, TypeError) as exc:
            message = f"Voyage response of the wrong shape ({type(exc).__name__})"
            raise MalformedResponseError(message, backend=self.name) from exc
        except IndexError as exc:
            raise MalformedResponseError("Voyage returned a result index out of range", backend=self.name) from exc
        return self._result(pairs, total_tokens, len(docs))

    def _payload(self, reply: WireReply) -> Any:
        """The body as voyageai's requestor reads it (``_interpret_response_line``): 500 and 502-504
        are server errors whatever the body; other bodies must be JSON (a 2xx that is not is
        malformed); a 4xx is an error status."""
        status, text = reply.status, text_of(reply.content)
        if status == 500 or status in (502, 503, 504):
            raise self._status_error(status, text, reply.headers)
        try:
            data = text if "text/plain" in reply.headers.get("content-type", "") else loads(reply.content)
        except ValueError as exc:
            if 200 <= status < 300:
                raise MalformedResponseError("Voyage returned a body that is not valid JSON", backend=self.name) from exc
            raise self._status_error(status, text, reply.headers) from exc
        if 400 <= status < 500:
            detail = data.get("detail") if isinstance(data, dict) else None
            # voyageai drops the headers of a 4xx body without "detail" (so Retry-After too).
            raise self._status_error(status, data, reply.headers if detail is not None else {})
        if not 200 <= status < 300:
            raise self._status_error(status, data, reply.headers)
        return data

    def _result(self, pairs: list[tuple[object, object]], total_tokens: object, n: int) -> BatchResult:
        billed = Usage(tokens=total_tokens) if type(total_tokens) is int else None
        values = self._score_results(pairs, n, billed=None if billed is None else lambda: billed)
        if isinstance(total_tokens, bool) or not isinstance(total_tokens, int):
            raise MalformedResponseError(f"Voyage usage.total_tokens is {total_tokens!r}", backend=self.name)
        return BatchResult(values, Usage(tokens=total_tokens))


_NULL_BODY = "Voyage returned a null body"


def _read_reranking(payload: Any, n: int) -> tuple[list[tuple[object, object]], object]:
    """(index, score) pairs and total_tokens, failing where voyageai's ``RerankingObject`` fails:
    a missing key or a non-object is an AttributeError, a non-integer index a TypeError, an index
    outside [-n, n) an IndexError (it looks up ``documents[index]``)."""
    data = _attr(payload, "data")
    pairs: list[tuple[object, object]] = []
    for item in data:
        if type(item) is dict:  # the common case, checked in one go
            index = item.get("index")
            if type(index) is int and -n <= index < n and "relevance_score" in item:
                pairs.append((index, item["relevance_score"]))
                continue
        index = _attr(item, "index")
        if not isinstance(index, int):
            raise TypeError(f"list indices must be integers, not {type(index).__name__}")
        if not isinstance(index, bool) and not -n <= index < n:  # a bool indexes as 0 or 1
            raise IndexError(index)
        pairs.append((index, _attr(item, "relevance_score")))
    return pairs, _attr(_attr(payload, "usage"), "total_tokens")


def _attr(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key not in value:
            raise AttributeError(key)
        return value[key]
    if isinstance(value, str | list) and key == "index":  # documents[value.index]: a bound method
        raise TypeError("list indices must be integers, not builtin_function_or_method")
    raise AttributeError(key)


@functools.cache
def _sdk_errors() -> SdkErrors:
    """The voyageai SDK's exceptions (over aiohttp), imported on first use."""
    import aiohttp
    import voyageai.error as verr

    return SdkErrors(
        timeout=verr.Timeout,
        transport=verr.APIConnectionError,
        transport_cause=lambda exc: exc.__cause__ if exc.__cause__ is not None else exc,
        cannot_connect=aiohttp.ClientConnectorError,
        status=verr.VoyageError,
        read_status=_read_status,
        rejected_key=verr.AuthenticationError,
        malformed=(
            (IndexError, "Voyage returned a result index out of range"),  # the SDK looks up documents[index] itself
            ((AttributeError, KeyError, TypeError), "Voyage response of the wrong shape ({exc_type})"),
        ),
    )


def _read_status(exc: Any) -> StatusReply:
    body = exc.json_body if exc.json_body is not None else exc.http_body
    return exc.http_status, body, exc.headers or {}
