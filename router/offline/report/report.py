"""The A/B report: per arm latency, cost and quality with bootstrap intervals, each arm against a
baseline, and a verdict only where an interval excludes 0. This module builds it and writes it out;
arms.py reads the arms from the log, quality.py scores them, verdict.py compares and judges them,
formatting.py writes the numbers.

    log = read_log("decisions.jsonl")
    report = build_report(log, baseline="control", seed=0)
    print(report.format())
    write_json(report, "report.json"); plot_report(report, "report.png")  # router.offline.report.plot

Quality is nDCG@10 over requests whose feedback carries graded relevance, else click MRR@10 over
requests with any feedback (a feedback record without clicks scores 0); both through ir-measures,
qrels from the feedback (grades rounded to integers), run from ``top_ids`` best first. Requests
without feedback count for latency and cost only. Cost is ``actual_cost_usd``, falling back to
``predicted_cost_usd`` (and the report says how often); requests with neither are left out of cost.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.decisions.reader import LogContents
from router.decisions.record import FeedbackRecord
from router.errors import ConfigError, UnknownNameError
from router.offline.report.arms import ArmData, choose_baseline, group_arms, select_decisions
from router.offline.report.formatting import cell, ci_name, money, ms, score
from router.offline.report.quality import LABELS, METRICS, Metric, resolve_metric
from router.offline.report.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Interval, bootstrap, mean, quantile
from router.offline.report.verdict import Comparison, Verdict, compare_arms, decide

__all__ = [
    "METRICS",
    "ArmSummary",
    "Comparison",
    "ExperimentReport",
    "Verdict",
    "build_report",
    "ci_name",
    "write_json",
]

_Boot = Callable[..., Interval]


@dataclass(frozen=True, slots=True)
class ArmSummary:
    arm: str
    n_requests: int
    n_shadow: int
    """Of ``n_requests``, how many were shadow runs."""
    n_feedback: int
    n_quality: int
    """Requests that entered the quality metric (graded ones for nDCG@10)."""
    quality: Interval
    latency_p50_ms: Interval
    latency_p95_ms: Interval
    cost_usd: Interval
    """Mean cost per request, US$."""
    n_cost_predicted: int
    """Requests whose cost is the predicted one: no actual cost was recorded."""
    n_unpriced: int
    degraded_share: float
    tier_mix: Mapping[str, float]
    """Backends that shaped the order (``a → b``) -> share of requests, most common first."""

    @property
    def cost_source(self) -> str:
        priced = self.n_requests - self.n_unpriced
        if priced == 0:
            return "none"
        if self.n_cost_predicted == 0:
            return "actual"
        return "predicted" if self.n_cost_predicted == priced else "actual+predicted"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "n_requests": self.n_requests,
            "n_shadow": self.n_shadow,
            "n_feedback": self.n_feedback,
            "n_quality": self.n_quality,
            "quality": self.quality.to_dict(),
            "latency_p50_ms": self.latency_p50_ms.to_dict(),
            "latency_p95_ms": self.latency_p95_ms.to_dict(),
            "cost_usd_per_request": self.cost_usd.to_dict(),
            "cost_usd_per_1k": self.cost_usd.scaled(1000).to_dict(),
            "cost_source": self.cost_source,
            "n_cost_predicted": self.n_cost_predicted,
            "n_unpriced": self.n_unpriced,
            "degraded_share": self.degraded_share,
            "tier_mix": dict(self.tier_mix),
        }


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    experiment: str | None
    metric: str
    """``nDCG@10`` or ``MRR@10``."""
    baseline: str
    arms: tuple[ArmSummary, ...]
    comparisons: tuple[Comparison, ...]
    verdict: Verdict
    notes: tuple[str, ...]
    sources: tuple[str, ...]
    invalid_lines: int
    resamples: int
    level: float
    seed: int | None

    def arm(self, name: str) -> ArmSummary:
        for summary in self.arms:
            if summary.arm == name:
                return summary
        raise UnknownNameError("arm", name, [a.arm for a in self.arms])

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "metric": self.metric,
            "baseline": self.baseline,
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "sources": list(self.sources),
            "invalid_lines": self.invalid_lines,
            "arms": [a.to_dict() for a in self.arms],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "verdict": self.verdict.to_dict(),
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """The text report: a Markdown table per arm, one line per comparison, the verdict, notes."""
        ci = ci_name(self.level)
        title = f"experiment {self.experiment or '(unnamed)'}: {len(self.arms)} arms, {sum(a.n_requests for a in self.arms):,} decisions"
        head = [
            "arm",
            "requests",
            "feedback",
            f"{self.metric} ({ci})",
            "p50 ms",
            "p95 ms",
            "$ / 1k requests",
            "degraded",
            "tier mix",
        ]
        lines = [title, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for a in self.arms:
            name = a.arm + (" (baseline)" if a.arm == self.baseline else "") + (f" [{a.n_shadow} shadow]" if a.n_shadow else "")
            cost = cell(a.cost_usd.scaled(1000), money) + ("*" if a.n_cost_predicted else "")
            mix = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(a.tier_mix.items())[:3])
            cells = [name, f"{a.n_requests:,}", f"{a.n_feedback:,}", cell(a.quality, score), cell(a.latency_p50_ms, ms),
                     cell(a.latency_p95_ms, ms), cost, f"{100 * a.degraded_share:.1f}%", mix]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if any(a.n_cost_predicted for a in self.arms):
            lines.append("* cost includes predicted cost where no actual cost was recorded")
        lines.append("")
        lines.extend(c.text for c in self.comparisons)
        lines.extend(["", f"verdict: {self.verdict.text}"])
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# -- building -----------------------------------------------------------------------------------------
def build_report(
    log: LogContents,
    *,
    experiment: str | None = None,
    baseline: str | None = None,
    metric: Metric = "auto",
    include_shadow: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
) -> ExperimentReport:
    """Compare the arms of one experiment in ``log``. Raises ConfigError naming what to fix when the log
    holds no experiment decisions, several experiments and none chosen, or an unknown baseline arm."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    seeded = rng is None
    rng = np.random.default_rng(seed) if rng is None else rng
    name, decisions = select_decisions(log, experiment, include_shadow)
    resolved = resolve_metric(metric, decisions, log.feedback)
    label = LABELS[resolved]
    arms, duplicates = group_arms(decisions, log.feedback, resolved)
    base = choose_baseline(arms, baseline)

    def boot(values: Mapping[str, float], q: float | None = None) -> Interval:
        statistic = mean if q is None else quantile(q)
        return bootstrap(list(values.values()), statistic, rng=rng, resamples=resamples, level=level)

    summaries = tuple(_summarise(a, log.feedback, boot) for a in arms)
    comparisons = tuple(compare_arms(a, base, label, rng, resamples, level) for a in arms if a is not base)
    verdict = decide(arms, label, rng, resamples, level)
    return ExperimentReport(
        experiment=name,
        metric=label,
        baseline=base.name,
        arms=summaries,
        comparisons=comparisons,
        verdict=verdict,
        notes=tuple(_notes(log, resolved, summaries, include_shadow, duplicates)),
        sources=log.sources,
        invalid_lines=log.invalid_lines,
        resamples=resamples,
        level=level,
        seed=seed if seeded else None,
    )


