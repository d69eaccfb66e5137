"""``rerank-router serve``: uvicorn workers over one listening socket, and graceful drain.

The parent binds the socket, then runs the gateway itself (``--workers 1``) or starts N worker
processes (spawned, so each builds its own Router) that share it; the kernel spreads connections.
With several workers ``PROMETHEUS_MULTIPROC_DIR`` is set (a fresh folder unless you set one) so
``/metrics`` adds every worker up.

SIGTERM (or SIGINT) drains: readiness answers 503 at once; after ``service.drain.grace_s`` the
listener closes, requests in flight get up to ``service.drain.timeout_s`` to finish, then the
decision log is flushed and the worker exits 0. A second SIGINT stops at once. A worker that dies
on its own is replaced (one that dies within 10 s of starting stops the gateway, exit status 1).
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from router.config import load_config
from router.errors import RerankRouterError
from router.service.app import Gateway, create_app, service_config

__all__ = ["ServeOptions", "is_loopback", "serve"]

_log = logging.getLogger("rerank_router.service")


@dataclass(frozen=True)
class ServeOptions:
    config: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    insecure_no_auth: bool = False
    log_level: str = "info"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, with readiness turned to 503 (and an optional grace) before it stops."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self._grace_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self.gateway.draining = True
        grace = self.gateway.service.drain.grace_s
        if grace > 0 and not self._grace_started:
            self._grace_started = True
            timer = threading.Timer(grace, self._stop)
            timer.daemon = True
            timer.start()
            return
        self.should_exit = True

    def _stop(self) -> None:
        self.should_exit = True


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _run_worker(options: ServeOptions, sock: socket.socket) -> None:
    _setup_logging(options.log_level)
    app = create_app(options.config)
    gateway: Gateway = app.state.gateway
    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    config = uvicorn.Config(
        app,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,  # the gateway writes its own (rerank_router.access), without keys or text
        log_level="warning",
        timeout_graceful_shutdown=max(1, round(gateway.service.drain.timeout_s)),
        server_header=False,
    )
    _DrainingServer(config, gateway).run(sockets=[sock])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_entry(options: ServeOptions, sock: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM; Ctrl-C reaches the group
    _run_worker(options, sock)


def serve(options: ServeOptions) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status."""
    _setup_logging(options.log_level)
    try:
        config = load_config(options.config)
        service = service_config(config)
        service.tenant_digests()  # keys readable now, not at the first request
    except RerankRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not service.tenants:
        if not is_loopback(options.host) and not options.insecure_no_auth:
            print(
                f"error: no tenants are configured (service.tenants), so the gateway has no auth; it binds "
                f"loopback only and refuses {options.host}. Configure tenants, or pass --insecure-no-auth.",
                file=sys.stderr,
            )
            return 2
        where = "loopback only" if is_loopback(options.host) else f"{options.host}, --insecure-no-auth"
        _log.warning(
            "no tenants configured (service.tenants): no auth, every request is tenant 'anonymous'; listening on %s", where
        )
    limited = [
        n
        for n, t in service.tenants.items()
        if t.rpm is not None or t.spend_caps.day_usd is not None or t.spend_caps.month_usd is not None
    ]
    if options.workers > 1 and limited and config.shared_state is None:
        _log.warning(
            "no shared_state: the rpm limits and spend caps of %s are counted per worker (x%d); configure Redis to share them",
            ", ".join(limited),
            options.workers,
        )
    try:
        sock = _bind(options.host, options.port)
    except OSError as exc:
        print(f"error: cannot listen on {options.host}:{options.port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(
        f"rerank-router gateway on http://{options.host}:{sock.getsockname()[1]} ({options.workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    if options.workers <= 1:
        _run_worker(options, sock)
        return 0
    return _supervise(options, sock)


def _supervise(options: ServeOptions, sock: socket.socket) -> int:
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="rerank-router-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    else:
        folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):  # values of an earlier run would be added in
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    workers: list[Any] = []
    started_at: dict[int, float] = {}
    reaped: set[int] = set()

    def start(i: int) -> Any:
        worker = ctx.Process(target=_worker_entry, args=(options, sock), name=f"rerank-router-worker-{i}")
        worker.start()
        started_at[i] = time.monotonic()
        return worker

    def forward(sig: int, frame: FrameType | None) -> None:
        stopping.set()
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    workers.extend(start(i) for i in range(options.workers))
    from multiprocessing.connection import wait

    from prometheus_client import multiprocess

    status = 0
    while True:
        alive = [w.sentinel for w in workers if w.is_alive()]
        if alive:
            wait(alive, timeout=1.0)
        for i, w in enumerate(workers):
            if w.is_alive() or w.exitcode is None or id(w) in reaped:
                continue
            reaped.add(id(w))
            if w.pid is not None:
                multiprocess.mark_process_dead(w.pid)  # type: ignore[no-untyped-call]
            if stopping.is_set():
                continue
            if time.monotonic() - started_at[i] < 10:  # dies at start: a restart would loop
                _log.error("worker %s exited with %s right after starting; stopping the gateway", w.pid, w.exitcode)
                status = 1
                forward(signal.SIGTERM, None)
                continue
            _log.warning("worker %s exited with %s; starting a new one", w.pid, w.exitcode)
            workers[i] = start(i)
        if not any(w.is_alive() for w in workers):
            break
    sock.close()
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)
    return status
