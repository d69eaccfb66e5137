"""The ``service:`` block of a config: tenants, limits, admission and drain for ``rerank-router serve``.

Plain pydantic models (no web framework imported), so ``router.config`` can type its ``service:``
field with them and an invalid block fails at load like any other config error.

```yaml
service:
  tenants:
    search-team:
      keys: [{env: SEARCH_TEAM_KEY}]             # or {sha256: <hex of the key>}, or {file: /run/secrets/k}
      budgets: {latency_ms: 800, latency_ms_limit: 2000, max_cost_usd: 0.002, max_cost_usd_limit: 0.01}
      spend_caps: {day_usd: 20, month_usd: 400}
      rpm: 600
    records:
      keys: [{sha256: 9f86d0...}]
      constraints: {on_premise: true}            # forced on every request of this tenant
  limits: {max_body_bytes: 4194304, max_documents: 1000, max_document_chars: 32768}
  admission: {max_in_flight: 64, max_queue: 256}
  drain: {grace_s: 0, timeout_s: 30}
```
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.constraints import Constraints
from router.errors import ConfigError

__all__ = [
    "AdmissionConfig",
    "DrainConfig",
    "KeySource",
    "ServiceConfig",
    "ServiceLimits",
    "SpendCaps",
    "TenantBudgets",
    "TenantConfig",
    "key_digest",
]


def key_digest(key: str) -> str:
    """The SHA-256 hex digest a ``{sha256: ...}`` key entry holds (``rerank-router serve --hash-key``)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeySource(BaseModel):
    """One API key of a tenant: its SHA-256 digest, or where to read the key (an environment
    variable or a file, e.g. a mounted secret). The key itself never sits in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if sum(v is not None for v in (self.sha256, self.env, self.file)) != 1:
            raise ValueError("give exactly one of sha256, env or file")
        return self

    def digest(self, where: str) -> str:
        """The key's SHA-256 digest; reads the variable or file now (at server start)."""
        if self.sha256 is not None:
            return self.sha256
        if self.env is not None:
            value = os.environ.get(self.env, "")
            if not value:
                raise ConfigError(f"{where}: the environment variable {self.env} is not set")
            return key_digest(value)
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read key file {self.file}: {type(exc).__name__}") from None
        if not value:
            raise ConfigError(f"{where}: key file {self.file} is empty")
        return key_digest(value)


class TenantBudgets(BaseModel):
    """Defaults where a request gives none (``latency_ms``, ``max_cost_usd``) and the most a
    request may ask for (``latency_ms_limit``, ``max_cost_usd_limit``: larger values are clamped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float | None = Field(None, gt=0)
    latency_ms_limit: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, ge=0)
    max_cost_usd_limit: float | None = Field(None, ge=0)


class SpendCaps(BaseModel):
    """Billed US dollars per calendar window (UTC day; month = 30-day windows from the epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day_usd: float | None = Field(None, ge=0)
    month_usd: float | None = Field(None, ge=0)


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[KeySource] = Field(min_length=1)
    constraints: Constraints = Constraints()
    """Tightens every request of the tenant (e.g. ``on_premise: true``); a request cannot loosen it."""
    budgets: TenantBudgets = TenantBudgets()
    spend_caps: SpendCaps = SpendCaps()
    rpm: int | None = Field(None, ge=1)
    """Requests per minute (fixed one-minute windows), across every worker and replica sharing Redis."""


class ServiceLimits(BaseModel):
    """Checked while the body is read, before any work: 413 over ``max_body_bytes``, 422 over the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1)
    max_documents: int | None = Field(None, ge=1)
    """Default: the router's ``limits.max_documents``."""
    max_document_chars: int | None = Field(None, ge=1)
    """A longer document is refused (the router's own limit clips instead). Default: no limit here."""


class AdmissionConfig(BaseModel):
    """Per worker: at most ``max_in_flight`` requests run at once, at most ``max_queue`` wait.
    A request that cannot start before its deadline (less ``min_work_ms``) is answered at once:
    ``on_overload: degrade`` returns the documents in the caller's order, marked degraded;
    ``reject`` answers 503 with Retry-After. A full queue always answers 503."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_in_flight: int = Field(64, ge=1)
    max_queue: int = Field(256, ge=0)
    min_work_ms: float = Field(20.0, ge=0)
    on_overload: str = Field("reject", pattern=r"^(reject|degrade)$")
    retry_after_s: int = Field(1, ge=1)


class DrainConfig(BaseModel):
    """On SIGTERM: readiness answers 503 for ``grace_s`` (so load balancers stop sending) while
    requests are still served, then the listener closes and in-flight requests get ``timeout_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_s: float = Field(0.0, ge=0)
    timeout_s: float = Field(30.0, gt=0)


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    limits: ServiceLimits = ServiceLimits()
    admission: AdmissionConfig = AdmissionConfig()
    drain: DrainConfig = DrainConfig()
    access_log: bool = True
    """One line per request on the ``rerank_router.access`` logger (never document text or keys)."""
    metrics: bool = True

    def tenant_digests(self) -> dict[str, str]:
        """Key digest -> tenant name, reading env/file keys now; a key shared by two tenants is an error."""
        out: dict[str, str] = {}
        for name, tenant in self.tenants.items():
            for i, source in enumerate(tenant.keys):
                digest = source.digest(f"service.tenants.{name}.keys[{i}]")
                if out.get(digest, name) != name:
                    raise ConfigError(f"service.tenants.{name}.keys[{i}]: the same key is also a key of {out[digest]}")
                out[digest] = name
        return out
