"""Invariant 4: a request marked on-premise never opens a connection to a non-local host.

Whether a tier is on the premises is decided by where its bytes go: an HTTP tier's ``base_url`` host
(issue 12, finding 7), not only its model's catalog entry.

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
from router.config import load_config
from router.errors import ConfigError
from router.residency import host_residency
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


# -- issue 12, finding 7: on-premise decided by where bytes go (the base_url's host) ---------------


def _public_http_router(local_url: str | None, **public: Any) -> Router:
    backends: dict[str, Any] = {
        # A Jina-compatible API at its real, public address, with a model the catalog does not know
        # (so nothing says it leaves the premises but its URL), and the best predicted quality.
        "jina": {
            "type": "http",
            "protocol": "jina-compatible",
            "base_url": "https://api.jina.ai",
            "model": "jina-reranker-unlisted-v9",
            "timeout_s": 5,
            "spec": {"license": "Apache-2.0", "quality": {"web": 0.99}},
            **public,
        }
    }
    if local_url is not None:
        backends["local"] = {"type": "http", "protocol": "vllm-v2", "base_url": local_url, "model": "Qwen/Qwen3-Reranker-4B"}
    return Router({"backends": backends})


def test_an_http_tier_at_a_public_host_is_off_premise_at_the_socket_level(spy):
    with LoopbackRerankServer() as server:
        router = _public_http_router(server.base_url("vllm"))
        try:
            result = router.rerank("tea", DOCS, constraints={"on_premise": True})
        finally:
            router.close()
    assert spy.non_local == []  # api.jina.ai was never resolved nor connected to
    assert spy.connected, "the spy saw no connection at all: it would not have caught one either"
    assert result.backends == ("local",) and not result.degraded
    assert sorted(result.indices) == list(range(len(DOCS)))
    rejected = {o.name: o.rejected for o in result.explanation.options}
    [why] = [r for r in rejected["jina"] if "on-premise" in r]
    assert "api.jina.ai" in why and "not loopback, link-local or private" in why and "internal_hosts" in why
    assert "jina" not in result.explanation.fallbacks


def test_with_only_a_public_http_tier_an_on_premise_request_sends_nothing(spy):
    router = _public_http_router(None)
    try:
        result = router.rerank("tea", DOCS, constraints={"on_premise": True})
    finally:
        router.close()
    assert spy.resolved == [] and spy.connected == []
    assert all(s.backend != "jina" for s in result.stages)  # kept the retriever order
    assert sorted(result.indices) == list(range(len(DOCS)))


def test_a_catalog_entry_saying_on_premise_does_not_override_a_public_url():
    router = _public_http_router(None, model="Qwen/Qwen3-Reranker-4B")  # catalog: self-hosted, stays on premises
    try:
        spec = router.backends["jina"].spec
        plan = router.plan("tea", DOCS, constraints={"on_premise": True})
    finally:
        router.close()
    assert spec.data_leaves_premises and "api.jina.ai" in spec.residency
    assert all("jina" not in o.backends for o in plan.options_in_order)


def test_an_operator_listed_internal_host_counts_as_on_premise():
    listed = _public_http_router(None, base_url="http://reranker.corp.example:8000", internal_hosts=["reranker.corp.example"])
    domain = _public_http_router(None, base_url="http://gpu7.ml.corp.example:8000", internal_hosts=[".corp.example"])
    unlisted = _public_http_router(None, base_url="http://reranker.corp.example:8000")
    try:
        assert not listed.backends["jina"].spec.data_leaves_premises
        assert not domain.backends["jina"].spec.data_leaves_premises
        assert unlisted.backends["jina"].spec.data_leaves_premises
        plan = listed.plan("tea", DOCS, constraints={"on_premise": True})
        assert plan.primary.backends == ("jina",)
    finally:
        for r in (listed, domain, unlisted):
            r.close()


@pytest.mark.parametrize(
    ("url", "on_premise"),
    [
        ("http://localhost:8000", True),
        ("http://LOCALHOST.:8000", True),
        ("http://api.localhost", True),
        ("http://127.0.0.1:8000", True),
        ("http://127.8.9.10", True),
        ("http://[::1]:8000", True),
        ("http://[::ffff:127.0.0.1]:8000", True),
        ("http://169.254.10.20", True),
        ("http://[fe80::1]", True),
        ("http://10.1.2.3", True),
        ("http://172.16.0.1", True),
        ("http://172.31.255.254", True),
        ("http://192.168.1.10:8080", True),
        ("http://[fd12:3456::1]", True),
        ("http://172.32.0.1", False),
        ("http://100.64.0.1", False),  # carrier-grade NAT (RFC 6598) is not a private network of yours
        ("http://8.8.8.8", False),
        ("http://[2001:4860::8888]", False),
        ("https://api.jina.ai", False),
        ("http://gpu-box:8000", False),  # a bare name says nothing about where it resolves
        ("http://vllm.internal:8000", False),
        ("http://2130706433", False),  # integer forms are names to urlsplit: off, the safe side
        ("not a url", False),
    ],
)
def test_host_residency_table(url, on_premise):
    assert host_residency(url).on_premise is on_premise


def test_internal_hosts_entries():
    assert host_residency("http://a.b.example", ["A.B.Example."]).on_premise
    assert host_residency("http://x.a.b.example", [".b.example"]).on_premise
    assert host_residency("http://b.example", [".b.example"]).on_premise
    assert not host_residency("http://evilb.example", [".b.example"]).on_premise
    assert not host_residency("http://a.b.example.attacker.com", ["a.b.example"]).on_premise


def test_path_is_a_path_below_base_url_never_a_url():
    for path in ("https://api.jina.ai/v1/rerank", "//api.jina.ai/v1/rerank", "v1/rerank"):
        with pytest.raises(ConfigError):
            load_config(
                {
                    "backends": {
                        "b": {"type": "http", "protocol": "tei", "base_url": "http://127.0.0.1", "model": "m", "path": path}
                    }
                }
            )
