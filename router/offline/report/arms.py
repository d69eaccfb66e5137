"""Reading an experiment's arms from the decision log: which decisions belong to the experiment, each
arm's quality, latency and cost keyed by request id, and which arm is the baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.decisions.reader import LogContents
from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import ConfigError, UnknownNameError
from router.offline.report.quality import quality_by_request

__all__ = ["ArmData", "choose_baseline", "group_arms", "select_decisions"]


@dataclass(slots=True)
class ArmData:
    """One arm's observations, keyed by request id (what the bootstrap resamples)."""

    name: str
    decisions: list[DecisionRecord]
    quality: dict[str, float]
    latency: dict[str, float]
    cost: dict[str, float]
    """``actual_cost_usd``, falling back to ``predicted_cost_usd``; requests with neither are left out."""


def select_decisions(log: LogContents, experiment: str | None, include_shadow: bool) -> tuple[str | None, list[DecisionRecord]]:
    """The experiment's name and its decisions in arms. Raises ConfigError naming what to fix when there
    are none, or several experiments and none chosen; UnknownNameError for an unknown experiment."""
    where = ", ".join(log.sources) or "the log"
    if not log.decisions:
        raise ConfigError(f"{where}: no decisions in the log; point report at the file the router's decision log writes")
    in_arms = [d for d in log.decisions if d.arm is not None and (include_shadow or not d.shadow)]
    if not in_arms:
        raise ConfigError(
            f"{where}: {len(log.decisions)} decisions but none assigned to an experiment arm"
            + ("" if include_shadow else " outside shadow runs (try --include-shadow)")
            + "; configure experiments in the router's config"
        )
    names = list(dict.fromkeys(d.experiment for d in in_arms))
    if experiment is not None:
        if experiment not in names:
            raise UnknownNameError("experiment", experiment, [str(n) for n in names if n is not None])
        return experiment, [d for d in in_arms if d.experiment == experiment]
    if len(names) > 1:
        listed = ", ".join(str(n) for n in names)
        raise ConfigError(f"{where}: several experiments ({listed}); choose one with --experiment NAME")
    return names[0], in_arms


def group_arms(
    decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord], metric: str
) -> tuple[list[ArmData], int]:
    """The arms in order of first appearance, and how many repeated decisions (same arm and request id)
    were counted once."""
    by_arm: dict[str, dict[str, DecisionRecord]] = {}
    duplicates = 0
    for d in decisions:
        seen = by_arm.setdefault(str(d.arm), {})
        if d.request_id in seen:
            duplicates += 1
            continue
        seen[d.request_id] = d
    arms = []
    for name, records in by_arm.items():
        costs = {rid: c for rid, d in records.items() if (c := _cost(d)) is not None}
        arms.append(
            ArmData(
                name=name,
                decisions=list(records.values()),
                quality=quality_by_request(list(records.values()), feedback, metric),
                latency={rid: d.latency_ms for rid, d in records.items()},
                cost=costs,
            )
        )
    return arms, duplicates


def choose_baseline(arms: Sequence[ArmData], name: str | None) -> ArmData:
    """The named arm, else the one with the most primary traffic (shadow runs do not count), first seen on ties."""
    if name is not None:
        for arm in arms:
            if arm.name == name:
                return arm
        raise UnknownNameError("arm", name, [a.name for a in arms])
    return max(arms, key=lambda a: sum(not d.shadow for d in a.decisions))


def _cost(d: DecisionRecord) -> float | None:
    return d.actual_cost_usd if d.actual_cost_usd is not None else d.predicted_cost_usd
