"""Hard rules: small pure checks over (option, context), each returning a Rejection or None.

Every policy applies all of them to every option, fallbacks included, so that the explanation
lists every reason an option was turned down. Add a rule by writing a function of this shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from policies.context import PlanningContext, Rule
from router.plan import Option, Rejection

__all__ = [
    "CONSTRAINT_RULES",
    "DEFAULT_RULES",
    "STATIC_RULES",
    "Rule",
    "allowed_backend",
    "available",
    "check_all",
    "in_service",
    "license_ok",
    "residency_ok",
    "today",
    "within_cost_ceiling",
    "within_doc_limits",
    "within_latency_budget",
    "within_token_limits",
]


def available(option: Option, ctx: PlanningContext) -> Rejection | None:
    for stage in option.stages:
        view = ctx.backends[stage.backend]
        if not view.availability.ok:
            return Rejection("available", f"{stage.backend}: {view.availability.reason}")
    return None


def today() -> dt.date:
    """Today's date in UTC, read by :func:`in_service` on every check (tests monkeypatch it)."""
    return dt.datetime.now(dt.UTC).date()


def in_service(option: Option, ctx: PlanningContext) -> Rejection | None:
    """A backend whose provider has stopped serving it (``spec.available_until`` reached) is refused."""
    day: dt.date | None = None
    for name in option.backends:
        spec = ctx.backends[name].spec
        if spec.available_until is None:  # nothing to end: no need to read the clock (a datetime per check)
            continue
        day = day or today()
        if spec.ended(day):
            why = f"; {spec.lifecycle}" if spec.lifecycle else ""
            return Rejection(
                "available_until",
                f"{name}: {spec.model} is no longer served (available_until {spec.available_until:%Y-%m-%d}){why}",
            )
    return None


def allowed_backend(option: Option, ctx: PlanningContext) -> Rejection | None:
    allowed, blocked = ctx.constraints.allowed_backends, ctx.constraints.blocked_backends
    for name in option.backends:
        if name in blocked:
            return Rejection("allowed_backends", f"{name} is in constraints.blocked_backends")
        if allowed is not None and name not in allowed:
            return Rejection("allowed_backends", f"{name} is not in constraints.allowed_backends")
    return None


def license_ok(option: Option, ctx: PlanningContext) -> Rejection | None:
    c = ctx.constraints
    for name in option.backends:
        spec = ctx.backends[name].spec
        if c.allowed_licenses is not None and spec.license not in c.allowed_licenses:
            return Rejection("license", f"{name}: license {spec.license} not in constraints.allowed_licenses")
        if c.commercial_use and spec.commercial_use is not True:
            why = "forbids commercial use" if spec.commercial_use is False else "is unknown (set spec.license)"
            return Rejection("license", f"{name}: license {spec.license} {why}; the request is commercial")
    return None


def residency_ok(option: Option, ctx: PlanningContext) -> Rejection | None:
    if not ctx.constraints.on_premise:
        return None
    for name in option.backends:
        spec = ctx.backends[name].spec
        if spec.data_leaves_premises:
            where = spec.residency or f"sends documents to {spec.provider}"
            return Rejection("on_premise", f"{name}: {where}; the request is on-premise only")
    return None


def within_doc_limits(option: Option, ctx: PlanningContext) -> Rejection | None:
    for stage in option.stages:
        spec = ctx.backends[stage.backend].spec
        if spec.max_documents and stage.candidates_in > spec.max_documents and not spec.split_requests:
            return Rejection(
                "max_documents", f"{stage.backend}: {stage.candidates_in} candidates over its limit of {spec.max_documents}"
            )
    return None


def within_token_limits(option: Option, ctx: PlanningContext) -> Rejection | None:
    for stage in option.stages:
        spec = ctx.backends[stage.backend].spec
        stats = ctx.features.token_stats(spec.tokenizer_family)
        if spec.max_query_tokens and stats.query > spec.max_query_tokens:
            return Rejection(
                "max_query_tokens", f"{stage.backend}: query has ~{stats.query} tokens, limit {spec.max_query_tokens}"
            )
        if not ctx.constraints.allow_truncation and spec.max_tokens_per_doc:
            extra = stats.query if spec.input == "pair" else 0
            longest = extra + max(stats.docs[: stage.candidates_in], default=0)
            if longest > spec.max_tokens_per_doc:
                return Rejection(
                    "truncation",
                    f"{stage.backend}: an item of ~{longest} tokens exceeds its {spec.max_tokens_per_doc}-token context "
                    "and constraints.allow_truncation is false",
                )
    return None


