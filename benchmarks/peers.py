"""rerank-router's Cohere tier against the LiteLLM Router it replaces, and the clients beneath both.

One process, one loopback Cohere v2 server in a separate process (this file with ``--serve``: an
asyncio HTTP/1.1 server answering ``/v2/rerank`` and ``/v1/rerank`` with Cohere's documented shape,
``meta.billed_units.search_units`` included). Variants, after a warm-up, alternate in rounds (the
order rotates each round) so that a noisy machine slows them alike:

- raw ``httpx.AsyncClient`` POST and raw ``aiohttp`` POST of the same body;
- ``cohere.AsyncClientV2.rerank``; ``litellm.arerank``; LiteLLM ``Router.arerank``;
- rerank-router: ``await Router.arerank`` on the Cohere tier (``type: cohere``) without and with a
  latency budget, a cost ceiling and a bm25 fallback; sync ``route_rerank`` from a thread (same
  budget and ceiling); the Cohere tier over each transport (aiohttp, httpx, sdk); and
  ``type: http`` with ``protocol: cohere-compatible``.

Input: 100 documents of ~200 tokens (Cohere's estimate, characters / 4.52) made of DL19 BM25
passages (``../shared/data/trec-dl19``; synthetic words if absent), one query. Measured: sequential
median and p95 per call, client CPU per call (the process's CPU time, server excluded) and gen-0 GC
collections per call; then 32 and 128 calls in flight (throughput, p95, errors). Ratios are to the
LiteLLM Router. The router's own time per call (everything but the transport and the server: the
call's wall time minus the time inside the wire client's ``post``) is printed on its own line: its
calls are taken in every sequential round, after that variant's calls (``--own-calls`` in all,
spread over the rounds), and also, as in earlier versions, in one block after the concurrent
phases (printed beside it; the target reads the first). Every
call is checked: all 100 documents returned once, and the cost reported ($0.002 for rerank-v3.5 at
100 documents: one search unit; litellm's own figure beside it). The catalog's Cohere rate limit
(1,000 rpm) is lifted in the router's config (``resilience.backends.cohere.limits.rpm``), as a
production key's negotiated limit would be.

litellm is a benchmark-only dependency, pinned exactly (never 1.82.7, 1.82.8 or a 1.107.x: those
releases were compromised); install everything in a separate environment:

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install -e '.[cohere,voyage,lexical]' aiohttp 'litellm==1.110.2'
    /tmp/peers-venv/bin/python benchmarks/peers.py [--quick] [--runs N] [--calls N] [--json PATH]

Variants whose package is missing are skipped with a line saying so. ``--profile PATH`` also writes
a cProfile of sequential calls through the budgeted Cohere tier. ``--cuts`` measures instead what
each cut of issue 13 in the transport and resilience code saves: the budgeted Cohere tier's own time
and wall time per call with every cut in, and with each one reverted to the code it replaced (kept
below, as the reference), alternating in rounds. ``--pools`` measures the wire clients' pool size:
raw aiohttp and httpx POSTs with 8 to 128 pooled connections at 32 and 128 calls in flight.
``--idle`` measures how the budgeted tier's own time depends on what the machine does while the
call waits: the wire client's ``post`` answering at once with a captured answer (the router's work
alone), after 1 ms asleep on the loop (the CPU idles, as it does while a real server works), after
1 ms of busy-waiting, and over real loopback I/O; arms alternating in rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no network fetch at import
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DL19 = ROOT.parent / "shared" / "data" / "trec-dl19" / "bm25-top100.json"
KEY = "peers-benchmark-key"
MODEL = "rerank-v3.5"
N_DOCS = 100
TOKENS_PER_DOC = 200
CHARS_PER_TOKEN = 4.52  # router.tokens' estimate for the cohere family
PRICE_PER_SEARCH = 0.002  # rerank-v3.5: $2.00 / 1K searches (router/catalog.yaml)
BASELINE = "LiteLLM Router.arerank"
BUDGET = {"latency_budget_ms": 2000.0, "max_cost_usd": 0.01}
TARGETS = {"seq_budget": 0.65, "seq_sync": 0.75, "c32_throughput": 1.5, "own_ms": 0.3}
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "as",
    "by",
    "tea",
    "water",
    "energy",
    "system",
    "cell",
    "blood",
    "heart",
    "body",
    "city",
    "river",
    "law",
]


# -- the loopback Cohere v2 server (a separate process) ------------------------------------------


def cohere_answer(body: Any) -> tuple[int, dict[str, Any]]:
    """Cohere v2's answer: results best first (scores from a CRC of the text, on [0, 1)), and
    billed search units (one per query and up to 100 documents; a document longer than the model's
    context counts as several)."""
    query = body.get("query") if isinstance(body, dict) else None
    documents = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query or not isinstance(documents, list) or not documents:
        return 400, {"id": str(uuid.uuid4()), "message": "invalid request: query and documents are required"}
    texts = [d if isinstance(d, str) else str(d.get("text", "")) for d in documents]
    cap = body.get("max_tokens_per_doc") or 4096
    context = 32_768 if str(body.get("model", "")).startswith("rerank-v4") else 4_096
    q = math.ceil(len(query) / CHARS_PER_TOKEN)
    chunks = sum(max(1, math.ceil((q + min(math.ceil(len(t) / CHARS_PER_TOKEN), cap)) / context)) for t in texts)
    scores = [zlib.crc32(t.encode()) / 2**32 for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    top_n = body.get("top_n")
    if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
        order = order[:top_n]
    return 200, {
        "id": str(uuid.uuid4()),
        "results": [{"index": i, "relevance_score": scores[i]} for i in order],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": math.ceil(chunks / 100)}},
    }


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if ":" in line)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                raw = b""
                while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                    raw += await reader.readexactly(size)
                    await reader.readexactly(2)
                await reader.readuntil(b"\r\n")
            else:
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("authorization") != f"Bearer {KEY}":
                status, payload = 401, {"id": "x", "message": "invalid api token"}
            elif path.rstrip("/").endswith(("/v2/rerank", "/v1/rerank")):
                try:
                    status, payload = cohere_answer(json.loads(raw))
                except ValueError:
                    status, payload = 400, {"id": "x", "message": "invalid request: the body is not JSON"}
            else:
                status, payload = 404, {"id": "x", "message": f"no route for POST {path}"}
            data = json.dumps(payload).encode()
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def serve() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=2048)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


# -- input ------------------------------------------------------------------------------------------


def build_input() -> tuple[str, list[str], str]:
    """(query, 100 texts of ~200 estimated tokens, where they came from)."""
    target = int(TOKENS_PER_DOC * CHARS_PER_TOKEN)
    if DL19.is_file():
        data = json.loads(DL19.read_text(encoding="utf-8"))
        docs: list[str] = []
        for q in data:  # consecutive passages of one query per text, queries in turn until there are 100
            buffer = ""
            for hit in q["hits"]:
                buffer = f"{buffer} {hit['content']}".strip()
                if len(buffer) >= target:
                    docs.append(buffer[:target].rsplit(" ", 1)[0])
                    buffer = ""
            if len(docs) >= N_DOCS:
                return data[0]["query"], docs[:N_DOCS], "DL19 BM25 top-100 passages, concatenated per query"
    rng = random.Random(0)
    docs = [" ".join(rng.choices(_WORDS, k=target // 4))[:target].rsplit(" ", 1)[0] for _ in range(N_DOCS)]
    return "what is the energy of the system", docs, "synthetic words (DL19 data not found)"


# -- variants ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    all_once: bool
    cost_usd: float | None


@dataclass
class Variant:
    name: str
    call: Callable[[], Any]
    """An async callable (or, for ``sync``, a blocking one) that makes one call and returns an Outcome."""
    sync: bool = False
    own_time: bool = False
    """Measure the router's own time on this variant (a wire-path Cohere tier)."""
    close: Callable[[], Awaitable[None]] | None = None


