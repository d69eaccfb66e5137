"""The A/B report: per arm latency, cost and quality with bootstrap intervals, each arm against a
baseline, and a verdict only where an interval excludes 0.

    log = read_log("decisions.jsonl")
    report = build_report(log, baseline="control", seed=0)
    print(report.format())
    write_json(report, "report.json"); plot_report(report, "report.png")  # router.experiments.plot

Quality is nDCG@10 over requests whose feedback carries graded relevance, else click MRR@10 over
requests with any feedback (a feedback record without clicks scores 0); both through ir-measures,
qrels from the feedback (grades rounded to integers), run from ``top_ids`` best first. Requests
without feedback count for latency and cost only. Cost is ``actual_cost_usd``, falling back to
``predicted_cost_usd`` (and the report says how often); requests with neither are left out of cost.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router.decisions.reader import LogContents
from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import ConfigError, MissingDependencyError, UnknownNameError
from router.experiments.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Interval, bootstrap, compare, mean, quantile

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

Metric = Literal["auto", "ndcg@10", "mrr@10"]
METRICS: tuple[Metric, ...] = ("auto", "ndcg@10", "mrr@10")
_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10"}
_MINUS = "\u2212"
_Fmt = Callable[[float], str]
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
class Comparison:
    """``arm`` minus ``baseline``: quality, cost per 1,000 requests, latency percentiles."""

    arm: str
    baseline: str
    quality: Interval
    cost_usd_per_1k: Interval
    latency_p50_ms: Interval
    latency_p95_ms: Interval
    text: str

    @property
    def paired(self) -> bool:
        return bool(self.latency_p50_ms.paired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "baseline": self.baseline,
            "paired": self.paired,
            "quality": self.quality.to_dict(),
            "cost_usd_per_1k": self.cost_usd_per_1k.to_dict(),
            "latency_p50_ms": self.latency_p50_ms.to_dict(),
            "latency_p95_ms": self.latency_p95_ms.to_dict(),
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: str | None
    basis: Literal["quality", "cost"] | None
    """``quality``: a significant quality lead; ``cost``: same quality within CI, significantly cheaper."""
    against: str | None
    """The closest rival: the interval is the winner's lead over it."""
    interval: Interval | None
    """Quality difference (basis quality) or relative cost change, e.g. -0.62 for 62% cheaper (basis cost)."""
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "basis": self.basis,
            "against": self.against,
            "interval": None if self.interval is None else self.interval.to_dict(),
            "text": self.text,
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
            cost = _cell(a.cost_usd.scaled(1000), _money) + ("*" if a.n_cost_predicted else "")
            mix = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(a.tier_mix.items())[:3])
            cells = [name, f"{a.n_requests:,}", f"{a.n_feedback:,}", _cell(a.quality, _q), _cell(a.latency_p50_ms, _ms),
                     _cell(a.latency_p95_ms, _ms), cost, f"{100 * a.degraded_share:.1f}%", mix]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if any(a.n_cost_predicted for a in self.arms):
            lines.append("* cost includes predicted cost where no actual cost was recorded")
        lines.append("")
        lines.extend(c.text for c in self.comparisons)
        lines.extend(["", f"verdict: {self.verdict.text}"])
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# -- building -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Arm:
    """One arm's observations, keyed by request id (what the bootstrap resamples)."""

    name: str
    decisions: list[DecisionRecord]
    quality: dict[str, float]
    latency: dict[str, float]
    cost: dict[str, float]


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
    notes: list[str] = []
    name, decisions = _select(log, experiment, include_shadow)
    resolved = _resolve_metric(metric, decisions, log.feedback)
    label = _LABELS[resolved]
    arms = _group(decisions, log.feedback, resolved, notes)
    base = _baseline(arms, baseline)

    def boot(values: Mapping[str, float], q: float | None = None) -> Interval:
        statistic = mean if q is None else quantile(q)
        return bootstrap(list(values.values()), statistic, rng=rng, resamples=resamples, level=level)

    summaries = tuple(_summarise(a, log.feedback, boot) for a in arms)
    comparisons = tuple(_compare(a, base, label, rng, resamples, level) for a in arms if a is not base)
    verdict = _verdict(arms, label, rng, resamples, level)
    notes[:0] = _notes(log, resolved, summaries, include_shadow)
    return ExperimentReport(
        experiment=name,
        metric=label,
        baseline=base.name,
        arms=summaries,
        comparisons=comparisons,
        verdict=verdict,
        notes=tuple(notes),
        sources=log.sources,
        invalid_lines=log.invalid_lines,
        resamples=resamples,
        level=level,
        seed=seed if seeded else None,
    )


