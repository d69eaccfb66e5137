"""Fault-injection benchmark: many requests through the router under a mixed fault schedule.

Prints the deadline hit rate (returned within budget + slack, measured from outside the call),
lost or duplicated documents, constraint violations (license, on-premise, cost ceiling; every
attempted call counts, failed ones included), the share served by the planned option, and the
degraded share, with a breakdown by fault. Real time, real asyncio: fake backends sleep for
their scripted latency, so timer lateness and event-loop load are part of what is measured.

    python benchmarks/faults.py                      # 10,000 requests
    python benchmarks/faults.py --requests 2000 --json benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import Router
from router.constraints import license_allows_commercial_use
from router.errors import BackendTimeoutError, RateLimitedError, ServerError
from router.testing import FakeBackend

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


def build_backends(seed: int) -> tuple[dict[str, FakeBackend], dict[str, FaultScript]]:
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
    backends = {}
    for name, script in scripts.items():
        backends[name] = FakeBackend(
            name,
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


@dataclass
class Outcome:
    budget_ms: float
    elapsed_ms: float
    started: float
    permutation: bool
    violation: str | None
    planned: bool
    degraded: bool
    served: str


def violation(result: Any, n: int, constraints: dict[str, Any], ceiling: float | None, specs: dict[str, Any]) -> str | None:
    for stage in result.stages:  # every attempted call, failed ones included
        spec = specs[stage.backend]
        if constraints.get("on_premise") and spec.data_leaves_premises:
            return f"on_premise broken by {stage.backend}"
        if constraints.get("commercial_use", True) and license_allows_commercial_use(spec.license) is not True:
            return f"license broken by {stage.backend}"
    if ceiling is not None:
        if result.predicted_cost_usd is not None and result.predicted_cost_usd > ceiling + 1e-12:
            return f"planned cost {result.predicted_cost_usd} > {ceiling}"
        if result.actual_cost_usd is not None and result.actual_cost_usd > ceiling + 1e-12:
            return f"billed cost {result.actual_cost_usd} > {ceiling}"
    return None


@dataclass(frozen=True)
class Request:
    query: str
    docs: list[str]
    budget_ms: float
    ceiling: float | None
    constraints: dict[str, Any]


def draw_requests(count: int, rng: random.Random) -> list[Request]:
    """The whole workload, drawn before the clock starts: generating it on the measured loop
    would stall the requests in flight."""
    requests = []
    for _ in range(count):
        n = rng.choice([5, 10, 20, 50, 100, 200])
        docs = [" ".join(rng.choices(WORDS, k=rng.randint(5, 40))) for _ in range(n)]
        budget = rng.choice([30.0, 60.0, 100.0, 200.0, 500.0])
        ceiling = rng.choice([None, 0.0, 0.001, 0.003])
        constraints: dict[str, Any] = {}
        if rng.random() < 0.2:
            constraints["on_premise"] = True
        if rng.random() < 0.1:
            constraints["commercial_use"] = False
        requests.append(Request(" ".join(rng.choices(WORDS, k=3)), docs, budget, ceiling, constraints))
    return requests


async def one(router: Router, request: Request, specs: dict[str, Any]) -> Outcome:
    docs, budget, ceiling, constraints, n = (
        request.docs,
        request.budget_ms,
        request.ceiling,
        request.constraints,
        len(request.docs),
    )
    started = time.perf_counter()
    result = await router.arerank(
        request.query,
        docs,
        top_n=min(10, n),
        latency_budget_ms=budget,
        max_cost_usd=ceiling,
        constraints=constraints or None,
    )
    elapsed = (time.perf_counter() - started) * 1000
    served = " -> ".join(result.backends) or "retriever-order"
    return Outcome(
        budget_ms=budget,
        elapsed_ms=elapsed,
        started=started,
        permutation=sorted(result.indices) == list(range(n)) and len(set(result.indices)) == n,
        violation=violation(result, n, constraints, ceiling, specs),
        planned=not result.degraded,  # the planned option's own order (an adaptive skip included)
        degraded=result.degraded,
        served=served,
    )


async def run(
    requests: int, concurrency: int, seed: int, monitor: StallMonitor | None = None
) -> tuple[list[Outcome], dict[str, FaultScript], float]:
    backends, scripts = build_backends(seed)
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
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in workload:
        queue.put_nowait(request)
    outcomes: list[Outcome] = []

    async def worker() -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            outcomes.append(await one(router, request, specs))

    probe = asyncio.create_task(monitor.probe()) if monitor is not None else None
    if monitor is not None:
        gc.callbacks.append(monitor.on_gc)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if monitor is not None:
            gc.callbacks.remove(monitor.on_gc)
        if probe is not None:
            probe.cancel()
    wall = time.perf_counter() - started
    await router.aclose()
    return outcomes, scripts, wall


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


def summarise(
    outcomes: list[Outcome], scripts: dict[str, FaultScript], wall: float, monitor: StallMonitor | None = None
) -> dict[str, Any]:
    total = len(outcomes)
    late = [o for o in outcomes if o.elapsed_ms > o.budget_ms + SLACK_MS]
    overrun = sorted(o.elapsed_ms - o.budget_ms for o in outcomes)
    return {
        "requests": total,
        "wall_s": round(wall, 1),
        "deadline_hit_rate": 1 - len(late) / total,
        "late": len(late),
        "worst_overrun_ms": round(overrun[-1], 2),
        "median_overrun_ms": round(statistics.median(overrun), 2),
        "lost_or_duplicated": sum(not o.permutation for o in outcomes),
        "constraint_violations": sum(o.violation is not None for o in outcomes),
        "violations": sorted({o.violation for o in outcomes if o.violation})[:10],
        "served_by_planned_tier": sum(o.planned for o in outcomes) / total,
        "degraded_share": sum(o.degraded for o in outcomes) / total,
        "served_by": dict(Counter(o.served for o in outcomes).most_common()),
        "faults_injected": {name: dict(s.counts) for name, s in scripts.items()},
        "stalls": attribute(late, monitor),
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-monitor", action="store_true", help="no loop-stall probe or gc callbacks")
    args = parser.parse_args()
    monitor = None if args.no_monitor else StallMonitor()
    outcomes, scripts, wall = asyncio.run(run(args.requests, args.concurrency, args.seed, monitor))
    summary = summarise(outcomes, scripts, wall, monitor)
    rows = [
        ("requests", f"{summary['requests']:,} in {summary['wall_s']} s, {args.concurrency} concurrent"),
        (f"deadline hit rate (budget + {SLACK_MS:.0f} ms)", f"{summary['deadline_hit_rate']:.4%}  (target >= 99.9%)"),
        ("late requests", f"{summary['late']}  (worst overrun {summary['worst_overrun_ms']} ms)"),
        ("lost or duplicated documents", f"{summary['lost_or_duplicated']}  (target 0)"),
        ("constraint violations", f"{summary['constraint_violations']}  (target 0)"),
        ("served by the planned option", f"{summary['served_by_planned_tier']:.2%}"),
        ("degraded", f"{summary['degraded_share']:.2%}"),
        ("load average (1 min) at the end", f"{summary['load_average']:.2f}  (2 cores)"),
    ]
    if summary["stalls"]:
        st = summary["stalls"]
        rows.append(("late requests by cause", json.dumps(st["late_by_cause"])))
        rows.append(("gc pauses", f"{st['gc_pauses']} (max {st['gc_pause_max_ms']} ms, total {st['gc_pause_total_ms']} ms)"))
        rows.append(("loop stalls >= 10 ms", f"{st['loop_stalls_over_10ms']} (max {st['loop_stall_max_ms']} ms)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("served by:", ", ".join(f"{k} {v}" for k, v in list(summary["served_by"].items())[:8]))
    print("faults injected:", json.dumps(summary["faults_injected"]))
    if summary["violations"]:
        print("violations:", summary["violations"])
    ok = summary["deadline_hit_rate"] >= 0.999 and summary["lost_or_duplicated"] == 0 and summary["constraint_violations"] == 0
    print("PASS" if ok else "FAIL")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
