"""Invariant 4: a request marked on-premise never opens a connection to a non-local host.

A spy on the socket layer (name resolution and connect) records every attempt and refuses any to a
non-loopback address. The control case shows the spy sees the closed API when it is allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from router import Router
from router.testing import LoopbackRerankServer


class SocketSpy:
    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.connected: list[str] = []

    @staticmethod
    def is_local(host: str) -> bool:
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    @property
    def non_local(self) -> list[str]:
        return [h for h in self.resolved + self.connected if not self.is_local(h)]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocketSpy]:
    spy = SocketSpy()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        spy.resolved.append(name)
        if not spy.is_local(name):
            raise socket.gaierror(socket.EAI_NONAME, f"blocked by the test: {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        spy.connected.append(host)
        if not spy.is_local(host):
            raise ConnectionRefusedError(f"blocked by the test: {host}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        check(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield spy


def _router(local_url: str) -> Router:
    return Router(
        {
            "backends": {
                # A closed API at its real, non-local address, and the best predicted quality.
                "cohere": {
                    "type": "cohere",
                    "model": "rerank-v4.0-pro",
                    "base_url": "https://api.cohere.com",
                    "timeout_s": 5,
                    "spec": {"quality": {"web": 0.95}},
                },
                # A self-hosted model on this machine.
                "local": {"type": "http", "protocol": "vllm-v2", "base_url": local_url, "model": "Qwen/Qwen3-Reranker-4B"},
            }
        }
    )


DOCS = [f"passage {i} about {'tea' if i % 2 else 'coffee'}" for i in range(20)]


def test_an_on_premise_request_opens_no_connection_to_a_non_local_host(spy, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "co-onprem-test-key")
    with LoopbackRerankServer() as server:
        router = _router(server.base_url("vllm"))
        try:
            result = router.rerank("tea", DOCS, constraints={"on_premise": True})
        finally:
            router.close()
    assert spy.non_local == []
    assert spy.connected, "the spy saw no connection at all: it would not have caught one either"
    assert result.backends == ("local",) and not result.degraded
    assert sorted(result.indices) == list(range(len(DOCS)))
    rejected = {o.name: o.rejected for o in result.explanation.options}
    assert any("on-premise" in r for r in rejected["cohere"])
    assert "cohere" not in result.explanation.fallbacks


def test_control_without_the_constraint_the_spy_sees_the_closed_api(spy, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "co-onprem-test-key")
    with LoopbackRerankServer() as server:
        router = _router(server.base_url("vllm"))
        try:
            result = router.rerank("tea", DOCS)
        finally:
            router.close()
    assert "api.cohere.com" in spy.non_local  # the attempt was made (and refused by the spy)
    assert result.stages[0].backend == "cohere" and not result.stages[0].ok
    assert result.backends == ("local",)  # fell back, every document kept
    assert sorted(result.indices) == list(range(len(DOCS)))
