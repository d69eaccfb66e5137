"""The ``experiment:`` block of a config: named arms with weights, per-tenant overrides, and an
optional shadow arm.

```yaml
experiment:
  name: cheap-vs-default
  key: user                 # context field that keeps a caller on one arm ("query": the query text)
  arms:
    control: {weight: 90, policy: {name: constrained}}
    cheap:   {weight: 10, policy: {name: cheapest}, budgets: {latency_ms: 300}}
  tenants:
    acme: {arm: control}                      # pin a tenant (context["tenant"]) to an arm
    beta-corp: {weights: {control: 50, cheap: 50}}
  shadow:                                      # scored in the background, never returned
    name: api
    policy: {name: constrained}
    budgets: {max_cost_usd: 0.002}
    sample: 0.05
    max_spend_usd: 5.0                         # per spend window (a day by default)
```
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.settings import Budgets, PolicyConfig

__all__ = ["ArmConfig", "ExperimentConfig", "ShadowConfig", "TenantOverride"]


def _no_mean_cost(budgets: Budgets) -> Budgets:
    if budgets.mean_cost is not None:
        raise ValueError("mean_cost is one window for the whole router: set it in the top-level budgets, not an arm's")
    return budgets


class ArmConfig(BaseModel):
    """One arm: a policy and its budgets. Arm budgets apply where a request gives none and can
    only tighten a budget the request gives (the caller's deadline and ceiling stay guarantees)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, ge=0)
    policy: PolicyConfig = PolicyConfig()
    budgets: Budgets = Budgets()

    @field_validator("budgets")
    @classmethod
    def _router_wide(cls, budgets: Budgets) -> Budgets:
        return _no_mean_cost(budgets)


class ShadowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "shadow"
    policy: PolicyConfig = PolicyConfig()
    budgets: Budgets = Budgets()
    sample: float = Field(0.1, gt=0, le=1)
    """Share of requests (chosen by a hash of the request id) the shadow arm also scores."""
    max_spend_usd: float = Field(ge=0)
    """The most the shadow arm may spend per window; a run that would pass it is skipped."""
    spend_window_s: float = Field(86_400.0, gt=0)

    @field_validator("budgets")
    @classmethod
    def _router_wide(cls, budgets: Budgets) -> Budgets:
        return _no_mean_cost(budgets)


class TenantOverride(BaseModel):
    """Pin a tenant to one arm, or give it its own weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arm: str | None = None
    weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.arm is None) == (self.weights is None):
            raise ValueError("give either arm (pin) or weights, not both or neither")
        if self.weights is not None:
            if any(w < 0 for w in self.weights.values()):
                raise ValueError("weights must be >= 0")
            if sum(self.weights.values()) <= 0:
                raise ValueError("weights must sum to more than 0")
        return self


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    key: str = "user"
    """Context field whose value keeps a caller on one arm; ``query`` uses the query text. A
    request without it is assigned by its request id (not sticky) and the result says so."""
    salt: str | None = None
    """Mixed into the hash (default: the experiment name), so a new experiment reshuffles callers."""
    tenant_key: str = "tenant"
    arms: dict[str, ArmConfig] = Field(min_length=1)
    tenants: dict[str, TenantOverride] = Field(default_factory=dict)
    shadow: ShadowConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if sum(arm.weight for arm in self.arms.values()) <= 0:
            raise ValueError("arms: weights must sum to more than 0")
        for tenant, override in self.tenants.items():
            named = [override.arm] if override.arm is not None else list(override.weights or {})
            unknown = [a for a in named if a not in self.arms]
            if unknown:
                raise ValueError(f"tenants.{tenant}: unknown arm {', '.join(unknown)} (arms: {', '.join(self.arms)})")
        if self.shadow is not None and self.shadow.name in self.arms:
            raise ValueError(f"shadow.name: {self.shadow.name!r} is already an arm; shadow arms need their own name")
        return self
