"""Issue 12's guarantees as properties: random requests through a Router over loopback tiers.

Hypothesis draws documents (strings, and records with ids and metadata; unicode, empty, long),
queries, top_n, budgets, ceilings, constraints, scripted faults for the loopback server
(``router.testing.Fault``) and per-call faults for a priced FakeBackend, plus bad inputs of many
kinds. Tiers: Cohere and a vLLM server on loopback (both keyed with a fake API key), a Cohere
tier at a non-loopback address that only a broken on-premise rule would contact, a priced fake
API and a free local fake. For every request:

- a valid request returns a permutation of its documents (ids kept); a bad one raises
  ``InvalidRequestError`` or ``ConfigError``, nothing else;
- what the request was billed, counted outside the router (the loopback server's billed
  responses and the fake's billed calls, priced from the catalog and the config), is within its
  ceiling, and ``actual_cost_usd`` reports exactly that;
- an on-premise request opens no connection to a non-loopback address (a spy on
  ``socket.socket.connect`` and the event loop's ``sock_connect`` / ``create_connection`` records
  every attempt and refuses, before any byte is sent, those that are not to loopback);
- the API key appears in no output: result repr, explanation, degraded reason, stage errors,
  decision records, error messages and their causes, router and backend reprs (the server's
  scripted error bodies echo it, as some providers do).

The strict xfail tests below pin what the property found broken (see each reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router import Router
from router.backends.base import Scores, Usage
from router.catalog import load_catalog
from router.decisions import DecisionLog
from router.errors import ConfigError, InvalidRequestError, ServerError
from router.testing import FakeBackend, Fault, LoopbackRerankServer

SECRET = "sk-test-SECRET123"
KEY_ENV = "RR_PROPERTY_TEST_KEY"
OFF_PREMISE_URL = "http://10.255.255.1:9"  # never reached: the spy refuses it
PER_CALL_USD = 0.001  # the vLLM tier's configured price
FAKE_UNIT_USD = 0.002  # the priced fake's price per search unit
COHERE_UNIT_USD = float(load_catalog()["rerank-v3.5"].pricing.usd or 0.0)


# -- spend counted outside the router ----------------------------------------------------------------


class Ledger:
    def __init__(self) -> None:
        self.usd = 0.0
        self._lock = threading.Lock()

    def add(self, usd: float) -> None:
        with self._lock:
            self.usd += usd


class BillingServer(LoopbackRerankServer):
    """The loopback server, adding what each answered Cohere / vLLM request bills to a ledger."""

    def __init__(self, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger

    def _cohere(self, body: Any) -> Any:
        out = super()._cohere(body)
        self.ledger.add(out["meta"]["billed_units"]["search_units"] * COHERE_UNIT_USD)
        return out

    def _vllm_rerank(self, body: Any) -> Any:
        out = super()._vllm_rerank(body)
        self.ledger.add(PER_CALL_USD)
        return out

    def wait_idle(self, limit_s: float = 5.0) -> None:
        """Until no request is being handled (a call the client gave up on may still be billed)."""
        stop = time.monotonic() + limit_s
        while time.monotonic() < stop:
            with self._lock:
                if self._in_flight == 0:
                    return
            time.sleep(0.005)


class BilledFake(FakeBackend):
    """Bills one search unit for every call that returned, a response the router rejects included."""

    def __init__(self, name: str, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.ledger = ledger

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        scores = await super().rerank(query, documents)
        self.ledger.add(FAKE_UNIT_USD)
        return Scores(scores.values, Usage(search_units=1))


# -- the socket spy ----------------------------------------------------------------------------------


class SocketSpy:
    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._lock = threading.Lock()

    @staticmethod
    def is_loopback(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def check(self, host: object) -> None:
        name = host.decode() if isinstance(host, bytes) else str(host)
        with self._lock:
            self.attempts.append(name)
        if not self.is_loopback(name):
            raise ConnectionRefusedError(f"refused by the test's socket spy: {name}")

    def non_loopback(self, since: int = 0) -> list[str]:
        with self._lock:
            return [h for h in self.attempts[since:] if not self.is_loopback(h)]


def _host(address: Any) -> Any:
    return address[0] if isinstance(address, tuple) else address


@contextlib.contextmanager
def spying() -> Iterator[SocketSpy]:
    import socket

    spy = SocketSpy()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sock_connect = asyncio.BaseEventLoop.sock_connect
    real_create_connection = asyncio.BaseEventLoop.create_connection

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            spy.check(_host(address))
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            spy.check(_host(address))
        return real_connect_ex(self, address)

    async def sock_connect(self: asyncio.BaseEventLoop, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            spy.check(_host(address))
        return await real_sock_connect(self, sock, address)

    async def create_connection(self: asyncio.BaseEventLoop, protocol_factory: Any, host: Any = None, *a: Any, **kw: Any) -> Any:
        if host is not None:
            spy.check(host)
        return await real_create_connection(self, protocol_factory, host, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(asyncio.BaseEventLoop, "sock_connect", sock_connect)
        mp.setattr(asyncio.BaseEventLoop, "create_connection", create_connection)
        yield spy


# -- the router under test ---------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, records: Sequence[Any]) -> None:
        self.lines.extend(json.dumps(r.to_dict(), default=str) for r in records)

    def close(self) -> None:
        return None


def build_router(
    server: LoopbackRerankServer,
    ledger: Ledger,
    fake_schedule: Sequence[str],
    sink: ListSink,
    *,
    cohere_max_documents: int = 1000,
) -> Router:
    def fail(call: int) -> BaseException | None:
        kind = fake_schedule[call % len(fake_schedule)] if fake_schedule else "ok"
        return ServerError("HTTP 503") if kind == "5xx" else None

    def override(call: int, n: int) -> list[float] | None:
        kind = fake_schedule[call % len(fake_schedule)] if fake_schedule else "ok"
        if kind == "nan":
            return [math.nan] * n
        if kind == "short":
            return [0.5] * max(0, n - 1)
        return None

    priced = BilledFake(
        "fake-api",
        ledger,
        fail=fail,
        scores_override=override,
        spec={
            "quality": {"web": 0.87},
            "license": "proprietary",
            "data_leaves_premises": True,
            "pricing": {"scheme": "per_search_unit", "usd": FAKE_UNIT_USD},
        },
    )
    local = FakeBackend("local", spec={"quality": {"web": 0.4}})
    keyed = {"api_key_env": KEY_ENV, "timeout_s": 2}
    config = {
        "backends": {
            # What only a broken on-premise rule would contact (the catalog: data leaves).
            "offsite": {
                "type": "cohere",
                "model": "rerank-v3.5",
                "base_url": OFF_PREMISE_URL,
                **keyed,
                "spec": {"quality": {"web": 0.95}, "latency": {"overhead_ms": 5}},
            },
            "cohere": {
                "type": "cohere",
                "model": "rerank-v3.5",
                "base_url": server.base_url("cohere"),
                **keyed,
                "spec": {"quality": {"web": 0.9}, "latency": {"overhead_ms": 5}, "max_documents": cohere_max_documents},
            },
            "vllm": {
                "type": "http",
                "protocol": "vllm-v2",
                "model": "BAAI/bge-reranker-v2-m3",
                "base_url": server.base_url("vllm"),
                **keyed,
                "spec": {"quality": {"web": 0.85}, "pricing": {"scheme": "per_call", "usd": PER_CALL_USD}},
            },
        },
        "resilience": {
            "default": {
                "retries": {"attempts": 2, "initial_s": 0.0, "max_s": 0.0, "jitter_s": 0.0},
                "breaker": {"failure_threshold": 1000},
            }
        },
    }
    return Router(config, backends={"fake-api": priced, "local": local}, decision_log=DecisionLog(sink))


@pytest.fixture(scope="module")
def env_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, SECRET)
        yield


@pytest.fixture(scope="module")
def billed() -> Iterator[tuple[BillingServer, Ledger]]:
    ledger = Ledger()
    with BillingServer(ledger, api_key=SECRET) as server:
        yield server, ledger


# -- strategies --------------------------------------------------------------------------------------

text = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.builds(lambda s, k: s * k, st.text(min_size=1, max_size=8), st.integers(200, 2_000)),  # long ones
)
record = st.fixed_dictionaries(
    {"text": text},
    optional={
        "metadata": st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=6), st.none()), max_size=3)
    },
)
document = st.one_of(text, record)
# Queries with a letter or digit: valid however the empty-query check is drawn.
query = st.text(min_size=1, max_size=60).filter(lambda q: any(c.isalnum() for c in q))
constraints = st.fixed_dictionaries(
    {"on_premise": st.booleans(), "commercial_use": st.booleans()},
    optional={"allowed_licenses": st.sampled_from([["Apache-2.0", "MIT"], ["proprietary", "Apache-2.0"]])},
)
server_fault = st.sampled_from(
    [
        None,
        None,
        Fault.server_error(503),
        Fault.rate_limited(retry_after=0),
        Fault.malformed_json(),
        Fault.dropped_connection(),
        Fault.error(500, f"internal error for api key {SECRET}"),  # a provider that echoes the key
        Fault.error(401, f"invalid api token {SECRET}"),
    ]
)
valid_request = st.fixed_dictionaries(
    {
        "query": query,
        "documents": st.lists(document, min_size=1, max_size=12),
        "ids": st.booleans(),
        "top_n": st.one_of(st.none(), st.integers(1, 15)),
        "latency_budget_ms": st.sampled_from([None, 150.0, 400.0, 2_000.0]),
        "max_cost_usd": st.sampled_from([None, 0.0, 0.001, 0.002, 0.003, 0.005]),
        "constraints": constraints,
    }
)
# Inputs every version of the router must refuse with a typed error.
BAD_INPUTS: list[tuple[str, Any]] = [
    ("query", ""),
    ("query", "   "),
    ("query", 5),
    ("query", None),
    ("documents", []),
    ("documents", "a string, not a list"),
    ("documents", None),
    ("documents", [1, 2]),
    ("documents", [None]),
    ("documents", [{"id": "a"}]),
    ("documents", [{"text": 5}]),
    ("documents", [{"text": "a", "id": "x"}, {"text": "b", "id": "x"}]),
    ("documents", [{"text": "a", "id": ["x"]}]),
    ("documents", [{"text": "a", "metadata": [1, 2]}]),
    ("documents", [{"text": f"key {SECRET}", "id": {"k": SECRET}}]),
    ("top_n", 0),
    ("top_n", -1),
    ("top_n", "3"),
    ("top_n", 2.5),
    ("top_n", True),
    ("latency_budget_ms", 0),
    ("latency_budget_ms", -5.0),
    ("latency_budget_ms", math.nan),
    ("latency_budget_ms", math.inf),
    ("latency_budget_ms", "100"),
    ("max_cost_usd", -1.0),
    ("max_cost_usd", math.nan),
    ("max_cost_usd", SECRET),
    ("constraints", {"bogus_rule": True}),
    ("constraints", "on_premise"),
]
bad_input = st.sampled_from(BAD_INPUTS)
step = st.one_of(valid_request, valid_request, st.tuples(valid_request, bad_input))  # 2 in 3 valid


# -- checks ------------------------------------------------------------------------------------------


def _texts_of_error(exc: BaseException) -> list[str]:
    seen: list[str] = []
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return seen


def assert_no_secret(*outputs: object) -> None:
    for out in outputs:
        text = str(out)
        at = text.find(SECRET)
        assert at < 0, f"the API key leaked: ...{text[max(0, at - 400) : at + 40]}"


def _documents(draw: dict[str, Any]) -> list[Any]:
    docs = draw["documents"]
    if not draw["ids"]:
        return list(docs)
    # Unique string ids on every record (strings get wrapped into records).
    return [{**(d if isinstance(d, dict) else {"text": d}), "id": f"doc-{i}"} for i, d in enumerate(docs)]


def run_one(router: Router, server: BillingServer, ledger: Ledger, spy: SocketSpy, item: Any, sink: ListSink) -> None:
    bad: tuple[str, Any] | None = None
    if isinstance(item, tuple):
        item, bad = item
    kwargs: dict[str, Any] = {
        "query": item["query"],
        "documents": _documents(item),
        "top_n": item["top_n"],
        "latency_budget_ms": item["latency_budget_ms"],
        "max_cost_usd": item["max_cost_usd"],
        "constraints": item["constraints"],
    }
    if bad is not None:
        kwargs[bad[0]] = bad[1]
    server.wait_idle()  # a call an earlier example gave up on may still be billed: not this one's spend
    before_usd, before_attempts = ledger.usd, len(spy.attempts)
    try:
        result = router.rerank(kwargs.pop("query"), kwargs.pop("documents"), **kwargs)
    except (InvalidRequestError, ConfigError) as exc:
        assert bad is not None, f"a valid request was refused: {exc!r}"
        assert_no_secret(*_texts_of_error(exc))
        event(f"refused: {type(exc).__name__}")
        assert ledger.usd == before_usd and spy.non_loopback(before_attempts) == []
        return
    assert bad is None, f"{bad} was accepted"
    server.wait_idle()
    spent = ledger.usd - before_usd
    n = len(item["documents"])
    event(f"called {'+'.join(sorted({s.backend for s in result.stages})) or 'nothing'}")
    event(f"served by {' -> '.join(result.backends) or 'retriever order'}")
    # A permutation of the input, ids kept.
    assert sorted(result.indices) == list(range(n))
    if item["ids"]:
        assert sorted(r.id for r in result.items) == sorted(f"doc-{i}" for i in range(n))
    # Spend, counted outside the router, within the ceiling, and reported as billed.
    ceiling = item["max_cost_usd"]
    if ceiling is not None:
        assert spent <= ceiling + 1e-9, (spent, ceiling, [(s.backend, s.ok, s.error) for s in result.stages])
    stages = [(s.backend, s.ok, s.error, s.cost_usd) for s in result.stages]
    reported = result.actual_cost_usd or 0.0
    if any(s.error and ("timed out" in s.error or "not valid JSON" in s.error) for s in result.stages):
        # A bill the router cannot read (a call cut at the deadline, an answer that is not JSON) is
        # booked at its predicted cost (README, "The ceiling caps the whole request"): the provider
        # may or may not have billed it, so the report may be above the counted spend, never below.
        event("a bill the router could not read")
        assert spent <= reported + 1e-9, (reported, spent, stages)
    else:
        assert reported == pytest.approx(spent, abs=1e-9), (reported, spent, stages)
    # On premise: no connection to anything but loopback.
    if item["constraints"]["on_premise"]:
        assert spy.non_loopback(before_attempts) == [], [(s.backend, s.error) for s in result.stages]
    # No secret anywhere the caller or an operator can see.
    explanation = result.explanation
    assert_no_secret(
        repr(result),
        str(explanation),
        repr(explanation),
        result.degraded_reason,
        *(s.error for s in result.stages),
        *explanation.notes,
    )


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    steps=st.lists(step, min_size=1, max_size=3),
    faults=st.lists(server_fault, max_size=6),
    fake_schedule=st.lists(st.sampled_from(["ok", "ok", "5xx", "nan", "short"]), max_size=4),
)
def test_guarantees_hold_for_random_requests_and_faults(
    env_key: None, billed: tuple[BillingServer, Ledger], steps: list[Any], faults: list[Fault | None], fake_schedule: list[str]
) -> None:
    server, ledger = billed
    server.reset()
    server.script(faults)
    sink = ListSink()
    with spying() as spy:
        router = build_router(server, ledger, fake_schedule, sink)
        try:
            assert_no_secret(repr(router), *(repr(b) for b in router.backends.values()))
            for item in steps:
                run_one(router, server, ledger, spy, item, sink)
            router.drain()
        finally:
            router.close()
    assert_no_secret(*sink.lines)


# -- control and the findings, as single examples ----------------------------------------------------


def test_control_the_spy_sees_and_refuses_the_off_premise_tier(env_key: None, billed: tuple[BillingServer, Ledger]) -> None:
    server, ledger = billed
    server.reset()
    with spying() as spy:
        router = build_router(server, ledger, [], ListSink())
        try:
            allowed = router.rerank("tea", ["green tea", "coffee"], latency_budget_ms=2_000)
            seen, mark = spy.non_loopback(), len(spy.attempts)
            kept = router.rerank("tea", ["green tea", "coffee"], latency_budget_ms=2_000, constraints={"on_premise": True})
        finally:
            router.close()
    assert seen and seen[0] == "10.255.255.1", spy.attempts  # the attempt was made, and refused
    assert allowed.stages[0].backend == "offsite" and not allowed.stages[0].ok
    assert sorted(allowed.indices) == [0, 1]
    assert spy.non_loopback(mark) == [] and "offsite" not in kept.backends
    assert any(h == "127.0.0.1" for h in spy.attempts), "the spy saw no loopback connection: it sees nothing"


def test_a_split_request_with_one_failed_batch_stays_within_the_ceiling(
    env_key: None, billed: tuple[BillingServer, Ledger]
) -> None:
    server, ledger = billed
    server.reset()
    server.script([None, Fault.server_error(503)])  # one batch billed, one failed; the retry bills both
    router = build_router(server, ledger, [], ListSink(), cohere_max_documents=5)
    before = ledger.usd
    try:
        result = router.rerank("tea", [f"tea {i}" for i in range(10)], max_cost_usd=0.004, constraints={"on_premise": False})
    finally:
        router.close()
    server.wait_idle()
    spent = ledger.usd - before
    assert sorted(result.indices) == list(range(10))
    assert result.actual_cost_usd == pytest.approx(spent)
    assert spent <= 0.004 + 1e-9, spent


def test_an_unreadable_batch_of_a_split_request_counts_at_its_prediction(
    env_key: None, billed: tuple[BillingServer, Ledger]
) -> None:
    server, ledger = billed
    server.reset()
    server.script([None, Fault.malformed_json()])  # one batch answered and billed, one unreadable
    router = build_router(server, ledger, [], ListSink(), cohere_max_documents=5)
    before = ledger.usd
    try:
        result = router.rerank("tea", [f"tea {i}" for i in range(10)], constraints={"on_premise": False})
    finally:
        router.close()
    server.wait_idle()
    assert sorted(result.indices) == list(range(10))
    [cohere] = [s for s in result.stages if s.backend == "cohere"][:1]
    assert not cohere.ok
    # The answered batch as billed, the unreadable one at its predicted unit: never less than billed.
    assert cohere.cost_usd == pytest.approx(2 * COHERE_UNIT_USD)
    assert (result.actual_cost_usd or 0.0) >= ledger.usd - before - 1e-12


def test_a_billed_response_with_bad_indices_is_reported(env_key: None, billed: tuple[BillingServer, Ledger]) -> None:
    server, ledger = billed
    server.reset()
    server.script([Fault.bad_indices("duplicate")])
    router = build_router(server, ledger, ["5xx"], ListSink())
    before = ledger.usd
    try:
        result = router.rerank("tea", ["green tea", "black tea", "coffee"], constraints={"on_premise": False})
    finally:
        router.close()
    server.wait_idle()
    assert sorted(result.indices) == [0, 1, 2]
    [cohere] = [s for s in result.stages if s.backend == "cohere"]
    assert not cohere.ok and cohere.cost_usd == pytest.approx(COHERE_UNIT_USD)  # billed, then rejected
    assert result.actual_cost_usd == pytest.approx(ledger.usd - before)  # every billed call, fallbacks too


def test_an_unknown_model_at_a_public_address_is_not_on_premise(env_key: None) -> None:
    with spying() as spy:
        router = Router(
            {
                "backends": {
                    "jina": {
                        "type": "http",
                        "protocol": "jina-compatible",
                        "base_url": "http://8.8.8.8:9",
                        "model": "acme/unknown-reranker",
                        "api_key_env": KEY_ENV,
                        "timeout_s": 1,
                        "spec": {"quality": {"web": 0.9}, "pricing": {"scheme": "free"}, "license": "Apache-2.0"},
                    }
                }
            },
            backends={"local": FakeBackend("local", spec={"quality": {"web": 0.4}})},
        )
        try:
            result = router.rerank("tea", ["green tea", "coffee"], constraints={"on_premise": True})
        finally:
            router.close()
    assert sorted(result.indices) == [0, 1]
    assert spy.non_loopback() == [], spy.attempts


def test_a_call_cut_at_the_deadline_is_reported(env_key: None, billed: tuple[BillingServer, Ledger]) -> None:
    server, ledger = billed
    server.reset()
    server.script([Fault.slow(0.5)])  # the vLLM tier answers (and bills) after the request gave up on it
    router = build_router(server, ledger, [], ListSink())
    before = ledger.usd
    try:
        result = router.rerank("tea", ["green tea", "coffee"], latency_budget_ms=200, constraints={"on_premise": True})
    finally:
        router.close()
    server.wait_idle()
    assert result.stages[0].backend == "vllm" and not result.stages[0].ok
    assert ledger.usd - before == pytest.approx(PER_CALL_USD)
    assert result.actual_cost_usd == pytest.approx(PER_CALL_USD)


def test_a_secret_given_as_a_constraint_value_is_in_no_error_or_cause(env_key: None) -> None:
    router = Router({"backends": {}}, backends={"local": FakeBackend("local")})
    try:
        with pytest.raises(InvalidRequestError) as caught:
            router.rerank("tea", ["green tea"], constraints={"on_premise": SECRET})
    finally:
        router.close()
    assert_no_secret(*_texts_of_error(caught.value))


def test_a_credential_in_a_backends_error_is_scrubbed() -> None:
    echo = FakeBackend("api", spec={"quality": {"web": 0.9}}, fail=lambda call: ServerError(f"HTTP 503 for key {SECRET}"))
    router = Router({"backends": {}}, backends={"api": echo, "local": FakeBackend("local", spec={"quality": {"web": 0.4}})})
    try:
        result = router.rerank("tea", ["green tea", "coffee"])
    finally:
        router.close()
    assert result.backends == ("local",)
    assert_no_secret(repr(result), result.degraded_reason, *(s.error for s in result.stages))


def test_admission_does_not_learn_start_up_work() -> None:
    from router.admission import Admission, AdmissionConfig

    cpu = [0.0]
    admission = Admission(AdmissionConfig(cpu_ms_per_request=3.0, learn_every=16), cpu_clock=lambda: cpu[0])
    cpu[0] += 1.5  # the app's own start-up work after building the Router
    for _ in range(16):
        assert admission.admit(1_000.0) is None
        cpu[0] += 0.001  # 1 ms of CPU per request
        admission.done()
    assert admission.cpu_ms_per_request <= 3.0


def test_admission_does_not_charge_shed_requests_to_admitted_ones() -> None:
    from router.admission import Admission, AdmissionConfig

    cpu = [0.0]
    admission = Admission(AdmissionConfig(cpu_ms_per_request=1.0, min_in_flight=1, learn_every=1), cpu_clock=lambda: cpu[0])
    for _ in range(20):
        assert admission.admit(1_000.0) is None
        for _ in range(50):
            assert admission.admit(0.5) is not None  # cannot finish in 0.5 ms: shed
            cpu[0] += 0.0002  # 0.2 ms to build and answer a shed request
        cpu[0] += 0.001  # 1 ms for the admitted one
        admission.done()
    assert admission.cpu_ms_per_request < 2.0
