"""Cohere Rerank (v2 API): its documented wire format on the router's pooled client, or the official
``cohere`` SDK (``AsyncClientV2``).

Score: Cohere's ``relevance_score``, already on [0, 1] (identity mapping). Usage: the response's
``meta.billed_units.search_units`` (one search unit = one query with up to 100 documents, a
document longer than the context counting as several chunks; see router.cost). The SDK's own
retries are off (the router's executor owns retries and fallbacks); the base URL is always passed
explicitly, because the SDK reads ``CO_API_URL`` at import time. The key is read from
``$api_key_env`` (default ``CO_API_KEY``) and handed to the SDK as a callable, so no client
attribute holds it in plain text.

``transport``: ``auto`` (the default) posts ``/v2/rerank`` on the router's own pooled aiohttp
session (httpx where aiohttp is not installed) and reads the answer into plain dicts, the way the
SDK reads it (same results, errors and billed units; a contract test runs both); ``aiohttp`` or
``httpx`` pick that client; ``sdk`` goes through ``cohere.AsyncClientV2`` (which builds a pydantic
model per result).

```yaml
backends:
  cohere:
    type: cohere
    model: rerank-v4.0-pro        # or rerank-v4.0-fast, rerank-v3.5 (catalog entries)
    api_key_env: CO_API_KEY
    timeout_s: 10
    transport: auto               # or aiohttp, httpx, sdk
```
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage, new_usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, SdkErrors, new_batch_result
from router.backends.wire import Transport, WirePoster, dumps, loads, loads_fast, loads_or_text, new_poster, resolve_transport
from router.catalog import BackendSpec
from router.errors import MalformedResponseError

__all__ = ["CohereBackend", "CohereConfig"]


class CohereConfig(RemoteConfig):
    type: Literal["cohere"] = "cohere"
    api_key_env: str = "CO_API_KEY"
    base_url: str = "https://api.cohere.com"
    max_tokens_per_doc: int | None = Field(None, ge=1)
    """Sent to Cohere (which truncates longer documents); default: the catalog's (4,096)."""
    max_connections: int = Field(64, ge=1, le=1024)
    """Connection pool size per event loop (benchmarks/peers.py: no cost on loopback from 16 to 128
    with aiohttp; a remote API at ~400 ms needs one connection per call in flight)."""
    transport: Transport = "auto"


