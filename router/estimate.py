"""Turns stages into an Option with predicted latency, cost and quality for one request."""

from __future__ import annotations

from collections.abc import Mapping

from router.catalog import BackendSpec
from router.cost import UsageCalibrator, predict_cost_usd
from router.features import Features, TokenStats
from router.latency import LatencyEstimator, item_extra, item_tokens, stage_sums
from router.plan import Estimate, Option, Stage, new_estimate, new_option

__all__ = ["OptionEstimator"]

_KEEP = Option(stages=(), estimate=Estimate(latency_ms=0.0, cost_usd=0.0, quality=None))
"""The retriever's order: nothing to run, the same (frozen) option for every request."""


class OptionEstimator:
    def __init__(
        self,
        specs: Mapping[str, BackendSpec],
        latency: LatencyEstimator,
        features: Features,
        cold: frozenset[str] = frozenset(),
        usage: UsageCalibrator | None = None,
        cached: Mapping[str, Mapping[int, float]] | None = None,
    ) -> None:
        self._usage = usage
        self._cached = cached or {}
        self._specs = specs
        self._cold = cold
        self._latency = latency
        self._features = features
        self._memo: dict[tuple[str, int], tuple[Estimate, tuple[str, ...]]] = {}

    def _stage(self, backend: str, candidates_in: int) -> tuple[Estimate, tuple[str, ...]]:
        """One stage's estimate and notes, memoised: cascades reuse the same stages many times."""
        key = (backend, candidates_in)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        spec = self._specs[backend]
        stats = self._features.token_stats(spec.tokenizer_family)
        hits = self._cached.get(backend)
        if hits:
            result = self._memo[key] = self._cached_stage(backend, spec, stats, candidates_in, hits)
            return result
        # A later stage's inputs are not known before the earlier one runs: use the first
        # candidates_in documents' lengths as the proxy.
        docs = stats.docs[:candidates_in]
        sums = stage_sums(spec, stats, candidates_in)
        if sums is not None:  # no pass over the documents
            stage_ms = self._latency.predict_sums(backend, spec.latency, *sums)
        else:
            stage_ms = self._latency.predict(backend, spec.latency, item_tokens(spec, stats, docs))
        notes: list[str] = []
        if backend in self._cold and spec.cold_start_ms:
            stage_ms += spec.cold_start_ms
            notes.append(f"{backend}: cold, includes ~{spec.cold_start_ms:.0f} ms to load (loading in the background)")
        correction = self._usage.correction(backend) if self._usage is not None else 1.0
        longest = (stats.doc_max if len(docs) == len(stats.docs) else max(docs)) if docs else 0
        stage_cost = predict_cost_usd(spec, stats.query, docs, stage_ms, correction, longest)
        cap = spec.max_tokens_per_doc
        if cap is not None and docs and longest + item_extra(spec, stats) > cap:  # else none is cut
            cut = sum(1 for t in item_tokens(spec, stats, docs, truncate=False) if t > cap)
            if cut:
                notes.append(f"{backend}: {cut} item(s) over its {cap}-token context are truncated")
        if not stats.exact:
            notes.append(f"{backend}: token counts estimated ({spec.tokenizer_family} not loaded)")
        result = (
            new_estimate(latency_ms=stage_ms, cost_usd=stage_cost, quality=spec.quality_for(self._features.domain)),
            tuple(notes),
        )
        self._memo[key] = result
        return result

    def _cached_stage(
        self, backend: str, spec: BackendSpec, stats: TokenStats, candidates_in: int, hits: Mapping[int, float]
    ) -> tuple[Estimate, tuple[str, ...]]:
        """A stage where some scores are cached (router.cache): only the rest is sent, so only the
        rest is priced and timed. Which documents a stage on fewer than all candidates gets is not
        known before the stage ahead of it runs: assume the cached ones are among them (so it goes
        when the stage ahead ranks as it did when they were cached) and the longest uncached ones
        fill the rest; the executor prices the documents actually missing before it calls, and
        does not call past the ceiling."""
        n = len(stats.docs)
        k = min(candidates_in, n)
        missing = [t for i, t in enumerate(stats.docs) if i not in hits]
        if k < n:
            missing = sorted(missing, reverse=True)[: max(0, k - (n - len(missing)))]
        cached = k - len(missing)
        quality = spec.quality_for(self._features.domain)
        if not missing:
            return Estimate(latency_ms=0.0, cost_usd=0.0, quality=quality), (f"{backend}: all {k} scores cached",)
        stage_ms = self._latency.predict(backend, spec.latency, item_tokens(spec, stats, missing))
        notes = [f"{backend}: {cached} of {k} scores cached, {len(missing)} sent"] if cached > 0 else []
        if backend in self._cold and spec.cold_start_ms:
            stage_ms += spec.cold_start_ms
            notes.append(f"{backend}: cold, includes ~{spec.cold_start_ms:.0f} ms to load (loading in the background)")
        correction = self._usage.correction(backend) if self._usage is not None else 1.0
        stage_cost = predict_cost_usd(spec, stats.query, missing, stage_ms, correction)
        if not stats.exact:
            notes.append(f"{backend}: token counts estimated ({spec.tokenizer_family} not loaded)")
        return Estimate(latency_ms=stage_ms, cost_usd=stage_cost, quality=quality), tuple(notes)

    def estimate(self, stages: tuple[Stage, ...]) -> Option:
        if not stages:
            return _KEEP
        latency = 0.0
        cost: float | None = 0.0
        notes: list[str] = []
        per_stage: list[Estimate] = []
        for stage in stages:
            estimate, stage_notes = self._stage(stage.backend, stage.candidates_in)
            latency += estimate.latency_ms
            cost = None if cost is None or estimate.cost_usd is None else cost + estimate.cost_usd
            per_stage.append(estimate)
            notes.extend(stage_notes)
        quality = per_stage[-1].quality
        if quality is None:
            notes.append(f"{stages[-1].backend}: quality unknown for domain {self._features.domain!r}")
        return new_option(
            stages=stages,
            estimate=new_estimate(latency_ms=latency, cost_usd=cost, quality=quality),
            notes=tuple(notes),
            stage_estimates=tuple(per_stage),
        )