def _all_once(indices: list[int]) -> bool:
    return sorted(indices) == list(range(N_DOCS))


def _raw_outcome(payload: Any) -> Outcome:
    units = payload["meta"]["billed_units"]["search_units"]
    return Outcome(_all_once([r["index"] for r in payload["results"]]), units * PRICE_PER_SEARCH)


def _router_outcome(result: Any) -> Outcome:
    ok = _all_once(list(result.indices)) and result.backends == ("cohere",) and not result.degraded
    return Outcome(ok, result.actual_cost_usd)


def router_config(base: str, *, transport: str = "auto", fallback: bool = False, http: bool = False) -> dict[str, Any]:
    if http:
        tier: dict[str, Any] = {"type": "http", "protocol": "cohere-compatible", "api_key_env": "CO_API_KEY"}
    else:
        tier = {"type": "cohere", "transport": transport}
    tier |= {"model": MODEL, "base_url": base, "spec": {"quality": {"web": 0.7}}}
    backends: dict[str, Any] = {"cohere": tier}
    if fallback:
        backends["bm25"] = {"type": "lexical"}
    # The catalog's 1,000 rpm (a production key's default) would pace a load test: lift it here.
    return {"domain": "web", "backends": backends, "resilience": {"backends": {"cohere": {"limits": {"rpm": 1_000_000}}}}}