class _KeyedHeaders(dict[str, str]):
    """Request headers that carry the API key: their repr names the keys only, never the values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self)})"


class CohereBackend(RemoteBackend):
    config_model = CohereConfig
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "cohere",
        "license": "proprietary",
        "data_leaves_premises": True,
        "max_documents": 1000,
        "split_requests": True,
        "tokenizer_family": "cohere",
    }
    sdk = "cohere"
    extra = "cohere"
    provider_label = "Cohere"
    context_includes_query = False  # max_tokens_per_doc bounds the document alone
    config: CohereConfig

    def __init__(self, name: str, config: CohereConfig, spec: BackendSpec) -> None:
        if config.max_tokens_per_doc is not None:
            spec = spec.model_copy(update={"max_tokens_per_doc": config.max_tokens_per_doc})
        super().__init__(name, config, spec)
        self.transport = resolve_transport(config.transport)
        if self.transport != "sdk":
            self.requires = None if self.transport == "httpx" else self.transport
        self._url = config.base_url.rstrip("/") + "/v2/rerank"
        self._wire_headers: tuple[str, _KeyedHeaders] | None = None
        """(the environment's raw key value, the headers made from it): see :meth:`_headers`."""

    def _new_client(self) -> Any:
        if self.transport != "sdk":
            return new_poster(self.transport, self._wire_errors, self.config.max_connections)
        import cohere
        import httpx

        key = self._api_key(required=True)
        assert key is not None
        http = httpx.AsyncClient(
            timeout=self.config.timeout_s,
            limits=httpx.Limits(
                max_connections=self.config.max_connections, max_keepalive_connections=self.config.max_connections
            ),
        )
        client = cohere.AsyncClientV2(
            api_key=key.get_secret_value,
            base_url=self.config.base_url,
            timeout=self.config.timeout_s,
            max_retries=0,
            httpx_client=http,
            log_warning_experimental_features=False,
        )
        return client, http

    async def _close_client(self, client: Any) -> None:
        if self.transport != "sdk":
            await client.aclose()
            return
        _, http = client
        await http.aclose()

    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
        if self.transport != "sdk":
            return await self._post(query, documents)
        sdk = self._import_sdk(_sdk_errors)
        client, _ = self._clients.get()
        try:
            response = await client.rerank(
                model=self.config.model,
                query=query,
                documents=list(documents),
                top_n=len(documents),
                max_tokens_per_doc=self.spec.max_tokens_per_doc,
                request_options={"max_retries": 0},
            )
        except sdk.caught as exc:
            raise self._sdk_error(exc, sdk) from exc
        return self._parse(response, len(documents))

    async def _post(self, query: str, documents: Sequence[str]) -> BatchResult:
        """The wire path: the body the SDK sends, read the way the SDK reads the answer."""
        headers = self._headers()
        docs = documents if isinstance(documents, list) else list(documents)
        body: dict[str, Any] = {"model": self.config.model, "query": query, "documents": docs, "top_n": len(docs)}
        if self.spec.max_tokens_per_doc is not None:
            body["max_tokens_per_doc"] = self.spec.max_tokens_per_doc
        poster: WirePoster = self._clients.get()
        reply = await poster.post(self._url, dumps(body), headers)
        if not 200 <= reply.status < 300:
            raise self._status_error(reply.status, loads_or_text(reply.content), reply.headers)
        fast = self._fast_json(reply.content, len(documents))
        if fast is not None:
            return fast
        try:
            payload = loads(reply.content)
        except ValueError as exc:
            raise MalformedResponseError("Cohere returned a body that is not valid JSON", backend=self.name) from exc
        return self._parse_json(payload, len(documents))

    def _headers(self) -> _KeyedHeaders:
        """The wire call's headers for the key the environment holds now (read on every call, so a
        rotated key is sent from the next call on); built again only when that value changes."""
        env = self.config.api_key_env
        raw = os.environ.get(env, "") if env else ""
        known = self._wire_headers
        if known is None or known[0] != raw:
            key = self._api_key(required=True)  # the error where the key is absent or blank
            assert key is not None
            headers = _KeyedHeaders(
                {
                    "Authorization": f"Bearer {key.get_secret_value()}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                }
            )
            known = self._wire_headers = (raw, headers)
        return known[1]

    def _fast_json(self, content: bytes, n: int) -> BatchResult | None:
        """The common answer decoded by orjson (:func:`router.backends.wire.loads_fast`) and read by
        ``_fast_scores``, or None: :meth:`_parse_json` then reads it as ``json`` decodes it. Taken
        only where orjson's reading equals json's: indices ints, scores floats on [0, 1] (an integer
        past 64 bits is neither) and billed units absent, an int, or a float below 2**63 in size
        (a float that large may be orjson's reading of a larger integer)."""
        payload = loads_fast(content)
        if type(payload) is not dict or type(results := payload.get("results")) is not list:
            return None
        units = _get(_get(payload.get("meta"), "billed_units"), "search_units")
        if not (units is None or type(units) is int or (type(units) is float and abs(units) < 2.0**63)):
            return None
        values = self._fast_scores(results, n, "relevance_score")
        if values is None:
            return None
        return new_batch_result(values, self._usage(_cast(float, units)))

    def _parse_json(self, payload: Any, n: int) -> BatchResult:
        """:meth:`_parse` over plain JSON (a key that is absent reads as None, as an unset field of
        the SDK's models, which it builds without validation, does)."""
        if payload is not None and not isinstance(payload, dict):
            raise MalformedResponseError(_WRONG_SHAPE, backend=self.name)
        results = _get(payload, "results")
        if not isinstance(results, list):
            raise MalformedResponseError("Cohere response has no results list", backend=self.name)
        values = self._fast_scores(results, n, "relevance_score")
        if values is None:
            # The SDK fails on a result that is not an object, and casts an index with int() (billed
            # units with float()) where that works.
            pairs: list[tuple[object, object]] = []
            for r in results:
                if type(r) is not dict:
                    raise MalformedResponseError(_WRONG_SHAPE, backend=self.name)
                index = r.get("index")
                pairs.append((index if type(index) is int else _cast(int, index), r.get("relevance_score")))
            values = self._score_results(pairs, n, billed=lambda: self._usage(_json_search_units(payload)))
        return BatchResult(values, self._usage(_json_search_units(payload)))

    def _parse(self, response: Any, n: int) -> BatchResult:
        results = getattr(response, "results", None)
        if not isinstance(results, list):
            raise MalformedResponseError("Cohere response has no results list", backend=self.name)
        pairs = [(getattr(r, "index", None), getattr(r, "relevance_score", None)) for r in results]
        billed = getattr(getattr(getattr(response, "meta", None), "billed_units", None), "search_units", None)
        values = self._score_results(pairs, n, billed=lambda: self._usage(billed))
        return BatchResult(values, self._usage(billed))

    def _usage(self, billed: object) -> Usage:
        if billed is not None and (isinstance(billed, bool) or not isinstance(billed, int | float)):
            raise MalformedResponseError(f"Cohere billed_units.search_units is {billed!r}", backend=self.name)
        return new_usage(search_units=None if billed is None else float(billed))


_WRONG_SHAPE = "Cohere returned a response of the wrong shape"


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _cast(kind: type[int] | type[float], value: Any) -> Any:
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return value


@functools.cache
def _sdk_errors() -> SdkErrors:
    """The cohere SDK's exceptions (over httpx), imported on first use."""
    import httpx
    from cohere.core.api_error import ApiError
    from cohere.core.parse_error import ParsingError

    return SdkErrors(
        timeout=httpx.TimeoutException,
        transport=httpx.HTTPError,
        cannot_connect=httpx.ConnectError,
        status=ApiError,
        read_status=lambda exc: (exc.status_code or 0, exc.body, exc.headers),
        malformed=(
            # TypeError: the SDK could not build its model (a result or the body is not an object).
            ((ParsingError, TypeError), _WRONG_SHAPE),
            (ValueError, "Cohere returned an unreadable body"),  # the SDK could not decode an error body
        ),
    )


def _json_search_units(payload: Any) -> float | None:
    """``meta.billed_units.search_units`` of a JSON answer, cast as the SDK casts it."""
    value: float | None = _cast(float, _get(_get(_get(payload, "meta"), "billed_units"), "search_units"))
    return value
