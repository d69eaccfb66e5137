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
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from policies.base import Policy
from policies.registry import create_policy
from router.admission import AdmissionConfig
from router.backends.registry import BACKEND_TYPES, BackendConfig
from router.cache.config import CacheConfig
from router.catalog import deep_merge
from router.constraints import Constraints
from router.decisions.config import DecisionLogConfig
from router.errors import ConfigError, RerankRouterError
from router.experiments.config import ExperimentConfig
from router.profile import ScoreCalibration, load_profile, policy_params
from router.request import RequestLimits
from router.resilience import ResiliencePolicy
from router.secrets import env_var_name
from router.settings import Budgets, PolicyConfig
from router.validation import FiniteFloat, check_http_url, config_error, echo, load_yaml, validation_lines

__all__ = [
    "CONFIG_ENV",
    "Budgets",
    "PolicyConfig",
    "RouterConfig",
    "SharedStateConfig",
    "apply_profile",
    "build_policy",
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
                errors = "; ".join(validation_lines(exc))
                raise ValueError(f"backends.{name}: {errors}") from None
        return self


class SharedStateConfig(BaseModel):
    """Config ``shared_state:``: replicas share circuit breakers and the shadow arm's spend cap in
    Redis (router.resilience.redis_store, router.accounting.spend). Needs the ``redis`` extra."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    redis_url_env: str | None = "REDIS_URL"
    """The environment variable holding ``redis://[:password@]host:port/db`` (the usual way: the
    URL may carry a password, which belongs with your other secrets, not in a config file)."""
    redis_url: SecretStr | None = None
    """The URL itself, if you must; wins over ``redis_url_env``. Never shown in reprs or logs."""
    key_prefix: str = Field("rerank-router", min_length=1)
    """Every key the router writes starts with ``<key_prefix>:``."""

    _env_name = field_validator("redis_url_env")(env_var_name)  # a name, never a pasted URL

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if isinstance(value, Mapping | SharedStateConfig):
            return value
        raise ValueError(
            "must be a mapping such as {redis_url_env: REDIS_URL}, with the URL in that environment "
            f"variable (a {type(value).__name__} was given, not shown: a Redis URL may carry a password)"
        )

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
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    domain: str = "web"
    policy: PolicyConfig = PolicyConfig()
    budgets: Budgets = Budgets()
    constraints: Constraints = Constraints()
    limits: RequestLimits = RequestLimits()
    admission: AdmissionConfig = AdmissionConfig()
    """Load shedding when the work in flight cannot meet a request's deadline (router.admission)."""
    token_estimates: dict[str, Annotated[FiniteFloat, Field(gt=0)]] = Field(default_factory=dict)
    """Characters per token for tokenizer families with no local tokenizer (see router.tokens); each > 0."""
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    resilience: ResilienceConfig = ResilienceConfig()
    experiment: ExperimentConfig | None = None
    """A/B arms, tenant overrides and a shadow arm (router.experiments.config)."""
    decision_log: DecisionLogConfig | None = None
    """Where each decision and feedback record goes (router.decisions); none by default."""
    shared_state: SharedStateConfig | None = None
    """Redis shared by app replicas for breaker state and the shadow spend cap; none by default."""
    cache: CacheConfig = CacheConfig()
    """The score cache (router.cache); off by default."""
    service: dict[str, Any] | None = None
    """The gateway's ``service:`` block (tenants, limits, admission, drain), validated by
    ``rerank-router serve`` (router.service.config.ServiceConfig); the library ignores it."""
    retriever_score_key: str | None = None
    """Also read a document's retriever score from ``metadata[KEY]`` (a mapping's ``score`` is always read; router.retrieval)."""
    profile: str | None = None
    """Calibration profile (YAML, `rerank-router calibrate`; router.profile): measured per-backend spec overrides
    and the policies' fitted values. Read once at load, then cleared: the loaded config holds the values."""
    scores: dict[str, dict[str, ScoreCalibration]] = Field(default_factory=dict)
    """Score calibration per backend and domain (``*``: any), as a profile's ``scores:`` (router.scores);
    the profile's entries win over these for the (backend, domain) pairs they name."""

    @field_validator("backends")
    @classmethod
    def _base_urls_are_http(cls, backends: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        for name, backend in backends.items():
            url = getattr(backend, "base_url", None)
            if url is not None:
                try:
                    check_http_url(url)
                except ValueError as exc:
                    raise PydanticCustomError(
                        "http_url", "{where}: {problem}", {"where": f"{name}.base_url", "problem": str(exc)}
                    ) from None
        return backends

    def resilience_for(self, backend: str) -> ResiliencePolicy:
        """``resilience.default`` deep-merged with ``resilience.backends.<backend>``."""
        override = self.resilience.backends.get(backend)
        if not override:
            return self.resilience.default
        merged = deep_merge(self.resilience.default.model_dump(), override)
        return ResiliencePolicy.model_validate(merged)


def _backend_types_hint(error: ErrorDetails) -> str:
    if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        return f"backend types: {', '.join(BACKEND_TYPES)}"
    return ""


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte offset {exc.start}); give a YAML file saved as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        return load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where and what (PyYAML's own text spans several, with the source quoted)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f"{exc.context}: " if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {context}{exc.problem}"
    return str(exc).replace("\n", " ")


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
        return apply_profile(source)  # validated when it was built; its profile is read once
    if isinstance(source, str) and source == "default":
        raw: Any = load_yaml(resources.files("router").joinpath("default.yaml").read_text(encoding="utf-8"))
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
        raise config_error(exc, show_input=True, hint=_backend_types_hint) from exc
    return _resolved(config)


def _resolved(config: RouterConfig) -> RouterConfig:
    """Profile values merged in (read once, here), every policy built once to fail at load."""
    config = apply_profile(config)
    for where, policy in policies_by_path(config).items():
        try:
            create_policy(policy.name, policy.params)  # fail at load, not at first request
        except RerankRouterError as exc:
            if where == "policy":
                raise
            raise ConfigError(f"{where}: {exc}") from exc
    check_fixed_backends({"policy": config.policy}, config.backends)
    return config


def apply_profile(config: RouterConfig) -> RouterConfig:
    """The config with its profile read and merged in, ``profile`` cleared (so this runs once).

    Per-backend overrides go into each backend's ``spec`` (profile values win over ``spec:`` for
    the fields they set: they are the newer measurement; drop a field from the profile to pin it in
    config; unknown backend names are ignored, so one profile can serve several configs). Every
    policy's params get the profile's values (router.profile.policy_params), including a
    ``params.profile`` of its own.
    """
    paths = [p for p in policies_by_path(config).values() if "profile" in p.params]
    if config.profile is None and not paths:
        return config
    backends = dict(config.backends)
    profile = None if config.profile is None else load_profile(config.profile)  # read once, for all below
    if profile is not None:
        for name, overrides in profile.backends.items():
            cfg = backends.get(name)
            if cfg is not None:
                backends[name] = cfg.model_copy(update={"spec": deep_merge(cfg.spec, overrides)})

    def resolved(policy: PolicyConfig) -> PolicyConfig:
        return policy.model_copy(update={"params": policy_params(policy.name, policy.params, profile)})

    update: dict[str, Any] = {"backends": backends, "profile": None, "policy": resolved(config.policy)}
    if profile is not None and profile.scores:
        scores = {name: dict(by_domain) for name, by_domain in config.scores.items()}
        for name, by_domain in profile.scores.items():
            scores[name] = {**scores.get(name, {}), **by_domain}
        update["scores"] = scores
    if config.experiment is not None:
        experiment = config.experiment
        arms = {name: arm.model_copy(update={"policy": resolved(arm.policy)}) for name, arm in experiment.arms.items()}
        shadow = experiment.shadow
        if shadow is not None:
            shadow = shadow.model_copy(update={"policy": resolved(shadow.policy)})
        update["experiment"] = experiment.model_copy(update={"arms": arms, "shadow": shadow})
    return config.model_copy(update=update)


def build_policy(name: str, params: Mapping[str, Any] | None = None, *, profile: str | os.PathLike[str] | None = None) -> Policy:
    """A policy from config values: ``create_policy`` after the profile (``params.profile``, else
    ``profile``) is read into its params (router.profile.policy_params)."""
    return create_policy(name, policy_params(name, dict(params or {}), profile))


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
            raise ConfigError(f"{where}.params.backend: {echo(fixed)} is not a configured backend ({', '.join(names)})")
