"""Rerank servers and APIs over plain HTTP (httpx): self-hosted vLLM, TEI and Infinity, and the
Cohere- or Jina-compatible rerank APIs (ZeroEntropy, Jina, Mixedbread, ...).

One backend, one ``protocol`` per wire format (paths are relative to ``base_url``; ``path:``
overrides them):

| protocol            | path                 | body                                                 | scores from               |
|---------------------|----------------------|------------------------------------------------------|---------------------------|
| ``vllm-v1``         | ``/v1/rerank``       | ``{model, query, documents, top_n}`` (Jina style)    | ``results[].relevance_score`` |
| ``vllm-v2``         | ``/v2/rerank``       | same, Cohere v2 style                                | ``results[].relevance_score`` |
| ``vllm-score``      | ``/score``           | ``{model, text_1, text_2}``                          | ``data[].score``          |
| ``tei``             | ``/rerank``          | ``{query, texts, truncate, raw_scores, return_text}``| bare ``[{index, score}]`` |
| ``infinity``        | ``/rerank``          | ``{model, query, documents, return_documents, raw_scores, top_n}`` | ``results`` (or ``data``) |
| ``cohere-compatible`` | ``/v2/rerank``     | ``{model, query, documents, top_n}``                 | ``results[].relevance_score`` |
| ``jina-compatible`` | ``/v1/rerank``       | ``{model, query, documents, top_n}``                 | ``results[].relevance_score`` |
| ``zeroentropy``     | ``/v1/models/rerank``| ``{model, query, documents, top_n, latency?}``       | ``results[].relevance_score`` |

Usage: ``usage.total_tokens`` (vLLM, Jina), ``total_tokens`` (ZeroEntropy) or
``meta.billed_units.search_units`` (Cohere-compatible) where the response gives them (Infinity's
``usage`` counts characters, so it is not reported as tokens). A
self-hosted model's cost is its ``per_gpu_hour`` price x the observed seconds (router.cost).

Prompt template (``template:``): ``qwen3-reranker`` formats query and documents client-side the
way Qwen3-Reranker was trained (system prompt, ``<Instruct>: {instruction}\\n<Query>: {query}\\n``
``<Document>: {doc}`` and the assistant prefix with an empty think block); without it its scores
are close to random. ``auto`` (the default) picks it for Qwen3-Reranker models, ``none`` otherwise.

Score scale (``score_mapping:``): ``identity`` for servers that return [0, 1] (vLLM and Infinity with
their default activation, TEI without raw scores, the APIs); ``sigmoid`` for raw logits, mapped by
1 / (1 + exp(-score / score_scale)); with it TEI and Infinity are asked for raw scores. ``auto``:
sigmoid with scale 5 for self-served zerank models (their output is the raw "yes" logit; facts:
sigmoid(score / 5) gives 0-1), identity otherwise.

Connections are pooled: one ``httpx.AsyncClient`` per event loop (``max_connections``).

```yaml
backends:
  qwen3-4b:
    type: http
    protocol: vllm-v2
    base_url: http://gpu-box:8000
    model: Qwen/Qwen3-Reranker-4B        # catalog entry: Apache-2.0, 32K context
    template: qwen3-reranker
    spec: {pricing: {scheme: per_gpu_hour, usd: 2.0}}   # example $/GPU-hour: use your own
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, ScoreMapping
from router.catalog import BackendSpec
from router.errors import BackendTimeoutError, BackendUnavailableError, MalformedResponseError, ServerError

__all__ = [
    "PROTOCOL_PATHS",
    "QWEN3_DEFAULT_INSTRUCTION",
    "HttpBackend",
    "HttpConfig",
    "Protocol",
    "qwen3_reranker_document",
    "qwen3_reranker_query",
]

Protocol = Literal["vllm-v1", "vllm-v2", "vllm-score", "tei", "infinity", "cohere-compatible", "jina-compatible", "zeroentropy"]

PROTOCOL_PATHS: Mapping[str, str] = {
    "vllm-v1": "/v1/rerank",
    "vllm-v2": "/v2/rerank",
    "vllm-score": "/score",
    "tei": "/rerank",
    "infinity": "/rerank",
    "cohere-compatible": "/v2/rerank",
    "jina-compatible": "/v1/rerank",
    "zeroentropy": "/v1/models/rerank",
}

_LABELS: Mapping[str, str] = {
    "vllm-v1": "vLLM",
    "vllm-v2": "vLLM",
    "vllm-score": "vLLM",
    "tei": "TEI",
    "infinity": "Infinity",
    "cohere-compatible": "rerank API",
    "jina-compatible": "rerank API",
    "zeroentropy": "ZeroEntropy",
}

# Qwen3-Reranker's prompt (model card; vLLM examples/offline_inference/qwen3_reranker.py).
_QWEN3_SYSTEM = 'Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
_QWEN3_PREFIX = f"<|im_start|>system\n{_QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def qwen3_reranker_query(query: str, instruction: str = QWEN3_DEFAULT_INSTRUCTION) -> str:
    return f"{_QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n"


def qwen3_reranker_document(document: str) -> str:
    return f"<Document>: {document}{_QWEN3_SUFFIX}"


class HttpConfig(RemoteConfig):
    type: Literal["http"] = "http"
    protocol: Protocol
    path: str | None = None
    """Overrides the protocol's path (e.g. an Infinity server under a URL prefix)."""
    template: Literal["auto", "none", "qwen3-reranker"] = "auto"
    instruction: str | None = None
    """Qwen3-Reranker task instruction (default: the model card's web-search instruction)."""
    score_mapping: Literal["auto", "identity", "sigmoid"] = "auto"
    score_scale: float | None = Field(None, gt=0)
    """For sigmoid: score / score_scale goes through the sigmoid (default 1; 5 for zerank)."""
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    """vLLM: let the server cut each (query, document) prompt to this many tokens."""
    latency: Literal["fast", "slow"] | None = None
    """ZeroEntropy's latency mode."""
    max_connections: int = Field(16, ge=1, le=1024)


