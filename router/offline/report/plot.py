"""The A/B report's plot: quality per arm with its interval, p50/p95 latency per arm with theirs."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.offline.figures import pyplot, save_figure
from router.offline.report.report import ExperimentReport, ci_name
from router.offline.report.stats import Interval

__all__ = ["plot_report"]


def plot_report(report: ExperimentReport, path: str | Path) -> Path:
    """Two panels: quality per arm with its CI as error bars; p50 and p95 latency per arm with theirs."""
    plt = pyplot("report plot")

    names = [a.arm for a in report.arms]
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    quality = [a.quality for a in report.arms]
    left.errorbar(x, [_nan0(q.estimate) for q in quality], yerr=_yerr(quality), fmt="o", capsize=5)
    left.set_ylabel(f"{report.metric} ({ci_name(report.level)})")
    left.set_title(f"quality: {report.metric}")
    left.set_xlim(-0.5, len(names) - 0.5)
    width = 0.38
    for offset, key, colour in ((-width / 2, "latency_p50_ms", "tab:blue"), (width / 2, "latency_p95_ms", "tab:orange")):
        ivs = [getattr(a, key) for a in report.arms]
        right.bar(x + offset, [_nan0(iv.estimate) for iv in ivs], width, yerr=_yerr(ivs), capsize=4, color=colour,
                  label=key.split("_")[1])  # fmt: skip
    right.set_ylabel("latency, ms")
    right.set_title("latency p50 / p95")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(x, [n + (" (baseline)" if n == report.baseline else "") for n in names])
        ax.grid(True, axis="y", alpha=0.3)
    title = f"experiment {report.experiment or '(unnamed)'}: {report.verdict.text}"
    fig.suptitle(textwrap.fill(title, 150), fontsize=9)
    return save_figure(fig, path)


def _nan0(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _yerr(ivs: Sequence[Interval]) -> list[list[float]]:
    low = [max(0.0, iv.estimate - iv.low) if iv.defined else 0.0 for iv in ivs]
    high = [max(0.0, iv.high - iv.estimate) if iv.defined else 0.0 for iv in ivs]
    return [low, high]