def _select(log: LogContents, experiment: str | None, include_shadow: bool) -> tuple[str | None, list[DecisionRecord]]:
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


def _resolve_metric(metric: Metric, decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord]) -> str:
    if metric != "auto":
        return metric
    graded = any(feedback[d.request_id].relevance for d in decisions if d.request_id in feedback)
    return "ndcg@10" if graded else "mrr@10"


def _group(
    decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord], metric: str, notes: list[str]
) -> list[_Arm]:
    by_arm: dict[str, dict[str, DecisionRecord]] = {}
    duplicates = 0
    for d in decisions:
        seen = by_arm.setdefault(str(d.arm), {})
        if d.request_id in seen:
            duplicates += 1
            continue
        seen[d.request_id] = d
    if duplicates:
        notes.append(f"{duplicates} repeated decisions (same arm and request id) counted once: was a log read twice?")
    arms = []
    for name, records in by_arm.items():
        costs = {rid: c for rid, d in records.items() if (c := _cost(d)) is not None}
        arms.append(
            _Arm(
                name=name,
                decisions=list(records.values()),
                quality=_quality(list(records.values()), feedback, metric),
                latency={rid: d.latency_ms for rid, d in records.items()},
                cost=costs,
            )
        )
    return arms


def _cost(d: DecisionRecord) -> float | None:
    return d.actual_cost_usd if d.actual_cost_usd is not None else d.predicted_cost_usd


def _ir_measures() -> Any:
    try:
        import ir_measures
    except ImportError as exc:
        raise MissingDependencyError("the report's quality needs ir-measures: pip install 'rerank-router[eval]'") from exc
    return ir_measures


def _quality(decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord], metric: str) -> dict[str, float]:
    """request id -> nDCG@10 (graded feedback) or MRR@10 (clicks), through ir-measures."""
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    judged: list[str] = []
    for d in decisions:
        fb = feedback.get(d.request_id)
        if fb is None or (metric == "ndcg@10" and not fb.relevance):
            continue
        if metric == "mrr@10" and d.shadow:
            continue  # users clicked the ranking they were served, not the shadow arm's
        judged.append(d.request_id)
        grades = {doc: round(g) for doc, g in fb.relevance.items()} if metric == "ndcg@10" else dict.fromkeys(fb.clicked, 1)
        if grades:
            qrels[d.request_id] = grades
        ranked: dict[str, float] = {}
        for i, doc in enumerate(d.top_ids):
            ranked.setdefault(doc, float(len(d.top_ids) - i))
        if ranked:
            run[d.request_id] = ranked
    if not judged:
        return {}
    ir = _ir_measures()
    measure = ir.nDCG @ 10 if metric == "ndcg@10" else ir.RR @ 10
    values = dict.fromkeys(judged, 0.0)  # no judged relevant document, or nothing ranked: 0
    if qrels and run:
        for m in ir.iter_calc([measure], qrels, run):
            values[m.query_id] = float(m.value)
    return values


def _baseline(arms: Sequence[_Arm], name: str | None) -> _Arm:
    if name is not None:
        for arm in arms:
            if arm.name == name:
                return arm
        raise UnknownNameError("arm", name, [a.name for a in arms])
    # most primary traffic (shadow runs do not count), first seen on ties
    return max(arms, key=lambda a: sum(not d.shadow for d in a.decisions))


def _summarise(arm: _Arm, feedback: Mapping[str, FeedbackRecord], boot: _Boot) -> ArmSummary:
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


def _compare(arm: _Arm, base: _Arm, label: str, rng: np.random.Generator, resamples: int, level: float) -> Comparison:
    kw: dict[str, Any] = {"rng": rng, "resamples": resamples, "level": level}
    quality = compare(arm.quality, base.quality, mean, **kw)
    cost = compare(arm.cost, base.cost, mean, **kw).scaled(1000)
    p50 = compare(arm.latency, base.latency, quantile(0.5), **kw)
    p95 = compare(arm.latency, base.latency, quantile(0.95), **kw)
    ci = ci_name(level)
    parts = []
    if quality.excludes_zero:
        better = "better" if quality.low > 0 else "worse"
        parts.append(
            f"{label} {_signed(quality.estimate, _q)} ({ci} {_range(quality, _q)}) vs {base.name} — significantly {better}"
        )
    elif quality.defined:
        parts.append(f"no significant difference in {label} vs {base.name} ({ci} {_range(quality, _q)}): keep collecting")
    else:
        parts.append(f"{label} not comparable with {base.name} yet (too little feedback): keep collecting")
    parts.append(_effect("cost", cost, ci, _money, "per 1,000 requests ", ("cheaper", "more expensive")))
    parts.append(_effect("p95 latency", p95, ci, _ms, "ms ", ("faster", "slower")))
    return Comparison(arm.name, base.name, quality, cost, p50, p95, f"{arm.name}: " + "; ".join(parts))


