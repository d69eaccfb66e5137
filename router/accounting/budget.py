"""The mean-cost budget's window and controller (config ``budgets.mean_cost``, router.budget).

After each request the accounting step adds what it cost and what it was allowed (the target:
``target_usd``, or ``share`` x the predicted cost of backend ``of`` alone on that request) to a
window of exponentially weighted sums (spend ``s``, target ``r``, requests ``n``): each earlier
request's weight shrinks by ``1 - 1/window`` per request (or by ``exp(-dt / window_s)``). The
error ``e = s / r - 1`` is the window's overspend as a share of its target; the controller keeps an
integral of it (so a policy whose own price is off is corrected, not only pushed) and hands
planning ``multiplier = exp(gain * e + integral)``, a factor on the policy's price of a dollar: over
target, dollars cost more and only the queries with the best predicted gain per dollar escalate;
under target, more do. The per-request ceiling stays a hard cap on top.

:class:`MeanCostWindow` keeps the window in this process. :class:`RedisMeanCostWindow` keeps one
window for every replica (``shared_state:``): one hash updated by a Lua script (the same step as
:func:`step`, atomically); when Redis cannot be reached it falls back to this process's own window
(which it keeps all along) and says so in the signal's note; nothing raises.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from policies.context import PlanningContext
from router.budget import BudgetSignal, MeanCostBudget
from router.errors import ConfigError
from router.plan import Stage
from router.resilience.redis_store import SharedStateOutage, redis_errors

if TYPE_CHECKING:
    import redis

__all__ = [
    "BudgetWindow",
    "MeanCostWindow",
    "RedisMeanCostWindow",
    "WindowState",
    "build_window",
    "observe_request",
    "plan_signal",
    "request_target",
    "step",
]

LIMIT = math.log(1000.0)
"""The multiplier stays within [1/1000, 1000]: a price can move three orders of magnitude, no more."""
MAX_ERROR = 3.0
"""Overspend counted at most 3x the target per step (one very dear request must not swing the price alone)."""
SET_POINT_COSTS = 2.0
MIN_SET_POINT = 0.5
"""The controller steers the window's spend to its target less two typical paid requests' cost (at least half the
target), so that the hard rule (no request may take the window over its target:
:attr:`~router.budget.BudgetSignal.headroom_usd`) is a backstop, not the rule that picks which queries escalate
(the price does that: the best predicted gain per dollar first)."""
COST_RATE = 0.1
"""How fast the typical paid request's cost follows new ones (an exponential average)."""
INTEGRAL_REQUESTS = 20.0
"""The integral moves by ``gain x error / 20`` per request (a shorter window: / window): it follows a change in
demand within tens of requests, however long the window the error is measured over."""


@dataclass(frozen=True, slots=True)
class WindowState:
    s: float = 0.0
    """Weighted spend (US$)."""
    r: float = 0.0
    """Weighted target (US$)."""
    n: float = 0.0
    """Weighted requests."""
    t: float | None = None
    """When the last request was added (wall seconds)."""
    i: float = 0.0
    """The controller's integral (log of the multiplier's slow part)."""
    c: float = 0.0
    """A typical paid request's cost (exponential average of the requests that cost anything)."""

    def error(self) -> float:
        """The window's overspend against the controller's set-point (its target less two typical paid requests)."""
        if self.r <= 0:
            return 0.0
        point = max(MIN_SET_POINT * self.r, self.r - SET_POINT_COSTS * self.c)
        return min(MAX_ERROR, self.s / point - 1.0)

    def signal(
        self, config: MeanCostBudget, note: str | None = None, *, target_usd: float | None = None, now: float | None = None
    ) -> BudgetSignal:
        """The signal for a request whose own target is ``target_usd`` (None: unknown, no headroom), at ``now``."""
        log_m = max(-LIMIT, min(LIMIT, config.gain * self.error() + self.i)) if self.n > 0 else self.i
        n = self.n
        headroom = None if target_usd is None else _decay(self, config, now) * (self.r - self.s) + target_usd
        return BudgetSignal(
            multiplier=math.exp(log_m),
            window_mean_usd=self.s / n if n > 0 else 0.0,
            target_usd=self.r / n if n > 0 else (config.target_usd or 0.0),
            requests=n,
            headroom_usd=headroom,
            note=note,
        )


