"""Prometheus metrics of the gateway (``GET /metrics``), through ``prometheus_client``.

With several workers the server sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder, or yours) before
any worker starts: each worker writes its values there and ``/metrics``, answered by any worker,
adds them up (``MultiProcessCollector``); gauges sum live workers (in flight) or take the worst
(breaker state). Without that variable the values are this process's own.

Families (namespace ``rerank_router_``): ``requests_total{route,status,tenant,backend}``,
``request_duration_seconds{route}``, ``stage_duration_seconds{backend}``,
``billed_cost_usd_total{tenant,backend}``, ``fallbacks_total``, ``retries_total``, ``hedges_total``
(``{backend}``), ``degraded_total{reason}``, ``deadline_misses_total{route}``,
``admission_rejected_total{reason}``, ``breaker_state{backend}`` (0 closed, 1 half-open, 2 open),
``in_flight``; the score cache's ``cache_hits_total`` / ``cache_misses_total`` (documents) and
``cache_saved_usd_total`` (``{tenant,backend}``), and ``coalesced_total{backend}`` (stages an
identical call in flight served).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from router.result import RerankResult, StageReport

__all__ = ["CONTENT_TYPE", "Metrics", "degraded_category"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NS = "rerank_router"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BREAKER = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def degraded_category(reason: str | None) -> str:
    """A bounded label for a free-text degraded reason."""
    text = (reason or "").lower()
    for key, label in (
        ("admission", "admission"),
        ("deadline", "deadline"),
        ("served by", "fallback"),
        ("retriever's order", "no_backend"),
        ("kept the order", "later_stage_failed"),
    ):
        if key in text:
            return label
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._registry = CollectorRegistry(auto_describe=True)
        r = self._registry
        self.requests = Counter(f"{_NS}_requests", "Requests answered.", ["route", "status", "tenant", "backend"], registry=r)
        self.duration = Histogram(f"{_NS}_request_duration_seconds", "Request duration.", ["route"], buckets=_BUCKETS, registry=r)
        self.stage = Histogram(
            f"{_NS}_stage_duration_seconds", "Backend stage duration.", ["backend"], buckets=_BUCKETS, registry=r
        )
        self.cost = Counter(f"{_NS}_billed_cost_usd", "Billed cost, US dollars.", ["tenant", "backend"], registry=r)
        self.fallbacks = Counter(f"{_NS}_fallbacks", "Stages that failed and were replaced.", ["backend"], registry=r)
        self.retries = Counter(f"{_NS}_retries", "Retried backend calls.", ["backend"], registry=r)
        self.hedges = Counter(f"{_NS}_hedges", "Hedged backend calls.", ["backend"], registry=r)
        self.degraded = Counter(f"{_NS}_degraded", "Degraded answers by reason.", ["reason"], registry=r)
        self.deadline_misses = Counter(f"{_NS}_deadline_misses", "Answers later than their budget.", ["route"], registry=r)
        self.rejected = Counter(
            f"{_NS}_admission_rejected", "Requests refused or degraded by admission control.", ["reason"], registry=r
        )
        self.breaker = Gauge(
            f"{_NS}_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.cache_hits = Counter(f"{_NS}_cache_hits", "Scores the score cache served.", ["tenant", "backend"], registry=r)
        self.cache_misses = Counter(
            f"{_NS}_cache_misses", "Documents sent to cached backends.", ["tenant", "backend"], registry=r
        )
        self.cache_saved = Counter(
            f"{_NS}_cache_saved_usd", "Predicted cost the score cache spared, US dollars.", ["tenant", "backend"], registry=r
        )
        self.coalesced = Counter(f"{_NS}_coalesced", "Stages served by an identical call in flight.", ["backend"], registry=r)
        self.in_flight = Gauge(f"{_NS}_in_flight", "Requests in flight.", multiprocess_mode="livesum", registry=r)

    def observe(
        self, route: str, status: int, tenant: str, seconds: float, result: RerankResult | None, budget_ms: float | None
    ) -> None:
        backend = ">".join(result.backends) if result is not None and result.backends else "none"
        self.requests.labels(route, str(status), tenant, backend).inc()
        self.duration.labels(route).observe(seconds)
        if result is None:
            return
        for stage in result.stages:
            self.stage.labels(stage.backend).observe(stage.latency_ms / 1000)
            if stage.ok and stage.cost_usd:
                self.cost.labels(tenant, stage.backend).inc(stage.cost_usd)
            if not stage.ok:
                self.fallbacks.labels(stage.backend).inc()
            if stage.attempts > 1:
                self.retries.labels(stage.backend).inc(stage.attempts - 1)
            if stage.hedged:
                self.hedges.labels(stage.backend).inc()
            if stage.cached or stage.cache_misses:
                self._cache(tenant, stage)
        if result.degraded:
            self.degraded.labels(degraded_category(result.degraded_reason)).inc()
        if budget_ms is not None and seconds * 1000 > budget_ms:
            self.deadline_misses.labels(route).inc()

    def _cache(self, tenant: str, stage: StageReport) -> None:
        if stage.ok and stage.cached:
            self.cache_hits.labels(tenant, stage.backend).inc(stage.cached)
        if stage.cache_misses:
            self.cache_misses.labels(tenant, stage.backend).inc(stage.cache_misses)
        if stage.ok and stage.saved_usd:
            self.cache_saved.labels(tenant, stage.backend).inc(stage.saved_usd)
        if stage.ok and stage.coalesced:
            self.coalesced.labels(stage.backend).inc()

    def breakers(self, states: Mapping[str, str]) -> None:
        for backend, state in states.items():
            self.breaker.labels(backend).set(_BREAKER.get(state, 0.0))

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