def make_variants(base: str, query: str, docs: list[str]) -> tuple[list[Variant], list[str]]:
    variants: list[Variant] = []
    skipped: list[str] = []
    body = {"model": MODEL, "query": query, "documents": docs, "top_n": N_DOCS}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    import httpx

    hx = httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    async def raw_httpx() -> Outcome:
        response = await hx.post("/v2/rerank", content=json.dumps(body).encode(), headers=headers)
        return _raw_outcome(json.loads(response.content))

    variants.append(Variant("raw httpx AsyncClient POST", raw_httpx, close=hx.aclose))

    try:
        import aiohttp
    except ImportError:
        skipped.append("raw aiohttp POST (pip install aiohttp)")
    else:
        holder: dict[str, Any] = {}

        async def raw_aiohttp() -> Outcome:
            session = holder.get("s")
            if session is None:
                session = holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
            async with session.post(base + "/v2/rerank", data=json.dumps(body).encode(), headers=headers) as response:
                return _raw_outcome(json.loads(await response.read()))

        async def close_aiohttp() -> None:
            if "s" in holder:
                await holder["s"].close()

        variants.append(Variant("raw aiohttp POST", raw_aiohttp, close=close_aiohttp))

    try:
        import cohere
    except ImportError:
        skipped.append("cohere AsyncClientV2.rerank (pip install cohere)")
    else:
        co_http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        co = cohere.AsyncClientV2(
            api_key=KEY, base_url=base, max_retries=0, httpx_client=co_http, log_warning_experimental_features=False
        )

        async def cohere_sdk() -> Outcome:
            r = await co.rerank(model=MODEL, query=query, documents=docs, top_n=N_DOCS, request_options={"max_retries": 0})
            units = r.meta.billed_units.search_units if r.meta and r.meta.billed_units else None
            return Outcome(_all_once([x.index for x in r.results]), None if units is None else units * PRICE_PER_SEARCH)

        variants.append(Variant("cohere AsyncClientV2.rerank", cohere_sdk, close=co_http.aclose))

    try:
        import litellm
    except ImportError:
        skipped.append("litellm.arerank and LiteLLM Router.arerank (pip install 'litellm==1.110.2')")
    else:
        litellm.telemetry = False
        litellm.suppress_debug_info = True
        params = {"model": f"cohere/{MODEL}", "api_base": base, "api_key": KEY}

        def litellm_outcome(r: Any) -> Outcome:
            return Outcome(_all_once([x["index"] for x in r.results]), (r._hidden_params or {}).get("response_cost"))

        async def litellm_arerank() -> Outcome:
            return litellm_outcome(await litellm.arerank(query=query, documents=docs, top_n=N_DOCS, **params))

        lr = litellm.Router(model_list=[{"model_name": "rerank", "litellm_params": params}])

        async def litellm_router() -> Outcome:
            return litellm_outcome(await lr.arerank(model="rerank", query=query, documents=docs, top_n=N_DOCS))

        variants.append(Variant("litellm.arerank", litellm_arerank))
        variants.append(Variant(BASELINE, litellm_router))

    from router import Router, route_rerank
    from router.api import set_default_router

    def add_router(name: str, config: dict[str, Any], kwargs: dict[str, Any], *, own_time: bool = False) -> Router:
        router = Router(config)
        router.warm_up(freeze_gc=True)

        async def call() -> Outcome:
            return _router_outcome(await router.arerank(query, docs, **kwargs))

        variants.append(Variant(name, call, own_time=own_time, close=router.aclose))
        return router

    wire = "aiohttp" if _installed("aiohttp") else "httpx"
    add_router("Router.arerank, Cohere tier", router_config(base), {}, own_time=True)
    budgeted = add_router("Router.arerank + budget, ceiling, bm25", router_config(base, fallback=True), BUDGET, own_time=True)
    set_default_router(budgeted)

    def sync_route_rerank() -> Outcome:
        return _router_outcome(route_rerank(query, docs, **BUDGET))

    variants.append(Variant("sync route_rerank from a thread", sync_route_rerank, sync=True, own_time=True))
    for transport in ("aiohttp", "httpx", "sdk"):
        if transport == wire:
            continue  # the default transport is the rows above
        needs = {"aiohttp": "aiohttp", "sdk": "cohere"}.get(transport)
        if needs and not _installed(needs):
            skipped.append(f"Cohere tier, transport: {transport} (pip install {needs})")
            continue
        add_router(f"Router.arerank, Cohere tier, transport {transport}", router_config(base, transport=transport), {})
    add_router("Router.arerank, type: http cohere-compatible", router_config(base, http=True), {})
    return variants, skipped


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    gen0: int = 0
    calls: int = 0
    errors: int = 0
    bad: int = 0
    costs: set[float | None] = field(default_factory=set)
    error_text: str = ""

    def record(self, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            self.errors += 1
            self.error_text = self.error_text or f"{type(outcome).__name__}: {outcome}"[:200]
            return
        if not outcome.all_once:
            self.bad += 1
        self.costs.add(None if outcome.cost_usd is None else round(outcome.cost_usd, 9))


def _gen0() -> int:
    return int(gc.get_stats()[0]["collections"])


async def sequential(variant: Variant, calls: int, tally: Tally) -> None:
    async def run_async() -> None:
        for _ in range(calls):
            started = time.perf_counter()
            try:
                outcome = await variant.call()
            except Exception as exc:
                outcome = exc
            tally.latencies.append(time.perf_counter() - started)
            tally.record(outcome)

    def run_sync() -> None:
        for _ in range(calls):
            started = time.perf_counter()
            try:
                outcome = variant.call()
            except Exception as exc:
                outcome = exc
            tally.latencies.append(time.perf_counter() - started)
            tally.record(outcome)

    cpu, gen0 = time.process_time(), _gen0()
    if variant.sync:
        await asyncio.to_thread(run_sync)
    else:
        await run_async()
    tally.cpu_s += time.process_time() - cpu
    tally.gen0 += _gen0() - gen0
    tally.calls += calls


async def in_flight(variant: Variant, calls: int, width: int, tally: Tally) -> float:
    """``calls`` calls, ``width`` at a time; returns the wall time."""
    left = [calls]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            try:
                outcome = await variant.call()
            except Exception as exc:
                outcome = exc
            tally.latencies.append(time.perf_counter() - started)
            tally.record(outcome)

    lock = threading.Lock()

    def sync_worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            started = time.perf_counter()
            try:
                outcome = variant.call()
            except Exception as exc:
                outcome = exc
            elapsed = time.perf_counter() - started
            with lock:
                tally.latencies.append(elapsed)
                tally.record(outcome)

    cpu, started = time.process_time(), time.perf_counter()
    if variant.sync:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(width) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, sync_worker) for _ in range(width)))
    else:
        await asyncio.gather(*(worker() for _ in range(width)))
    wall = time.perf_counter() - started
    tally.cpu_s += time.process_time() - cpu
    tally.calls += calls
    return wall


