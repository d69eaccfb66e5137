"""The decision log: a bounded queue in front of a pluggable sink, drained by one writer thread.

The request path only ever calls ``put_nowait``: when the queue is full the record is dropped and
counted, never waited for, so a slow disk or collector can cost decisions but never latency.
A sink that raises is counted and skipped; the writer keeps going. Only the writer thread calls
the sink (``write`` and, at the end, ``close``), so a sink may hold thread-bound resources.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import InvalidFeedbackError

__all__ = ["DecisionLog", "DecisionSink", "InvalidFeedbackError", "LogRecord", "feedback_record"]

logger = logging.getLogger("rerank_router.decisions")

LogRecord = DecisionRecord | FeedbackRecord


@runtime_checkable
class DecisionSink(Protocol):
    """Where records go. Called from the log's writer thread only, one batch at a time."""

    def write(self, records: Sequence[LogRecord]) -> None: ...

    def close(self) -> None: ...


class _Stop:
    """Queued by close() to wake an idle writer at once."""


_STOP = _Stop()
_OPEN_LOGS: weakref.WeakSet[DecisionLog] = weakref.WeakSet()


@atexit.register
def _close_open_logs() -> None:
    """Write what is queued before the interpreter exits (the writer is a daemon thread)."""
    for log in list(_OPEN_LOGS):
        log.close(timeout_s=2.0)


