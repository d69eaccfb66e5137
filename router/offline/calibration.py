"""Calibration from measurement: latency fits, quality per domain, the constrained policy's inputs,
and writing the profile a config points to (its format and reading: router.profile).

Thresholds are calibrated outputs, not magic numbers: the pure fitting functions live in
router.offline.fitting, and ``rerank-router calibrate`` (router.offline.cli_eval) is a thin layer
over them and this module.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from policies.learned import option_key
from router.backends.base import Backend
from router.catalog import LatencyParams, deep_merge
from router.features import TokenStats
from router.latency import fit_latency_params, item_tokens
from router.offline.fitting import fit_saturation_k
from router.profile import Profile, ScoreCalibration, load_profile

__all__ = [
    "ConstrainedFit",
    "fit_backend_latency",
    "fit_constrained",
    "quality_from_report",
    "synthetic_documents",
    "time_latency_grid",
    "write_profile",
]


def write_profile(
    path: str | Path,
    *,
    backends: Mapping[str, Mapping[str, Any]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    learned: Mapping[str, Any] | None = None,
    adaptive: Mapping[str, Any] | None = None,
    scores: Mapping[str, Mapping[str, ScoreCalibration]] | None = None,
    notes: Sequence[str] = (),
) -> Profile:
    """Merge new measurements into the profile at ``path`` (created if absent) and write it
    (``scores``: backend -> domain -> calibration, replacing those (backend, domain) entries)."""
    target = Path(path)
    profile = load_profile(target) if target.is_file() else Profile()
    merged_backends = dict(profile.backends)
    for name, overrides in (backends or {}).items():
        merged_backends[name] = deep_merge(merged_backends.get(name, {}), overrides)
    merged_scores = {name: dict(by_domain) for name, by_domain in profile.scores.items()}
    for name, by_domain in (scores or {}).items():
        merged_scores[name] = {**merged_scores.get(name, {}), **by_domain}
    meta = dict(profile.meta)
    meta["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["notes"] = [*meta.get("notes", []), *notes]
    updated = Profile(
        backends=merged_backends,
        thresholds={**profile.thresholds, **(thresholds or {})},
        learned=dict(learned) if learned is not None else profile.learned,
        adaptive=dict(adaptive) if adaptive is not None else profile.adaptive,
        scores=merged_scores,
        meta=meta,
    )
    header = "# rerank-router profile: measured values a config points to with `profile: <this file>`.\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(updated.model_dump(), sort_keys=False), encoding="utf-8")
    return updated


# -- the constrained policy's inputs ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConstrainedFit:
    """What the constrained policy plans with, measured on labelled queries.

    ``quality``: backend -> mean nDCG@10 alone on all candidates; ``saturation_k``: the cascade
    curve fitted to the measured cascades (``cascades``: option key -> mean nDCG@10, for the record);
    None where no measured cascade's strong stage beats its cheap one (the planner then forms no
    cascade of them, and the curve's default stands).
    """

    quality: Mapping[str, float]
    saturation_k: int | None
    cascades: Mapping[str, float]
    queries: int
    fitted_on: str = ""

    def profile_backends(self, domain: str) -> dict[str, dict[str, Any]]:
        """Profile ``backends:`` entries: each backend's measured quality in ``domain``."""
        return {name: {"quality": {domain: round(q, 4)}} for name, q in self.quality.items()}

    def thresholds(self) -> dict[str, float]:
        return {} if self.saturation_k is None else {"cascade.saturation_k": float(self.saturation_k)}

    def policy_params(self) -> dict[str, Any]:
        """The constrained policy's params these values set (what ``profile:`` in its params reads)."""
        return {} if self.saturation_k is None else {"saturation_k": self.saturation_k}


def fit_constrained(
    options: Sequence[Sequence[tuple[str, int | None]]],
    quality: Sequence[Mapping[str, float]],
    *,
    fitted_on: str = "",
) -> ConstrainedFit:
    """Fit the constrained policy's inputs on labelled queries.

    ``options``: the measured grid (:func:`policies.learned.option_grid`: each backend alone on all
    candidates and cascades ``cheap@all -> strong@k``); ``quality``: per query, option key
    (:func:`policies.learned.option_key`) -> its measured nDCG@10. Each backend's quality is its
    mean alone; ``saturation_k`` is :func:`policies.cascade.fit_saturation_k` on the cascades' means
    (None if no cascade's strong stage beats its cheap one). Nothing else is fitted: the budget (a
    per-query cost ceiling) is the user's.
    """
    if not quality:
        raise ValueError("no queries to fit on")
    n = len(quality)

    def mean(key: str) -> float:
        missing = sum(1 for row in quality if key not in row)
        if missing:
            raise ValueError(f"{missing} of {n} queries lack a measurement of {key}")
        return sum(row[key] for row in quality) / n

    tiers: dict[str, float] = {}
    cascades: dict[tuple[str, str, int], float] = {}
    keys: dict[str, float] = {}
    for stages in options:
        if len(stages) == 1 and stages[0][1] is None:
            tiers[stages[0][0]] = mean(option_key(stages))
        elif len(stages) == 2 and stages[0][1] is None and stages[1][1] is not None:
            key = option_key(stages)
            keys[key] = cascades[(stages[0][0], stages[1][0], stages[1][1])] = mean(key)
    formed = any(tiers.get(strong, -math.inf) > tiers.get(cheap, math.inf) for cheap, strong, _ in cascades)
    saturation_k = fit_saturation_k(tiers, cascades) if formed else None
    return ConstrainedFit(tiers, saturation_k, keys, n, fitted_on or f"{n} queries")


