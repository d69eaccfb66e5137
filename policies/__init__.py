"""Routing policies: turn request features, budgets and constraints into a Plan.

``create_policy(name, params)`` builds one from config; ``POLICIES`` lists the names. Write your
own by implementing :class:`Policy` (a ``name`` and ``plan(ctx) -> Plan``) and reuse the shared
hard rules through :func:`assess`.
"""

from policies.base import (
    BackendView,
    PlanningContext,
    Policy,
    assess,
    by_cost,
    by_latency,
    by_quality,
    plan_by,
    single_stage_options,
)
from policies.registry import POLICIES, create_policy
from policies.rules import DEFAULT_RULES, Rule
from policies.simple import CheapestPolicy, ConstrainedPolicy, FastestPolicy, FixedPolicy

__all__ = [
    "DEFAULT_RULES",
    "POLICIES",
    "BackendView",
    "CheapestPolicy",
    "ConstrainedPolicy",
    "FastestPolicy",
    "FixedPolicy",
    "PlanningContext",
    "Policy",
    "Rule",
    "assess",
    "by_cost",
    "by_latency",
    "by_quality",
    "create_policy",
    "plan_by",
    "single_stage_options",
]
