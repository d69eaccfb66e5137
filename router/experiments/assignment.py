"""Sticky arm assignment: a salted SHA-256 of the caller's key, mapped onto the arms' weights.

The same key always lands on the same arm, in every process and replica (no Python ``hash``,
no state), and keys spread uniformly: the first 64 bits of the digest, divided by 2**64, are
uniform on [0, 1), and arm ``i`` owns the slice of that interval proportional to its weight.
Changing one arm's weight moves only the callers in the slices that change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.decisions.record import key_digest
from router.experiments.config import ExperimentConfig

__all__ = ["Assignment", "assign", "unit_interval"]


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    arm: str
    key_digest: str | None
    """Digest of the key that chose the arm (the key itself is never stored)."""
    tenant: str | None
    sticky: bool
    """False when the request carried no key and was assigned by its request id."""
    reason: str


def unit_interval(salt: str, key: str) -> float:
    """A stable, uniform number in [0, 1) for ``key``."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(weights: Mapping[str, float], u: float) -> str:
    total = sum(weights.values())
    edge = 0.0
    positive = [(arm, w) for arm, w in weights.items() if w > 0]
    for arm, weight in positive:
        edge += weight / total
        if u < edge:
            return arm
    return positive[-1][0]  # u within rounding of 1.0


def assign(experiment: ExperimentConfig, context: Mapping[str, Any], query: str, request_id: str) -> Assignment:
    """Which arm serves this request, and why."""
    salt = experiment.salt if experiment.salt is not None else experiment.name
    tenant_value = context.get(experiment.tenant_key)
    tenant = None if tenant_value is None else str(tenant_value)
    override = experiment.tenants.get(tenant) if tenant is not None else None

    raw_key = query if experiment.key == "query" else context.get(experiment.key)
    sticky = raw_key is not None and str(raw_key) != ""
    key = str(raw_key) if sticky else request_id
    digest = key_digest(key, salt) if sticky else None

    if override is not None and override.arm is not None:
        return Assignment(experiment.name, override.arm, digest, tenant, True, f"tenant {tenant} is pinned to {override.arm}")
    weights = (
        override.weights
        if override is not None and override.weights is not None
        else {name: arm.weight for name, arm in experiment.arms.items()}
    )
    arm = _pick(weights, unit_interval(salt, key))
    source = f"tenant {tenant}'s weights" if override is not None else "the arms' weights"
    if sticky:
        reason = (
            f"hash of context.{experiment.key} over {source}" if experiment.key != "query" else f"hash of the query over {source}"
        )
    else:
        reason = f"no context.{experiment.key}: assigned by request id over {source} (not sticky)"
    return Assignment(experiment.name, arm, digest, tenant, sticky, reason)
