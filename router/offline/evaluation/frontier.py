"""Cost-quality summaries in the manner of RouteLLM, with dollars in place of strong-model calls.

A policy swept over its budget gives points (mean $ per query, mean nDCG@10). Its *curve* is the
Pareto frontier of those points, joined linearly (a setting between two points is reached by
sending each query to one of the two at random in the right proportion), flat after the last point;
below its cheapest point a policy is credited with the weak tier's quality.

- weak tier: the cheapest single tier (ties: the better one); strong tier: the best single tier.
- PGR(c) = (q(c) - q_weak) / (q_strong - q_weak): the share of the weak-to-strong gap recovered
  at mean cost c. It can exceed 1 when a policy beats the strong tier.
- APGR: the mean of PGR over cost from 0 to the strong tier's cost, i.e. the area under PGR
  against cost as a share of the strong tier's (RouteLLM integrates over the share of strong calls;
  0.5 is what mixing weak and strong at random achieves).
- cost to reach a quality: the least mean cost at which the curve reaches it, e.g. 95% of the
  strong tier's nDCG@10 (``quality_share=0.95``) or RouteLLM's CPT(95%) (PGR 0.95).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Point", "apgr", "cost_to_reach", "curve", "pareto_frontier", "pgr", "quality_at", "strong_and_weak"]


@dataclass(frozen=True, slots=True)
class Point:
    label: str
    cost: float
    """Mean dollars per query."""
    quality: float


def pareto_frontier(points: Iterable[Point]) -> list[Point]:
    """Points no other point beats on both cost and quality, cheapest first (quality strictly rising)."""
    ordered = sorted(
        (p for p in points if math.isfinite(p.cost) and math.isfinite(p.quality)), key=lambda p: (p.cost, -p.quality)
    )
    frontier: list[Point] = []
    for p in ordered:
        if not frontier or p.quality > frontier[-1].quality:
            frontier.append(p)
    return frontier


def curve(points: Iterable[Point], weak: Point) -> list[tuple[float, float]]:
    """Breakpoints (cost, quality) of the piecewise-linear curve, starting at cost 0."""
    frontier = pareto_frontier(points)
    if not frontier:
        return [(0.0, weak.quality)]
    out = [(p.cost, p.quality) for p in frontier]
    if out[0][0] > 0:
        out.insert(0, (out[0][0], weak.quality))
        out.insert(0, (0.0, weak.quality))
    return out


def quality_at(breaks: Sequence[tuple[float, float]], cost: float) -> float:
    """The curve's quality at ``cost`` (flat after its last point)."""
    if cost <= breaks[0][0]:
        return breaks[0][1]
    for (c0, q0), (c1, q1) in pairwise(breaks):
        if cost <= c1:
            return q0 if c1 == c0 else q0 + (q1 - q0) * (cost - c0) / (c1 - c0)
    return breaks[-1][1]


def strong_and_weak(tiers: Iterable[Point]) -> tuple[Point, Point]:
    """(strong, weak): the best single tier, and the cheapest one (ties: the better)."""
    listed = [t for t in tiers if math.isfinite(t.cost) and math.isfinite(t.quality)]
    if not listed:
        raise ValueError("no priced tiers")
    strong = max(listed, key=lambda t: (t.quality, -t.cost))
    weak = min(listed, key=lambda t: (t.cost, -t.quality))
    return strong, weak


def pgr(quality: float, strong: Point, weak: Point) -> float:
    gap = strong.quality - weak.quality
    return math.nan if gap <= 0 else (quality - weak.quality) / gap


def apgr(points: Iterable[Point], strong: Point, weak: Point) -> float:
    """Average PGR over cost in [0, strong.cost] (exact integral of the piecewise-linear curve)."""
    if strong.cost <= 0 or strong.quality <= weak.quality:
        return math.nan
    breaks = curve(points, weak)
    end = strong.cost
    segments = [*pairwise(breaks), (breaks[-1], (max(end, breaks[-1][0]), breaks[-1][1]))]
    area = 0.0
    for (c0, q0), (c1, q1) in segments:
        lo, hi = max(c0, 0.0), min(c1, end)
        if hi <= lo:
            continue  # outside [0, strong.cost], or a vertical step

        def at(x: float, c0: float = c0, q0: float = q0, c1: float = c1, q1: float = q1) -> float:
            return q0 + (q1 - q0) * (x - c0) / (c1 - c0)

        area += (hi - lo) * (pgr(at(lo), strong, weak) + pgr(at(hi), strong, weak)) / 2
    return area / end


def cost_to_reach(points: Iterable[Point], target: float, weak: Point) -> float | None:
    """Least mean cost at which the curve reaches quality ``target``; None if it never does."""
    breaks = curve(points, weak)
    if breaks[0][1] >= target:
        return breaks[0][0]
    for (c0, q0), (c1, q1) in pairwise(breaks):
        if q1 >= target:
            return c1 if q1 == q0 else c0 + (c1 - c0) * (target - q0) / (q1 - q0)
    return None