COST_TOLERANCE_USD = 1e-9
"""A predicted cost within this many dollars over the ceiling is within it (the executor's
``CEILING_TOLERANCE_USD``, the same figure), so a ceiling set equal to an option's cost, e.g. a share of a
measured mean, does not flip on float noise in summed prices (a 4e-11 $/query difference once did)."""


def within_cost_ceiling(option: Option, ctx: PlanningContext) -> Rejection | None:
    ceiling = ctx.max_cost_usd
    if ceiling is None:
        return None
    cost = option.estimate.cost_usd
    if cost is None:
        return Rejection("max_cost", f"price unknown for {', '.join(option.backends)}; set spec.pricing.usd in config")
    if cost > ceiling + COST_TOLERANCE_USD:
        return Rejection("max_cost", f"predicted ${cost:.6f} over the ${ceiling:.6f} ceiling")
    return None


def within_latency_budget(option: Option, ctx: PlanningContext) -> Rejection | None:
    budget = ctx.latency_budget_ms
    if budget is None or option.estimate.latency_ms <= budget:
        return None
    return Rejection("latency_budget", f"predicted {option.estimate.latency_ms:.0f} ms over the {budget:.0f} ms budget")


DEFAULT_RULES: tuple[Rule, ...] = (
    available,
    in_service,
    allowed_backend,
    license_ok,
    residency_ok,
    within_doc_limits,
    within_token_limits,
    within_cost_ceiling,
    within_latency_budget,
)


CONSTRAINT_RULES: tuple[Rule, ...] = (in_service, allowed_backend, license_ok, residency_ok)
"""The rules no plan may break whatever budgets allow: the executor re-checks them before every call.
``in_service`` is one: no budget makes an ended provider answer, a policy of your own that skips
:data:`DEFAULT_RULES` must not reach it either, and a plan made before the date is re-checked on it."""


STATIC_RULES: frozenset[Rule] = frozenset({available, in_service, allowed_backend, license_ok, residency_ok})
"""Rules whose verdict on an option reads only its backends' views and the constraints (and, for
``in_service``, the day): :class:`~policies.context.RuleVerdicts` keeps them between requests."""


def check_all(option: Option, ctx: PlanningContext, rules: Sequence[Rule]) -> tuple[Rejection, ...]:
    verdicts = ctx.verdicts
    if (
        verdicts is not None
        and verdicts.backends is ctx.backends
        and verdicts.constraints is ctx.constraints
        and type(rules) is tuple  # immutable: its id names the same rules for as long as it is kept
    ):
        key = (id(rules), option.backends)
        found = verdicts.steps.get(key)
        if found is None or found[0] is not rules:
            found = verdicts.steps[key] = (rules, _steps(option, ctx, rules, verdicts.dated))
        steps: Sequence[Rule | Rejection] = found[1]
        if not steps:
            return ()
    else:
        steps = rules
    # A plain loop: every option of every plan comes through here (two nested generators cost more).
    rejections: list[Rejection] = []
    for step in steps:
        if type(step) is Rejection:
            rejections.append(step)
            continue
        rejection = step(option, ctx)  # type: ignore[operator]
        if rejection is not None:
            rejections.append(rejection)
    return tuple(rejections)


def _steps(option: Option, ctx: PlanningContext, rules: tuple[Rule, ...], dated: bool) -> tuple[Rule | Rejection, ...]:
    """``rules`` for ``option`` under ``ctx``'s views and constraints: each static rule's verdict
    (its Rejection, or nothing where it passes), every other rule as itself; in the rules' order."""
    steps: list[Rule | Rejection] = []
    for rule in rules:
        if rule not in STATIC_RULES or (dated and rule is in_service):
            steps.append(rule)
            continue
        rejection = rule(option, ctx)
        if rejection is not None:
            steps.append(rejection)
    return tuple(steps)