def _effect(what: str, iv: Interval, ci: str, fmt: _Fmt, unit: str, words: tuple[str, str]) -> str:
    """``cost −$0.41 per 1,000 requests (95% CI …) — significantly cheaper`` or ``no significant difference in cost (…)``."""
    if not iv.defined:
        return f"{what} not comparable (too few values)"
    if iv.excludes_zero:
        return f"{what} {_signed(iv.estimate, fmt)} {unit}({ci} {_range(iv, fmt)}) — significantly {words[0] if iv.high < 0 else words[1]}"
    return f"no significant difference in {what} ({ci} {_range(iv, fmt)})"


def _verdict(arms: Sequence[_Arm], label: str, rng: np.random.Generator, resamples: int, level: float) -> Verdict:
    """The best-quality arm if its lead over every other arm is significant; else, among the arms whose quality
    is not significantly below the best, the cheapest if it is significantly cheaper than each; else none."""
    ci = ci_name(level)
    kw: dict[str, Any] = {"rng": rng, "resamples": resamples, "level": level}
    if len(arms) < 2:
        return Verdict(None, None, None, None, f"no winner yet: only one arm ({arms[0].name})")
    short = [a for a in arms if len(a.quality) < 2]
    if short:
        names = ", ".join(f"{a.name} ({len(a.quality)})" for a in short)
        return Verdict(
            None, None, None, None, f"no winner yet: too little feedback to judge {label} for {names}: keep collecting"
        )
    ranked = sorted(arms, key=lambda a: -float(np.mean(list(a.quality.values()))))
    best, runner = ranked[0], ranked[1]
    leads = {a.name: compare(best.quality, a.quality, mean, **kw) for a in ranked[1:]}
    if all(iv.defined and iv.low > 0 for iv in leads.values()):
        lead = leads[runner.name]
        text = f"{best.name} wins: {label} {_signed(lead.estimate, _q)} over {runner.name} ({ci} {_range(lead, _q)})"
        return Verdict(best.name, "quality", runner.name, lead, text)
    tied = [best, *(a for a in ranked[1:] if not leads[a.name].low > 0)]
    if all(len(a.cost) >= 2 for a in tied):
        cheapest = min(tied, key=lambda a: float(np.mean(list(a.cost.values()))))
        savings = {a.name: compare(cheapest.cost, a.cost, mean, contrast="relative", **kw) for a in tied if a is not cheapest}
        if all(iv.defined and iv.high < 0 for iv in savings.values()):
            rival = max(savings, key=lambda name: savings[name].estimate)  # the smallest saving
            s = savings[rival]
            text = (
                f"{cheapest.name} wins: same {label} within CI, {-100 * s.estimate:.0f}% cheaper than {rival} "
                f"({ci} {-100 * s.high:.0f}% to {-100 * s.low:.0f}%)"
            )
            return Verdict(cheapest.name, "cost", rival, s, text)
    lead = leads[runner.name]
    text = (
        f"no winner yet: no significant difference in {label} ({best.name} {_signed(lead.estimate, _q)} over {runner.name}, "
        f"{ci} {_range(lead, _q)}) and no significant cost saving: keep collecting"
    )
    return Verdict(None, None, None, None, text)


def _notes(log: LogContents, metric: str, arms: Sequence[ArmSummary], include_shadow: bool) -> list[str]:
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
    return notes


# -- formatting ---------------------------------------------------------------------------------------
def ci_name(level: float) -> str:
    return f"{100 * level:g}% CI"


def _q(x: float) -> str:
    return f"{x:.3f}"


def _ms(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def _money(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:#.3g}"


def _neg(text: str) -> str:
    return text.replace("-", _MINUS)


def _signed(x: float, fmt: _Fmt) -> str:
    body = fmt(abs(x))
    return (_MINUS if x < 0 else "+") + body


def _range(iv: Interval, fmt: _Fmt) -> str:
    def one(x: float) -> str:
        return (_MINUS if x < 0 else "") + fmt(abs(x))

    return f"{one(iv.low)} to {one(iv.high)}"


def _cell(iv: Interval, fmt: _Fmt) -> str:
    if not math.isfinite(iv.estimate):
        return "-"
    if not iv.defined:
        return _neg(fmt(iv.estimate))
    return f"{_neg(fmt(iv.estimate))} [{_range(iv, fmt)}]"


# -- output -------------------------------------------------------------------------------------------
def write_json(report: ExperimentReport, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return target
