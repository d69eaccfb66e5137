"""Deciding between arms: each arm against the baseline (significantly better/worse, cheaper, faster, or
no significant difference), and the verdict, a winner only where an interval excludes 0."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from router.offline.report.arms import ArmData
from router.offline.report.formatting import Fmt, ci_name, money, ms, score, signed, span
from router.offline.report.stats import Interval, compare, mean, quantile

__all__ = ["Comparison", "Verdict", "compare_arms", "decide"]


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


def compare_arms(arm: ArmData, base: ArmData, label: str, rng: np.random.Generator, resamples: int, level: float) -> Comparison:
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
            f"{label} {signed(quality.estimate, score)} ({ci} {span(quality, score)}) vs {base.name} — significantly {better}"
        )
    elif quality.defined:
        parts.append(f"no significant difference in {label} vs {base.name} ({ci} {span(quality, score)}): keep collecting")
    else:
        parts.append(f"{label} not comparable with {base.name} yet (too little feedback): keep collecting")
    parts.append(_effect("cost", cost, ci, money, "per 1,000 requests ", ("cheaper", "more expensive")))
    parts.append(_effect("p95 latency", p95, ci, ms, "ms ", ("faster", "slower")))
    return Comparison(arm.name, base.name, quality, cost, p50, p95, f"{arm.name}: " + "; ".join(parts))


def _effect(what: str, iv: Interval, ci: str, fmt: Fmt, unit: str, words: tuple[str, str]) -> str:
    """``cost −$0.41 per 1,000 requests (95% CI …) — significantly cheaper`` or ``no significant difference in cost (…)``."""
    if not iv.defined:
        return f"{what} not comparable (too few values)"
    if iv.excludes_zero:
        return f"{what} {signed(iv.estimate, fmt)} {unit}({ci} {span(iv, fmt)}) — significantly {words[0] if iv.high < 0 else words[1]}"
    return f"no significant difference in {what} ({ci} {span(iv, fmt)})"


def decide(arms: Sequence[ArmData], label: str, rng: np.random.Generator, resamples: int, level: float) -> Verdict:
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
        text = f"{best.name} wins: {label} {signed(lead.estimate, score)} over {runner.name} ({ci} {span(lead, score)})"
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
        f"no winner yet: no significant difference in {label} ({best.name} {signed(lead.estimate, score)} over {runner.name}, "
        f"{ci} {span(lead, score)}) and no significant cost saving: keep collecting"
    )
    return Verdict(None, None, None, None, text)