class HttpBackend(RemoteBackend):
    config_model = HttpConfig
    default_spec: ClassVar[dict[str, Any]] = {"provider": "self-hosted", "split_requests": True}
    config: HttpConfig

    def __init__(self, name: str, config: HttpConfig, spec: BackendSpec) -> None:
        super().__init__(name, config, spec)
        model = f"{config.model} {config.catalog or ''}".lower()
        template = config.template
        if template == "auto":
            template = "qwen3-reranker" if "qwen3-reranker" in model else "none"
        self.template = template
        self.instruction = config.instruction or QWEN3_DEFAULT_INSTRUCTION
        kind = config.score_mapping
        self_served_zerank = "zerank" in model and config.protocol != "zeroentropy"
        if kind == "auto":
            kind = "sigmoid" if self_served_zerank else "identity"
        scale = config.score_scale or (5.0 if self_served_zerank else 1.0)
        self.score_mapping = ScoreMapping(kind, scale)
        self.path = config.path or PROTOCOL_PATHS[config.protocol]
        self.label = _LABELS[config.protocol]
        overhead = qwen3_reranker_query("", self.instruction) + qwen3_reranker_document("") if template != "none" else ""
        self._template_tokens = self._estimate.count([overhead])[0] if overhead else 0

    def __repr__(self) -> str:
        c = self.config
        return f"HttpBackend(name={self.name!r}, protocol={c.protocol!r}, model={c.model!r}, base_url={c.base_url!r})"

    def _overhead_tokens(self) -> int:
        return self._template_tokens

    # -- the wire -----------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        import httpx

        limits = httpx.Limits(max_connections=self.config.max_connections, max_keepalive_connections=self.config.max_connections)
        return httpx.AsyncClient(base_url=self.config.base_url, timeout=self.config.timeout_s, limits=limits)

    async def _close_client(self, client: Any) -> None:
        await client.aclose()

    def body(self, query: str, documents: Sequence[str]) -> dict[str, Any]:
        """The request body for one call (the template already applied)."""
        c, n = self.config, len(documents)
        if self.template == "qwen3-reranker":
            query = qwen3_reranker_query(query, self.instruction)
            documents = [qwen3_reranker_document(d) for d in documents]
        raw = self.score_mapping.kind == "sigmoid"
        body: dict[str, Any]
        if c.protocol == "tei":
            return {"query": query, "texts": list(documents), "truncate": True, "raw_scores": raw, "return_text": False}
        if c.protocol == "vllm-score":
            body = {"model": c.model, "text_1": query, "text_2": list(documents)}
        elif c.protocol == "infinity":
            body = {
                "model": c.model,
                "query": query,
                "documents": list(documents),
                "return_documents": False,
                "raw_scores": raw,
                "top_n": n,
            }
        else:
            body = {"model": c.model, "query": query, "documents": list(documents), "top_n": n}
            if c.protocol == "zeroentropy" and c.latency is not None:
                body["latency"] = c.latency
        if c.truncate_prompt_tokens is not None and c.protocol.startswith("vllm"):
            body["truncate_prompt_tokens"] = c.truncate_prompt_tokens
        return body

    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
        import httpx

        key = self._api_key(required=bool(self.config.api_key_env))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key.get_secret_value()}"
        client = self._clients.get()
        content = json.dumps(self.body(query, documents)).encode()
        try:
            response = await client.post(self.path, content=content, headers=headers)
            if response.status_code >= 300:
                raise self._status_error(response.status_code, response.text, response.headers)
            try:
                payload = response.json()
            except ValueError as exc:
                raise MalformedResponseError(f"{self.label} returned a body that is not valid JSON", backend=self.name) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(
                f"{self.label} did not answer within {self.config.timeout_s:g} s", backend=self.name
            ) from exc
        except httpx.ConnectError as exc:
            raise BackendUnavailableError(f"cannot connect to {self.config.base_url}", backend=self.name) from exc
        except httpx.HTTPError as exc:
            raise ServerError(f"{self.label} connection failed: {type(exc).__name__}", backend=self.name) from exc
        return self._parse(payload, len(documents))

    def _parse(self, payload: Any, n: int) -> BatchResult:
        protocol = self.config.protocol
        if protocol == "tei":
            items, score_key = payload, "score"
        elif protocol == "vllm-score":
            items, score_key = _get(payload, "data"), "score"
        elif protocol == "infinity":
            items = _get(payload, "results")
            items = _get(payload, "data") if items is None else items  # Infinity before 0.0.7x
            score_key = "relevance_score"
        else:
            items, score_key = _get(payload, "results"), "relevance_score"
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise MalformedResponseError(f"{self.label} response has no list of results", backend=self.name)
        pairs = [(item.get("index"), item.get(score_key)) for item in items]
        values = self._score_results(pairs, n)
        return BatchResult(values, self._usage(payload))

    def _usage(self, payload: Any) -> Usage:
        tokens = _get(_get(payload, "usage"), "total_tokens")
        if tokens is None:
            tokens = _get(payload, "total_tokens")
        if self.config.protocol == "infinity":
            tokens = None  # Infinity's usage counts characters, not tokens (seen with infinity-emb 0.0.78)
        units = _get(_get(_get(payload, "meta"), "billed_units"), "search_units")
        return Usage(
            tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
            search_units=float(units) if isinstance(units, int | float) and not isinstance(units, bool) else None,
        )


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None
