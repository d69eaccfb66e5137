"""Voyage rerank through the official ``voyageai`` SDK (``AsyncClient``).

Score: Voyage's ``relevance_score`` on [0, 1] (identity mapping). Usage: ``total_tokens``, which
Voyage bills as query tokens x documents + the documents' tokens. Lists over 1,000 documents or
600K tokens (Voyage's per-request limits) are split into concurrent calls. The SDK's retries are
off (``max_retries=0``: the executor owns retries). Connections are pooled: one aiohttp session per
event loop, handed to the SDK through its ``voyageai.aiosession`` context variable for the
duration of each call only.

```yaml
backends:
  voyage:
    type: voyage
    model: rerank-2.5             # or rerank-2.5-lite, rerank-2, rerank-2-lite
    api_key_env: VOYAGE_API_KEY
```
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, SdkErrors, StatusReply
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
    max_connections: int = Field(16, ge=1, le=1024)


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

    def _new_client(self) -> tuple[Any, Any]:
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
        _, session = client
        await session.close()

    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
        sdk = self._import_sdk(_sdk_errors)
        import voyageai  # importable: _sdk_errors has imported voyageai.error

        client, session = self._clients.get()
        token = voyageai.aiosession.set(session)
        try:
            result = await client.rerank(query, list(documents), self.config.model, top_k=None, truncation=self.config.truncation)
            pairs = [(r.index, r.relevance_score) for r in result.results]
            total_tokens = result.total_tokens
        except sdk.caught as exc:
            raise self._sdk_error(exc, sdk) from exc
        finally:
            voyageai.aiosession.reset(token)
        values = self._score_results(pairs, len(documents))
        if isinstance(total_tokens, bool) or not isinstance(total_tokens, int):
            raise MalformedResponseError(f"Voyage usage.total_tokens is {total_tokens!r}", backend=self.name)
        return BatchResult(values, Usage(tokens=total_tokens))


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
