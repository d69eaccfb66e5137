"""Policy registry: name -> (class, params model). Config names a policy and its keyword arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from policies.adaptive import AdaptiveParams, AdaptivePolicy
from policies.base import Policy
from policies.cascade import CascadeParams
from policies.learned import LearnedParams, LearnedPolicy
from policies.simple import CheapestPolicy, ConstrainedPolicy, FastestPolicy, FixedParams, FixedPolicy, NoParams
from router.errors import UnknownNameError
from router.validation import config_error

__all__ = ["POLICIES", "create_policy"]

POLICIES: Mapping[str, tuple[type, type[BaseModel]]] = {
    "constrained": (ConstrainedPolicy, CascadeParams),
    "cheapest": (CheapestPolicy, NoParams),
    "fastest": (FastestPolicy, NoParams),
    "fixed": (FixedPolicy, FixedParams),
    "learned": (LearnedPolicy, LearnedParams),
    "adaptive": (AdaptivePolicy, AdaptiveParams),
}


def create_policy(name: str, params: Mapping[str, Any] | None = None, *, where: str = "policy") -> Policy:
    if name not in POLICIES:
        raise UnknownNameError("policy", name, POLICIES)
    cls, params_model = POLICIES[name]
    try:
        parsed = params_model.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise config_error(exc, prefix=f"{where}.params") from exc
    policy: Policy = cls(**parsed.model_dump())
    return policy