def _ms(seconds: float) -> float:
    return seconds * 1000


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


async def own_time(variant: Variant, calls: int) -> float:
    """Median per call of wall time minus the time inside the wire client's ``post`` (transport and
    server): the router's own work, body encoding and answer parsing included."""
    return _ms(statistics.median(await own_time_samples(variant, calls)))


async def own_time_samples(variant: Variant, calls: int) -> list[float]:
    """:func:`own_time` of each of ``calls`` calls, in seconds."""
    from router.backends import wire

    inside = [0.0]
    originals = {cls: cls.post for cls in (wire.AiohttpPoster, wire.HttpxPoster)}

    def timed(original: Any) -> Any:
        async def post(self: Any, url: str, content: bytes, headers: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(self, url, content, headers)
            finally:
                inside[0] += time.perf_counter() - started

        return post

    samples: list[float] = []
    for cls, original in originals.items():
        cls.post = timed(original)  # type: ignore[method-assign]
    try:
        for _ in range(calls):
            inside[0] = 0.0
            started = time.perf_counter()
            if variant.sync:
                await asyncio.to_thread(variant.call)
            else:
                await variant.call()
            samples.append(time.perf_counter() - started - inside[0])
    finally:
        for cls, original in originals.items():
            cls.post = original  # type: ignore[method-assign]
    return samples


async def one_run(variants: list[Variant], args: argparse.Namespace, run: int) -> dict[str, Any]:
    rng = random.Random(run)
    order = list(variants)
    rng.shuffle(order)
    for v in order:  # warm-up: connections, caches, the latency model
        await sequential(v, args.warmup, Tally())
        await in_flight(v, 2 * 32, 32, Tally())
    seq = {v.name: Tally() for v in variants}
    per_round = max(1, args.calls // args.rounds)
    # The own time is sampled in every round, right after the variant's sequential calls: spread
    # over the run as the sequential medians are, not taken at one moment of the host's state.
    own_samples: dict[str, list[float]] = {v.name: [] for v in variants if v.own_time}
    own_per_round = max(1, args.own_calls // args.rounds)
    for r in range(args.rounds):
        for v in order[r % len(order) :] + order[: r % len(order)]:
            await sequential(v, per_round, seq[v.name])
            if v.own_time:
                own_samples[v.name] += await own_time_samples(v, own_per_round)
    levels: dict[int, dict[str, dict[str, Any]]] = {}
    for width in (32, 128):
        tallies = {v.name: Tally() for v in variants}
        walls = {v.name: 0.0 for v in variants}
        chunk = max(width, args.concurrent_calls // args.concurrent_rounds)
        for r in range(args.concurrent_rounds):
            for v in order[r % len(order) :] + order[: r % len(order)]:
                walls[v.name] += await in_flight(v, chunk, width, tallies[v.name])
        levels[width] = {
            name: {
                "calls": t.calls,
                "throughput_per_s": t.calls / walls[name],
                "p95_ms": _ms(_p95(t.latencies)),
                "median_ms": _ms(statistics.median(t.latencies)),
                "cpu_ms_per_call": _ms(t.cpu_s / t.calls),
                "errors": t.errors,
                "wrong_documents": t.bad,
                "first_error": t.error_text,
            }
            for name, t in tallies.items()
        }
    own = {name: _ms(statistics.median(samples)) for name, samples in own_samples.items()}
    # The measure of earlier runs, for comparison: one block of calls per variant after the concurrent phases.
    own_block = {v.name: await own_time(v, args.own_calls) for v in variants if v.own_time}
    return {
        "sequential": {
            name: {
                "calls": t.calls,
                "median_ms": _ms(statistics.median(t.latencies)),
                "p95_ms": _ms(_p95(t.latencies)),
                "cpu_ms_per_call": _ms(t.cpu_s / t.calls),
                "gen0_gc_per_call": t.gen0 / t.calls,
                "errors": t.errors,
                "wrong_documents": t.bad,
                "costs_usd": sorted(c for c in t.costs if c is not None),
                "first_error": t.error_text,
            }
            for name, t in seq.items()
        },
        "in_flight": {str(w): rows for w, rows in levels.items()},
        "own_ms": own,
        "own_block_ms": own_block,
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of each figure; ratios to the baseline per run, then their median and range."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    names = list(runs[0]["sequential"])
    out: dict[str, Any] = {"sequential": {}, "in_flight": {}, "own_ms": {}, "own_block_ms": {}}
    has_base = BASELINE in names
    for name in names:
        rows = [r["sequential"][name] for r in runs]
        row = {k: med([x[k] for x in rows]) for k in ("median_ms", "p95_ms", "cpu_ms_per_call", "gen0_gc_per_call")}
        row |= {"errors": sum(x["errors"] for x in rows), "wrong_documents": sum(x["wrong_documents"] for x in rows)}
        row["costs_usd"] = sorted({c for x in rows for c in x["costs_usd"]})
        row["calls"] = sum(x["calls"] for x in rows)
        if has_base:
            ratios = [r["sequential"][name]["median_ms"] / r["sequential"][BASELINE]["median_ms"] for r in runs]
            row |= {"ratio": med(ratios), "ratio_range": [min(ratios), max(ratios)]}
        out["sequential"][name] = row
    for width in runs[0]["in_flight"]:
        level: dict[str, Any] = {}
        for name in names:
            rows = [r["in_flight"][width][name] for r in runs]
            row = {k: med([x[k] for x in rows]) for k in ("throughput_per_s", "p95_ms", "median_ms", "cpu_ms_per_call")}
            row |= {"errors": sum(x["errors"] for x in rows), "wrong_documents": sum(x["wrong_documents"] for x in rows)}
            row["calls"] = sum(x["calls"] for x in rows)
            row["first_error"] = next((x["first_error"] for x in rows if x["first_error"]), "")
            if has_base:
                base = [r["in_flight"][width][BASELINE] for r in runs]
                thr = [x["throughput_per_s"] / b["throughput_per_s"] for x, b in zip(rows, base, strict=True)]
                p95 = [x["p95_ms"] / b["p95_ms"] for x, b in zip(rows, base, strict=True)]
                row |= {"throughput_ratio": med(thr), "throughput_ratio_range": [min(thr), max(thr)]}
                row |= {"p95_ratio": med(p95), "p95_ratio_range": [min(p95), max(p95)]}
            level[name] = row
        out["in_flight"][width] = level
    for key in ("own_ms", "own_block_ms"):
        for name in runs[0][key]:
            values = [r[key][name] for r in runs]
            out[key][name] = {"median_ms": med(values), "range_ms": [min(values), max(values)]}
    return out


def ours(name: str) -> bool:
    """A rerank-router variant (not a client or LiteLLM)."""
    return name.startswith(("Router.arerank", "sync route_rerank"))


def targets(result: dict[str, Any]) -> list[tuple[bool, str]]:
    seq, c32, c128 = result["sequential"], result["in_flight"]["32"], result["in_flight"]["128"]
    lines: list[tuple[bool, str]] = []
    budget, sync = "Router.arerank + budget, ceiling, bm25", "sync route_rerank from a thread"
    if BASELINE in seq:
        r = seq[budget]["ratio"]
        lines.append(
            (
                r <= TARGETS["seq_budget"],
                f"sequential, async Cohere tier with budget and ceiling: {r:.2f}x LiteLLM Router (target <= 0.65x)",
            )
        )
        r = seq[sync]["ratio"]
        lines.append((r <= TARGETS["seq_sync"], f"sequential, sync route_rerank: {r:.2f}x LiteLLM Router (target <= 0.75x)"))
        t, p = c32[budget]["throughput_ratio"], c32[budget]["p95_ratio"]
        lines.append(
            (
                t >= 1.5 and p <= 1.0,
                f"32 in flight: {t:.2f}x LiteLLM Router's throughput, p95 {p:.2f}x its p95 (target >= 1.5x, <= 1x)",
            )
        )
    errors = sum(row["errors"] for row in c128.values())
    router_errors = sum(row["errors"] for name, row in c128.items() if ours(name))
    lines.append(
        (router_errors == 0, f"128 in flight: {router_errors} errors in rerank-router's variants ({errors} in all variants)")
    )
    own = result["own_ms"].get(budget, {}).get("median_ms", float("nan"))
    lines.append((own <= TARGETS["own_ms"], f"router's own time per call at 100 documents: {own:.3f} ms (target <= 0.3 ms)"))
    wrong = sum(row["wrong_documents"] + row["errors"] for row in seq.values())
    costs = {c for name, row in seq.items() for c in row["costs_usd"] if ours(name)}
    litellm_costs = sorted({c for name, row in seq.items() for c in row["costs_usd"] if name in ("litellm.arerank", BASELINE)})
    ok = wrong == 0 and costs == {PRICE_PER_SEARCH}
    lines.append(
        (
            ok,
            f"every call returned all {N_DOCS} documents once ({wrong} did not); rerank-router cost {sorted(costs)} (litellm: {litellm_costs}); target $0.002",
        )
    )
    return lines


def print_report(result: dict[str, Any]) -> None:
    print(f"peers: {result['input']}; {result['machine']}")
    print(f"runs: {result['args']['runs']} alternating; medians over runs (ratio ranges in brackets)")
    for line in result["skipped"]:
        print(f"skipped: {line}")
    seq = result["combined"]["sequential"]
    calls = next(iter(seq.values()))["calls"]
    print(f"\nsequential ({calls} calls per variant over all runs)")
    print(f"{'variant':<52} {'median ms':>9} {'p95 ms':>8} {'CPU ms':>7} {'gen0/call':>9}  ÷ LiteLLM Router")
    for name, row in seq.items():
        ratio = f"{row['ratio']:.2f} [{row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}]" if "ratio" in row else "-"
        extra = f"  errors {row['errors']}" if row["errors"] else ""
        print(
            f"{name:<52} {row['median_ms']:>9.2f} {row['p95_ms']:>8.2f} {row['cpu_ms_per_call']:>7.2f} {row['gen0_gc_per_call']:>9.2f}  {ratio}{extra}"
        )
    for width, level in result["combined"]["in_flight"].items():
        calls = next(iter(level.values()))["calls"]
        print(f"\n{width} in flight ({calls} calls per variant over all runs)")
        print(f"{'variant':<52} {'calls/s':>8} {'p95 ms':>8} {'CPU ms':>7} {'errors':>6}  throughput ÷ LR   p95 ÷ LR")
        for name, row in level.items():
            thr = (
                f"{row['throughput_ratio']:.2f} [{row['throughput_ratio_range'][0]:.2f}-{row['throughput_ratio_range'][1]:.2f}]"
                if "throughput_ratio" in row
                else "-"
            )
            p95 = (
                f"{row['p95_ratio']:.2f} [{row['p95_ratio_range'][0]:.2f}-{row['p95_ratio_range'][1]:.2f}]"
                if "p95_ratio" in row
                else "-"
            )
            print(
                f"{name:<52} {row['throughput_per_s']:>8.0f} {row['p95_ms']:>8.1f} {row['cpu_ms_per_call']:>7.2f} {row['errors']:>6}  {thr:<17}  {p95}"
            )
            if row["errors"] and row["first_error"]:
                print(f"    first error: {row['first_error']}")
    print()
    blocks = result["combined"]["own_block_ms"]
    for name, row in result["combined"]["own_ms"].items():
        block = blocks[name]
        print(
            f"router's own time per call (everything but transport and server), {name}: {row['median_ms']:.3f} ms "
            f"[{row['range_ms'][0]:.3f}-{row['range_ms'][1]:.3f}]; one block after the concurrent phases: "
            f"{block['median_ms']:.3f} ms [{block['range_ms'][0]:.3f}-{block['range_ms'][1]:.3f}]"
        )
    print()
    for ok, line in result["targets"]:
        print(f"{'PASS' if ok else 'FAIL'}: {line}")


# -- before/after of each cut (--cuts) ---------------------------------------------------------------


async def _hedged_before(call: Callable[[], Awaitable[Any]], delay_s: float | None) -> tuple[Any, bool]:
    """router.resilience.hedging.hedged before issue 13: a task (and a gather) even with no delay."""
    tasks = [asyncio.ensure_future(call())]
    try:
        if delay_s is None:
            return await tasks[0], False
        raise NotImplementedError("the reference covers hedging off only")
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _scores_before(results: Any, n: int, backend: str) -> list[float]:
    """router.backends.remote.scores_from_results before issue 13: every check on every result."""
    from router.errors import MalformedResponseError

    values: list[float | None] = [None] * n
    for index, score in results:
        if not isinstance(index, int) or isinstance(index, bool):
            raise MalformedResponseError(f"result index {index!r} is not an integer", backend=backend)
        if not 0 <= index < n:
            raise MalformedResponseError(f"result index {index} is out of range for {n} documents", backend=backend)
        if values[index] is not None:
            raise MalformedResponseError(f"document {index} was scored twice", backend=backend)
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise MalformedResponseError(f"document {index} has score {score!r}, not a finite number", backend=backend)
        values[index] = float(score)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise MalformedResponseError(f"{len(missing)} of {n} documents were not scored", backend=backend)
    return [v for v in values if v is not None]


def _map_before(values: Any, mapping: Any, backend: str) -> tuple[float, ...]:
    return tuple(mapping(v, backend) for v in values)


def revert(cut: str) -> Callable[[], None]:
    """Put back the code ``cut`` replaced; returns the undo."""
    import router.backends.remote as remote
    import router.backends.wire as wire
    import router.executor as executor

    targets: list[tuple[Any, str, Any]] = {
        "hedged: no task with hedging off": [(executor, "hedged", _hedged_before)],
        "scores: one pass for the common answer": [
            (remote.RemoteBackend, "_fast_scores", lambda self, results, n, key: None),
            (remote, "scores_from_results", _scores_before),
            (remote, "map_scores", _map_before),
        ],
        "body: orjson instead of json.dumps": [(wire, "_ORJSON", None)],
    }[cut]
    saved = [(module, name, getattr(module, name)) for module, name, _ in targets]
    for module, name, value in targets:
        setattr(module, name, value)

    def undo() -> None:
        for module, name, value in saved:
            setattr(module, name, value)

    return undo


# The retries cut (no tenacity state until an attempt fails) is no longer an arm: since the sixth
# round the first attempt runs outside the retry loop, so no retry object is made on success at all
# and swapping the old ``retrying`` back in would revert nothing (its figures: benchmarks/README.md).
CUTS = (
    "hedged: no task with hedging off",
    "scores: one pass for the common answer",
    "body: orjson instead of json.dumps",
)


async def _budgeted_variant(base: str, warmup: int) -> tuple[Any, Variant]:
    """The budgeted Cohere tier against the server at ``base`` (its heap frozen, warmed up), and its variant."""
    from router import Router

    query, docs, _ = build_input()
    router = Router(router_config(base, fallback=True))
    router.warm_up(freeze_gc=True)

    async def call() -> Outcome:
        return _router_outcome(await router.arerank(query, docs, **BUDGET))

    for _ in range(warmup):
        await call()
    return router, Variant("budgeted", call)


async def measure_cuts(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["CO_API_KEY"] = KEY
    proc, base = start_server()
    try:
        router, variant = await _budgeted_variant(base, args.warmup)
        arms = ("all cuts in", *CUTS)
        cpu: dict[str, list[float]] = {a: [] for a in arms}
        own: dict[str, list[float]] = {a: [] for a in arms}
        wall: dict[str, list[float]] = {a: [] for a in arms}
        gen0: dict[str, list[float]] = {a: [] for a in arms}
        per_round = max(10, args.own_calls // args.rounds)
        for r in range(args.rounds * args.runs):
            for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
                undo = revert(arm) if arm != "all cuts in" else (lambda: None)
                try:
                    tally = Tally()
                    await sequential(variant, per_round, tally)
                    cpu[arm].append(_ms(tally.cpu_s / tally.calls))
                    gen0[arm].append(tally.gen0 / tally.calls)
                    wall[arm].append(_ms(statistics.median(tally.latencies)))
                    own[arm].append(await own_time(variant, per_round))
                finally:
                    undo()
        await router.aclose()
    finally:
        proc.kill()
    rows = {}
    for arm in arms:
        rows[arm] = {
            "cpu_ms_per_call": statistics.median(cpu[arm]),
            "own_ms": statistics.median(own[arm]),
            "wall_ms": statistics.median(wall[arm]),
            "gen0_per_call": statistics.mean(gen0[arm]),
        }
        if arm != "all cuts in":  # what the cut saves, per round (arms alternate within a round)
            rows[arm]["saves_cpu_ms"] = statistics.median(x - y for x, y in zip(cpu[arm], cpu["all cuts in"], strict=True))
            rows[arm]["saves_own_ms"] = statistics.median(x - y for x, y in zip(own[arm], own["all cuts in"], strict=True))
    return {"calls_per_arm": per_round * args.rounds * args.runs, "load": os.getloadavg()[0], "rows": rows}


def print_cuts(result: dict[str, Any]) -> None:
    print(
        f"cuts: the budgeted Cohere tier, {result['calls_per_arm']} calls per arm, arms alternating in rounds "
        f"(load {result['load']:.1f}); medians; saves = the round-by-round median of (reverted - all cuts in)"
    )
    print(f"{'arm':<54} {'CPU ms':>7} {'own ms':>7} {'wall ms':>8} {'gen0/call':>9} {'saves CPU':>10} {'saves own':>10}")
    for arm, row in result["rows"].items():
        label = arm if arm == "all cuts in" else f"reverted: {arm}"
        saves = "" if arm == "all cuts in" else f"{row['saves_cpu_ms']:>+10.3f} {row['saves_own_ms']:>+10.3f}"
        print(
            f"{label:<54} {row['cpu_ms_per_call']:>7.3f} {row['own_ms']:>7.3f} {row['wall_ms']:>8.3f} {row['gen0_per_call']:>9.3f} {saves}"
        )


IDLE_ARMS = ("instant answer", "1 ms asleep", "1 ms busy", "loopback server")


async def measure_idle(args: argparse.Namespace) -> dict[str, Any]:
    """The budgeted tier's own time with the wire client's ``post`` replaced by each arm of
    :data:`IDLE_ARMS` (the real answer captured once), arms alternating in rounds."""
    from router.backends import wire

    os.environ["CO_API_KEY"] = KEY
    proc, base = start_server()
    real = wire.AiohttpPoster.post
    try:
        router, variant = await _budgeted_variant(base, args.warmup)
        captured: list[Any] = []

        async def capture(self: Any, url: str, content: bytes, headers: Any) -> Any:
            reply = await real(self, url, content, headers)
            captured[:] = [reply]
            return reply

        wire.AiohttpPoster.post = capture  # type: ignore[method-assign]
        await variant.call()

        def arm_post(arm: str) -> Any:
            async def post(self: Any, url: str, content: bytes, headers: Any) -> Any:
                if arm == "loopback server":
                    return await real(self, url, content, headers)
                if arm == "1 ms asleep":
                    await asyncio.sleep(0.001)
                elif arm == "1 ms busy":
                    until = time.perf_counter() + 0.001
                    while time.perf_counter() < until:
                        pass
                return captured[0]

            return post

        own: dict[str, list[float]] = {a: [] for a in IDLE_ARMS}
        per_round = max(10, args.own_calls // args.rounds)
        for r in range(args.rounds * args.runs):
            for arm in IDLE_ARMS[r % len(IDLE_ARMS) :] + IDLE_ARMS[: r % len(IDLE_ARMS)]:
                wire.AiohttpPoster.post = arm_post(arm)  # type: ignore[method-assign]
                await sequential(variant, 10, Tally())  # settle into the arm's pattern
                own[arm].append(await own_time(variant, per_round))
        await router.aclose()
    finally:
        wire.AiohttpPoster.post = real  # type: ignore[method-assign]
        proc.kill()
    base_ms = statistics.median(own[IDLE_ARMS[0]])
    rows = {
        arm: {"own_ms": statistics.median(v), "range_ms": [min(v), max(v)], "ratio": statistics.median(v) / base_ms}
        for arm, v in own.items()
    }
    return {"calls_per_arm": per_round * args.rounds * args.runs, "load": os.getloadavg()[0], "rows": rows}


def print_idle(result: dict[str, Any]) -> None:
    print(
        f"own time of the budgeted Cohere tier by what the call's wait is, {result['calls_per_arm']} calls per arm, "
        f"arms alternating in rounds (load {result['load']:.1f}); medians of rounds"
    )
    print(f"{'the wire post':<20} {'own ms':>7} {'range ms':>15} {'÷ instant':>9}")
    for arm, row in result["rows"].items():
        low, high = row["range_ms"]
        print(f"{arm:<20} {row['own_ms']:>7.3f} {f'{low:.3f}-{high:.3f}':>15} {row['ratio']:>9.2f}")


async def measure_pools(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput and p95 of raw POSTs per client and pool size, at 32 and 128 in flight, alternating."""
    import aiohttp
    import httpx

    proc, base = start_server()
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        query, docs, _ = build_input()
        content = json.dumps({"model": MODEL, "query": query, "documents": docs, "top_n": N_DOCS}).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        sizes = (8, 16, 32, 64, 128)
        for _ in range(args.runs):
            for kind in ("aiohttp", "httpx"):
                for size in sizes:
                    if kind == "aiohttp":
                        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=size))

                        async def post(session: Any = session) -> Outcome:
                            async with session.post(base + "/v2/rerank", data=content, headers=headers) as r:
                                return _raw_outcome(json.loads(await r.read()))

                        close: Callable[[], Awaitable[None]] = session.close
                    else:
                        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
                        client = httpx.AsyncClient(base_url=base, limits=limits)

                        async def post(client: Any = client) -> Outcome:
                            return _raw_outcome(
                                json.loads((await client.post("/v2/rerank", content=content, headers=headers)).content)
                            )

                        close = client.aclose
                    for width in (32, 128):
                        variant = Variant(kind, post)
                        await in_flight(variant, width, width, Tally())  # warm the pool
                        tally = Tally()
                        wall = await in_flight(variant, args.concurrent_calls // 2, width, tally)
                        rows.setdefault(f"{kind} pool {size}, {width} in flight", []).append(
                            (tally.calls / wall, _ms(_p95(tally.latencies)))
                        )
                    await close()
    finally:
        proc.kill()
    return {
        name: {"throughput_per_s": statistics.median(t for t, _ in v), "p95_ms": statistics.median(p for _, p in v)}
        for name, v in rows.items()
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["CO_API_KEY"] = KEY
    proc, base = start_server()
    try:
        query, docs, source = build_input()
        variants, skipped = make_variants(base, query, docs)
        runs = []
        for run in range(args.runs):
            started = time.perf_counter()
            runs.append(await one_run(variants, args, run))
            print(f"  run {run + 1}/{args.runs}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if args.profile is not None:
            await profile(next(v for v in variants if v.name == "Router.arerank + budget, ceiling, bm25"), args.profile)
        for v in variants:
            if v.close is not None:
                await v.close()
    finally:
        proc.kill()
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f} at the end",
        "input": f"{N_DOCS} documents of ~{TOKENS_PER_DOC} tokens ({source}), {sum(map(len, docs)) // N_DOCS} chars each",
        "versions": _versions(),
        "args": vars(args)
        | {"profile": str(args.profile) if args.profile else None, "json": str(args.json) if args.json else None},
        "skipped": skipped,
        "runs": runs,
    }
    result["combined"] = combine(runs)
    result["targets"] = targets(result["combined"])
    return result


async def profile(variant: Variant, path: Path) -> None:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(300):
        await variant.call()
    profiler.disable()
    profiler.dump_stats(str(path))
    print(f"wrote {path} (cProfile of 300 calls: {variant.name})", file=sys.stderr)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("httpx", "aiohttp", "cohere", "litellm", "tenacity", "pydantic"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer calls (about a minute per run on 2 cores)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs; figures are medians over them (default 3)")
    parser.add_argument("--calls", type=int, default=None, help="sequential calls per variant per run (default 500; --quick 100)")
    parser.add_argument("--rounds", type=int, default=None, help="sequential rounds per run (default 10; --quick 4)")
    parser.add_argument(
        "--concurrent-calls", type=int, default=None, help="calls per variant per width (default 2000; --quick 256)"
    )
    parser.add_argument("--concurrent-rounds", type=int, default=None, help="rounds per width (default 4; --quick 2)")
    parser.add_argument("--warmup", type=int, default=30, help="sequential warm-up calls per variant per run")
    parser.add_argument(
        "--own-calls", type=int, default=None, help="calls timed for the router's own time (default 300; --quick 100)"
    )
    parser.add_argument("--pools", action="store_true", help="measure the wire clients' connection-pool size")
    parser.add_argument("--cuts", action="store_true", help="measure each transport/resilience cut against the code it replaced")
    parser.add_argument("--idle", action="store_true", help="measure the own time by what the call's wait is (see above)")
    parser.add_argument("--profile", type=Path, default=None, metavar="PATH", help="also write a cProfile of the budgeted tier")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    args.calls = args.calls or (100 if args.quick else 500)
    args.rounds = args.rounds or (4 if args.quick else 10)
    args.concurrent_calls = args.concurrent_calls or (256 if args.quick else 2000)
    args.concurrent_rounds = args.concurrent_rounds or (2 if args.quick else 4)
    args.own_calls = args.own_calls or (100 if args.quick else 300)
    if args.pools:
        pools = asyncio.run(measure_pools(args))
        print(
            f"pool sizes: raw POSTs of the peers body, {args.concurrent_calls // 2} calls per cell per run, medians over {args.runs} runs"
        )
        for name, row in pools.items():
            print(f"{name:<36} {row['throughput_per_s']:>7.0f} calls/s  p95 {row['p95_ms']:>7.1f} ms")
        if args.json is not None:
            args.json.write_text(json.dumps(pools, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.cuts:
        cuts = asyncio.run(measure_cuts(args))
        print_cuts(cuts)
        if args.json is not None:
            args.json.write_text(json.dumps(cuts, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.idle:
        idle = asyncio.run(measure_idle(args))
        print_idle(idle)
        if args.json is not None:
            args.json.write_text(json.dumps(idle, indent=2) + "\n", encoding="utf-8")
        return 0
    result = asyncio.run(amain(args))
    print_report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(ok for ok, _ in result["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
