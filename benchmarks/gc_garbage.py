"""Cyclic garbage per request, and garbage-collector pauses with and without warm_up's gc.freeze().

Full GC passes pause the event loop; how often they run grows with the cyclic garbage each request
leaves, how long they take with the heap they scan. This drives the fault benchmark's workload
(benchmarks/faults.py) and reports:

1. the objects the cyclic collector had to free (gc.DEBUG_SAVEALL keeps them for counting) after
   ``--requests`` requests;
2. the longest and total GC pause over ``--pause-requests`` requests, the start-up heap frozen out
   of full passes (what Router.warm_up() does) and not, alternating, ``--rounds`` times each.

    python benchmarks/gc_garbage.py [--requests 500] [--pause-requests 3000] [--rounds 2]

Only ``faults.run(requests, concurrency, seed)`` is used for part 1, so copying this file into an
older checkout measures that version's garbage the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faults

from router import Router


def cyclic_garbage(requests: int, seed: int) -> Counter[str]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(faults.run(requests, 16, seed))
        gc.collect()
        return Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def pauses(requests: int, seed: int, freeze: bool) -> tuple[float, float, int]:
    """(longest GC pause ms, total ms, collections) over one run."""
    times: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            times.append((time.perf_counter() - started[0]) * 1000)

    original = Router.warm_up
    Router.warm_up = lambda self, *, freeze_gc=True: original(self, freeze_gc=freeze)  # type: ignore[method-assign]
    gc.unfreeze()
    gc.callbacks.append(on_gc)
    try:
        asyncio.run(faults.run(requests, 16, seed))
    finally:
        gc.callbacks.remove(on_gc)
        Router.warm_up = original  # type: ignore[method-assign]
        gc.unfreeze()
    return max(times, default=0.0), sum(times), len(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--pause-requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    garbage = cyclic_garbage(args.requests, args.seed)
    print(f"cyclic garbage after {args.requests} requests: {sum(garbage.values()):,} objects")
    print("  most common: " + ", ".join(f"{name} {n}" for name, n in garbage.most_common(8)))

    print(f"\nGC pauses over {args.pause_requests} requests (rounds alternate):")
    print(f"{'start-up heap':<16} {'round':>5} {'longest ms':>11} {'total ms':>9} {'passes':>7}")
    if hasattr(faults, "StallMonitor"):  # the current benchmark calls Router.warm_up(); older ones did not
        for round_ in range(args.rounds):
            for freeze in (False, True):
                longest, total, count = pauses(args.pause_requests, args.seed + round_, freeze)
                label = "frozen" if freeze else "not frozen"
                print(f"{label:<16} {round_ + 1:>5} {longest:>11.1f} {total:>9.1f} {count:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
