"""Backend specs as data: license, residency, limits, pricing, latency model, quality.

The shipped catalog (``catalog.yaml`` beside this module) is seeded from public pages listed in
``../shared/facts/providers.md``; each entry keeps its source. Config overrides every value
(``backends.<name>.spec``), and prices in particular must be checked against your contract.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.constraints import license_allows_commercial_use
from router.errors import ConfigError

__all__ = ["BackendSpec", "LatencyParams", "Pricing", "deep_merge", "load_catalog", "merge_spec"]

PricingScheme = Literal["free", "per_search_unit", "per_token", "per_gpu_hour", "per_call"]


class Pricing(BaseModel):
    """How a backend bills. ``usd`` is the unit price; None means not known (set it in config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: PricingScheme = "free"
    usd: float | None = Field(0.0, ge=0)
    """per_search_unit: $ per search unit; per_token: $ per token; per_gpu_hour: $ per GPU-hour;
    per_call: $ per request."""
    docs_per_unit: int = Field(100, ge=1)
    """per_search_unit: documents (chunks) per search unit (Cohere: 100)."""
    chunk_tokens: int | None = Field(None, ge=1)
    """per_search_unit: a query + document longer than this counts as several chunks."""
    source: str = ""


class LatencyParams(BaseModel):
    """latency_ms = overhead + per_doc*N + per_token*Σt + per_token_sq*Σt², t = tokens per scored item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overhead_ms: float = Field(0.0, ge=0)
    per_doc_ms: float = Field(0.0, ge=0)
    per_token_ms: float = Field(0.0, ge=0)
    per_token_sq_ms: float = Field(0.0, ge=0)
    source: str = ""


class BackendSpec(BaseModel):
    """What the planner knows about one backend, independent of how it is called."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    provider: str = "local"
    license: str = "unknown"
    """SPDX id, or 'proprietary' for a closed API used under its commercial terms."""
    data_leaves_premises: bool = False
    max_documents: int | None = Field(None, ge=1)
    """Most documents per provider call."""
    split_requests: bool = False
    """True: the backend splits a longer list into several calls (and is billed per call);
    False: a request with more than max_documents candidates cannot use this backend."""
    max_request_tokens: int | None = Field(None, ge=1)
    """Most tokens (query + document per item, summed) per provider call: a longer list is split
    (router.backends.batching), each call billed on its own."""
    max_tokens_per_doc: int | None = Field(None, ge=1)
    """Context per scored item (query + document for cross-encoders); longer input is truncated."""
    max_query_tokens: int | None = Field(None, ge=1)
    tokenizer_family: str = "bert-wordpiece"
    input: Literal["pair", "single"] = "pair"
    """'pair': each item is query + document (cross-encoders, APIs); 'single': documents are
    encoded alone (bi-encoders, lexical)."""
    pricing: Pricing = Pricing()
    latency: LatencyParams = LatencyParams()
    rpm: float | None = Field(None, gt=0)
    """The provider's requests-per-minute limit (the executor paces calls to it)."""
    tpm: float | None = Field(None, gt=0)
    """The provider's tokens-per-minute limit."""
    cold_start_ms: float = Field(0.0, ge=0)
    """Added to predictions while the backend is cold (model not loaded in this process)."""
    quality: Mapping[str, float] = Field(default_factory=dict)
    """Expected nDCG@10 per domain ('web' = MS MARCO / TREC-DL-like; 'general' is the fallback)."""
    source: str = ""

    @property
    def commercial_use(self) -> bool | None:
        return license_allows_commercial_use(self.license)

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
        raise ConfigError(_format_errors(where, exc)) from exc


def _format_errors(where: str, exc: ValidationError) -> str:
    lines = [f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return "invalid config:\n  " + "\n  ".join(lines)


@functools.cache
def load_catalog() -> Mapping[str, BackendSpec]:
    """The shipped catalog, keyed by model id."""
    text = resources.files("router").joinpath("catalog.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    entries: dict[str, BackendSpec] = {}
    for key, value in raw.items():
        try:
            entries[key] = BackendSpec.model_validate({"model": key, **value})
        except ValidationError as exc:  # a broken shipped catalog is a bug: fail loudly
            raise ConfigError(_format_errors(f"catalog[{key}]", exc)) from exc
    return entries
