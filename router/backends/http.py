"""Rerank servers and APIs over plain HTTP (httpx): self-hosted vLLM, TEI, Infinity and NVIDIA NIM,
the Mixedbread API, and the Cohere- or Jina-compatible rerank APIs (Jina, ...).

One backend, one ``protocol`` per wire format (:data:`WIRE_FORMATS`, one :class:`WireFormat` each;
paths are relative to ``base_url``; ``path:`` overrides them):

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
| ``nim``             | ``/v1/ranking``      | ``{model, query: {text}, passages: [{text}], truncate}`` | ``rankings[].logit`` (raw logits) |
| ``mixedbread``      | ``/v1/reranking``    | ``{model, query, input, top_k, return_input}``       | ``data[].score``          |

ZeroEntropy's hosted API was sunset on 2026-09-04: the catalog's ``zerank-*`` API entries carry that
``available_until`` and the planner refuses them (policies.rules.in_service); serve the open weights
(``zeroentropy/zerank-2``, CC-BY-NC-4.0) with vLLM instead. NVIDIA NIM (``nim``) answers raw logits
whatever the model (NIM reranking docs), which ``score_mapping: auto`` maps by a sigmoid; ``truncate``
(default ``END``; NIM's own default ``NONE`` answers 400 for a pair over the model's context) cuts long pairs.
Mixedbread (``base_url: https://api.mixedbread.com``) answers scores on [0, 1]; ``model`` is its
full name (``mixedbread-ai/mxbai-rerank-large-v2``) and ``catalog: mxbai-rerank-large-v2`` picks the
API's entry.

Usage: ``usage.total_tokens`` (vLLM, Jina, NIM, Mixedbread), ``total_tokens`` (ZeroEntropy) or
``meta.billed_units.search_units`` (Cohere-compatible) where the response gives them (Infinity's
``usage`` counts characters, so it is not reported as tokens). A
self-hosted model's cost is its ``per_gpu_hour`` price x the observed seconds (router.cost).

Prompt template (``template:``): ``qwen3-reranker`` formats query and documents client-side the
way Qwen3-Reranker was trained (system prompt, ``<Instruct>: {instruction}\\n<Query>: {query}\\n``
``<Document>: {doc}`` and the assistant prefix with an empty think block); without it its scores
are close to random. ``auto`` (the default) takes the spec's ``template`` (the catalog gives it to
the Qwen3-Reranker models), ``none`` where it has none.
Query, instruction and documents are put into the prompt with the chat's special tokens
neutralised (:func:`neutralise_special_tokens`: ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``,
``<think>``, ``<tool_call>``, the template's own ``<Query>``/``<Document>`` markers, ...), so a
hostile document cannot close its turn and write the assistant's answer.

Where bytes go (invariant 4): a backend whose ``base_url`` host is not loopback, link-local or
private (RFC 1918 / 4193, ``localhost``) sends documents off the premises (``data_leaves_premises``)
whatever its catalog entry says, unless the host is listed in ``internal_hosts`` (router.residency);
an on-premise request turns it down and its explanation says why. ``path`` is a path below
``base_url``, never a URL of its own.

Score scale (``score_mapping:``): ``identity`` for servers that return [0, 1] (vLLM and Infinity with
their default activation, TEI without raw scores, the APIs); ``sigmoid`` for raw logits, mapped by
1 / (1 + exp(-score / score_scale)); with it TEI and Infinity are asked for raw scores. ``auto``:
sigmoid where the protocol itself answers logits (``nim``) or where the spec's ``score_scale`` is
``logit`` and the server passes the model's output through, identity otherwise. The scale is the
spec's ``logit_scale`` for a logit-scale model, 1 otherwise (the catalog gives the zerank models 5:
their output is the raw "yes" logit, and facts say sigmoid(score / 5) gives 0-1; the ZeroEntropy API
maps its own).

Connections are pooled: one ``httpx.AsyncClient`` per event loop (``max_connections``).

```yaml
backends:
  qwen3-4b:
    type: http
    protocol: vllm-v2
    base_url: http://gpu-box:8000
    internal_hosts: [gpu-box]            # a name of your own network: documents stay on premises
    model: Qwen/Qwen3-Reranker-4B        # catalog entry: Apache-2.0, 32K context
    template: qwen3-reranker
    spec: {pricing: {scheme: per_gpu_hour, usd: 2.0}}   # example $/GPU-hour: use your own
```
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from router.backends.base import Usage
from router.backends.remote import BatchResult, RemoteBackend, RemoteConfig, ScoreMapping
from router.catalog import BackendSpec, PromptTemplate
from router.errors import BackendTimeoutError, BackendUnavailableError, MalformedResponseError, ServerError
from router.residency import HostResidency, host_residency
from router.secrets import safe_url

__all__ = [
    "PROTOCOL_PATHS",
    "QWEN3_DEFAULT_INSTRUCTION",
    "WIRE_FORMATS",
    "HttpBackend",
    "HttpConfig",
    "Protocol",
    "WireFormat",
    "neutralise_special_tokens",
    "qwen3_reranker_document",
    "qwen3_reranker_query",
]

Protocol = Literal[
    "vllm-v1",
    "vllm-v2",
    "vllm-score",
    "tei",
    "infinity",
    "cohere-compatible",
    "jina-compatible",
    "zeroentropy",
    "nim",
    "mixedbread",
]

# Qwen3-Reranker's prompt (model card; vLLM examples/offline_inference/qwen3_reranker.py).
_QWEN3_SYSTEM = 'Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
_QWEN3_PREFIX = f"<|im_start|>system\n{_QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


# Qwen's chat control tokens (<|im_start|>, <|im_end|>, <|endoftext|>, <|fim_*|>, <|vision_*|>, ...
# all have the <|name|> shape), its added tags (<think>, <tool_call>, <tool_response>) and the
# template's own field markers. A tokenizer matches them in raw text, so user text must not hold them.
_SPECIAL_TOKENS = re.compile(
    r"<(?=\|[^<>|\s]{1,64}\|>|/?(?:think|tool_call|tool_response|instruct|query|document)\s*>)", re.IGNORECASE
)


def neutralise_special_tokens(text: str) -> str:
    """``text`` with every chat special token broken by a space after its ``<`` (``<|im_end|>``
    becomes ``< |im_end|>``): the words stay readable, the tokenizer no longer sees a control token.
    Idempotent: a neutralised token is not matched again."""
    return _SPECIAL_TOKENS.sub("< ", text)


def qwen3_reranker_query(query: str, instruction: str = QWEN3_DEFAULT_INSTRUCTION) -> str:
    """The prompt up to the document, special tokens in ``query`` and ``instruction`` neutralised."""
    instruction, query = neutralise_special_tokens(instruction), neutralise_special_tokens(query)
    return f"{_QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n"


def qwen3_reranker_document(document: str) -> str:
    """The prompt's document part and the assistant prefix, special tokens in ``document`` neutralised."""
    return f"<Document>: {neutralise_special_tokens(document)}{_QWEN3_SUFFIX}"


