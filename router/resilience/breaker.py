"""Circuit breaker per backend, with half-open probing and its state behind a store interface.

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN --(recovery_s elapsed)--> HALF_OPEN: one probe call at a time is let through
    HALF_OPEN --probe succeeds--> CLOSED;  --probe fails--> OPEN again (the timer restarts)

The planner reads :meth:`CircuitBreaker.status` (pure) to reject an open backend with a reason;
the executor calls :meth:`try_acquire` right before a call and reports the outcome. State lives
in a :class:`BreakerStore` so that replicas can share it (router.resilience.redis_store); the
clock is injected so tests never sleep. A shared store that also offers ``claim_probe``
(:class:`ProbeClaimingStore`) takes the half-open probe slot atomically, so that of several
replicas only one probes; with a plain load/save store the slot is exclusive within a process.

Written here rather than taken from pybreaker/purgatory: the planner needs a side-effect-free
read of the state with a reason, the executor needs an explicit probe slot, and both need the
router's injected clock; none of those libraries offers the three together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BreakerPolicy",
    "BreakerRecord",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "InMemoryBreakerStore",
    "ProbeClaimingStore",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(5, ge=1)
    """Consecutive failures that open the breaker."""
    recovery_s: float = Field(30.0, gt=0)
    """How long an open breaker rejects calls before letting a probe through."""


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False


_CLOSED = BreakerRecord()
"""The closed, failure-free record (frozen: one serves every read and every reset)."""


class BreakerStore(Protocol):
    def load(self, name: str) -> BreakerRecord: ...

    def save(self, name: str, record: BreakerRecord) -> None: ...


@runtime_checkable
class ProbeClaimingStore(BreakerStore, Protocol):
    """A store shared by processes: ``claim_probe`` saves ``record`` (its ``probe_in_flight`` set)
    only if no probe is in flight for ``name``, as one atomic step, and says whether it did."""

    def claim_probe(self, name: str, record: BreakerRecord) -> bool: ...


class InMemoryBreakerStore:
    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}

    def load(self, name: str) -> BreakerRecord:
        return self._records.get(name, _CLOSED)

    def save(self, name: str, record: BreakerRecord) -> None:
        self._records[name] = record


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        store: BreakerStore | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._store = store or InMemoryBreakerStore()
        self._lock = threading.Lock()

    def status(self) -> tuple[BreakerState, str]:
        """The state as the next call would see it, and a reason when it is not closed. No side effects."""
        return self._status_of(self._store.load(self.name))

    def _status_of(self, record: BreakerRecord) -> tuple[BreakerState, str]:
        if record.state is BreakerState.CLOSED:
            return BreakerState.CLOSED, ""
        waited = self._clock() - record.opened_at
        if record.state is BreakerState.OPEN and waited < self.policy.recovery_s:
            return BreakerState.OPEN, (
                f"circuit open after {record.consecutive_failures} consecutive failures; "
                f"probing again in {self.policy.recovery_s - waited:.1f} s"
            )
        if record.probe_in_flight:
            return BreakerState.OPEN, "circuit half-open: a probe call is in flight"
        return BreakerState.HALF_OPEN, "circuit half-open: this call is the probe"

    def try_acquire(self) -> bool:
        """May a call go ahead now? In half-open state only one probe at a time may."""
        if self._store.load(self.name).state is BreakerState.CLOSED:  # nothing to claim: no lock
            return True
        with self._lock:
            record = self._store.load(self.name)  # again under the lock: another call may have claimed the probe
            state, _ = self._status_of(record)
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN:
                return False
            probe = replace(record, state=BreakerState.HALF_OPEN, probe_in_flight=True)
            if isinstance(self._store, ProbeClaimingStore):  # another replica may be claiming it too
                return self._store.claim_probe(self.name, probe)
            self._store.save(self.name, probe)
            return True

    def on_success(self) -> None:
        store = self._store
        if type(store) is InMemoryBreakerStore and store.load(self.name) is _CLOSED:
            return  # already the closed, failure-free record (a shared store is written: replicas count failures there)
        with self._lock:
            store.save(self.name, _CLOSED)

    def on_failure(self) -> None:
        with self._lock:
            record = self._store.load(self.name)
            failures = record.consecutive_failures + 1
            if record.state is BreakerState.HALF_OPEN or failures >= self.policy.failure_threshold:
                self._store.save(self.name, BreakerRecord(BreakerState.OPEN, failures, self._clock(), False))
            else:
                self._store.save(self.name, replace(record, consecutive_failures=failures))

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled at the deadline) frees its slot."""
        with self._lock:
            record = self._store.load(self.name)
            if record.probe_in_flight:
                self._store.save(self.name, replace(record, probe_in_flight=False))
