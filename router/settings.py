"""Config models shared by the top-level config and experiment arms: which policy, which budgets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from router.budget import MeanCostBudget
from router.request import MAX_COST_USD, MAX_LATENCY_BUDGET_MS
from router.validation import FiniteFloat

__all__ = ["Budgets", "PolicyConfig"]


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "constrained"
    params: dict[str, Any] = Field(default_factory=dict)


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: FiniteFloat | None = Field(None, gt=0, le=MAX_LATENCY_BUDGET_MS)
    max_cost_usd: FiniteFloat | None = Field(None, ge=0, le=MAX_COST_USD)
    mean_cost: MeanCostBudget | None = None
    """A target mean cost per request over a window of requests (router.budget); the ceiling above still caps each one."""
