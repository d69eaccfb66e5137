"""Reports: the table, the JSON file and the cost-quality frontier plot (matplotlib, Agg, loaded lazily)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router.datasets import Dataset
from router.offline.evaluation.frontier import Point, apgr, cost_to_reach, pgr, strong_and_weak
from router.offline.evaluation.runner import RunResult
from router.offline.figures import pyplot, save_figure

__all__ = ["build_report", "format_table", "plot_frontier", "summarise", "write_json"]


def _point(run: RunResult) -> Point:
    return Point(run.label, run.cost_mean, run.ndcg)


def summarise(
    tiers: Sequence[RunResult], sweeps: Mapping[str, Sequence[RunResult]], quality_share: float = 0.95
) -> dict[str, Any]:
    """Strong and weak tiers, and per swept policy: APGR, cost to 95% of the strong tier's quality
    and cost to 95% PGR (RouteLLM's CPT(95%)), in dollars per query and as a share of the strong tier's cost."""
    priced = [_point(t) for t in tiers if math.isfinite(t.cost_mean)]
    if not priced:
        return {}
    strong, weak = strong_and_weak(priced)
    out: dict[str, Any] = {
        "strong": {"label": strong.label, "ndcg@10": strong.quality, "cost_usd": strong.cost},
        "weak": {"label": weak.label, "ndcg@10": weak.quality, "cost_usd": weak.cost},
        "quality_share": quality_share,
        "policies": {},
    }
    target_quality = quality_share * strong.quality
    target_pgr = weak.quality + quality_share * (strong.quality - weak.quality)
    for name, runs in sweeps.items():
        points = [_point(r) for r in runs if math.isfinite(r.cost_mean)]
        to_quality = cost_to_reach(points, target_quality, weak)
        to_pgr = cost_to_reach(points, target_pgr, weak)
        best = max(points, key=lambda p: p.quality) if points else None
        out["policies"][name] = {
            "apgr": apgr(points, strong, weak),
            "cost_to_95pct_quality_usd": to_quality,
            "cost_to_95pct_quality_share": None if to_quality is None or strong.cost <= 0 else to_quality / strong.cost,
            "cost_to_95pct_pgr_usd": to_pgr,
            "cost_to_95pct_pgr_share": None if to_pgr is None or strong.cost <= 0 else to_pgr / strong.cost,
            "best_ndcg@10": None if best is None else best.quality,
            "best_pgr": None if best is None else pgr(best.quality, strong, weak),
            "points": [{"label": p.label, "cost_usd": p.cost, "ndcg@10": p.quality} for p in points],
        }
    return out


def build_report(
    dataset: Dataset,
    runs: Sequence[RunResult],
    *,
    sweeps: Mapping[str, Sequence[RunResult]] | None = None,
    assumptions: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    per_query: bool = True,
) -> dict[str, Any]:
    tiers = [r for r in runs if r.kind == "tier"]
    return {
        "dataset": {"name": dataset.name, "domain": dataset.domain, "queries": len(dataset), "rel": dataset.rel},
        "runs": [r.to_json(per_query) for r in runs],
        "sweeps": {name: [r.summary() for r in rs] for name, rs in (sweeps or {}).items()},
        "summary": summarise(tiers, sweeps or {}),
        "assumptions": list(assumptions),
        **(extra or {}),
    }


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, default=_plain, allow_nan=True), encoding="utf-8")
    return target


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def format_table(runs: Sequence[RunResult], *, mix_width: int = 60) -> str:
    """A Markdown table: quality, cost per 1,000 queries, latency percentiles, tier mix, degraded."""
    if not runs:
        return ""
    labels = runs[0].measures.labels
    names = list(labels)
    header = ["run", "kind", *(labels[n] for n in names), "$ / 1k q", "p50 ms", "p95 ms", "degraded", "tier mix"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in runs:
        total = len(r.records) or 1
        mix = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in r.tier_mix.items())
        if len(mix) > mix_width:
            mix = mix[: mix_width - 1] + "…"
        cells = [
            r.label,
            r.kind,
            *(_fmt(r.metrics.get(n), ".4f") for n in names),
            _fmt(r.cost_per_1k, ".3f") + (f" ({r.unpriced} unpriced)" if r.unpriced else ""),
            _fmt(r.latency_p50, ".0f"),
            _fmt(r.latency_p95, ".0f"),
            str(r.degraded),
            mix,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_frontier(
    runs: Sequence[RunResult], sweeps: Mapping[str, Sequence[RunResult]], path: str | Path, *, title: str = ""
) -> Path:
    """Cost per 1,000 queries against nDCG@10: tiers, fixed cascades and policies as
    points, each swept policy as its Pareto curve."""
    plt = pyplot("frontier plot")

    from router.offline.evaluation.frontier import pareto_frontier

    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    markers = {"tier": "s", "cascade": "^", "policy": "o", "reference": "*"}
    tiers = [r for r in runs if r.kind == "tier" and math.isfinite(r.cost_mean)]
    if tiers:  # the strongest tier's quality, and 30% of its cost: where a router earns its keep
        strongest = max(tiers, key=lambda r: r.ndcg)
        ax.axhline(strongest.ndcg, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(300 * strongest.cost_mean, color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(f"{strongest.label}'s quality; 30% of its cost", (0, strongest.ndcg), xytext=(4, -10),
                    textcoords="offset points", fontsize=7, color="grey")  # fmt: skip
    for i, r in enumerate(runs):
        if not math.isfinite(r.cost_mean):
            continue
        ax.scatter(1000 * r.cost_mean, r.ndcg, marker=markers.get(r.kind, "o"), s=50, zorder=3)
        label = r.label.replace("@all", "").replace(" -> ", "→")
        size = 6 if r.kind == "cascade" else 7
        ax.annotate(
            label, (1000 * r.cost_mean, r.ndcg), textcoords="offset points", xytext=(5, 4 if i % 2 else -9), fontsize=size
        )
    for name, rs in sweeps.items():
        frontier = pareto_frontier(_point(r) for r in rs if math.isfinite(r.cost_mean))
        if frontier:
            ax.plot([1000 * p.cost for p in frontier], [p.quality for p in frontier], marker=".", label=f"{name} (budget sweep)")
    ax.set_xlabel("cost, US$ per 1,000 queries")
    ax.set_ylabel(runs[0].measures.primary if runs else "nDCG@10")
    ax.set_title(title or "cost-quality frontier")
    ax.grid(True, alpha=0.3)
    if sweeps:
        ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
