"""The score cache (router.cache) on a repeating request stream, against the same stream without it.

Stream: DL19 queries and their BM25 top-100 candidates (``../shared/data/trec-dl19``; synthetic words
if absent), each query's list cut into four disjoint requests of 25 documents, so distinct requests
share no (query, document) pair. A stream of ``--requests`` requests repeats a share (0%, 30%, 60%)
of earlier ones, drawn by Zipf (s = 1.1) over the distinct requests in order of first appearance
(the first seen are the most popular); the rest are new. Each request goes, one at a time, through a
Cohere tier (``type: cohere``, rerank-v3.5 at $2 / 1K searches) on a ``LoopbackRerankServer`` in
another process that answers each call after ``--api-ms`` (a provider's service time) and counts
the calls and documents it got. Per share, a router without the cache and one with it (in-process
LRU) run the same stream, in alternating order; reported: hit rate (documents), calls and documents
at the server, dollars billed and saved, p50 / p95 per request and their ratios, and whether every
result (order and score floats) is identical with and without the cache.

Then: coalescing (32 identical concurrent requests on a cold cache -> calls counted at the server,
with and without the cache); bounded memory (10^5 distinct entries into the LRU: traced allocation
growth and RSS growth against the store's own byte count, and against a ``max_bytes`` bound that
holds fewer); the router's own CPU time per call (the process's, so other jobs on the machine do not
count) with the cache off, on and missing, on and hitting, and on with ``cache=False``, over a
zero-latency priced fake tier with 100 documents (medians over alternating rounds).

    python benchmarks/cache.py [--quick] [--requests N] [--api-ms MS] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router import Router  # noqa: E402
from router.backends.base import Usage  # noqa: E402
from router.cache import MemoryScoreStore  # noqa: E402
from router.cache.keys import digests, key_prefix  # noqa: E402
from router.testing import FakeBackend, LoopbackRerankServer  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19" / "bm25-top100.json"
KEY = "cache-benchmark-key"
DOCS_PER_REQUEST = 25
SHARES = (0.0, 0.3, 0.6)
ZIPF_S = 1.1
COALESCE_N = 32
MEMORY_ENTRIES = 100_000
_WORDS = [
    "the",
    "of",
    "and",
    "energy",
    "system",
    "water",
    "river",
    "law",
    "court",
    "market",
    "cell",
    "protein",
    "city",
    "music",
    "film",
    "war",
]


# -- the loopback API tier, in its own process ----------------------------------------------------------


class SlowCountingServer(LoopbackRerankServer):
    """Answers after ``delay_s``; ``POST /cohere/stats`` returns the rerank calls and documents so far."""

    def __init__(self, delay_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s
        self.calls = 0
        self.documents = 0

    def _respond(self, provider: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/stats":
            with self._lock:
                return 200, {"calls": self.calls, "documents": self.documents}
        with self._lock:
            self.calls += 1
            self.documents += len(body.get("documents") or ()) if isinstance(body, dict) else 0
        time.sleep(self.delay_s)
        return super()._respond(provider, path, body)


def serve(delay_ms: float) -> None:
    server = SlowCountingServer(delay_ms / 1000, api_key=KEY).start()
    print(server.url, flush=True)
    while True:
        time.sleep(3600)


def start_server(delay_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(delay_ms)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def server_stats(url: str) -> dict[str, int]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    request = urllib.request.Request(f"{url}/cohere/stats", data=b"{}", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        data: dict[str, int] = json.loads(response.read())
    return data


# -- the request stream ----------------------------------------------------------------------------------


def distinct_requests() -> tuple[list[tuple[str, list[str]]], str]:
    """(query, 25 candidates) pairs that share no (query, document) pair."""
    if DL19.is_file():
        data = json.loads(DL19.read_text(encoding="utf-8"))
        out = []
        for q in data:
            texts = [h["content"] for h in q["hits"]]
            for start in range(0, len(texts) - DOCS_PER_REQUEST + 1, DOCS_PER_REQUEST):
                out.append((q["query"], texts[start : start + DOCS_PER_REQUEST]))
        return out, f"DL19: {len(data)} queries x BM25 top-100, {DOCS_PER_REQUEST} per request"
    rng = random.Random(0)
    out = []
    for i in range(200):
        docs = [" ".join(rng.choices(_WORDS, k=60)) for _ in range(DOCS_PER_REQUEST)]
        out.append((f"synthetic query {i} " + " ".join(rng.choices(_WORDS, k=4)), docs))
    return out, "synthetic words (DL19 data not found)"


def stream(pool: list[tuple[str, list[str]]], length: int, share: float, seed: int) -> list[tuple[str, list[str]]]:
    """``length`` requests: with probability ``share`` a repeat (Zipf over those seen), else the next new one."""
    rng = random.Random(seed)
    seen: list[int] = []
    weights: list[float] = []
    out: list[tuple[str, list[str]]] = []
    fresh = 0
    for _ in range(length):
        if seen and (rng.random() < share or fresh >= len(pool)):
            pick = rng.choices(seen, weights=weights)[0]
        else:
            pick = fresh
            fresh += 1
            seen.append(pick)
            weights.append(1 / len(seen) ** ZIPF_S)
        out.append(pool[pick])
    return out


def router_config(base: str, cache: bool) -> dict[str, Any]:
    return {
        "domain": "web",
        "backends": {"api": {"type": "cohere", "model": "rerank-v3.5", "base_url": base, "spec": {"quality": {"web": 0.7}}}},
        # The catalog's 1,000 rpm would pace the benchmark: lift it, as a negotiated key would.
        "resilience": {"backends": {"api": {"limits": {"rpm": 1_000_000}}}},
        "budgets": {"latency_ms": 10_000, "max_cost_usd": 0.01},
        "cache": {"enabled": cache},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_stream(base: str, url: str, requests: list[tuple[str, list[str]]], cache: bool) -> dict[str, Any]:
    router = Router(router_config(base, cache))
    await router.awarm_up(freeze_gc=False)
    before = server_stats(url)
    latencies, outputs = [], []
    billed = saved = 0.0
    hits = docs = 0
    for query, candidates in requests:
        started = time.perf_counter()
        result = await router.arerank(query, candidates)
        latencies.append((time.perf_counter() - started) * 1000)
        outputs.append([(item.index, item.score) for item in result.items])
        billed += result.actual_cost_usd or 0.0
        saved += result.cache_saved_usd
        hits += result.cache_hits
        docs += len(candidates)
    after = server_stats(url)
    await router.aclose()
    return {
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "billed_usd": billed,
        "saved_usd": saved,
        "hit_rate": hits / docs,
        "server_calls": after["calls"] - before["calls"],
        "server_documents": after["documents"] - before["documents"],
        "outputs": outputs,
    }


async def measure_stream(base: str, url: str, pool: list[tuple[str, list[str]]], length: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for k, share in enumerate(SHARES):
        requests = stream(pool, length, share, seed + k)
        distinct = len({(q, tuple(d)) for q, d in requests})
        order = (False, True) if k % 2 == 0 else (True, False)  # alternate who goes first
        runs = {cache: await run_stream(base, url, requests, cache) for cache in order}
        off, on = runs[False], runs[True]
        rows.append(
            {
                "share": share,
                "requests": length,
                "distinct": distinct,
                "repeat_share": 1 - distinct / length,
                "hit_rate": on["hit_rate"],
                "calls_off": off["server_calls"],
                "calls_on": on["server_calls"],
                "documents_off": off["server_documents"],
                "documents_on": on["server_documents"],
                "billed_off_usd": off["billed_usd"],
                "billed_on_usd": on["billed_usd"],
                "saved_usd": on["saved_usd"],
                "p50_off_ms": off["p50_ms"],
                "p50_on_ms": on["p50_ms"],
                "p95_off_ms": off["p95_ms"],
                "p95_on_ms": on["p95_ms"],
                "p50_ratio": on["p50_ms"] / off["p50_ms"],
                "p95_ratio": on["p95_ms"] / off["p95_ms"],
                "identical": off["outputs"] == on["outputs"],
            }
        )
    return rows


async def measure_coalescing(base: str, url: str, pool: list[tuple[str, list[str]]]) -> dict[str, Any]:
    query, candidates = pool[-1]
    out: dict[str, Any] = {"n": COALESCE_N}
    for cache in (False, True):
        router = Router(router_config(base, cache))
        await router.awarm_up(freeze_gc=False)
        before = server_stats(url)
        results = await asyncio.gather(*(router.arerank(f"{query} (coalesce)", candidates) for _ in range(COALESCE_N)))
        calls = server_stats(url)["calls"] - before["calls"]
        out["calls_on" if cache else "calls_off"] = calls
        if cache:
            out["identical"] = len({tuple((i.index, i.score) for i in r.items) for r in results}) == 1
            out["coalesced_stages"] = sum(r.stages[0].coalesced for r in results)
        await router.aclose()
    return out


# -- memory ----------------------------------------------------------------------------------------------


def _rss_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fill(store: MemoryScoreStore, entries: int) -> None:
    """``entries`` distinct keys as requests make them (a prefix per query, a digest per document)."""
    for start in range(0, entries, 100):
        prefix = key_prefix("tenant:bench", "api", "0123456789abcdef", f"query {start}")
        docs = digests([f"document {start + i}" for i in range(100)])
        store.put_many([(prefix + d, 0.5 + i / 1000) for i, d in enumerate(docs)])


def measure_memory() -> list[dict[str, Any]]:
    """Per bound: RSS growth in one pass, then traced growth in another (tracemalloc's own
    bookkeeping would swamp RSS). RSS counts pages, so it also shows allocator slack."""
    rows = []
    for label, max_entries, max_bytes in (
        ("entries bound 10^5", MEMORY_ENTRIES, 1 << 30),
        ("byte bound 8 MiB", 1 << 30, 8 << 20),
    ):
        gc.collect()
        rss0 = _rss_kb()  # first, on a heap the traced pass has not grown
        store = MemoryScoreStore(max_entries=max_entries, max_bytes=max_bytes, ttl_s=3600)
        fill(store, MEMORY_ENTRIES)
        gc.collect()
        rss1 = _rss_kb()
        del store
        gc.collect()
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        store = MemoryScoreStore(max_entries=max_entries, max_bytes=max_bytes, ttl_s=3600)
        fill(store, MEMORY_ENTRIES)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        held, counted = len(store), store.size_bytes
        del store
        rows.append(
            {
                "case": label,
                "inserted": MEMORY_ENTRIES,
                "held": held,
                "counted_bytes": counted,
                "traced_bytes": traced,
                "traced_over_counted": traced / counted,
                "max_bytes": max_bytes,
                "within_byte_bound": traced <= max_bytes,
                "rss_growth_bytes": None if rss0 is None or rss1 is None else (rss1 - rss0) * 1024,
            }
        )
    return rows


# -- the router's own time -------------------------------------------------------------------------------


def _cheap_score(query: str, document: str) -> float:
    return (len(document) * 31 + len(query)) % 997 / 997


async def measure_overhead(pool: list[tuple[str, list[str]]], rounds: int, calls: int) -> dict[str, Any]:
    query, _ = pool[0]
    docs = [text for _, chunk in pool[:4] for text in chunk][:100]
    spec = {"pricing": {"scheme": "per_search_unit", "usd": 0.002}, "quality": {"web": 0.9}}

    def router(cache: bool) -> Router:
        fake = FakeBackend("api", spec=spec, usage=Usage(search_units=1), score=_cheap_score)
        return Router({"backends": {}, "budgets": {"max_cost_usd": 0.01}, "cache": {"enabled": cache}}, backends={"api": fake})

    off, on = router(False), router(True)
    await on.arerank(query, docs)  # fills the cache for the "hit" variant
    variants: dict[str, Any] = {
        "cache off": lambda i: off.arerank(f"{query} {i}", docs),
        "cache on, all miss": lambda i: on.arerank(f"{query} {i}", docs),
        "cache on, all hit": lambda i: on.arerank(query, docs),
        "cache on, cache=False": lambda i: on.arerank(f"{query} {i}", docs, cache=False),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    counter = 0
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.process_time()  # CPU: other jobs on a shared machine do not count
            for _ in range(calls):
                counter += 1
                await variants[name](counter)
            samples[name].append((time.process_time() - started) / calls * 1e6)
    await off.aclose()
    await on.aclose()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["cache off"]
    return {"documents": len(docs), "median_us": medians, "added_us": {n: m - base for n, m in medians.items()}}


# -- report -----------------------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    print(f"input: {result['input']}; {result['api_ms']:.0f} ms per API call at the loopback server")
    print(
        f"{'repeats':>7} {'distinct':>8} {'hit rate':>8} {'calls off/on':>13} {'docs off/on':>12} "
        f"{'billed off/on $':>17} {'saved $':>8} {'p50 off/on ms':>14} {'p95 off/on ms':>14} {'p50x':>5} {'p95x':>5} identical"
    )
    for row in result["stream"]:
        print(
            f"{row['share']:>7.0%} {row['distinct']:>8} {row['hit_rate']:>8.1%} "
            f"{row['calls_off']:>6}/{row['calls_on']:<6} {row['documents_off']:>6}/{row['documents_on']:<5} "
            f"{row['billed_off_usd']:>8.3f}/{row['billed_on_usd']:<8.3f} {row['saved_usd']:>8.3f} "
            f"{row['p50_off_ms']:>6.1f}/{row['p50_on_ms']:<7.1f} {row['p95_off_ms']:>6.1f}/{row['p95_on_ms']:<7.1f} "
            f"{row['p50_ratio']:>5.2f} {row['p95_ratio']:>5.2f} {'yes' if row['identical'] else 'NO'}"
        )
    c = result["coalescing"]
    print(
        f"coalescing: {c['n']} identical concurrent requests -> {c['calls_on']} call(s) at the server with the cache "
        f"({c['calls_off']} without); identical results: {'yes' if c['identical'] else 'NO'}"
    )
    for m in result["memory"]:
        rss = "n/a" if m["rss_growth_bytes"] is None else f"{m['rss_growth_bytes'] / 2**20:.1f} MiB"
        print(
            f"memory ({m['case']}): {m['inserted']:,} inserted, {m['held']:,} held; counted {m['counted_bytes'] / 2**20:.1f} MiB, "
            f"traced {m['traced_bytes'] / 2**20:.1f} MiB ({m['traced_over_counted']:.2f}x counted), RSS +{rss}; "
            f"within max_bytes {m['max_bytes'] / 2**20:.0f} MiB: {'yes' if m['within_byte_bound'] else 'NO'}"
        )
    o = result["overhead"]
    print(f"router's own CPU time per call, {o['documents']} documents, zero-latency priced fake tier (median over rounds):")
    for name, us in o["median_us"].items():
        print(f"  {name:<24} {us:>8.1f} us  ({o['added_us'][name]:+.1f} us vs cache off)")


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["CO_API_KEY"] = KEY
    pool, source = distinct_requests()
    proc, url = start_server(args.api_ms)
    try:
        base = f"{url}/cohere"
        stream_rows = await measure_stream(base, url, pool, args.requests, args.seed)
        coalescing = await measure_coalescing(base, url, pool)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "input": source,
        "api_ms": args.api_ms,
        "stream": stream_rows,
        "coalescing": coalescing,
        "memory": measure_memory(),
        "overhead": await measure_overhead(pool, args.rounds, args.calls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="60 requests per share, fewer overhead rounds")
    parser.add_argument("--requests", type=int, default=None, help="requests per share (default 160; --quick 60)")
    parser.add_argument("--api-ms", type=float, default=20.0, help="the loopback API's service time per call")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    args.requests = args.requests or (60 if args.quick else 160)
    args.rounds, args.calls = (8, 50) if args.quick else (24, 100)
    result = asyncio.run(amain(args))
    print_report(result)
    if args.json is not None:
        for row in result["stream"]:
            row.pop("outputs", None)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    ok = all(r["identical"] for r in result["stream"]) and result["coalescing"]["calls_on"] == 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