class HttpConfig(RemoteConfig):
    type: Literal["http"] = "http"
    protocol: Protocol
    path: str | None = None
    """Overrides the protocol's path (e.g. an Infinity server under a URL prefix)."""
    template: Literal["auto", "none"] | PromptTemplate = "auto"
    """``auto``: the spec's ``template`` (catalog or ``spec:``), ``none`` where it has none."""
    instruction: str | None = None
    """Qwen3-Reranker task instruction (default: the model card's web-search instruction)."""
    score_mapping: Literal["auto", "identity", "sigmoid"] = "auto"
    score_scale: float | None = Field(None, gt=0)
    """For sigmoid: score / score_scale goes through the sigmoid (default: the spec's ``logit_scale``
    for a logit-scale model, 1 otherwise; 5 for zerank)."""
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    """vLLM: let the server cut each (query, document) prompt to this many tokens."""
    latency: Literal["fast", "slow"] | None = None
    """ZeroEntropy's latency mode."""
    truncate: Literal["END", "NONE"] = "END"
    """NVIDIA NIM: ``END`` cuts a pair longer than the model's context (as ``max_tokens_per_doc``
    predicts); ``NONE`` (NIM's default) makes the server refuse the whole request with a 400."""
    max_connections: int = Field(16, ge=1, le=1024)
    internal_hosts: tuple[str, ...] = ()
    """Host names inside your network (exact names, or ``.domain`` for every name under it): with
    ``base_url``'s host among them, documents count as staying on the premises. Loopback, link-local
    and private addresses and ``localhost`` need no listing; every other host is off the premises."""

    @field_validator("path")
    @classmethod
    def _a_path_below_base_url(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value.startswith("//") or "://" in value):
            raise ValueError("must be a path below base_url starting with '/', not a URL of its own")
        return value


