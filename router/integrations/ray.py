"""Batch reranking scaled out on Ray Data: a pool of actors, one Router each, built once.

    import ray
    from router.integrations.ray import rerank_dataset, run_batch_ray

    results = rerank_dataset(ray.data.read_text("requests.jsonl"), "my-config.yaml", actors=8, column="text")
    run_batch_ray("requests.jsonl", "results.jsonl", config="my-config.yaml", actors=8)   # = rerank-router batch --ray

Each actor (``RerankActor``) builds its Router (and loads its local models) once, then reranks
every batch Ray hands it with :func:`router.batch.arerank_many`'s bounded concurrency, so results
have exactly the schema of ``rerank-router batch``: columns ``id`` and ``record`` (the result line,
as JSON text). The pool is ``map_batches(..., compute=ray.data.ActorPoolStrategy(size=actors))``.

API rate limits are per Router, so each actor gets ``1/actors`` of every backend's rpm / tpm
(configured, else the catalog's): the pool as a whole stays within the provider's limit
(:func:`router.batch.split_rate_limits`; backends a ``router_factory`` adds are not divided). :func:`run_batch_ray` adds the file handling of ``rerank-router
batch`` (resume, atomic output in input order); the driver writes, the actors rerank.

:func:`replay_dataset` is offline replay as a Ray map: logged requests (the same request lines; a
decision log holds no text unless ``include_text``) through Routers whose config names another
policy. Actors take the environment of the process that starts Ray (locally) or of the cluster's
workers: API keys must be there. Needs the ``ray`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from router import Router, RouterConfig, load_config
from router.batch import (
    DEFAULT_CONCURRENCY,
    BatchOutcome,
    BatchRequest,
    BatchStats,
    ResultsFile,
    pending,
    read_requests,
    split_rate_limits,
)
from router.config import PolicyConfig
from router.errors import InvalidRequestError, MissingDependencyError

try:
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError("router.integrations.ray needs ray[data]: pip install 'rerank-router[ray]'") from exc

__all__ = ["RerankActor", "replay_dataset", "request_line", "rerank_dataset", "run_batch_ray", "split_rate_limits"]

RouterFactory = Callable[[RouterConfig], Router]
ConfigSource = RouterConfig | Mapping[str, Any] | str | os.PathLike[str] | None


def request_line(request: BatchRequest) -> str:
    """A request as its JSONL line (fields left unset are omitted)."""
    return json.dumps({k: v for k, v in asdict(request).items() if v is not None}, separators=(",", ":"))


class RerankActor:
    """One Ray actor: a Router built once from ``config`` (or by ``router_factory(config)``),
    local models loaded at start (``warm``); ``__call__`` reranks one batch of request lines."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        column: str = "request",
        concurrency: int = DEFAULT_CONCURRENCY,
        defaults: Mapping[str, Any] | None = None,
        warm: bool = True,
        router_factory: RouterFactory | None = None,
    ) -> None:
        self.router = router_factory(config) if router_factory is not None else Router(config)
        if warm:
            self.router.warm_up(freeze_gc=False)
        self.column = column
        self.concurrency = concurrency
        self.defaults = dict(defaults or {})

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
        items: list[BatchRequest | BatchOutcome] = []
        for line in batch[self.column]:
            text = str(line)
            # a line without an id is named by its content: stable across batches, actors and reruns
            default_id = "row-" + hashlib.sha256(text.encode()).hexdigest()[:16]
            try:
                items.append(BatchRequest.from_json(json.loads(text), default_id=default_id))
            except (ValueError, InvalidRequestError) as exc:
                items.append(BatchOutcome(default_id, error_type=type(exc).__name__, error_message=str(exc)))
        outcomes = self.router.rerank_many(items, concurrency=self.concurrency, **self.defaults)
        return {"id": [o.id for o in outcomes], "record": [json.dumps(o.record(), separators=(",", ":")) for o in outcomes]}


def rerank_dataset(
    dataset: ray.data.Dataset,
    config: ConfigSource = None,
    *,
    actors: int = 2,
    column: str = "request",
    batch_size: int = 64,
    concurrency: int = DEFAULT_CONCURRENCY,
    num_cpus: float = 1,
    warm: bool = True,
    router_factory: RouterFactory | None = None,
    **defaults: Any,
) -> ray.data.Dataset:
    """Map a dataset of request lines (JSON text in ``column``) through a pool of ``actors``
    Routers; returns a dataset of ``id`` and ``record`` (the ``rerank-router batch`` result line).
    ``defaults``: top_n, latency_budget_ms, max_cost_usd, constraints, context for requests that give none."""
    per_actor = split_rate_limits(config, actors)
    return dataset.map_batches(
        RerankActor,
        fn_constructor_args=(per_actor,),
        fn_constructor_kwargs={
            "column": column,
            "concurrency": concurrency,
            "defaults": defaults,
            "warm": warm,
            "router_factory": router_factory,
        },
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
    )


def replay_dataset(
    dataset: ray.data.Dataset,
    config: ConfigSource,
    *,
    policy: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ray.data.Dataset:
    """Offline replay as a Ray map: logged request lines through ``config`` with its policy
    replaced by ``policy`` (``{"name": ..., "params": {...}}``), same schema as :func:`rerank_dataset`
    (compare two policies by running both over the same requests and joining on ``id``)."""
    cfg = load_config(config)
    if policy is not None:  # checked when each actor builds its Router (names, fixed backends)
        cfg = cfg.model_copy(update={"policy": PolicyConfig.model_validate(dict(policy))})
    return rerank_dataset(dataset, cfg, **kwargs)


def run_batch_ray(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    config: ConfigSource = None,
    actors: int = 2,
    address: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int = 64,
    progress: bool = True,
    warm: bool = True,
    router_factory: RouterFactory | None = None,
    **defaults: Any,
) -> BatchStats:
    """``rerank-router batch --ray``: like :func:`router.batch.run_batch_file` (same files, resume,
    atomic output in input order), with the reranking on a pool of Ray actors. Starts a local Ray
    unless one is running or ``address`` names a cluster."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    requests = read_requests(input_path)
    out = ResultsFile(output_path)
    done = out.open()
    todo = pending(requests, done)
    counts = {"ok": 0, "failed": 0}
    try:
        lines = []
        for item in todo:
            if isinstance(item, BatchOutcome):  # a malformed line: answered here
                out.write(item.record())
                counts["failed"] += 1
            else:
                lines.append({"request": request_line(item)})
        if lines:
            results = rerank_dataset(
                ray.data.from_items(lines),
                config,
                actors=actors,
                batch_size=batch_size,
                concurrency=concurrency,
                warm=warm,
                router_factory=router_factory,
                **defaults,
            )
            for batch in results.iter_batches(batch_size=batch_size, batch_format="numpy"):
                for record in batch["record"]:
                    data = json.loads(str(record))
                    out.write(data)
                    counts["ok" if data["ok"] else "failed"] += 1
    except BaseException:
        out.close()
        raise
    written = out.commit([r.id for r in requests])
    return BatchStats(len(requests), len(requests) - len(todo), counts["ok"], counts["failed"], written)
