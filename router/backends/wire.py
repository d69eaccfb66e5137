"""Posting a provider's documented wire format on the router's own pooled client.

The Cohere and Voyage backends can call their provider without its SDK (``transport:``): the
request body is the one the provider documents, encoded once with :mod:`json`; the answer is
read with ``json.loads`` into plain dicts and lists. The SDKs stay a supported path
(``transport: sdk``); what this one skips is their per-response model building (the cohere SDK
constructs a pydantic model per result), their retry wrappers (the executor owns retries) and,
with aiohttp, httpx's connection pool, which slows down as requests queue for connections.

Bodies are encoded with orjson where it is installed (the ``cohere`` and ``voyage`` extras bring
it), ``json`` otherwise and for what orjson refuses (a lone surrogate): the same JSON either way.
Answers are decoded with ``json.loads``, as the SDKs do (orjson reads an integer past 64 bits as a
float, and refuses ``NaN``); :func:`loads_fast` decodes with orjson for a backend's fast path, which
takes the answer only where those differences cannot show (else it decodes again with ``json``).

Two clients, one contract (:class:`WirePoster`): ``post(url, content, headers) -> WireReply``.
Transport failures leave as router errors with the messages the SDK paths give (timeout,
cannot connect, connection failed naming the transport library's exception), built by
:class:`WireErrors`. Status codes and bodies are the backend's to read: each provider's SDK
reads them its own way, and the fast path of each backend mirrors its SDK (a contract test runs
both over the same scripted answers).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from router.errors import BackendError, BackendTimeoutError, BackendUnavailableError, ServerError

__all__ = [
    "AiohttpPoster",
    "HttpxPoster",
    "Transport",
    "WireErrors",
    "WirePoster",
    "WireReply",
    "dumps",
    "loads",
    "loads_fast",
    "new_poster",
    "resolve_transport",
]

Transport = Literal["auto", "aiohttp", "httpx", "sdk"]
"""How a Cohere or Voyage backend reaches its API. ``auto``: aiohttp where installed, else httpx."""


@dataclass(frozen=True, slots=True)
class WireReply:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names."""
    content: bytes


@dataclass(frozen=True, slots=True)
class WireErrors:
    """The router errors for transport failures of one backend (the same text as its SDK path)."""

    backend: str
    label: str
    base_url: str
    timeout_s: float

    def timed_out(self) -> BackendError:
        return BackendTimeoutError(f"{self.label} did not answer within {self.timeout_s:g} s", backend=self.backend)

    def cannot_connect(self) -> BackendError:
        return BackendUnavailableError(f"cannot connect to {self.base_url}", backend=self.backend)

    def connection_failed(self, cause: BaseException) -> BackendError:
        return ServerError(f"{self.label} connection failed: {type(cause).__name__}", backend=self.backend)


class WirePoster(Protocol):
    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> WireReply: ...

    async def aclose(self) -> None: ...


class AiohttpPoster:
    """One pooled ``aiohttp.ClientSession`` (for the event loop it was made on)."""

    def __init__(self, errors: WireErrors, max_connections: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._errors = errors
        self._timeout = aiohttp.ClientTimeout(total=errors.timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
            timeout=self._timeout,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> WireReply:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(url, data=content, headers=headers, allow_redirects=False) as response:
                body = await response.read()
                return WireReply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            raise self._errors.timed_out() from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._errors.cannot_connect() from exc
        except aiohttp.ClientError as exc:
            raise self._errors.connection_failed(exc) from exc

    async def aclose(self) -> None:
        await self._session.close()


class HttpxPoster:
    """One pooled ``httpx.AsyncClient`` (for the event loop it was made on)."""

    def __init__(self, errors: WireErrors, max_connections: int) -> None:
        import httpx

        self._httpx = httpx
        self._errors = errors
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(timeout=errors.timeout_s, limits=limits)

    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> WireReply:
        httpx = self._httpx
        try:
            response = await self._client.post(url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise self._errors.timed_out() from exc
        except httpx.ConnectError as exc:
            raise self._errors.cannot_connect() from exc
        except httpx.HTTPError as exc:
            raise self._errors.connection_failed(exc) from exc
        return WireReply(response.status_code, dict(response.headers), response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def resolve_transport(transport: Transport) -> Literal["aiohttp", "httpx", "sdk"]:
    if transport != "auto":
        return transport
    return "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"


def new_poster(transport: Literal["aiohttp", "httpx"], errors: WireErrors, max_connections: int) -> WirePoster:
    if transport == "aiohttp":
        return AiohttpPoster(errors, max_connections)
    return HttpxPoster(errors, max_connections)


def text_of(content: bytes) -> str:
    return content.decode("utf-8", "replace")


def loads_or_text(content: bytes) -> Any:
    """An error body as the SDKs hand it on: parsed JSON, else its text."""
    try:
        return loads(content)
    except ValueError:
        return text_of(content)


def _orjson() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson


_ORJSON = _orjson()


def dumps(body: Any) -> bytes:
    """A request body as JSON bytes."""
    if _ORJSON is not None:
        try:
            data: bytes = _ORJSON.dumps(body)
            return data
        except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, which json escapes
            pass
    return json.dumps(body).encode()


def loads(content: bytes) -> Any:
    """An answer's JSON (ValueError if it is not JSON)."""
    return json.loads(content)


def loads_fast(content: bytes) -> Any | None:
    """``content`` decoded by orjson (several times faster than ``json`` on a rerank answer), or None
    where orjson is not installed or refuses it (``NaN``, a BOM, a lone surrogate, ...). Where it
    accepts, the value is ``json.loads``'s except that an integer past 64 bits reads as a float:
    a caller uses it only where that cannot show, and reads anything else with :func:`loads`."""
    if _ORJSON is None:
        return None
    try:
        return _ORJSON.loads(content)
    except ValueError:  # orjson.JSONDecodeError
        return None
