"""Plans: what to run, in which order, with what predicted latency, cost and quality.

An :class:`Option` is one way to rank a request: a sequence of stages (a single backend, or a
cascade: cheap model on all N, strong model on the top k). The option with no stages is the
retriever's own order, always feasible and always the last resort. A :class:`Plan` is the option
a policy chose, the fallbacks it allows (all obeying the same hard constraints) and every option
it assessed with the reasons it rejected it, which is the explanation users read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from router.shells import shell_of

__all__ = [
    "RETRIEVER_ORDER",
    "Assessed",
    "Escalation",
    "Estimate",
    "Evidence",
    "Option",
    "Plan",
    "Rejection",
    "Stage",
    "option_name",
]

RETRIEVER_ORDER = "retriever-order"


def option_name(stages: Iterable[tuple[str, int | None]], margins: Sequence[float | None] = ()) -> str:
    """The one way an option is named: ``retriever-order``; ``a`` (one backend on every candidate);
    ``a@all -> b@20`` (a stage's candidate count, ``all`` for None), ``?m<0.08`` after a stage that
    escalates only below that first-stage margin."""
    stages = list(stages)
    if not stages:
        return RETRIEVER_ORDER
    if len(stages) == 1 and stages[0][1] is None:
        return stages[0][0]
    margin = list(margins) + [None] * (len(stages) - len(margins))
    return " -> ".join(
        f"{b}@{'all' if k is None else k}" + ("" if m is None else f"?m<{m:.3g}")
        for (b, k), m in zip(stages, margin, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Stage:
    backend: str
    candidates_in: int
    """Score the top ``candidates_in`` of the order so far (all N for a first stage)."""
    escalate_below_margin: float | None = None
    """Adaptive cascade: run this stage only when the previous stage's top-1 minus top-2 score
    margin is below this calibrated threshold (the previous stage is unsure); None: always run."""
    escalation: Escalation | None = field(default=None, compare=False)
    """Escalation from first-stage evidence: after the previous stage, this rule picks the stage to run
    in this one's place (another strong backend or k, each one the policy checked against every rule
    when it planned; this stage is the costliest of them) or none, with the reason for the explanation."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What an escalation rule sees: the query and the previous stage's scores, one per candidate it
    scored, in the order it received them (a first stage's: the retriever's order)."""

    query: str
    scores: tuple[float, ...]
    retriever_scores: tuple[float, ...] | None = None
    """The retriever's own score of each candidate, in the same order (documents' ``score``); None: not given."""


class Escalation(Protocol):
    def choose(self, evidence: Evidence) -> tuple[Stage | None, str]:
        """The stage to run (None: stop here) and why, in one line."""
        ...


@dataclass(frozen=True, slots=True)
class Estimate:
    latency_ms: float
    cost_usd: float | None
    """None: price unknown."""
    quality: float | None
    """Expected nDCG@10 in the request's domain; None: unknown."""


@dataclass(frozen=True, slots=True)
class Option:
    stages: tuple[Stage, ...]
    estimate: Estimate
    notes: tuple[str, ...] = ()
    stage_estimates: tuple[Estimate, ...] = ()
    """One per stage, in order."""

    @property
    def name(self) -> str:
        # What option_name gives for no stage and for one stage on every candidate, without its
        # passes: planning and the explanation read the name of every option.
        if not self.stages:
            return RETRIEVER_ORDER
        if len(self.stages) == 1:
            return self.stages[0].backend
        return option_name(((s.backend, s.candidates_in) for s in self.stages), [s.escalate_below_margin for s in self.stages])

    @property
    def backends(self) -> tuple[str, ...]:
        if len(self.stages) == 1:  # most options (the rules read this per option): no generator
            return (self.stages[0].backend,)
        return tuple(s.backend for s in self.stages)


@dataclass(frozen=True, slots=True)
class Rejection:
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Assessed:
    option: Option
    rejections: tuple[Rejection, ...]

    @property
    def feasible(self) -> bool:
        return not self.rejections


@dataclass(frozen=True, slots=True)
class Plan:
    policy: str
    primary: Option
    fallbacks: tuple[Option, ...]
    assessed: tuple[Assessed, ...]
    reason: str
    """Why the primary was chosen, in one sentence."""

    @property
    def options_in_order(self) -> tuple[Option, ...]:
        return (self.primary, *self.fallbacks)


# Constructors for what planning builds on every request (router.shells): the same classes, the same values.
new_stage: Callable[..., Stage] = shell_of(Stage)
new_estimate: Callable[..., Estimate] = shell_of(Estimate)
new_option: Callable[..., Option] = shell_of(Option)
new_assessed: Callable[..., Assessed] = shell_of(Assessed)
new_plan: Callable[..., Plan] = shell_of(Plan)
