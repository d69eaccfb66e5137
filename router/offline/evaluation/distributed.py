"""``EvalHarness.run``'s per-query work as a Ray map: offline replay of a policy over a labelled set
that outgrows one process.

    from router.offline.evaluation import load_dataset
    from router.offline.evaluation.distributed import run_on_ray

    run = run_on_ray(load_dataset("../shared/data/trec-dl19"), "my-config.yaml", "constrained", actors=4)
    run.metrics, run.records

Query ids are split into batches and mapped over a pool of actors (``ray.data.ActorPoolStrategy``);
each actor holds one :class:`~router.offline.evaluation.runner.EvalHarness` (backends built and local models
loaded once) and routes its queries through it; the driver gathers the per-query records and computes
the metrics over all of them, so the :class:`~router.offline.evaluation.runner.RunResult` is the one a single
process gives (per-query latencies are each actor's simulated clock, as in one process). Records
come back without their planning features (not needed for metrics; fitting the learned policy still
runs in one process). Needs the ``ray`` and ``eval`` extras.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from policies import Policy, create_policy
from router.config import RouterConfig
from router.datasets import Dataset
from router.errors import MissingDependencyError
from router.offline.evaluation.metrics import MeasureSet
from router.offline.evaluation.runner import EvalHarness, QueryBudget, QueryRecord, RunResult

try:
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError("evaluation on Ray needs ray[data]: pip install 'rerank-router[ray]'") from exc

__all__ = ["run_on_ray"]

ConfigSource = RouterConfig | Mapping[str, Any] | str | Path
Budget = QueryBudget | Mapping[str, QueryBudget] | None


class _HarnessActor:
    def __init__(
        self, dataset: Dataset, config: ConfigSource, label: str, policy: Policy, budget: Budget, top_n: int | None
    ) -> None:
        self.harness = EvalHarness(dataset, config, top_n=top_n)
        self.harness.warm_up()
        self.label, self.policy, self.budget = label, policy, budget

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
        qids = [str(q) for q in batch["qid"]]
        run = self.harness.run(self.label, self.policy, qids=qids, budget=self.budget)
        return {"qid": [r.qid for r in run.records], "record": [json.dumps(_record_json(r)) for r in run.records]}


def _record_json(record: QueryRecord) -> dict[str, Any]:
    return {
        "qid": record.qid,
        "ranking": list(record.ranking),
        "latency_ms": record.latency_ms,
        "cost_usd": record.cost_usd,
        "predicted_cost_usd": record.predicted_cost_usd,
        "served": record.served,
        "planned": record.planned,
        "degraded": record.degraded,
        "degraded_reason": record.degraded_reason,
    }


def run_on_ray(
    dataset: Dataset,
    config: RouterConfig | Mapping[str, Any] | str | os.PathLike[str],
    policy: Policy | str,
    *,
    label: str | None = None,
    actors: int = 2,
    batch_size: int = 8,
    budget: Budget = None,
    top_n: int | None = 10,
    qids: Sequence[str] | None = None,
) -> RunResult:
    """Route ``dataset``'s queries (or ``qids``) with ``policy`` (a Policy or a registered name)
    on ``actors`` Ray actors; returns the same RunResult as ``EvalHarness.run`` in one process."""
    chosen = create_policy(policy) if isinstance(policy, str) else policy
    name = label or chosen.name
    source: ConfigSource = config if isinstance(config, RouterConfig | Mapping) else str(config)
    if isinstance(source, str) and source != "default":
        source = Path(source).resolve()  # actors may start in another working directory
    wanted = list(qids) if qids is not None else list(dataset.qids)
    records_out = (
        ray.data.from_items([{"qid": q} for q in wanted])
        .map_batches(
            _HarnessActor,
            fn_constructor_args=(dataset, source, name, chosen, budget, top_n),
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
        )
        .take_all()
    )
    by_qid = {}
    for row in records_out:
        data = json.loads(str(row["record"]))
        by_qid[data["qid"]] = QueryRecord(**{**data, "ranking": tuple(data["ranking"])})
    records = [by_qid[q] for q in wanted]
    described = budget.describe() if isinstance(budget, QueryBudget) else ("per-query" if budget else "none")
    return RunResult.from_records(name, "policy", chosen.name, described, records, dataset.qrels, MeasureSet(rel=dataset.rel))
