"""Admission control: shed a request at once when the work already in flight means it cannot
finish by its deadline.

One event loop serves every request of a Router; with N requests in flight, each needing about
``c`` ms of the loop's CPU, a new one finishes roughly ``(N + 1) * c`` ms later, whatever the
backends do. When that is past the request's deadline, the request is answered straight away with
the retriever's order (``degraded=True``, with the reason): shedding early is cheaper than
unwinding a late call, and every later request keeps its own deadline.

``c`` is learnt from the process's CPU time per completed request; until enough requests have
completed it is the configured ``cpu_ms_per_request``.

Work already queued on the loop counts too. When thousands of requests arrive at once, every one
of them takes its first step (and is admitted or shed) before any admitted request's I/O is read:
an admitted request's answer waits behind the whole queue. So the callbacks ready to run when a
request arrives (:func:`queued_callbacks`) are charged at the learnt cost of a shed answer.

On a shared machine the loop gets less than a core: a millisecond of CPU takes longer than a
millisecond. Back-to-back shed steps (a burst, nothing idle between them) measure both clocks, and
their ratio scales the in-flight estimate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Admission", "AdmissionConfig", "Shed", "queued_callbacks"]


class AdmissionConfig(BaseModel):
    """Config ``admission:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    cpu_ms_per_request: float = Field(3.0, gt=0)
    """The loop's CPU per request before it has measured its own (about a loopback API call with
    100 documents through the Cohere tier on a 2-core machine)."""
    min_in_flight: int = Field(4, ge=1)
    """Always admit at least this many requests at once, whatever the estimate says."""
    learn_every: int = Field(16, ge=1)
    """Completed requests per update of the learnt CPU cost."""
    shed_ms_per_request: float = Field(0.1, gt=0)
    """The loop's CPU per queued callback (about one shed answer) before it has measured its own."""


def queued_callbacks() -> int:
    """Callbacks ready to run on the running loop before the caller's next step.

    asyncio has no public call for this; CPython's event loops keep them in ``_ready``. Loops
    without it (uvloop) count 0: admission then sees only the requests in flight."""
    try:
        ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return 0
    return len(ready)


@dataclass(frozen=True, slots=True)
class Shed:
    """Why a request was not admitted."""

    reason: str


class Admission:
    """The in-flight count and the learnt CPU cost of an admitted request.

    Only CPU spent while requests are in flight counts (start-up and idle work do not), and the
    CPU that shed requests take (from a shed decision to :meth:`shed_done`, or else to the next
    admission decision: building the retriever-order answer) is kept out of the admitted requests'
    cost, so shedding does not feed on itself. Not thread-safe by design: one Router's requests run on one event loop at a time.
    """

    def __init__(
        self,
        config: AdmissionConfig | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config or AdmissionConfig()
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._contention = 1.0
        """Wall time per CPU time of the loop's own work (>= 1: the machine's other jobs)."""
        self.in_flight = 0
        self.shed_count = 0
        self._cpu_ms = self.config.cpu_ms_per_request
        self._shed_ms = self.config.shed_ms_per_request
        self._busy_since = 0.0
        self._busy_s = 0.0
        self._shed_s = 0.0
        self._shed_mark: float | None = None
        self._step_mark: float | None = None
        self._step_wall = 0.0
        self._done = 0

    @property
    def cpu_ms_per_request(self) -> float:
        return self._cpu_ms

    @property
    def shed_ms_per_request(self) -> float:
        return self._shed_ms

    @property
    def contention(self) -> float:
        return self._contention

    def _close_shed(self, now: float) -> None:
        if self._shed_mark is not None:
            self._shed_s += now - self._shed_mark
            self._shed_mark = None

    def _learn_step(self, now: float, wall: float) -> None:
        """From one shed decision to the next admission decision, with no admitted request
        finishing in between: what one more queued arrival costs the loop in wall time (its shed
        answer, the next arrival's task and request building, whatever the caller does around the
        call), and how much longer than its CPU time that took."""
        if self._step_mark is not None:
            cpu_ms = (now - self._step_mark) * 1000
            wall_ms = (wall - self._step_wall) * 1000
            self._step_mark = None
            # A step with idle time in it (wall far over CPU) or other work in it is not one step.
            if 0 < cpu_ms < 5 * self._cpu_ms and wall_ms < 4 * cpu_ms + 0.05:
                self._shed_ms = 0.9 * self._shed_ms + 0.1 * max(wall_ms, cpu_ms)
                self._contention = 0.9 * self._contention + 0.1 * min(max(wall_ms / cpu_ms, 1.0), 4.0)

    def may_shed(self) -> bool:
        """Whether :meth:`admit` would weigh a request's time left now (enough in flight): where it
        would not, ``admit(None)`` decides the same without the caller reading its clock or queue."""
        config = self.config
        return config.enabled and self.in_flight >= config.min_in_flight

    def admit(self, time_left_ms: float | None, queued: int = 0) -> Shed | None:
        """None (and the request counts as in flight until :meth:`done`), or why it is shed.
        ``queued``: callbacks that will run on the loop before this request's next step."""
        config = self.config
        # The CPU clock is a system call: read only where its value is used (with requests in
        # flight and no shed interval open, nothing here reads it).
        now = wall = None
        if self._shed_mark is not None or self._step_mark is not None or self.in_flight == 0:
            now, wall = self._cpu_clock(), self._wall_clock()
            self._close_shed(now)
            self._learn_step(now, wall)
        if config.enabled and time_left_ms is not None and self.in_flight >= config.min_in_flight:
            expected = (self.in_flight + 1) * self._cpu_ms * self._contention + queued * self._shed_ms
            if expected > time_left_ms:
                self.shed_count += 1
                if now is None or wall is None:
                    now, wall = self._cpu_clock(), self._wall_clock()
                self._shed_mark = self._step_mark = now
                self._step_wall = wall
                behind = f" behind {queued} queued steps" if queued else ""
                return Shed(
                    f"overloaded: {self.in_flight} requests in flight at ~{self._cpu_ms * self._contention:.1f} ms each{behind} "
                    f"would finish this one ~{expected:.0f} ms from now, {time_left_ms:.0f} ms left"
                )
        if self.in_flight == 0:
            assert now is not None  # read above
            self._busy_since = now
        self.in_flight += 1
        return None

    def shed_done(self) -> None:
        """The shed request's answer is built: the CPU since the shed decision was its cost."""
        self._close_shed(self._cpu_clock())

    def done(self) -> None:
        """An admitted request finished."""
        self._shed_mark = self._step_mark = None  # an open shed interval now holds admitted work too
        self.in_flight -= 1
        self._done += 1
        if self.in_flight > 0 and self._done < self.config.learn_every:
            return  # nothing here reads the CPU clock (a system call): not read
        now = self._cpu_clock()
        if self.in_flight == 0:
            self._busy_s += now - self._busy_since
        if self._done < self.config.learn_every:
            return
        busy = self._busy_s + (now - self._busy_since if self.in_flight > 0 else 0.0)
        measured = max(busy - self._shed_s, 0.0) * 1000 / self._done
        self._cpu_ms = 0.5 * self._cpu_ms + 0.5 * max(measured, 0.05)
        self._busy_s, self._shed_s, self._done = 0.0, 0.0, 0
        if self.in_flight > 0:
            self._busy_since = now