def _decay(state: WindowState, config: MeanCostBudget, now: float | None) -> float:
    """How much of the window's sums the next request added at ``now`` keeps."""
    if config.window_s is not None:
        if state.t is None or now is None:
            return 0.0 if state.t is None else 1.0
        return math.exp(-max(0.0, now - state.t) / config.window_s)
    return 1.0 - 1.0 / config.window


def step(state: WindowState, config: MeanCostBudget, spent_usd: float, target_usd: float, now: float) -> WindowState:
    """The window after one more request that cost ``spent_usd`` against a target of ``target_usd``."""
    decay = _decay(state, config, now)
    s, r, n = state.s * decay + spent_usd, state.r * decay + target_usd, state.n * decay + 1.0
    steady = INTEGRAL_REQUESTS if config.window_s is not None else min(INTEGRAL_REQUESTS, config.window)
    paid = state.c if spent_usd <= 0 else (spent_usd if state.c <= 0 else state.c + COST_RATE * (spent_usd - state.c))
    new = WindowState(s, r, n, now, state.i, paid)
    integral = max(-LIMIT, min(LIMIT, state.i + config.gain * new.error() / steady))
    return replace(new, i=integral)


class BudgetWindow(Protocol):
    """What the engine needs of a mean-cost window: the signal for planning, and each request's bill."""

    config: MeanCostBudget

    def signal(self, target_usd: float | None = None) -> BudgetSignal: ...

    def observe(self, spent_usd: float, target_usd: float) -> None: ...


