"""Batch reranking: many requests through one Router, and the JSONL files ``rerank-router batch`` reads and writes.

    outcomes = router.rerank_many([{"id": "q1", "query": "...", "documents": [...]}, ...], concurrency=8)
    rerank-router batch --input requests.jsonl --output results.jsonl --concurrency 8

- Bounded concurrency: at most ``concurrency`` requests in flight. Rate limits of API tiers hold
  across the batch: every request goes through the one Router, whose executor applies each
  backend's rpm / tpm limiter (``router.resilience.limits``).
- Per-request budgets: each request's own ``latency_budget_ms`` / ``max_cost_usd`` / constraints,
  else the batch's defaults, else the config's.
- Results in input order; a request that fails (bad input, or anything a backend raised past the
  router's fallbacks) is an error outcome for that item, never the end of the batch.

Request line (JSON): ``{"id": "q1", "query": "...", "documents": [str | {"text", "id", "metadata"}],
"top_n"?, "latency_budget_ms"?, "max_cost_usd"?, "constraints"?, "context"?}``; ``id`` defaults to
``line-<n>``. The request id the router logs is the batch id (``context.request_id`` unless given).

Result line: ``{"id", "ok": true, "result": {...}}`` (see :func:`result_record`) or
``{"id", "ok": false, "error": {"type", "message"}}``, one per request.

The output file is written atomically: results stream into ``<output>.partial`` (flushed per line,
fsynced every few dozen) and, once every request is answered, are rewritten in input order to a
temporary file that replaces ``<output>``. A killed run leaves the partial file; running the same
command again skips the ids already in it (a torn last line is dropped and redone), so no request
is answered twice; two runs on one output at once are refused. The same per-request function serves Ray Data (``router.integrations.ray``) and
Spark's ``mapInPandas`` (see the README).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from router.backends.registry import build_backend
from router.config import RouterConfig, load_config
from router.errors import InvalidRequestError
from router.result import RerankResult

if TYPE_CHECKING:
    from router.engine import Router

__all__ = [
    "BatchOutcome",
    "BatchRequest",
    "BatchStats",
    "ResultsFile",
    "arerank_many",
    "outcome_record",
    "pending",
    "read_requests",
    "result_record",
    "run_batch_file",
    "split_rate_limits",
]

DEFAULT_CONCURRENCY = 8
_FIELDS = frozenset({"id", "query", "documents", "top_n", "latency_budget_ms", "max_cost_usd", "constraints", "context"})


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: ``route_rerank``'s arguments and an id unique in the batch."""

    id: str
    query: str
    documents: Sequence[Any]
    top_n: int | None = None
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    constraints: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: object, *, default_id: str) -> BatchRequest:
        """From a decoded request line; a wrong shape is an :class:`InvalidRequestError`."""
        if isinstance(data, BatchRequest):
            return data
        if not isinstance(data, Mapping):
            raise InvalidRequestError(f"a request must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - _FIELDS)
        if unknown:
            raise InvalidRequestError(f"unknown request field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
        if "query" not in data or "documents" not in data:
            raise InvalidRequestError("a request needs 'query' and 'documents'")
        raw_id = data.get("id", default_id)
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
            raise InvalidRequestError(f"request id must be a string or integer, got {type(raw_id).__name__}")
        for name in ("constraints", "context"):
            if data.get(name) is not None and not isinstance(data[name], Mapping):
                raise InvalidRequestError(f"request {raw_id}: '{name}' must be an object")
        return cls(
            id=str(raw_id),
            query=data["query"],
            documents=data["documents"],
            top_n=data.get("top_n"),
            latency_budget_ms=data.get("latency_budget_ms"),
            max_cost_usd=data.get("max_cost_usd"),
            constraints=data.get("constraints"),
            context=data.get("context"),
        )


@dataclass(frozen=True)
class BatchOutcome:
    """What one request of a batch came to: a result, or the error that stopped it."""

    id: str
    result: RerankResult | None = None
    error_type: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def record(self) -> dict[str, Any]:
        """The result line written for this request (:func:`outcome_record`)."""
        return outcome_record(self)


@dataclass(frozen=True)
class _Defaults:
    top_n: int | None = None
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def result_record(result: RerankResult) -> dict[str, Any]:
    """A JSON-ready form of a result without document text: the order (input indices and ids),
    scores, who served it, cost, latency, degradation and each stage."""
    return {
        "request_id": result.request_id,
        "indices": [item.index for item in result.items],
        "ids": [item.id for item in result.items],
        "scores": [item.score for item in result.items],
        "top_n": result.top_n,
        "backends": list(result.backends),
        "chosen": result.explanation.chosen,
        "policy": result.explanation.policy,
        "latency_ms": result.latency_ms,
        "predicted_latency_ms": result.predicted_latency_ms,
        "predicted_cost_usd": result.predicted_cost_usd,
        "actual_cost_usd": result.actual_cost_usd,
        "degraded": result.degraded,
        "degraded_reason": result.degraded_reason,
        "experiment": result.experiment,
        "arm": result.arm,
        "stages": [
            {
                "backend": s.backend,
                "model": s.model,
                "candidates_in": s.candidates_in,
                "ok": s.ok,
                "latency_ms": s.latency_ms,
                "cost_usd": s.cost_usd,
                "attempts": s.attempts,
                "hedged": s.hedged,
                "error": s.error,
            }
            for s in result.stages
        ],
    }


def outcome_record(outcome: BatchOutcome) -> dict[str, Any]:
    if outcome.result is not None:
        return {"id": outcome.id, "ok": True, "result": result_record(outcome.result)}
    return {"id": outcome.id, "ok": False, "error": {"type": outcome.error_type, "message": outcome.error_message}}


def _failed(request_id: str, exc: BaseException) -> BatchOutcome:
    return BatchOutcome(request_id, error_type=type(exc).__name__, error_message=str(exc))


async def _one(router: Router, request: BatchRequest, defaults: _Defaults) -> BatchOutcome:
    context = {**defaults.context, **(request.context or {})}
    context.setdefault("request_id", request.id)
    try:
        result = await router.arerank(
            request.query,
            request.documents,
            top_n=request.top_n if request.top_n is not None else defaults.top_n,
            latency_budget_ms=request.latency_budget_ms if request.latency_budget_ms is not None else defaults.latency_budget_ms,
            max_cost_usd=request.max_cost_usd if request.max_cost_usd is not None else defaults.max_cost_usd,
            constraints={**defaults.constraints, **(request.constraints or {})} or None,
            context=context,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one request's failure is that item's outcome, never the batch's end
        return _failed(request.id, exc)
    return BatchOutcome(request.id, result=result)


Item = tuple[int, BatchRequest | BatchOutcome]
"""A request by its position in the batch, or the outcome already known for it (a malformed line)."""


def _items(requests: Iterable[BatchRequest | Mapping[str, Any] | BatchOutcome]) -> Iterator[Item]:
    for position, raw in enumerate(requests):
        if isinstance(raw, BatchOutcome):
            yield position, raw
            continue
        try:
            yield position, BatchRequest.from_json(raw, default_id=str(position))
        except InvalidRequestError as exc:
            raw_id = raw.get("id") if isinstance(raw, Mapping) else None
            yield position, _failed(str(raw_id if raw_id is not None else position), exc)


async def _drive(
    router: Router,
    items: Iterable[Item],
    concurrency: int,
    defaults: _Defaults,
    emit: Callable[[int, BatchOutcome], None],
) -> None:
    """``concurrency`` workers pull requests in order and emit each outcome as it completes."""
    if concurrency < 1:
        raise InvalidRequestError(f"concurrency must be at least 1, got {concurrency}")
    source = iter(items)

    async def worker() -> None:
        for position, item in source:  # one shared iterator: each item is taken by one worker
            outcome = item if isinstance(item, BatchOutcome) else await _one(router, item, defaults)
            emit(position, outcome)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def arerank_many(
    router: Router,
    requests: Iterable[BatchRequest | Mapping[str, Any] | BatchOutcome],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    top_n: int | None = None,
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
    constraints: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    on_outcome: Callable[[BatchOutcome], None] | None = None,
) -> list[BatchOutcome]:
    """Rerank every request through ``router``, at most ``concurrency`` at a time.

    ``requests``: :class:`BatchRequest` objects or request mappings (the JSONL line's shape; an id
    defaults to the position). The keyword settings are defaults for requests that give none
    (constraints and context merge, the request's keys winning). A :class:`BatchOutcome` in
    ``requests`` (e.g. a malformed line from :func:`read_requests`) is passed through as that
    item's outcome. Returns one outcome per request, in input order; ``on_outcome`` sees each as
    it completes (on the event loop: keep it quick).
    """
    outcomes: dict[int, BatchOutcome] = {}

    def emit(position: int, outcome: BatchOutcome) -> None:
        outcomes[position] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    defaults = _Defaults(top_n, latency_budget_ms, max_cost_usd, dict(constraints or {}), dict(context or {}))
    await _drive(router, _items(requests), concurrency, defaults, emit)
    return [outcomes[i] for i in range(len(outcomes))]


def split_rate_limits(config: RouterConfig | Mapping[str, Any] | str | os.PathLike[str] | None, shares: int) -> RouterConfig:
    """``config`` with each backend's rpm / tpm (``resilience.backends.<name>.limits``, else the
    catalog's published limit) divided by ``shares``: the config for one of ``shares`` Routers
    that run side by side (Ray actors, Spark partitions), so together they keep the provider's limit."""
    if shares < 1:
        raise InvalidRequestError(f"shares must be at least 1, got {shares}")
    cfg = load_config(config)
    if shares == 1:
        return cfg
    overrides = {name: dict(value) for name, value in cfg.resilience.backends.items()}
    for name, backend_config in cfg.backends.items():
        spec = build_backend(name, backend_config).spec  # catalog + overrides; builds no client, loads no model
        limits = cfg.resilience_for(name).limits
        share = {
            key: value / shares for key, value in (("rpm", limits.rpm or spec.rpm), ("tpm", limits.tpm or spec.tpm)) if value
        }
        if share:
            entry = overrides.setdefault(name, {})
            entry["limits"] = {**dict(entry.get("limits") or {}), **share}
    return cfg.model_copy(update={"resilience": cfg.resilience.model_copy(update={"backends": overrides})})


# -- files ---------------------------------------------------------------------------------------


def read_requests(path: str | os.PathLike[str]) -> list[BatchRequest | BatchOutcome]:
    """The requests of a JSONL file, in order; a line that is not a valid request becomes its
    error outcome (so it is answered like the others). Duplicate ids are an error: a resumed run
    could not tell them apart."""
    items: list[BatchRequest | BatchOutcome] = []
    seen: dict[str, int] = {}
    with Path(path).open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            default_id = f"line-{number}"
            item: BatchRequest | BatchOutcome
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                item = BatchOutcome(
                    default_id, error_type="InvalidRequestError", error_message=f"line {number}: not JSON ({exc.msg})"
                )
            else:
                try:
                    item = BatchRequest.from_json(data, default_id=default_id)
                except InvalidRequestError as exc:
                    raw_id = data.get("id") if isinstance(data, Mapping) else None
                    ok_id = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
                    item = _failed(str(raw_id) if ok_id else default_id, exc)
            if item.id in seen:
                raise InvalidRequestError(f"{path}: request id {item.id!r} on line {number} is already on line {seen[item.id]}")
            seen[item.id] = number
            items.append(item)
    return items


class ResultsFile:
    """The output of a batch, resumable and written atomically (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync_every: int = 64) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._fsync_every = fsync_every
        self._stream: IO[str] | None = None
        self._unsynced = 0

    def open(self) -> set[str]:
        """Start or resume: returns the ids already answered (in ``<output>.partial``, or in a
        complete ``<output>`` from an earlier run, whose lines are carried over)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.partial.exists() and self.path.exists():
            _atomic_write(self.partial, self.path.read_bytes())
        done: set[str] = set()
        good = 0
        if self.partial.exists():
            with self.partial.open("rb") as stream:
                for raw in stream:
                    try:
                        record = json.loads(raw)
                        done.add(str(record["id"]))
                    except (ValueError, KeyError, TypeError):
                        break  # a torn last line from a killed run: dropped, and its request redone
                    if not raw.endswith(b"\n"):
                        done.discard(str(record["id"]))
                        break
                    good += len(raw)
            with self.partial.open("r+b") as stream:
                stream.truncate(good)
        self._stream = self.partial.open("a", encoding="utf-8")
        try:  # one run per output at a time; the kernel drops the lock when a run dies
            fcntl.flock(self._stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise InvalidRequestError(f"another batch run is writing {self.path} (its {self.partial.name} is locked)") from None
        return done

    def write(self, record: Mapping[str, Any]) -> None:
        assert self._stream is not None, "open() first"
        self._stream.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
        self._stream.flush()
        self._unsynced += 1
        if self._unsynced >= self._fsync_every:
            os.fsync(self._stream.fileno())
            self._unsynced = 0

    def commit(self, order: Sequence[str]) -> int:
        """Every request answered: rewrite the results in ``order`` (ids; lines of other ids
        follow), replace ``<output>`` atomically, remove the partial file. Returns lines written."""
        if self._stream is not None:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
            self._stream = None
        lines: dict[str, bytes] = {}
        with self.partial.open("rb") as stream:
            for raw in stream:
                lines.setdefault(str(json.loads(raw)["id"]), raw)
        ordered = [lines.pop(i) for i in order if i in lines]
        ordered.extend(lines.values())
        _atomic_write(self.path, b"".join(ordered))
        self.partial.unlink()
        return len(ordered)

    def close(self) -> None:
        """Stop without committing (the partial file stays for a resumed run)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class BatchStats:
    total: int
    skipped: int
    """Already answered by an earlier, interrupted run."""
    ok: int
    failed: int
    written: int
    """Lines in the output file."""


class _Progress:
    """tqdm on stderr when installed (the ``eval`` / ``ray`` extras), else a line every 5%."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self._bar: Any = None
        self._total, self._count, self._enabled = total, initial, enabled
        self._step = max(1, total // 20)
        if not enabled:
            return
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]
        except ImportError:
            return
        self._bar = tqdm(total=total, initial=initial, unit="req", file=sys.stderr, desc="rerank")

    def update(self) -> None:
        self._count += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self._enabled and (self._count % self._step == 0 or self._count == self._total):
            print(f"rerank: {self._count}/{self._total}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def pending(requests: Sequence[BatchRequest | BatchOutcome], done: set[str]) -> list[BatchRequest | BatchOutcome]:
    return [r for r in requests if r.id not in done]


def run_batch_file(
    router: Router,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool = True,
    top_n: int | None = None,
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
    constraints: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> BatchStats:
    """``rerank-router batch``: every request of ``input_path`` not yet answered in
    ``output_path`` through ``router`` (its sync loop), results streamed to the partial file,
    then committed in input order."""
    requests = read_requests(input_path)
    out = ResultsFile(output_path)
    done = out.open()
    todo = pending(requests, done)
    counts = {"ok": 0, "failed": 0}
    bar = _Progress(len(requests), len(requests) - len(todo), progress)

    def on_outcome(outcome: BatchOutcome) -> None:
        try:
            out.write(outcome.record())
        except ValueError as exc:  # e.g. a non-finite number: the line must stay valid JSON
            outcome = _failed(outcome.id, exc)
            out.write(outcome.record())
        counts["ok" if outcome.ok else "failed"] += 1
        bar.update()

    try:
        router.rerank_many(
            todo,
            concurrency=concurrency,
            top_n=top_n,
            latency_budget_ms=latency_budget_ms,
            max_cost_usd=max_cost_usd,
            constraints=constraints,
            context=context,
            on_outcome=on_outcome,
        )
    except BaseException:
        out.close()
        raise
    finally:
        bar.close()
    written = out.commit([r.id for r in requests])
    return BatchStats(len(requests), len(requests) - len(todo), counts["ok"], counts["failed"], written)
