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

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, ScoreMapping, map_scores, scores_from_results
from router.catalog import BackendSpec
from router.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    MalformedResponseError,
    ServerError,
)

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

    def __init__(self, name: str, config: VoyageConfig, spec: BackendSpec) -> None:
        super().__init__(name, config, spec)
        self._mapping = ScoreMapping("identity")

    def _new_client(self) -> tuple[Any, Any]:
        try:
            import aiohttp
            from voyageai.client_async import AsyncClient
        except ImportError as exc:
            raise self._missing_sdk() from exc
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
        try:
            import voyageai
            import voyageai.error as verr
        except ImportError as exc:
            raise self._missing_sdk() from exc
        client, session = self._clients.get()
        token = voyageai.aiosession.set(session)
        try:
            result = await client.rerank(query, list(documents), self.config.model, top_k=None, truncation=self.config.truncation)
            pairs = [(r.index, r.relevance_score) for r in result.results]
            total_tokens = result.total_tokens
        except verr.Timeout as exc:
            raise BackendTimeoutError(f"Voyage did not answer within {self.config.timeout_s:g} s", backend=self.name) from exc
        except verr.APIConnectionError as exc:
            raise self._connection_error(exc) from exc
        except verr.VoyageError as exc:
            raise self._voyage_error(exc) from exc
        except IndexError as exc:  # the SDK looks up documents[index] itself
            raise MalformedResponseError("Voyage returned a result index out of range", backend=self.name) from exc
        except (AttributeError, KeyError, TypeError) as exc:
            raise MalformedResponseError(f"Voyage response of the wrong shape ({type(exc).__name__})", backend=self.name) from exc
        finally:
            voyageai.aiosession.reset(token)
        values = map_scores(scores_from_results(pairs, len(documents), self.name), self._mapping, self.name)
        if isinstance(total_tokens, bool) or not isinstance(total_tokens, int):
            raise MalformedResponseError(f"Voyage usage.total_tokens is {total_tokens!r}", backend=self.name)
        return BatchResult(values, Usage(tokens=total_tokens))

    def _connection_error(self, exc: BaseException) -> Exception:
        import aiohttp

        if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
            return BackendUnavailableError(f"cannot connect to {self.config.base_url}", backend=self.name)
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
        return ServerError(f"Voyage connection failed: {cause}", backend=self.name)

    def _voyage_error(self, exc: Any) -> Exception:
        status = exc.http_status
        if status is None:
            if type(exc).__name__ == "AuthenticationError":
                return AuthenticationError("Voyage rejected the API key", backend=self.name)
            return ServerError(f"Voyage call failed ({type(exc).__name__})", backend=self.name)
        if 200 <= status < 300:
            return MalformedResponseError("Voyage returned a body that is not valid JSON", backend=self.name)
        body = exc.json_body if exc.json_body is not None else exc.http_body
        headers: Mapping[str, str] = exc.headers or {}
        return self._status_error(status, body, headers)
