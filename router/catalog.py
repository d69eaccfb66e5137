"""Backend specs as data: license, residency, limits, pricing, latency model, quality.

The shipped catalog (``catalog.yaml`` beside this module) is seeded from public pages listed in
``../shared/facts/providers.md``; each entry keeps its source. Config overrides every value
(``backends.<name>.spec``), and prices in particular must be checked against your contract.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.constraints import license_allows_commercial_use
from router.errors import ConfigError
from router.validation import FiniteFloat, NotBool, config_error, load_yaml

__all__ = [
    "BackendSpec",
    "LatencyParams",
    "LicenseChange",
    "Pricing",
    "PromptTemplate",
    "ScoreScale",
    "ServedAs",
    "deep_merge",
    "load_catalog",
    "merge_spec",
]

PricingScheme = Literal["free", "per_search_unit", "per_token", "per_gpu_hour", "per_call"]
PromptTemplate = Literal["qwen3-reranker"]
"""A prompt format a model was trained with, applied client-side (router.backends.http)."""
ScoreScale = Literal["probability", "logit"]
Quality = Annotated[FiniteFloat, Field(ge=0, le=1)]
"""An expected nDCG@10: on [0, 1]."""
Count = Annotated[int, NotBool]


class Pricing(BaseModel):
    """How a backend bills. ``usd`` is the unit price; None means not known (set it in config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: PricingScheme = "free"
    usd: FiniteFloat | None = Field(0.0, ge=0)
    """per_search_unit: $ per search unit; per_token: $ per token; per_gpu_hour: $ per GPU-hour;
    per_call: $ per request."""
    docs_per_unit: Count = Field(100, ge=1)
    """per_search_unit: documents (chunks) per search unit (Cohere: 100)."""
    chunk_tokens: Count | None = Field(None, ge=1)
    """per_search_unit: a query + document longer than this counts as several chunks."""
    source: str = ""


class LatencyParams(BaseModel):
    """latency_ms = overhead + per_doc*N + per_token*Σt + per_token_sq*Σt², t = tokens per scored item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overhead_ms: FiniteFloat = Field(0.0, ge=0)
    per_doc_ms: FiniteFloat = Field(0.0, ge=0)
    per_token_ms: FiniteFloat = Field(0.0, ge=0)
    per_token_sq_ms: FiniteFloat = Field(0.0, ge=0)
    source: str = ""


class LicenseChange(BaseModel):
    """One license a model was (or is) under, from when, and where that is written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    license: str
    since: dt.date | None = None
    """The first day under this license; None: since the model's release (or not known)."""
    source: str


class ServedAs(BaseModel):
    """A gateway or platform that answers requests for this model with another model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str
    """Who does it (e.g. 'Pinecone')."""
    model: str
    """The model that actually serves (e.g. 'rerank-v4.0-fast')."""
    name: str = ""
    """The name requests use there, where it differs from the catalog key."""
    since: dt.date | None = None
    note: str = ""
    source: str


class BackendSpec(BaseModel):
    """What the planner knows about one backend, independent of how it is called."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    provider: str = "local"
    license: str = "unknown"
    """SPDX id, or 'proprietary' for a closed API used under its commercial terms."""
    data_leaves_premises: bool = False
    residency: str = ""
    """Why ``data_leaves_premises`` is what it is, where a backend works it out from where it sends
    bytes (an HTTP backend's ``base_url`` host, router.residency); shown when an on-premise
    request turns the backend down."""
    max_documents: Count | None = Field(None, ge=1)
    """Most documents per provider call."""
    split_requests: bool = False
    """True: the backend splits a longer list into several calls (and is billed per call);
    False: a request with more than max_documents candidates cannot use this backend."""
    max_request_tokens: Count | None = Field(None, ge=1)
    """Most tokens (query + document per item, summed) per provider call: a longer list is split
    (router.backends.batching), each call billed on its own."""
    max_tokens_per_doc: Count | None = Field(None, ge=1)
    """Context per scored item (query + document for cross-encoders); longer input is truncated."""
    max_query_tokens: Count | None = Field(None, ge=1)
    tokenizer_family: str = "bert-wordpiece"
    input: Literal["pair", "single"] = "pair"
    """'pair': each item is query + document (cross-encoders, APIs); 'single': documents are
    encoded alone (bi-encoders, lexical)."""
    template: PromptTemplate | None = None
    """The prompt format the model needs around query and documents (None: plain text); a
    backend's ``template: auto`` picks this."""
    score_scale: ScoreScale = "probability"
    """What the model itself outputs: a 'probability' on [0, 1], or a raw 'logit' that
    sigmoid(score / logit_scale) maps to [0, 1] (``score_mapping: auto`` of a server that passes the
    model's output through). An API that maps its scores to [0, 1] itself ignores it."""
    logit_scale: FiniteFloat = Field(1.0, gt=0)
    """For a 'logit' score scale: the divisor inside the sigmoid."""
    license_history: tuple[LicenseChange, ...] = ()
    """The licenses the model has been under, oldest first, each with its source; the last is
    ``license`` (the shipped catalog is checked for that). Empty: only ``license`` is known."""
    available_until: dt.date | None = None
    """The day (UTC) the provider stops serving this model, e.g. an API's sunset date: from that day
    on the router refuses to plan it, in fallbacks too (policies.rules.in_service). None: no end
    announced. A config may set it (a contract's end) or clear it (``null``: a mirror still serves)."""
    lifecycle: str = ""
    """What happened or will happen to the provider, with its source; quoted in the rejection."""
    aliases: tuple[str, ...] = ()
    """Other names providers and gateways use for this model (notes: the router does not resolve
    them; point a backend at this entry with ``catalog:``)."""
    served_as: tuple[ServedAs, ...] = ()
    """Where requests for this model are answered by another one (its scores then differ)."""
    pricing: Pricing = Pricing()
    latency: LatencyParams = LatencyParams()
    rpm: FiniteFloat | None = Field(None, gt=0)
    """The provider's requests-per-minute limit (the executor paces calls to it)."""
    tpm: FiniteFloat | None = Field(None, gt=0)
    """The provider's tokens-per-minute limit."""
    cold_start_ms: FiniteFloat = Field(0.0, ge=0)
    """Added to predictions while the backend is cold (model not loaded in this process)."""
    quality: Mapping[str, Quality] = Field(default_factory=dict)
    """Expected nDCG@10 per domain, each on [0, 1] ('web' = MS MARCO / TREC-DL-like; 'general' is
    the fallback). NaN is refused: it would compare false with everything and make the choice
    depend on the order of the config."""
    source: str = ""

    @property
    def commercial_use(self) -> bool | None:
        return license_allows_commercial_use(self.license)

    def ended(self, today: dt.date) -> bool:
        """Whether the provider no longer serves this model on ``today`` (``available_until`` reached)."""
        return self.available_until is not None and today >= self.available_until

    def quality_for(self, domain: str) -> float | None:
        if domain in self.quality:
            return self.quality[domain]
        return self.quality.get("general")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_spec(base: BackendSpec | None, model: str, overrides: Mapping[str, Any], where: str) -> BackendSpec:
    """A catalog entry (or a bare spec for ``model``) with config overrides applied."""
    raw: dict[str, Any] = base.model_dump() if base is not None else {"model": model}
    merged = deep_merge(raw, overrides)
    try:
        return BackendSpec.model_validate(merged)
    except ValidationError as exc:
        raise config_error(exc, prefix=where) from exc


@functools.cache
def load_catalog() -> Mapping[str, BackendSpec]:
    """The shipped catalog, keyed by model id."""
    text = resources.files("router").joinpath("catalog.yaml").read_text(encoding="utf-8")
    raw = load_yaml(text)
    entries: dict[str, BackendSpec] = {}
    for key, value in raw.items():
        try:
            entries[key] = BackendSpec.model_validate({"model": key, **value})
        except ValidationError as exc:  # a broken shipped catalog is a bug: fail loudly
            raise config_error(exc, prefix=f"catalog[{key}]") from exc
        history = entries[key].license_history
        if history and history[-1].license != entries[key].license:
            raise ConfigError(f"catalog[{key}]: license_history ends in {history[-1].license}, license is {entries[key].license}")
    return entries
