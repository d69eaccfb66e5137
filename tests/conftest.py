"""Shared fixtures. Core fixtures first (small); fixtures for real models follow below them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from router import Router
from router.backends.base import Backend


class FakeClock:
    """A monotonic clock that only moves when a test double sleeps on it: timings without waiting.

    Pass ``clock`` to ``Router(clock=...)`` and ``clock.sleep`` to ``FakeBackend(sleep=...)``: a
    backend's scripted latency then shows up in the router's measurements, and nothing waits.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


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


# --- fixtures for real models go below this line ------------------------------------------------


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding a tiny random BERT cross-encoder (real architecture and WordPiece
    tokenizer, random weights), built offline once per session; see tests/fixtures_models.py."""
    from fixtures_models import build_tiny_cross_encoder

    return str(build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder")))
