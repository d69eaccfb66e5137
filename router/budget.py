"""A budget across requests: its config (``budgets.mean_cost``) and what it tells a policy.

A per-request ceiling (``budgets.max_cost_usd``) caps each request; a mean-cost budget caps the
*average* over a window of requests, so that a policy may spend more on the queries that need it
and less on the rest. The accounting step (router.accounting.budget) keeps the window's spend
and target and turns their ratio into a :class:`BudgetSignal`: a multiplier on the policy's price
of a dollar (raised while the window's mean runs over its target, lowered while under). Policies
read the signal from the planning context; they do no I/O themselves.

```yaml
budgets:
  max_cost_usd: 0.01             # per request: a hard cap, as before
  mean_cost:
    share: 0.3                   # of the predicted cost of running `of` alone on each request
    of: rankgpt
    # target_usd: 0.001          # or an absolute mean cost per request
    window: 200                  # requests (exponentially weighted); or window_s: 3600
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.validation import FiniteFloat, NotBool

__all__ = ["BudgetSignal", "MeanCostBudget"]


class MeanCostBudget(BaseModel):
    """Config ``budgets.mean_cost``: a target mean cost per request over a window of requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_usd: FiniteFloat | None = Field(None, gt=0)
    """Target mean cost per request in US$."""
    share: FiniteFloat | None = Field(None, gt=0)
    """Target as a share of what backend ``of`` alone on all candidates is predicted to cost, request by request."""
    of: str | None = None
    window: Annotated[int, NotBool] = Field(200, ge=1)
    """Requests the window spans: each request's weight decays by 1/``window`` per later request."""
    window_s: FiniteFloat | None = Field(None, gt=0)
    """Seconds the window spans instead (weights decay as exp(-age / window_s)); overrides ``window``."""
    gain: FiniteFloat = Field(1.0, gt=0, le=100)
    """How hard the controller pushes back: the price multiplier is exp(gain x (mean / target - 1) + integral)."""
    name: str = "default"
    """The window's name in shared state: routers with the same name and Redis share one window."""

    @model_validator(mode="after")
    def _one_target(self) -> MeanCostBudget:
        if (self.target_usd is None) == (self.share is None):
            raise ValueError("give one of target_usd (US$ per request) or share + of (a share of a backend's cost)")
        if self.share is not None and not self.of:
            raise ValueError("share needs `of`: the backend whose cost it is a share of")
        if self.target_usd is not None and self.of is not None:
            raise ValueError("`of` goes with share, not with target_usd")
        return self

    def describe(self) -> str:
        window = f"{self.window_s:g} s" if self.window_s is not None else f"{self.window} requests"
        target = f"${self.target_usd:.4g}/request" if self.target_usd is not None else f"{self.share:.0%} of {self.of}'s cost"
        return f"mean cost <= {target} over {window}"


@dataclass(frozen=True, slots=True)
class BudgetSignal:
    """The cross-request budget as a policy sees it when it plans one request."""

    multiplier: float
    """Scale the policy's price of a dollar by this (> 1: the window runs over its target)."""
    window_mean_usd: float
    """The window's mean cost per request (weighted)."""
    target_usd: float
    """The window's mean target per request (weighted; per request for a share of a backend's cost)."""
    requests: float
    """Weighted requests in the window (0: nothing observed yet)."""
    headroom_usd: float | None = None
    """The most this request may cost with the window's mean still within its target after it (what the window
    is under target, plus this request's own target); None: unknown. Exact for requests one after another;
    requests in flight at once each see the same headroom."""
    note: str | None = None
    """Why the signal is less than it should be (e.g. shared state unreachable)."""

    def describe(self) -> str:
        """One line for an explanation: ``budget: window mean $0.0009 vs target $0.0010``."""
        if self.requests <= 0:
            line = "budget: window empty (no request accounted yet)"
        else:
            line = f"budget: window mean ${self.window_mean_usd:.4g} vs target ${self.target_usd:.4g}"
        if abs(self.multiplier - 1.0) > 1e-3:
            line += f" (price x{self.multiplier:.3g})"
        return line if self.note is None else f"{line}; {self.note}"