# -- wire formats -----------------------------------------------------------------------------------

BodyBuilder = Callable[[HttpConfig, str, list[str], bool], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One protocol: where to POST, what to send, and where the scores come back."""

    label: str
    """Names the server in error messages."""
    path: str
    build_body: BodyBuilder
    """(config, query, documents, raw_scores) -> the request body; the template is already applied."""
    results: Callable[[Any], Any]
    """The response body -> its list of result items (``{index, <score_key>}`` each)."""
    score_key: str = "relevance_score"
    reports_tokens: bool = True
    """False: the server's usage counts something other than tokens, so none is reported."""
    passes_model_scores: bool = True
    """True: scores are the served model's own output, on the spec's ``score_scale``; False: an API
    that maps them to [0, 1] itself."""
    answers_logits: bool = False
    """True: the protocol answers raw logits whatever the model (NIM's ``rankings[].logit``)."""


def _rerank_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {"model": c.model, "query": query, "documents": documents, "top_n": len(documents)}


def _vllm_options(c: HttpConfig) -> dict[str, Any]:
    return {} if c.truncate_prompt_tokens is None else {"truncate_prompt_tokens": c.truncate_prompt_tokens}


def _vllm_rerank_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {**_rerank_body(c, query, documents, raw), **_vllm_options(c)}


def _vllm_score_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {"model": c.model, "text_1": query, "text_2": documents, **_vllm_options(c)}


def _tei_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {"query": query, "texts": documents, "truncate": True, "raw_scores": raw, "return_text": False}


def _infinity_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {
        "model": c.model,
        "query": query,
        "documents": documents,
        "return_documents": False,
        "raw_scores": raw,
        "top_n": len(documents),
    }


def _zeroentropy_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    body = _rerank_body(c, query, documents, raw)
    if c.latency is not None:
        body["latency"] = c.latency
    return body


def _nim_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {"model": c.model, "query": {"text": query}, "passages": [{"text": d} for d in documents], "truncate": c.truncate}


def _mixedbread_body(c: HttpConfig, query: str, documents: list[str], raw: bool) -> dict[str, Any]:
    return {"model": c.model, "query": query, "input": documents, "top_k": len(documents), "return_input": False}


def _rankings(payload: Any) -> Any:
    return _get(payload, "rankings")


def _results(payload: Any) -> Any:
    return _get(payload, "results")


def _data(payload: Any) -> Any:
    return _get(payload, "data")


def _bare(payload: Any) -> Any:
    return payload


def _results_or_data(payload: Any) -> Any:
    items = _get(payload, "results")
    return _get(payload, "data") if items is None else items  # Infinity before 0.0.7x answered "data"


WIRE_FORMATS: Mapping[Protocol, WireFormat] = MappingProxyType(
    {
        "vllm-v1": WireFormat("vLLM", "/v1/rerank", _vllm_rerank_body, _results),
        "vllm-v2": WireFormat("vLLM", "/v2/rerank", _vllm_rerank_body, _results),
        "vllm-score": WireFormat("vLLM", "/score", _vllm_score_body, _data, score_key="score"),
        "tei": WireFormat("TEI", "/rerank", _tei_body, _bare, score_key="score"),
        # Infinity's usage counts characters, not tokens (seen with infinity-emb 0.0.78).
        "infinity": WireFormat("Infinity", "/rerank", _infinity_body, _results_or_data, reports_tokens=False),
        "cohere-compatible": WireFormat("rerank API", "/v2/rerank", _rerank_body, _results),
        "jina-compatible": WireFormat("rerank API", "/v1/rerank", _rerank_body, _results),
        "zeroentropy": WireFormat("ZeroEntropy", "/v1/models/rerank", _zeroentropy_body, _results, passes_model_scores=False),
        "nim": WireFormat("NVIDIA NIM", "/v1/ranking", _nim_body, _rankings, score_key="logit", answers_logits=True),
        "mixedbread": WireFormat(
            "Mixedbread", "/v1/reranking", _mixedbread_body, _data, score_key="score", passes_model_scores=False
        ),
    }
)
"""Every protocol's wire format, keyed by the config's ``protocol``."""

PROTOCOL_PATHS: Mapping[str, str] = MappingProxyType({protocol: wire.path for protocol, wire in WIRE_FORMATS.items()})


class HttpBackend(RemoteBackend):
    config_model = HttpConfig
    default_spec: ClassVar[dict[str, Any]] = {"provider": "self-hosted", "split_requests": True}
    config: HttpConfig

    def __init__(self, name: str, config: HttpConfig, spec: BackendSpec) -> None:
        self.residency: HostResidency = host_residency(config.base_url, config.internal_hosts)
        if not self.residency.on_premise:  # where bytes go wins over what the catalog says
            spec = spec.model_copy(update={"data_leaves_premises": True, "residency": self.residency.reason})
        super().__init__(name, config, spec)
        self.wire = WIRE_FORMATS[config.protocol]
        template = config.template
        if template == "auto":
            template = spec.template or "none"
        self.template = template
        self.instruction = config.instruction or QWEN3_DEFAULT_INSTRUCTION
        kind = config.score_mapping
        model_logits = spec.score_scale == "logit" and self.wire.passes_model_scores
        if kind == "auto":
            kind = "sigmoid" if model_logits or self.wire.answers_logits else "identity"
        scale = config.score_scale or (spec.logit_scale if model_logits else 1.0)
        self.score_mapping = ScoreMapping(kind, scale)
        self.path = config.path or self.wire.path
        self.label = self.wire.label
        overhead = qwen3_reranker_query("", self.instruction) + qwen3_reranker_document("") if template != "none" else ""
        self._template_tokens = self._estimate.count([overhead])[0] if overhead else 0

    def __repr__(self) -> str:
        c = self.config
        url = safe_url(c.base_url)
        return f"HttpBackend(name={self.name!r}, protocol={c.protocol!r}, model={c.model!r}, base_url={url!r})"

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
        if self.template == "qwen3-reranker":
            query = qwen3_reranker_query(query, self.instruction)
            documents = [qwen3_reranker_document(d) for d in documents]
        return self.wire.build_body(self.config, query, list(documents), self.score_mapping.kind == "sigmoid")

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
        items = self.wire.results(payload)
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise MalformedResponseError(f"{self.label} response has no list of results", backend=self.name)
        pairs = [(item.get("index"), item.get(self.wire.score_key)) for item in items]
        values = self._score_results(pairs, n, billed=lambda: self._usage(payload))
        return BatchResult(values, self._usage(payload))

    def _usage(self, payload: Any) -> Usage:
        tokens = _get(_get(payload, "usage"), "total_tokens")
        if tokens is None:
            tokens = _get(payload, "total_tokens")
        if not self.wire.reports_tokens:
            tokens = None
        units = _get(_get(_get(payload, "meta"), "billed_units"), "search_units")
        return Usage(
            tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
            search_units=float(units) if isinstance(units, int | float) and not isinstance(units, bool) else None,
        )


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None
