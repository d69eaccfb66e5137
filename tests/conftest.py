"""Shared fixtures. Core fixtures first (small); fixtures for real models follow below them."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import pytest

from router import Router
from router.backends.base import Backend
from router.backends.registry import build_backend
from router.backends.remote import RemoteBackend
from router.errors import MalformedResponseError, ServerError
from router.testing import FakeClock, Fault, LoopbackRerankServer


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_router() -> Iterator[Callable[..., Router]]:
    """``make_router(backends={...}, policy=..., clock=..., **config)``: a Router over the given
    backends only (no configured ones unless ``backends`` is in ``config``), closed after the test.

    ``policy`` is a Policy object, or a mapping for the config's ``policy:`` section."""
    routers: list[Router] = []

    def make(
        backends: Mapping[str, Backend] | None = None,
        *,
        policy: Any = None,
        clock: Callable[[], float] | None = None,
        **config: Any,
    ) -> Router:
        # Retry back-off waits on a no-op sleep here: tests never wait for it (pass sleep= to override).
        extra: dict[str, Any] = {"sleep": config.pop("sleep", _no_wait)}
        if clock is not None:
            extra["clock"] = clock
        if isinstance(policy, Mapping):
            config["policy"], policy = policy, None
        router = Router({"backends": {}, **config}, backends=backends or {}, policy=policy, **extra)
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


# --- remote backends against the loopback server (router.testing) ---------------------------------

RemoteT = TypeVar("RemoteT", bound=RemoteBackend)

# Faults every remote backend maps alike: (fault, error class, text in the message). A test module
# puts its provider's own faults around them.
SERVER_FAULTS = [(Fault.server_error(status), ServerError, str(status)) for status in (500, 502, 503)]
MALFORMED_FAULTS = [
    (Fault.malformed_json(), MalformedResponseError, "not valid JSON"),
    (Fault.bad_indices("out_of_range"), MalformedResponseError, "out of range"),
    (Fault.bad_indices("negative"), MalformedResponseError, "out of range"),
    (Fault.bad_indices("duplicate"), MalformedResponseError, "scored twice"),
    (Fault.bad_indices("missing"), MalformedResponseError, "not scored"),
]


@pytest.fixture
def server_key() -> str | None:
    """The API key the loopback ``server`` wants (None: it lets every request in). The test module
    of a keyed backend overrides this fixture (autouse), also exporting the key where the backend reads it."""
    return None


@pytest.fixture
def server(server_key: str | None) -> Iterator[LoopbackRerankServer]:
    """A loopback server speaking every provider's wire format, for the remote backends' tests."""
    with LoopbackRerankServer(api_key=server_key) as srv:
        yield srv


def build_remote(kind: type[RemoteT], name: str, fields: Mapping[str, object]) -> RemoteT:
    """A ``kind`` backend called ``name``, built from config ``fields`` through the registry (as from YAML)."""
    backend = build_backend(name, kind.config_model.model_validate(fields))
    assert isinstance(backend, kind)
    return backend


# --- a real Redis for shared state (router.resilience.redis_store) ---------------------------------

REDIS_PASSWORD = "pw-Zq81-never-log-me"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://:<password>@127.0.0.1:<port>/0`` of a redis-server started for this session (no
    persistence, a password so tests can check it never leaks); tests isolate by key prefix."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen([*args, "--requirepass", REDIS_PASSWORD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- fixtures for real models go below this line ------------------------------------------------


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding a tiny random BERT cross-encoder (real architecture and WordPiece
    tokenizer, random weights), built offline once per session; see tests/fixtures_models.py."""
    from fixtures_models import build_tiny_cross_encoder

    return str(build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder")))


def reserve_concurrently(cap: Any, usd: float, *, threads: int = 8, each: int = 100) -> int:
    """``threads`` threads each try ``each`` reserve-then-settle rounds of ``usd`` on a spend cap;
    returns how many reservations were granted."""
    import threading

    granted = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal granted
        for _ in range(each):
            if cap.reserve(usd):
                with lock:
                    granted += 1
                cap.settle(usd, usd)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return granted
