"""Replay policies over a labelled set through a real :class:`router.Router`, query by query.

:class:`EvalHarness` builds the configured backends once and shares them between one Router per
policy (or per fixed option), so every run goes through the same request, feature, planning and
execution code as production traffic. Three kinds of backend take part:

- live: local models run for real (e.g. the all-MiniLM-L6-v2 bi-encoder). With ``memo=True``
  (default) each distinct call (query and exact candidate list) runs once; a repeat returns the
  same scores after the time the first call took, on the simulated clock. ``cache=PATH`` keeps
  those calls on disk between runs. Local models are deterministic, so this changes no order.
- recorded: :class:`~router.backends.replay.ReplayBackend`, bound to the harness's labelled set
  and clock: they take their modelled latency in simulated time and bill their modelled units.
- anything passed in ``backends=`` (e.g. ``router.testing.FakeBackend``), used as given.

Time. The routers run on :class:`SimulatedClock`: real monotonic time plus the simulated waits of
replayed and memoised calls, so latency, deadlines and GPU-hour prices add up live and recorded
time alike. A deadline cannot cut a simulated wait short, but the planner never plans an option
predicted past the budget, and a replayed call takes exactly its prediction.

Per-query budgets: ``budget=`` takes one :class:`QueryBudget` for every query, a mapping
qid -> QueryBudget, or None (the config's defaults).

Per-run measured values: ``specs=`` takes profile-style spec overrides (backend -> fields, e.g.
``{"rankgpt": {"quality": {"web": 0.68}}}``) that the run's Router plans with, as a config's
``profile:`` would set them, over the same backends (cross-validation fits them per fold).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.base import PlanningContext, Policy, assess
from router.accounting.budget import BudgetWindow
from router.backends.base import Availability, Backend, Scores
from router.backends.registry import build_backend
from router.backends.replay import ReplayBackend, ReplayIndex
from router.catalog import BackendSpec, merge_spec
from router.config import RouterConfig, load_config
from router.datasets import Dataset, LabelledQuery
from router.decisions import DecisionLog, decision_from_result
from router.engine import Router
from router.features import Features
from router.offline.evaluation.metrics import MeasureSet, aggregate, per_query
from router.plan import RETRIEVER_ORDER, Plan, Stage, option_name
from router.profile import ScoreCalibration
from router.result import RerankResult
from router.tokens import TokenCounter

__all__ = [
    "EvalHarness",
    "MemoBackend",
    "OptionPolicy",
    "QueryBudget",
    "QueryRecord",
    "RunResult",
    "SimulatedClock",
    "SpecOverride",
    "served_name",
]


class SimulatedClock:
    """Monotonic seconds: real time plus every simulated wait so far."""

    def __init__(self, base: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self._base() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class QueryBudget:
    latency_ms: float | None = None
    max_cost_usd: float | None = None

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:g} ms")
        if self.max_cost_usd is not None:
            parts.append(f"${self.max_cost_usd:g}/query")
        return ", ".join(parts) or "none"


Budgets = QueryBudget | Mapping[str, QueryBudget] | None


def _call_key(query: str, documents: Sequence[str]) -> str:
    digest = hashlib.sha256(query.encode())
    for text in documents:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:32]


class MemoBackend(Backend):
    """A live backend whose repeated calls (same query, same candidate list) are replayed.

    The first call runs the model and is timed; a repeat returns the same scores after the same
    time on ``sleep`` (the harness's simulated clock). A call that also loaded the model is not
    kept, so its load time is never replayed.
    """

    def __init__(
        self, inner: Backend, sleep: Callable[[float], Awaitable[None]], store: dict[str, list[Any]] | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self._sleep = sleep
        self.calls: dict[str, list[Any]] = store if store is not None else {}
        """call key -> [milliseconds, scores]."""
        self.live_calls = 0

    def __repr__(self) -> str:
        return f"MemoBackend({self.inner!r})"

    def availability(self) -> Availability:
        return self.inner.availability()

    def load(self) -> None:
        self.inner.load()

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        key = _call_key(query, documents)
        kept = self.calls.get(key)
        if kept is not None and len(kept[1]) == len(documents):
            await self._sleep(kept[0] / 1000)
            return Scores(tuple(float(v) for v in kept[1]))
        started = time.perf_counter()
        scores = await self.inner.rerank(query, documents)
        elapsed = (time.perf_counter() - started) * 1000
        self.live_calls += 1
        if not scores.cold_start:
            self.calls[key] = [elapsed, list(scores.values)]
        return scores

    def token_counter(self) -> TokenCounter | None:
        return self.inner.token_counter()

    async def aclose(self) -> None:
        await self.inner.aclose()


class SpecOverride:
    """A backend as it is, planned with measured spec values (a profile's) in place of its own."""

    def __init__(self, inner: Backend, spec: BackendSpec) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = spec

    def __repr__(self) -> str:
        return f"SpecOverride({self.inner!r})"

    def __getattr__(self, name: str) -> Any:  # load(), live_calls, ...: the wrapped backend's
        return getattr(self.inner, name)

    def availability(self) -> Availability:
        return self.inner.availability()

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        return await self.inner.rerank(query, documents)

    def token_counter(self) -> TokenCounter | None:
        return self.inner.token_counter()

    async def aclose(self) -> None:  # the harness closes the shared backend once
        return None


def served_name(result: RerankResult, n: int) -> str:
    """What actually ranked the request: ``bm25``-style backend name, ``a@100 -> b@20``, or retriever-order."""
    done = [s for s in result.stages if s.ok]
    if len(done) == 1 and done[0].candidates_in == n:
        return option_name(((done[0].backend, None),))
    return option_name((s.backend, s.candidates_in) for s in done)


@dataclass
class OptionPolicy:
    """Always one fixed option (a tier, or a cascade), run even where a hard rule would reject it:
    a tier is measured as it is; hard rules are for policies. ``k=None`` means all candidates."""

    stages: tuple[tuple[str, int | None], ...]
    name: str = "option"

    def plan(self, ctx: PlanningContext) -> Plan:
        n = ctx.features.n_candidates
        option = ctx.estimate(tuple(Stage(b, n if k is None else min(k, n)) for b, k in self.stages))
        [assessed] = assess([option], ctx)
        why = "; ".join(map(str, assessed.rejections))
        return Plan(
            policy=self.name,
            primary=option,
            fallbacks=(),
            assessed=(assessed,),
            reason=f"fixed option {option.name}" + (f" (run despite: {why})" if why else ""),
        )


class _Recorder:
    """Passes planning through to a policy and keeps the last request's features (for fitting)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = policy.name
        self.last: Features | None = None

    def plan(self, ctx: PlanningContext) -> Plan:
        self.last = ctx.features
        return self.policy.plan(ctx)


@dataclass(frozen=True)
class QueryRecord:
    qid: str
    ranking: tuple[str, ...]
    latency_ms: float
    cost_usd: float | None
    predicted_cost_usd: float | None
    served: str
    planned: str
    degraded: bool
    degraded_reason: str | None = None
    features: Features | None = field(default=None, compare=False, repr=False)

    def to_json(self, top: int = 10) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "top": list(self.ranking[:top]),
            "latency_ms": round(self.latency_ms, 3),
            "cost_usd": self.cost_usd,
            "predicted_cost_usd": self.predicted_cost_usd,
            "served": self.served,
            "planned": self.planned,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
        }


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else math.nan


@dataclass(frozen=True)
class RunResult:
    """One policy (or fixed option) over a set of queries: per-query records and ir-measures metrics."""

    label: str
    kind: str
    """'tier' (one backend or the retriever), 'cascade' (a fixed multi-stage option) or 'policy'."""
    policy: str
    budget: str
    records: tuple[QueryRecord, ...]
    metrics: Mapping[str, float]
    per_query: Mapping[str, Mapping[str, float]]
    measures: MeasureSet = field(default_factory=MeasureSet)
    notes: tuple[str, ...] = ()

    @classmethod
    def from_records(
        cls,
        label: str,
        kind: str,
        policy: str,
        budget: str,
        records: Sequence[QueryRecord],
        qrels: Mapping[str, Mapping[str, int]],
        measures: MeasureSet,
        notes: Sequence[str] = (),
    ) -> RunResult:
        rankings = {r.qid: list(r.ranking) for r in records}
        return cls(
            label=label,
            kind=kind,
            policy=policy,
            budget=budget,
            records=tuple(records),
            metrics=aggregate(qrels, rankings, measures),
            per_query=per_query(qrels, rankings, measures),
            measures=measures,
            notes=tuple(notes),
        )

    @classmethod
    def merge(
        cls, label: str, kind: str, policy: str, runs: Sequence[RunResult], qrels: Mapping[str, Mapping[str, int]]
    ) -> RunResult:
        """Concatenate disjoint runs (cross-validation folds) and measure them together."""
        records = [r for run in runs for r in run.records]
        notes = [n for run in runs for n in run.notes]
        budgets = sorted({run.budget for run in runs})
        return cls.from_records(label, kind, policy, "; ".join(budgets), records, qrels, runs[0].measures, notes)

    @property
    def ndcg(self) -> float:
        return self.metrics[self.measures.primary]

    @property
    def latencies(self) -> list[float]:
        return [r.latency_ms for r in self.records]

    @property
    def latency_p50(self) -> float:
        return _percentile(self.latencies, 50)

    @property
    def latency_p95(self) -> float:
        return _percentile(self.latencies, 95)

    @property
    def latency_mean(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.records else math.nan

    @property
    def unpriced(self) -> int:
        """Queries whose cost is unknown (a backend without a price)."""
        return sum(1 for r in self.records if r.cost_usd is None)

    @property
    def cost_mean(self) -> float:
        """Mean dollars per query over the priced queries."""
        known = [r.cost_usd for r in self.records if r.cost_usd is not None]
        return sum(known) / len(known) if known else math.nan

    @property
    def cost_per_1k(self) -> float:
        return 1000 * self.cost_mean

    @property
    def tier_mix(self) -> dict[str, int]:
        return dict(Counter(r.served for r in self.records).most_common())

    @property
    def degraded(self) -> int:
        return sum(1 for r in self.records if r.degraded)

    def summary(self) -> dict[str, Any]:
        labels = self.measures.labels
        return {
            "label": self.label,
            "kind": self.kind,
            "policy": self.policy,
            "budget": self.budget,
            "queries": len(self.records),
            "metrics": {labels.get(k, k): v for k, v in self.metrics.items()},
            "latency_ms": {"mean": self.latency_mean, "p50": self.latency_p50, "p95": self.latency_p95},
            "cost_usd": {"mean_per_query": self.cost_mean, "per_1k_queries": self.cost_per_1k, "unpriced_queries": self.unpriced},
            "tier_mix": self.tier_mix,
            "degraded": self.degraded,
            "notes": list(self.notes),
        }

    def to_json(self, per_query_records: bool = True) -> dict[str, Any]:
        out = self.summary()
        if per_query_records:
            out["per_query"] = [{**r.to_json(), "metrics": dict(self.per_query.get(r.qid, {}))} for r in self.records]
        return out


def _progress(iterable: Sequence[LabelledQuery], label: str, enabled: bool) -> Iterable[LabelledQuery]:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:  # progress bars are a nicety: pip install 'rerank-router[eval]'
        return iterable
    bar: Iterable[LabelledQuery] = tqdm(iterable, desc=label, unit="q", leave=False, dynamic_ncols=True)
    return bar


class EvalHarness:
    """Routes a labelled set's queries through Routers built on one shared set of backends.

    ``config``: the router config (path, mapping or RouterConfig; its ``profile:`` is applied).
    ``top_n``: what each request asks for (10, as nDCG@10 and MRR@10 read; a cascade's strong
    stage must take at least that many); every candidate still comes back ranked.
    ``backends``: extra or replacing backends by name (test doubles). Recorded runs are config
    backends of ``type: replay``; their ``dataset:`` may be omitted, the harness binds this set.
    """

    def __init__(
        self,
        dataset: Dataset,
        config: RouterConfig | Mapping[str, Any] | str | Path,
        *,
        backends: Mapping[str, Backend] | None = None,
        measures: MeasureSet | None = None,
        memo: bool = True,
        cache: str | Path | None = None,
        progress: bool = False,
        top_n: int | None = 10,
    ) -> None:
        self.dataset = dataset
        self.top_n = top_n
        self.config = load_config(config)
        self.measures = measures or MeasureSet(rel=dataset.rel)
        self.clock = SimulatedClock()
        self.progress = progress
        self._cache_path = Path(cache) if cache is not None else None
        self._cache: dict[str, dict[str, list[Any]]] = self._read_cache()
        index = ReplayIndex.from_queries((q.qid, q.text, ((c.docid, c.text) for c in q.candidates)) for q in dataset.queries)
        built: dict[str, Backend] = {}
        for name, cfg in self.config.backends.items():
            backend = build_backend(name, cfg)
            if isinstance(backend, ReplayBackend):
                backend = backend.bound(index=index, sleep=self.clock.sleep)
            elif memo and backend.spec.pricing.scheme == "free":
                store = self._cache.setdefault(f"{name}|{backend.spec.model}", {})
                backend = MemoBackend(backend, self.clock.sleep, store)
            built[name] = backend
        built.update(backends or {})
        self.backends: Mapping[str, Backend] = built
        # The profile is applied above; an experiment or decision log in the config belongs to
        # production traffic: here each run is one policy, and runs are logged only on request.
        self._bare = self.config.model_copy(update={"backends": {}, "profile": None, "experiment": None, "decision_log": None})
        self.decision_log: DecisionLog | None = None
        """When set, every routed query is logged as a decision of arm = the run's label, with the
        query id as request id (so runs are compared paired) and its qrels as feedback: an offline
        A/B that ``rerank-router report`` reads like production traffic."""
        self._logged_feedback: set[str] = set()
        self._runner = asyncio.Runner()
        self._warm = False

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> EvalHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.save_cache()
        self._runner.run(self._aclose())
        self._runner.close()

    async def _aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    def _read_cache(self) -> dict[str, dict[str, list[Any]]]:
        if self._cache_path is None or not self._cache_path.is_file():
            return {}
        data: dict[str, dict[str, list[Any]]] = json.loads(self._cache_path.read_text(encoding="utf-8"))
        return data

    def save_cache(self) -> None:
        if self._cache_path is None:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        self._cache_path.write_text(json.dumps(self._cache), encoding="utf-8")

    def warm_up(self) -> dict[str, str]:
        """Load every available local model before anything is timed."""
        status: dict[str, str] = {}
        for name, backend in self.backends.items():
            availability = backend.availability()
            if not availability.ok:
                status[name] = availability.reason
                continue
            backend.load()
            status[name] = "ready"
        self._warm = True
        return status

    def available(self) -> list[str]:
        return [name for name, backend in self.backends.items() if backend.availability().ok]

    # -- runs ------------------------------------------------------------------------------------
    def router(
        self,
        policy: Policy,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        window: BudgetWindow | None = None,
        *,
        scores: Mapping[str, Mapping[str, ScoreCalibration]] | None = None,
    ) -> Router:
        """A Router over the shared backends; ``specs``: per-backend spec overrides it plans with;
        ``window``: a mean-cost budget window (router.accounting.budget) it accounts into and plans
        by; ``scores``: the score calibrations it maps result scores with (replacing the config's)."""
        backends: Mapping[str, Backend] = self.backends
        if specs:
            unknown = sorted(set(specs) - set(backends))
            if unknown:
                raise ValueError(f"spec overrides for unknown backend(s): {', '.join(unknown)}")
            backends = {
                name: SpecOverride(b, merge_spec(b.spec, b.spec.model, specs[name], f"specs.{name}")) if name in specs else b
                for name, b in backends.items()
            }
        config = self._bare if scores is None else self._bare.model_copy(update={"scores": dict(scores)})
        return Router(config, backends=backends, policy=policy, clock=self.clock, sleep=self.clock.sleep, budget_window=window)

    def results(
        self,
        policy: Policy,
        *,
        qids: Iterable[str] | None = None,
        scores: Mapping[str, Mapping[str, ScoreCalibration]] | None = None,
    ) -> dict[str, RerankResult]:
        """qid -> the full result (items with their scores) of each query (or those in ``qids``)
        routed by ``policy``, result scores mapped by ``scores`` (default: the config's)."""
        if not self._warm:
            self.warm_up()
        wanted = None if qids is None else set(qids)
        queries = [q for q in self.dataset.queries if wanted is None or q.qid in wanted]
        router = self.router(policy, scores=scores)

        async def each() -> dict[str, RerankResult]:
            out: dict[str, RerankResult] = {}
            for q in queries:
                out[q.qid] = await router.arerank(
                    q.text,
                    q.documents(),
                    top_n=None if self.top_n is None else min(self.top_n, len(q.candidates)),
                    context={"domain": self.dataset.domain, "qid": q.qid, "request_id": q.qid},
                )
            return out

        return self._runner.run(each())

    def run(
        self,
        label: str,
        policy: Policy,
        *,
        budget: Budgets = None,
        qids: Iterable[str] | None = None,
        kind: str = "policy",
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        window: BudgetWindow | None = None,
    ) -> RunResult:
        """Every query (or those in ``qids``) through a Router with ``policy``, one after another (``window``:
        a mean-cost budget window the Router shares, router.accounting.budget)."""
        if not self._warm:
            self.warm_up()
        wanted = None if qids is None else set(qids)
        queries = [q for q in self.dataset.queries if wanted is None or q.qid in wanted]
        records = self._runner.run(self._arun(label, policy, queries, budget, specs, window))
        described = budget.describe() if isinstance(budget, QueryBudget) else ("per-query" if budget else "none")
        return RunResult.from_records(label, kind, policy.name, described, records, self.dataset.qrels, self.measures)

    async def _arun(
        self,
        label: str,
        policy: Policy,
        queries: Sequence[LabelledQuery],
        budget: Budgets,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        window: BudgetWindow | None = None,
    ) -> list[QueryRecord]:
        recorder = _Recorder(policy)
        router = self.router(recorder, specs, window)
        records: list[QueryRecord] = []
        for q in _progress(queries, label, self.progress):
            b = budget if isinstance(budget, QueryBudget) or budget is None else budget.get(q.qid)
            result = await router.arerank(
                q.text,
                q.documents(),
                top_n=None if self.top_n is None else min(self.top_n, len(q.candidates)),
                latency_budget_ms=None if b is None else b.latency_ms,
                max_cost_usd=None if b is None else b.max_cost_usd,
                context={"domain": self.dataset.domain, "qid": q.qid, "request_id": f"{label}:{q.qid}"},
            )
            if self.decision_log is not None:
                self._log(label, q, result)
            records.append(
                QueryRecord(
                    qid=q.qid,
                    ranking=tuple(item.id for item in result.items),
                    latency_ms=result.latency_ms,
                    cost_usd=result.actual_cost_usd,
                    predicted_cost_usd=result.predicted_cost_usd,
                    served=served_name(result, len(q.candidates)),
                    planned=result.explanation.chosen,
                    degraded=result.degraded,
                    degraded_reason=result.degraded_reason,
                    features=recorder.last,
                )
            )
        return records

    def _log(self, label: str, query: LabelledQuery, result: RerankResult) -> None:
        assert self.decision_log is not None
        record = decision_from_result(
            result,
            query=query.text,
            latency_budget_ms=None,
            max_cost_usd=None,
            domain=self.dataset.domain,
            top_k=10,
            include_text=False,
            timestamp=time.time(),
            experiment=f"offline:{self.dataset.name}",
            arm=label,
        )
        self.decision_log.record(dataclasses.replace(record, request_id=query.qid))
        if query.qid not in self._logged_feedback:
            self._logged_feedback.add(query.qid)
            grades = {doc: float(grade) for doc, grade in self.dataset.qrels.get(query.qid, {}).items()}
            self.decision_log.record_feedback(query.qid, relevance=grades)

    def run_option(
        self, stages: Sequence[tuple[str, int | None]], *, label: str | None = None, qids: Iterable[str] | None = None
    ) -> RunResult:
        """A fixed option: ``[]`` is the retriever's order, ``[("a", None)]`` one tier, ``[("a", None), ("b", 20)]`` a cascade."""
        policy = OptionPolicy(tuple(stages))
        name = label or option_name(stages)
        kind = "tier" if len(stages) <= 1 else "cascade"
        return self.run(name, policy, qids=qids, kind=kind)

    def tiers(self, names: Iterable[str] | None = None, qids: Iterable[str] | None = None) -> list[RunResult]:
        """The retriever's order and each available backend alone on all candidates."""
        chosen = list(names) if names is not None else self.available()
        wanted = None if qids is None else list(qids)
        out = [self.run_option([], label=RETRIEVER_ORDER, qids=wanted)]
        out.extend(self.run_option([(name, None)], qids=wanted) for name in chosen)
        return out

    def margins(self, backend: str, qids: Iterable[str] | None = None) -> dict[str, float]:
        """qid -> top-1 minus top-2 score of ``backend`` on all candidates: what an adaptive
        cascade's escalation threshold is calibrated on (policies.cascade.calibrate_margin_threshold)."""
        from router.executor import top_margin

        if not self._warm:
            self.warm_up()
        wanted = None if qids is None else set(qids)
        chosen = self.backends[backend]

        async def one(q: LabelledQuery) -> float:
            scores = await chosen.rerank(q.text, [c.text for c in q.candidates])
            return top_margin(scores.values)

        queries = [q for q in self.dataset.queries if wanted is None or q.qid in wanted]
        return {q.qid: self._runner.run(one(q)) for q in _progress(queries, f"margins {backend}", self.progress)}

    def first_stage_scores(self, backend: str, qids: Iterable[str] | None = None) -> dict[str, tuple[float, ...]]:
        """qid -> ``backend``'s scores on all candidates in the retriever's order: the evidence an
        escalation rule sees after that first stage (policies.adaptive.escalation_features)."""
        if not self._warm:
            self.warm_up()
        wanted = None if qids is None else set(qids)
        chosen = self.backends[backend]

        async def one(q: LabelledQuery) -> tuple[float, ...]:
            return tuple((await chosen.rerank(q.text, [c.text for c in q.candidates])).values)

        queries = [q for q in self.dataset.queries if wanted is None or q.qid in wanted]
        return {q.qid: self._runner.run(one(q)) for q in _progress(queries, f"scores {backend}", self.progress)}

    def sweep(
        self, label: str, policy: Policy, ceilings: Sequence[float], *, qids: Iterable[str] | None = None
    ) -> list[RunResult]:
        """The policy under each per-query cost ceiling: the points of its cost-quality curve."""
        wanted = None if qids is None else list(qids)
        return [
            self.run(f"{label} @ ${c:g}", policy, budget=QueryBudget(max_cost_usd=c), qids=wanted, kind="sweep") for c in ceilings
        ]