class DecisionLog:
    """Records decisions and feedback without ever blocking the caller.

    queue_size bounds memory: at most that many records wait for the writer.
    batch_size: the most records handed to one ``sink.write`` (batches form by themselves under load).
    flush_interval_s: how long an idle writer sleeps before it re-checks for close(); queued
        records are written as soon as the writer is free, not on this interval.
    warn_interval_s: the "records dropped" / "sink failed" warnings repeat at most this often.
    clock: wall-clock seconds for feedback timestamps (injectable for tests).
    """

    def __init__(
        self,
        sink: DecisionSink,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.5,
        warn_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or not flush_interval_s > 0:
            raise ValueError("queue_size and batch_size must be >= 1 and flush_interval_s > 0")
        self.sink = sink
        self._queue: queue.Queue[LogRecord | _Stop] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._warn_interval = warn_interval_s
        self._clock = clock
        self._state = threading.Condition()
        self._accepted = 0  # records put on the queue
        self._handled = 0  # records the writer has passed to the sink (written or failed)
        self._written = 0
        self._dropped = 0
        self._sink_errors = 0
        self._closed = False
        self._last_warning: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="rerank-router-decisions", daemon=True)
        self._thread.start()
        _OPEN_LOGS.add(self)

    def __repr__(self) -> str:
        return f"DecisionLog(sink={type(self.sink).__name__}, pending={self.pending}, dropped={self.dropped})"

    # -- counters ------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Records not logged because the queue was full or the log was closed."""
        return self._dropped

    @property
    def sink_errors(self) -> int:
        """Batches whose ``sink.write`` raised (their records are lost)."""
        return self._sink_errors

    @property
    def written(self) -> int:
        """Records the sink accepted."""
        return self._written

    @property
    def pending(self) -> int:
        """Records queued and not yet handed to the sink (never more than queue_size)."""
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the request path ---------------------------------------------------------------------
    def record(self, record: LogRecord) -> bool:
        """Queue one record; never blocks. False if it was dropped (queue full or log closed)."""
        if not isinstance(record, DecisionRecord | FeedbackRecord):
            raise TypeError(f"record must be a DecisionRecord or FeedbackRecord, got {type(record).__name__}")
        with self._state:
            if not self._closed:
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    pass
                else:
                    self._accepted += 1
                    return True
            self._dropped += 1
            closed = self._closed
        self._warn("dropped", "decision log %s: %d records dropped so far", "closed" if closed else "queue full", self._dropped)
        return False

    def record_feedback(
        self,
        request_id: str,
        *,
        clicked: Sequence[str] = (),
        relevance: Mapping[str, float] | None = None,
    ) -> bool:
        """Join an outcome to the decision ``request_id``: clicked doc ids (in click order) and/or
        graded judgements (doc id -> grade). Bad input raises :class:`InvalidFeedbackError`."""
        return self.record(feedback_record(request_id, clicked=clicked, relevance=relevance, timestamp=self._clock()))

    # -- waiting and closing ------------------------------------------------------------------
    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Wait until every record queued before this call has been handed to the sink.
        True if that happened within ``timeout_s`` (None: wait as long as it takes)."""
        with self._state:
            target = self._accepted
            self._state.wait_for(lambda: self._handled >= target or not self._thread.is_alive(), timeout_s)
            return self._handled >= target

    def close(self, timeout_s: float | None = 10.0) -> bool:
        """Flush, stop the writer and close the sink (from the writer thread). Idempotent; records
        sent after close are dropped and counted. True if everything queued was handed over."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._state:
            self._closed = True
        _OPEN_LOGS.discard(self)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)  # wakes an idle writer; a busy one sees _closed
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive() and self._handled >= self._accepted

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self._interval)
                except queue.Empty:
                    if self._closed:
                        return
                    continue
                batch = [] if isinstance(first, _Stop) else [first]
                while len(batch) < self._batch_size:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(item, _Stop):
                        batch.append(item)
                if batch:
                    self._write(batch)
                if self._closed and self._queue.empty():
                    return
        finally:
            try:
                self.sink.close()
            except Exception as exc:
                logger.error("decision sink %s failed to close: %s", type(self.sink).__name__, type(exc).__name__)
            with self._state:
                self._state.notify_all()

    def _write(self, batch: list[LogRecord]) -> None:
        try:
            self.sink.write(batch)
        except Exception as exc:  # a broken sink must not stop the log; content is never logged
            with self._state:
                self._sink_errors += 1
            self._warn("sink", "decision sink %s failed: %s", type(self.sink).__name__, type(exc).__name__, level=logging.ERROR)
        else:
            with self._state:
                self._written += len(batch)
        with self._state:
            self._handled += len(batch)
            self._state.notify_all()

    def _warn(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        with self._state:
            last = self._last_warning.get(key)
            if last is not None and now - last < self._warn_interval:
                return
            self._last_warning[key] = now
        logger.log(level, message, *args)


def feedback_record(
    request_id: str,
    *,
    clicked: Sequence[str] = (),
    relevance: Mapping[str, float] | None = None,
    timestamp: float,
) -> FeedbackRecord:
    """A validated :class:`FeedbackRecord`; raises :class:`InvalidFeedbackError` naming what to fix."""
    if not isinstance(request_id, str) or not request_id.strip():
        raise InvalidFeedbackError(
            f"record_feedback: request_id must be a non-empty str (the RerankResult.request_id), got {request_id!r}"
        )
    if isinstance(clicked, str | bytes) or not isinstance(clicked, Sequence):
        raise InvalidFeedbackError(
            f"record_feedback: clicked must be a list of document ids (str), got {type(clicked).__name__}"
            + ("; wrap a single id in a list" if isinstance(clicked, str) else "")
        )
    for i, doc_id in enumerate(clicked):
        if not isinstance(doc_id, str):
            raise InvalidFeedbackError(f"record_feedback: clicked[{i}] is {type(doc_id).__name__}; document ids are str")
    grades: dict[str, float] = {}
    if relevance is not None:
        if not isinstance(relevance, Mapping):
            raise InvalidFeedbackError(
                f"record_feedback: relevance must be a mapping of document id (str) to grade, got {type(relevance).__name__}"
            )
        for doc_id, grade in relevance.items():
            if not isinstance(doc_id, str):
                raise InvalidFeedbackError(f"record_feedback: relevance key {doc_id!r} is not a str document id")
            if isinstance(grade, bool) or not isinstance(grade, int | float) or not math.isfinite(grade):
                raise InvalidFeedbackError(f"record_feedback: relevance[{doc_id!r}] must be a finite number, got {grade!r}")
            grades[doc_id] = float(grade)
    return FeedbackRecord(request_id=request_id, timestamp=timestamp, clicked=tuple(clicked), relevance=grades)