class MeanCostWindow:
    """The window in this process (thread-safe)."""

    def __init__(self, config: MeanCostBudget, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._state = WindowState()

    def __repr__(self) -> str:
        return f"MeanCostWindow({self.config.describe()})"

    @property
    def state(self) -> WindowState:
        return self._state

    def signal(self, target_usd: float | None = None) -> BudgetSignal:
        """What planning a request whose own target is ``target_usd`` sees (router.budget.BudgetSignal)."""
        return self._state.signal(self.config, target_usd=target_usd, now=self._clock())

    def observe(self, spent_usd: float, target_usd: float) -> None:
        with self._lock:
            self._state = step(self._state, self.config, spent_usd, target_usd, self._clock())


# KEYS: the window's hash.  ARGV: spent, target, now, window (requests), window_s (0: by requests), gain,
# LIMIT, MAX_ERROR, INTEGRAL_REQUESTS, TTL ms, MIN_SET_POINT, COST_RATE, SET_POINT_COSTS.  The same arithmetic as step().
_OBSERVE = """
local v = redis.call('HMGET', KEYS[1], 's', 'r', 'n', 't', 'i', 'c')
local s, r, n, i = tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[5] or '0')
local c = tonumber(v[6] or '0')
local spent, target, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, window_s, gain = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local limit, max_error, integral_requests = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local min_set_point, cost_rate, set_point_costs = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local decay
if window_s > 0 then
  if v[4] then decay = math.exp(-math.max(0, now - tonumber(v[4])) / window_s) else decay = 0 end
else
  decay = 1 - 1 / window
end
s, r, n = s * decay + spent, r * decay + target, n * decay + 1
local steady = math.min(integral_requests, window)
if window_s > 0 then steady = integral_requests end
if spent > 0 then
  if c <= 0 then c = spent else c = c + cost_rate * (spent - c) end
end
local e = 0
if r > 0 then e = math.min(max_error, s / math.max(min_set_point * r, r - set_point_costs * c) - 1) end
i = math.max(-limit, math.min(limit, i + gain * e / steady))
redis.call('HSET', KEYS[1], 's', string.format('%.17g', s), 'r', string.format('%.17g', r),
  'n', string.format('%.17g', n), 't', string.format('%.17g', now), 'i', string.format('%.17g', i),
  'c', string.format('%.17g', c))
redis.call('PEXPIRE', KEYS[1], ARGV[10])
return 1
"""


class RedisMeanCostWindow:
    """One window for every process that uses the same Redis and ``key``; this process's own when Redis is down."""

    def __init__(
        self,
        config: MeanCostBudget,
        *,
        client: redis.Redis,
        key: str,
        clock: Callable[[], float] = time.time,
        outage: SharedStateOutage | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self._client = client
        self._clock = clock
        self.outage = outage or SharedStateOutage("mean-cost budget window kept per process")
        self._observe = client.register_script(_OBSERVE)
        self._errors = redis_errors()
        self.local = MeanCostWindow(config, clock)
        """This process's own window (every request it served), what planning falls back to."""

    def __repr__(self) -> str:
        return f"RedisMeanCostWindow({self.config.describe()}, key={self.key!r})"

    @property
    def _ttl_ms(self) -> int:
        span_s = 10 * self.config.window_s if self.config.window_s is not None else 7 * 86_400.0
        return math.ceil(span_s * 1000)

    def _fallback(self, target_usd: float | None) -> BudgetSignal:
        note = "shared budget window unreachable (Redis): this process's window only"
        return self.local.state.signal(self.config, note, target_usd=target_usd, now=self._clock())

    def signal(self, target_usd: float | None = None) -> BudgetSignal:
        if self.outage.down:
            return self._fallback(target_usd)
        try:
            raw = self._client.hmget(self.key, "s", "r", "n", "t", "i", "c")
        except self._errors as exc:
            self.outage.failed(exc)
            return self._fallback(target_usd)
        self.outage.succeeded()
        s, r, n, t, i, c = (None if v is None else float(v) for v in raw)
        state = WindowState(s or 0.0, r or 0.0, n or 0.0, t, i or 0.0, c or 0.0)
        return state.signal(self.config, target_usd=target_usd, now=self._clock())

    def observe(self, spent_usd: float, target_usd: float) -> None:
        self.local.observe(spent_usd, target_usd)
        if self.outage.down:
            return
        c = self.config
        args: list[str | int] = [
            repr(float(spent_usd)),
            repr(float(target_usd)),
            repr(float(self._clock())),
            c.window,
            repr(float(c.window_s or 0.0)),
            repr(float(c.gain)),
            repr(LIMIT),
            repr(MAX_ERROR),
            repr(INTEGRAL_REQUESTS),
            self._ttl_ms,
            repr(MIN_SET_POINT),
            repr(COST_RATE),
            repr(SET_POINT_COSTS),
        ]
        try:
            self._observe(keys=[self.key], args=args)
        except self._errors as exc:
            self.outage.failed(exc)
            return
        self.outage.succeeded()


def build_window(
    config: MeanCostBudget | None,
    backends: Collection[str],
    *,
    client: Any = None,
    url: Any = "",
    key_prefix: str = "rerank-router",
) -> BudgetWindow | None:
    """The window config ``budgets.mean_cost`` asks for: shared in Redis when a client is given."""
    if config is None:
        return None
    if config.of is not None and config.of not in backends:
        raise ConfigError(f"budgets.mean_cost.of: {config.of!r} is not a backend ({', '.join(sorted(backends))})")
    if client is None:
        return MeanCostWindow(config)
    outage = SharedStateOutage(f"mean-cost budget {config.name} kept per process", url)
    return RedisMeanCostWindow(config, client=client, key=f"{key_prefix}:meancost:{config.name}", outage=outage)


def request_target(config: MeanCostBudget, ctx: PlanningContext) -> float | None:
    """What this request was allowed on the mean: ``target_usd``, or ``share`` x the predicted cost of ``of``
    alone on its candidates; None when that cost is unknown (the request is left out of the window)."""
    if config.target_usd is not None:
        return config.target_usd
    assert config.share is not None and config.of is not None  # MeanCostBudget's validator
    if config.of not in ctx.backends:
        return None
    cost = ctx.estimate((Stage(config.of, ctx.features.n_candidates),)).estimate.cost_usd
    return None if cost is None else config.share * cost


def plan_signal(window: BudgetWindow, ctx: PlanningContext) -> BudgetSignal:
    """The signal planning ``ctx``'s request sees (its own target included in the headroom)."""
    return window.signal(request_target(window.config, ctx))


def observe_request(window: BudgetWindow, ctx: PlanningContext, billed_usd: float | None, predicted_usd: float | None) -> None:
    """Step 6 for the window: a served request's bill (its predicted cost where the bill is unknown) and its target."""
    spent = billed_usd if billed_usd is not None else predicted_usd
    target = request_target(window.config, ctx)
    if spent is None or target is None:
        return
    window.observe(spent, target)
