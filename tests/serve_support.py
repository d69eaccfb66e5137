"""Helpers for the gateway tests: a real uvicorn server on a free loopback port, in a thread of the
test process (over any Router, FakeBackends included) or as a ``rerank-router serve`` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from router import Router
from router.service.app import create_app

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/health/readiness", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the gateway at {url} did not become ready in {timeout_s} s")


class ThreadGateway:
    """``with ThreadGateway(router) as gw: gw.url`` -- uvicorn serving the gateway app in a thread."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.app = create_app(router=router)
        self.gateway = self.app.state.gateway
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, lifespan="on", access_log=False, log_level="warning", loop="asyncio", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadGateway:
        self.thread.start()
        wait_ready(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class ProcessGateway:
    """``rerank-router serve`` in a subprocess on a free port, over a config written to ``folder``."""

    def __init__(
        self, config: Mapping[str, Any], folder: Path, *, workers: int = 1, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = folder / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "gateway.log"
        self.workers = workers
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessGateway:
        self._log = self.log_path.open("wb")
        args = [sys.executable, "-m", "router", "serve", "--config", str(self.config_path), "--port", str(self.port)]
        args += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, 60, self.proc)
            if self.workers > 1:  # readiness answered by one worker: wait until each has answered
                pids: set[str] = set()
                deadline = time.monotonic() + 60
                while len(pids) < self.workers and time.monotonic() < deadline:
                    with httpx.Client(timeout=2.0) as client:  # a new connection each time: the kernel spreads them
                        r = client.get(f"{self.url}/health/readiness")
                    if r.status_code == 200:
                        pids.add(r.json()["pid"])
                    else:
                        time.sleep(0.05)
        except Exception:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def __enter__(self) -> ProcessGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