# -- latency ----------------------------------------------------------------------------------------
_WORDS = [
    "the",
    "river",
    "flows",
    "past",
    "old",
    "stone",
    "bridges",
    "while",
    "engineers",
    "measure",
    "water",
    "levels",
    "and",
    "record",
    "how",
    "seasonal",
    "rain",
    "changes",
    "the",
    "speed",
    "of",
    "the",
    "current",
    "near",
    "farms",
    "towns",
    "and",
    "forests",
    "across",
    "the",
    "valley",
]


def synthetic_documents(n: int, tokens: int, count: Callable[[str], int] | None = None) -> list[str]:
    """``n`` distinct English-like documents of about ``tokens`` tokens (exact with ``count``)."""
    docs = []
    for i in range(n):
        words = [_WORDS[(i + k * 7) % len(_WORDS)] for k in range(tokens)]
        text = " ".join(words)
        if count is not None:
            while count(text) > tokens and words:
                words.pop()
                text = " ".join(words)
        docs.append(text)
    return docs


async def time_latency_grid(
    backend: Backend,
    counts: Sequence[int] = (10, 50, 100),
    tokens: Sequence[int] = (64, 128, 256),
    *,
    repeats: int = 3,
    query: str = "how do seasonal floods change river speed",
    clock: Callable[[], float] = time.perf_counter,
    progress: bool = False,
) -> list[tuple[list[int], float]]:
    """Time ``backend.rerank`` on a grid of candidate counts x document lengths.

    Returns (tokens per scored item, median ms) per cell, the input :func:`fit_backend_latency`
    and :func:`router.latency.fit_latency_params` take. One untimed call per cell warms it up.
    """
    await asyncio.to_thread(backend.load)
    counter = backend.token_counter()

    def count_one(text: str) -> int:
        assert counter is not None
        return counter.count([text])[0]

    cells = [(n, t) for n in counts for t in tokens]
    bar: Any = None
    if progress:
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]

            bar = tqdm(total=len(cells) * (repeats + 1), desc=f"timing {backend.name}", unit="call", leave=False)
        except ImportError:
            bar = None
    samples: list[tuple[list[int], float]] = []
    for n, t in cells:
        docs = synthetic_documents(n, t, count_one if counter is not None else None)
        lengths = counter.count([query, *docs]) if counter is not None else [len(query.split()), *[t] * n]
        stats = TokenStats(backend.spec.tokenizer_family, counter is not None, lengths[0], tuple(lengths[1:]))
        timings = []
        for attempt in range(repeats + 1):
            started = clock()
            await backend.rerank(query, docs)
            if attempt:  # the first call of a cell warms caches and is not kept
                timings.append((clock() - started) * 1000)
            if bar is not None:
                bar.update(1)
        samples.append((item_tokens(backend.spec, stats), statistics.median(timings)))
    if bar is not None:
        bar.close()
    return samples


def fit_backend_latency(samples: Sequence[tuple[Sequence[int], float]], source: str) -> LatencyParams:
    """Non-negative least squares of overhead + a·N + b·Σt + c·Σt² (router.latency.fit_latency_params)."""
    return fit_latency_params(samples, source=source)


# -- quality --------------------------------------------------------------------------------------
def quality_from_report(report: Mapping[str, Any], measure: str = "nDCG@10") -> dict[str, dict[str, float]]:
    """Backend -> {domain: measured quality} from an eval report's single-tier runs.

    ``report`` is the JSON ``rerank-router eval`` writes; each run of kind 'tier' named after a
    configured backend gives that backend's quality in the dataset's domain.
    """
    domain = str(report.get("dataset", {}).get("domain", "general"))
    out: dict[str, dict[str, float]] = {}
    for run in report.get("runs", []):
        value = run.get("metrics", {}).get(measure)
        if run.get("kind") == "tier" and run.get("label") != "retriever-order" and value is not None:
            out[str(run["label"])] = {domain: round(float(value), 4)}
    return out
