"""Configuration: pydantic models over YAML. Invalid config fails at load, naming the field's path.

```yaml
domain: web                        # default domain when a request's context gives none
policy: {name: constrained, params: {}}
budgets: {latency_ms: 2000, max_cost_usd: 0.001}   # defaults for requests that give none
constraints: {commercial_use: true, on_premise: false}  # the floor; requests can only tighten it
limits: {max_documents: 1000}
backends:
  minilm: {type: cross_encoder, model: cross-encoder/ms-marco-MiniLM-L6-v2}
```
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from router.backends import BACKEND_TYPES, BackendConfig
from router.catalog import deep_merge
from router.constraints import Constraints
from router.decisions.config import DecisionLogConfig
from router.errors import ConfigError, RerankRouterError
from router.experiments.config import ExperimentConfig
from router.request import RequestLimits
from router.resilience import ResiliencePolicy
from router.settings import Budgets, PolicyConfig

__all__ = [
    "CONFIG_ENV",
    "Budgets",
    "PolicyConfig",
    "RouterConfig",
    "SharedStateConfig",
    "check_fixed_backends",
    "default_config_source",
    "load_config",
    "policies_by_path",
]

CONFIG_ENV = "RERANK_ROUTER_CONFIG"


class ResilienceConfig(BaseModel):
    """Retries, breaker, hedging and limits: ``default`` for every backend, ``backends.<name>`` to override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: ResiliencePolicy = ResiliencePolicy()
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> ResilienceConfig:
        for name, override in self.backends.items():
            try:
                ResiliencePolicy.model_validate(deep_merge(self.default.model_dump(), override))
            except ValidationError as exc:
                errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"backends.{name}: {errors}") from None
        return self


class SharedStateConfig(BaseModel):
    """Config ``shared_state:``: replicas share circuit breakers and the shadow arm's spend cap in
    Redis (router.resilience.redis_store, router.experiments.spend). Needs the ``redis`` extra."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url_env: str | None = "REDIS_URL"
    """The environment variable holding ``redis://[:password@]host:port/db`` (the usual way: the
    URL may carry a password, which belongs with your other secrets, not in a config file)."""
    redis_url: SecretStr | None = None
    """The URL itself, if you must; wins over ``redis_url_env``. Never shown in reprs or logs."""
    key_prefix: str = Field("rerank-router", min_length=1)
    """Every key the router writes starts with ``<key_prefix>:``."""

    def url(self) -> SecretStr:
        """The Redis URL: ``redis_url``, else the variable ``redis_url_env`` names."""
        if self.redis_url is not None:
            return self.redis_url
        value = os.environ.get(self.redis_url_env or "")
        if not value:
            raise ConfigError(
                f"shared_state: set the environment variable {self.redis_url_env} to your Redis URL "
                "(or give shared_state.redis_url_env / redis_url)"
            )
        return SecretStr(value)


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = "web"
    policy: PolicyConfig = PolicyConfig()
    budgets: Budgets = Budgets()
    constraints: Constraints = Constraints()
    limits: RequestLimits = RequestLimits()
    token_estimates: dict[str, float] = Field(default_factory=dict)
    """Characters per token for tokenizer families with no local tokenizer (see router.tokens)."""
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    resilience: ResilienceConfig = ResilienceConfig()
    experiment: ExperimentConfig | None = None
    """A/B arms, tenant overrides and a shadow arm (router.experiments.config)."""
    decision_log: DecisionLogConfig | None = None
    """Where each decision and feedback record goes (router.decisions); none by default."""
    shared_state: SharedStateConfig | None = None
    """Redis shared by app replicas for breaker state and the shadow spend cap; none by default."""
    service: dict[str, Any] | None = None
    """The gateway's ``service:`` block (tenants, limits, admission, drain), validated by
    ``rerank-router serve`` (router.service.config.ServiceConfig); the library ignores it."""
    profile: str | None = None
    """Calibration profile (YAML, `rerank-router calibrate`): measured per-backend spec overrides (router.calibration)."""

    def resilience_for(self, backend: str) -> ResiliencePolicy:
        """``resilience.default`` deep-merged with ``resilience.backends.<backend>``."""
        override = self.resilience.backends.get(backend)
        if not override:
            return self.resilience.default
        merged = deep_merge(self.resilience.default.model_dump(), override)
        return ResiliencePolicy.model_validate(merged)


def _format(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        line = f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
        if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            line += f" (backend types: {', '.join(BACKEND_TYPES)})"
        elif error["type"] != "missing" and not isinstance(error["input"], dict):
            line += f" (got {error['input']!r})"
        lines.append(line)
    return "invalid config:\n  " + "\n  ".join(lines)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc


def default_config_source() -> str | Path:
    """$RERANK_ROUTER_CONFIG if set, else the packaged default (configs/default.yaml)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return "default"


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | RouterConfig | None = None) -> RouterConfig:
    """From a path, a mapping, a RouterConfig, the name 'default', or None ($RERANK_ROUTER_CONFIG / default)."""
    if source is None:
        source = default_config_source()
    if isinstance(source, RouterConfig):
        return source
    if isinstance(source, str) and source == "default":
        raw: Any = yaml.safe_load(resources.files("router").joinpath("default.yaml").read_text(encoding="utf-8"))
    elif isinstance(source, Mapping):
        raw = dict(source)
    elif isinstance(source, str | os.PathLike):
        raw = _read_yaml(Path(source))
    else:
        raise ConfigError(f"config must be a path, mapping or RouterConfig, got {type(source).__name__}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a mapping at the top level, got {type(raw).__name__}")
    try:
        config = RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from exc
    from policies.registry import create_policy

    for where, policy in policies_by_path(config).items():
        try:
            create_policy(policy.name, policy.params)  # fail at load, not at first request
        except RerankRouterError as exc:
            if where == "policy":
                raise
            raise ConfigError(f"{where}: {exc}") from exc
    check_fixed_backends({"policy": config.policy}, config.backends)
    return config


def policies_by_path(config: RouterConfig) -> dict[str, PolicyConfig]:
    """Every policy the config names, keyed by its dotted path (for error messages)."""
    policies = {"policy": config.policy}
    if config.experiment is not None:
        policies.update({f"experiment.arms.{name}.policy": arm.policy for name, arm in config.experiment.arms.items()})
        if config.experiment.shadow is not None:
            policies["experiment.shadow.policy"] = config.experiment.shadow.policy
    return policies


def check_fixed_backends(policies: Mapping[str, PolicyConfig], backends: Iterable[str]) -> None:
    """A ``fixed`` policy must name a backend that exists."""
    names = list(backends)
    for where, policy in policies.items():
        fixed = policy.params.get("backend")
        if policy.name == "fixed" and fixed not in names:
            raise ConfigError(f"{where}.params.backend: {fixed!r} is not a configured backend ({', '.join(names)})")
