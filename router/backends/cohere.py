"""Cohere Rerank (v2 API) through the official ``cohere`` SDK (``AsyncClientV2``).

Score: Cohere's ``relevance_score``, already on [0, 1] (identity mapping). Usage: the response's
``meta.billed_units.search_units`` (one search unit = one query with up to 100 documents, a
document longer than the context counting as several chunks; see router.cost). The SDK's own
retries are off (the router's executor owns retries and fallbacks); the base URL is always passed
explicitly, because the SDK reads ``CO_API_URL`` at import time. The key is read from
``$api_key_env`` (default ``CO_API_KEY``) and handed to the SDK as a callable, so no client
attribute holds it in plain text.

```yaml
backends:
  cohere:
    type: cohere
    model: rerank-v4.0-pro        # or rerank-v4.0-fast, rerank-v3.5 (catalog entries)
    api_key_env: CO_API_KEY
    timeout_s: 10
```
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, SdkErrors
from router.catalog import BackendSpec
from router.errors import MalformedResponseError

__all__ = ["CohereBackend", "CohereConfig"]


class CohereConfig(RemoteConfig):
    type: Literal["cohere"] = "cohere"
    api_key_env: str = "CO_API_KEY"
    base_url: str = "https://api.cohere.com"
    max_tokens_per_doc: int | None = Field(None, ge=1)
    """Sent to Cohere (which truncates longer documents); default: the catalog's (4,096)."""
    max_connections: int = Field(16, ge=1, le=1024)


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

    def _new_client(self) -> tuple[Any, Any]:
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
        _, http = client
        await http.aclose()

    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
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

    def _parse(self, response: Any, n: int) -> BatchResult:
        results = getattr(response, "results", None)
        if not isinstance(results, list):
            raise MalformedResponseError("Cohere response has no results list", backend=self.name)
        pairs = [(getattr(r, "index", None), getattr(r, "relevance_score", None)) for r in results]
        values = self._score_results(pairs, n)
        billed = getattr(getattr(getattr(response, "meta", None), "billed_units", None), "search_units", None)
        if billed is not None and (isinstance(billed, bool) or not isinstance(billed, int | float)):
            raise MalformedResponseError(f"Cohere billed_units.search_units is {billed!r}", backend=self.name)
        return BatchResult(values, Usage(search_units=None if billed is None else float(billed)))


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
            (ParsingError, "Cohere returned a response of the wrong shape"),
            (ValueError, "Cohere returned an unreadable body"),  # the SDK could not decode an error body
        ),
    )
