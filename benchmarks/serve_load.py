"""The gateway (`rerank-router serve`) against LiteLLM's proxy, both in front of the same loopback
Cohere-format upstream, one worker each, under the same bounded async load generator; plus the
upstream called directly, for the latency each proxy adds.

    python benchmarks/serve_load.py [--quick] [--requests N] [--json PATH] [--litellm PATH] [--no-redis]

Each run sends a fixed count of requests of 100 documents at concurrency 1, 16 and 64 over
keep-alive connections (a lean HTTP/1.1 client on asyncio streams, so the generator costs little
of the CPU the servers share) and prints throughput, p50 / p99 and errors per target, and the
median latency each proxy adds over the direct call at concurrency 1. Then the gateway with four
workers sharing one Redis: a spend cap hit by concurrent requests (must admit exactly the cap)
and throughput at concurrency 64.

LiteLLM is never a dependency of this project. To compare with it, install it into a separate
virtual environment pinned to an exact known-good version (never 1.82.7 or 1.82.8, credential
stealers, nor any 1.107.x), and point ``--litellm`` at its ``litellm`` executable::

    python -m venv /tmp/litellm-venv
    /tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.110.2'
    python benchmarks/serve_load.py --litellm /tmp/litellm-venv/bin/litellm

(If the ``proxy`` extra cannot resolve on your index, install ``litellm==1.110.2`` and the proxy's
server packages -- fastapi, uvicorn, uvloop, gunicorn, backoff, orjson, pyyaml, rq, apscheduler,
websockets, python-multipart, pyjwt, cryptography, fastapi-sso -- beside it.) Without it, the
benchmark runs the gateway-vs-direct part and says LiteLLM was not found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SEARCH_USD = 0.002  # rerank-v3.5: one search of up to 100 documents
DOCS = [
    f"passage {i} about {'green tea' if i % 7 == 0 else 'coffee roasting'} and the history of trade routes {i * 31 % 97}"
    for i in range(100)
]


# -- the upstream: a lean Cohere v2 server (raw ASGI on uvicorn) ---------------------------------------
def upstream_app() -> Any:
    import zlib

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = json.loads(body or b"{}")
        docs = request.get("documents") or []
        scores = [(zlib.crc32(str(d).encode()) % 1000) / 1000 for d in docs]
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        top_n = request.get("top_n") or len(docs)
        payload = {
            "id": "bench",
            "results": [{"index": i, "relevance_score": scores[i]} for i in order[:top_n]],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": max(1, -(-len(docs) // 100))}},
        }
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


def run_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(upstream_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="auto", http="auto")


# -- processes -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}{path} within {timeout_s} s")


@contextlib.contextmanager
def process(
    args: list[str], port: int, ready_path: str, env: dict[str, str] | None = None, timeout_s: float = 90
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="serve-load-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        args, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(port, ready_path, timeout_s, proc)
        yield proc
    except RuntimeError:
        print(Path(log.name).read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        os.unlink(log.name)


# -- the load generator ------------------------------------------------------------------------------------
def request_bytes(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def _one_connection(port: int, raw: bytes, jobs: asyncio.Queue[int], latencies: list[float], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            try:
                jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def load(port: int, raw: bytes, concurrency: int, requests: int) -> dict[str, Any]:
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        jobs.put_nowait(i)
    latencies: list[float] = []
    statuses: list[int] = []
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(_one_connection(port, raw, jobs, latencies, statuses) for _ in range(concurrency)), return_exceptions=True
    )
    elapsed = time.perf_counter() - started
    failures = sum(1 for o in outcomes if isinstance(o, BaseException))
    ok = sorted(lat for lat, s in zip(latencies, statuses, strict=True) if s == 200)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": len(ok),
        "errors": requests - len(ok),
        "connection_failures": failures,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "throughput_rps": len(ok) / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * ok[len(ok) // 2] if ok else None,
        "p99_ms": 1000 * ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else None,
        "median_ms": 1000 * statistics.median(ok) if ok else None,
    }


def in_process_router(upstream_port: int, config_path: Path, requests: int) -> dict[str, Any]:
    """Router.arerank in this process against the same upstream, one at a time: the router's own
    request path plus its HTTP call, without the gateway's HTTP layer."""
    os.environ.setdefault("CO_API_KEY", "bench-key")
    from router import Router

    config = yaml.safe_load(config_path.read_text())
    config.pop("service", None)
    router = Router(config)
    router.warm_up()  # as each gateway worker does (and its heap frozen alike)
    latencies: list[float] = []

    async def go() -> None:
        for i in range(requests + 50):
            started = time.perf_counter()
            await router.arerank("green tea trade", DOCS, top_n=10)
            if i >= 50:
                latencies.append(time.perf_counter() - started)
        await router.aclose()

    _runner()(go())
    latencies.sort()
    return {
        "requests": requests,
        "median_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def _runner() -> Any:
    """``uvloop.run`` where uvloop is installed (as the gateway's workers use it), else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run_load(port: int, raw: bytes, concurrency: int, requests: int, warmup: int) -> dict[str, Any]:
    runner = _runner()
    runner(load(port, raw, min(concurrency, 16), warmup))
    return dict(runner(load(port, raw, concurrency, requests)))


# -- targets -------------------------------------------------------------------------------------------------
def backend_config(upstream_port: int, kind: str) -> dict[str, Any]:
    """``cohere``: the official cohere SDK (as for Cohere's own API); ``http``: the lean httpx
    backend speaking the same Cohere v2 wire format (as for a self-hosted Cohere-compatible
    server). Both bill rerank-v3.5's catalog price per search."""
    base_url = f"http://127.0.0.1:{upstream_port}"
    # The catalog paces rerank-v3.5 to Cohere's production rate limit (1,000 requests a minute);
    # this upstream has none, so the pacing is lifted (as LiteLLM, which does not pace, runs).
    spec = {"rpm": 1e9}
    if kind == "cohere":
        return {"type": "cohere", "model": "rerank-v3.5", "base_url": base_url, "spec": spec}
    return {"type": "http", "protocol": "cohere-compatible", "model": "rerank-v3.5", "base_url": base_url, "spec": spec}


def gateway_config(
    upstream_port: int, folder: Path, *, kind: str = "http", redis: bool = False, cap_usd: float | None = None
) -> Path:
    config: dict[str, Any] = {
        "policy": {"name": "constrained"},
        "budgets": {"latency_ms": 10_000, "max_cost_usd": 0.01},
        "constraints": {"on_premise": False},
        "backends": {"cohere": backend_config(upstream_port, kind)},
        # Calls past the backend's connection pool (16) wait on the router's semaphore, not inside
        # httpcore's pool, whose wait queue costs O(connections x waiting) per event.
        "resilience": {"default": {"limits": {"max_concurrency": 16}}},
        "service": {"access_log": False, "admission": {"max_in_flight": 256, "max_queue": 1024}},
    }
    if redis:
        config["shared_state"] = {"redis_url_env": "REDIS_URL", "key_prefix": f"serve-load-{os.getpid()}-{time.time_ns()}"}
        config["service"]["tenants"] = {
            "capped": {"keys": [{"env": "BENCH_CAPPED_KEY"}], "spend_caps": {"day_usd": cap_usd}},
            "open": {"keys": [{"env": "BENCH_OPEN_KEY"}]},
        }
    path = folder / ("gateway-redis.yaml" if redis else "gateway.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def litellm_config(upstream_port: int, folder: Path) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "rerank",
                "litellm_params": {
                    "model": "cohere/rerank-v3.5",
                    "api_base": f"http://127.0.0.1:{upstream_port}",
                    "api_key": "bench-key",
                },
            }
        ],
        "litellm_settings": {"set_verbose": False, "json_logs": False},
    }
    path = folder / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    folder = tempfile.mkdtemp(prefix="serve-load-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per run at concurrency 16 and 64 (default 2000; --quick 600)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--litellm",
        default=None,
        help="the litellm executable of a separate venv (default: /tmp/litellm-venv/bin/litellm, then PATH)",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the four-worker Redis run")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM even if installed")
    parser.add_argument("--backend", choices=["http", "cohere"], default="http", help="the gateway's backend type (default http)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    many = args.requests or (600 if args.quick else 2000)
    few = max(100, many // 5)
    levels = [(1, few), (16, many), (64, many)]
    python = sys.executable
    results: dict[str, Any] = {"documents": len(DOCS), "levels": levels, "backend": args.backend, "runs": {}, "notes": []}
    litellm = (
        None
        if args.no_litellm
        else args.litellm
        or ("/tmp/litellm-venv/bin/litellm" if Path("/tmp/litellm-venv/bin/litellm").exists() else shutil.which("litellm"))
    )
    folder = Path(tempfile.mkdtemp(prefix="serve-load-"))
    up_port = free_port()
    upstream = [
        python,
        "-c",
        f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import serve_load; serve_load.run_upstream({up_port})",
    ]
    body = {"model": "rerank-v3.5", "query": "green tea trade", "documents": DOCS, "top_n": 10}
    with process(upstream, up_port, "/", timeout_s=30):
        targets: list[tuple[str, list[str], int, str, str, dict[str, str]]] = []
        gw_port = free_port()
        gw_args = [
            python,
            "-m",
            "router",
            "--config",
            str(gateway_config(up_port, folder, kind=args.backend)),
            "serve",
            "--port",
            str(gw_port),
            "--log-level",
            "warning",
        ]
        targets.append(("direct", [], up_port, "/v2/rerank", "", {}))
        targets.append(("gateway", gw_args, gw_port, "/v2/rerank", "/health/readiness", {"CO_API_KEY": "bench-key"}))
        if litellm:
            ll_port = free_port()
            ll_args = [
                litellm,
                "--config",
                str(litellm_config(up_port, folder)),
                "--port",
                str(ll_port),
                "--host",
                "127.0.0.1",
                "--num_workers",
                "1",
            ]
            master = "sk-" + secrets.token_hex(32)  # the proxy refuses to start without a strong master key
            targets.append(("litellm", ll_args, ll_port, "/v2/rerank", "/health/liveliness", {"LITELLM_MASTER_KEY": master}))
        else:
            results["notes"].append(
                "litellm not found: LiteLLM proxy not measured (see the docstring to install it in its own venv)"
            )
            print("LiteLLM not found: measuring the gateway against the direct upstream only.", file=sys.stderr)
        for name, cmd, port, path, ready, env in targets:
            request_body = {**body, "model": "rerank"} if name == "litellm" else body
            headers = {"Authorization": f"Bearer {env.get('LITELLM_MASTER_KEY', 'bench-key')}"}
            raw = request_bytes(port, path, request_body, headers)
            ctx = process(cmd, port, ready, env=env, timeout_s=120) if cmd else contextlib.nullcontext()
            try:
                with ctx:
                    runs = []
                    for concurrency, count in levels:
                        run = run_load(port, raw, concurrency, count, warmup=min(200, count // 4))
                        runs.append(run)
                        print(
                            f"  {name:<8} c={concurrency:<3} {run['throughput_rps']:8.1f} req/s  p50 {run['p50_ms'] or 0:7.2f} ms  p99 {run['p99_ms'] or 0:7.2f} ms  errors {run['errors']}",
                            file=sys.stderr,
                        )
                    results["runs"][name] = runs
            except RuntimeError as exc:
                results["notes"].append(f"{name} did not start: {exc}")
                print(f"{name} did not start: {exc}", file=sys.stderr)
        results["router_in_process_c1"] = in_process_router(up_port, folder / "gateway.yaml", few)
        print(
            f"  router in process (no HTTP layer) c=1: median {results['router_in_process_c1']['median_ms']:.2f} ms",
            file=sys.stderr,
        )
        if not args.no_redis:
            results["redis"] = redis_run(python, up_port, folder, many, args.backend)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def redis_run(python: str, up_port: int, folder: Path, many: int, kind: str) -> dict[str, Any]:
    cap_requests = 40
    with redis_server() as url:
        if url is None:
            return {"skipped": "redis-server not installed"}
        port = free_port()
        config = gateway_config(up_port, folder, kind=kind, redis=True, cap_usd=cap_requests * SEARCH_USD)
        env = {"REDIS_URL": url, "CO_API_KEY": "bench-key", "BENCH_CAPPED_KEY": "capped", "BENCH_OPEN_KEY": "open"}
        args = [
            python,
            "-m",
            "router",
            "--config",
            str(config),
            "serve",
            "--port",
            str(port),
            "--workers",
            "4",
            "--log-level",
            "warning",
        ]
        body = {"model": "cohere", "query": "green tea trade", "documents": DOCS, "top_n": 10}
        with process(args, port, "/health/readiness", env=env, timeout_s=180):
            time.sleep(2.0)  # every worker warm (readiness answered by the first)
            capped = run_load(
                port, request_bytes(port, "/v2/rerank", body, {"Authorization": "Bearer capped"}), 64, cap_requests * 5, warmup=0
            )
            open_run = run_load(
                port, request_bytes(port, "/v2/rerank", body, {"Authorization": "Bearer open"}), 64, many, warmup=200
            )
        admitted = capped["statuses"].get("200", 0)
        out = {
            "workers": 4,
            "cap_requests": cap_requests,
            "sent": cap_requests * 5,
            "admitted": admitted,
            "refused_429": capped["statuses"].get("429", 0),
            "cap_exact": admitted == cap_requests,
            "throughput": open_run,
        }
        print(
            f"  4 workers + Redis: cap of {cap_requests} admitted {admitted} of {cap_requests * 5}; c=64 {open_run['throughput_rps']:.1f} req/s p99 {open_run['p99_ms'] or 0:.2f} ms errors {open_run['errors']}",
            file=sys.stderr,
        )
        return out


def print_table(results: dict[str, Any]) -> None:
    runs = results["runs"]
    print(f"\n{'target':<9} {'conc':>4} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, levels in runs.items():
        for r in levels:
            print(
                f"{name:<9} {r['concurrency']:>4} {r['requests']:>8} {r['throughput_rps']:>9.1f} {r['p50_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f} {r['errors']:>6}"
            )
    direct = runs.get("direct")
    if direct:
        base = direct[0]["median_ms"] or 0.0
        for name in ("gateway", "litellm"):
            if name in runs and runs[name][0]["median_ms"] is not None:
                added = runs[name][0]["median_ms"] - base
                results.setdefault("added_latency_ms_c1", {})[name] = added
                print(f"added median latency at c=1, {name}: {added:.2f} ms")
    inproc = results.get("router_in_process_c1")
    if inproc and direct:
        print(
            f"of which the router in process (its request path and the upstream call, no gateway HTTP layer): {inproc['median_ms'] - (direct[0]['median_ms'] or 0):.2f} ms median"
        )
    gateway, litellm = runs.get("gateway"), runs.get("litellm")
    if gateway and litellm:
        g, ll = gateway[-1], litellm[-1]
        ratio = g["throughput_rps"] / ll["throughput_rps"] if ll["throughput_rps"] else float("inf")
        results["c64_vs_litellm"] = {"throughput_ratio": ratio, "gateway_p99_ms": g["p99_ms"], "litellm_p99_ms": ll["p99_ms"]}
        verdict = "PASS" if ratio >= 2 and (g["p99_ms"] or 0) < (ll["p99_ms"] or 0) and g["errors"] == 0 else "MISS"
        print(
            f"c=64: gateway {ratio:.2f}x LiteLLM's throughput, p99 {g['p99_ms']:.1f} vs {ll['p99_ms']:.1f} ms, errors {g['errors']}: {verdict} (target >= 2x, lower p99, 0 errors)"
        )
    if gateway and "gateway" in results.get("added_latency_ms_c1", {}):
        added = results["added_latency_ms_c1"]["gateway"]
        print(f"c=1: gateway adds {added:.2f} ms median: {'PASS' if added <= 1.0 else 'MISS'} (target <= 1 ms)")
    redis = results.get("redis")
    if redis and "admitted" in redis:
        t = redis["throughput"]
        print(
            f"4 workers sharing Redis: spend cap of {redis['cap_requests']} requests admitted {redis['admitted']} of {redis['sent']} ({'exact' if redis['cap_exact'] else 'NOT exact'}); c=64 {t['throughput_rps']:.1f} req/s, p99 {t['p99_ms'] or 0:.1f} ms, errors {t['errors']}"
        )
    for note in results["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    raise SystemExit(main())