def _summarise(arm: ArmData, feedback: Mapping[str, FeedbackRecord], boot: _Boot) -> ArmSummary:
    n = len(arm.decisions)
    mix = Counter(" → ".join(d.backends) or "(retriever order)" for d in arm.decisions)
    return ArmSummary(
        arm=arm.name,
        n_requests=n,
        n_shadow=sum(d.shadow for d in arm.decisions),
        n_feedback=sum(d.request_id in feedback for d in arm.decisions),
        n_quality=len(arm.quality),
        quality=boot(arm.quality),
        latency_p50_ms=boot(arm.latency, 0.5),
        latency_p95_ms=boot(arm.latency, 0.95),
        cost_usd=boot(arm.cost),
        n_cost_predicted=sum(d.actual_cost_usd is None and d.predicted_cost_usd is not None for d in arm.decisions),
        n_unpriced=n - len(arm.cost),
        degraded_share=sum(d.degraded for d in arm.decisions) / n,
        tier_mix={k: v / n for k, v in mix.most_common()},
    )


def _notes(log: LogContents, metric: str, arms: Sequence[ArmSummary], include_shadow: bool, duplicates: int) -> list[str]:
    notes = []
    if log.invalid_lines:
        first = f" (first: {log.invalid_examples[0]})" if log.invalid_examples else ""
        lines = "line" if log.invalid_lines == 1 else "lines"
        notes.append(f"skipped {log.invalid_lines} invalid log {lines}{first}: torn writes or foreign records")
    if metric == "ndcg@10":
        notes.append("quality: nDCG@10 over requests whose feedback has graded relevance")
    else:
        notes.append("quality: click MRR@10 over requests with feedback (no click scores 0)")
    if all(a.n_quality == 0 for a in arms):
        notes.append("no request has usable feedback" + (": use --metric mrr@10 for clicks" if metric == "ndcg@10" else ""))
    for a in arms:
        if a.n_cost_predicted:
            notes.append(
                f"{a.arm}: cost is the predicted cost for {a.n_cost_predicted} of {a.n_requests} requests (no actual cost recorded)"
            )
        if a.n_unpriced:
            notes.append(f"{a.arm}: {a.n_unpriced} requests without any cost left out of cost")
    if include_shadow and any(a.n_shadow for a in arms):
        notes.append("shadow runs included: arms that scored the same requests are compared paired")
        if metric == "mrr@10":
            notes.append(
                "no click MRR for shadow runs: users clicked the ranking they were served, which says little of "
                "a ranking they never saw; judge shadow arms on graded relevance (record_feedback(relevance=...))"
            )
    if duplicates:
        notes.append(f"{duplicates} repeated decisions (same arm and request id) counted once: was a log read twice?")
    return notes


# -- output -------------------------------------------------------------------------------------------
def write_json(report: ExperimentReport, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return target
