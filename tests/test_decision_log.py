"""The decision log's write path: sinks (JSONL, SQLite, OTel), the non-blocking writer, feedback
validation, the config, and the guarantee that no document text or API key reaches a record."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

import router.decisions
from router import ConfigError, InvalidRequestError, MissingDependencyError, Router
from router.config import load_config
from router.decisions import (
    DecisionLog,
    DecisionLogConfig,
    DecisionRecord,
    FeedbackRecord,
    InvalidFeedbackError,
    JsonlSink,
    LogRecord,
    OtelSink,
    SqliteSink,
    StageRecord,
    build_decision_log,
    decision_from_result,
    key_digest,
)
from router.testing import FakeBackend, Fault, LoopbackRerankServer

WAIT_S = 10.0  # the longest any flush here may take; they take milliseconds


def make_decision(request_id: str, *, n_ids: int = 5, **overrides: object) -> DecisionRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "timestamp": 1_700_000_000.25,
        "policy": "constrained",
        "chosen": "bm25>cohere@50",
        "reason": "best feasible quality",
        "fallbacks": ("minilm",),
        "backends": ("bm25", "cohere"),
        "stages": (
            StageRecord("bm25", "bm25", 100, True, 2.0, 3.0, 0.0, 0.0),
            StageRecord("cohere", "rerank-v3.5", 50, False, 40.5, 35.0, None, 0.002, attempts=3, error="HTTP 503"),
        ),
        "n_documents": 100,
        "top_n": 10,
        "top_ids": tuple(f"doc-{i}" for i in range(n_ids)),
        "latency_ms": 42.5,
        "predicted_latency_ms": 38.0,
        "predicted_cost_usd": 0.002,
        "actual_cost_usd": None,
        "degraded": True,
        "degraded_reason": "cohere failed: HTTP 503",
        "latency_budget_ms": 500.0,
        "max_cost_usd": 0.01,
        "domain": "web",
        "experiment": "exp-1",
        "arm": "treatment",
    }
    values.update(overrides)
    return DecisionRecord(**values)  # type: ignore[arg-type]


def read_jsonl(path: Path) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        records.append(DecisionRecord.from_dict(data) if data["kind"] == "decision" else FeedbackRecord.from_dict(data))
    return records


class ListSink:
    """Keeps what it is given; notes the thread that wrote and closed it."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.batches = 0
        self.closed_by: str | None = None
        self.closes = 0

    def write(self, records: Sequence[LogRecord]) -> None:
        self.batches += 1
        self.records.extend(records)

    def close(self) -> None:
        self.closes += 1
        self.closed_by = threading.current_thread().name


# -- sinks ---------------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "nested" / "dir" / "decisions.jsonl"
    decisions = [
        make_decision("r1"),
        make_decision("r2", actual_cost_usd=0.002, degraded=False, degraded_reason=None, stages=(), experiment=None, arm=None),
        make_decision("r3", query="ünïcode query", top_texts=("a\nline", 'b"quoted"'), n_ids=2, shadow=True),
    ]
    feedback = FeedbackRecord("r1", 1_700_000_100.0, clicked=("doc-3", "doc-1"), relevance={"doc-3": 3.0, "doc-9": 0.0})
    with DecisionLog(JsonlSink(path)) as log:
        for record in (*decisions, feedback):
            assert log.record(record)
    assert read_jsonl(path) == [*decisions, feedback]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4
    assert path.stat().st_mode & 0o077 == 0  # may hold text when opted in: owner only


def test_sqlite_schema_and_round_trip(tmp_path):
    path = tmp_path / "db" / "decisions.sqlite"
    sink = SqliteSink(path)
    decisions = [make_decision("r1"), make_decision("r2", experiment=None, arm=None, shadow=True)]
    feedback = FeedbackRecord("r1", 1_700_000_100.0, clicked=("doc-3",), relevance={"doc-3": 2.0})
    with DecisionLog(sink) as log:
        for record in (*decisions, feedback):
            log.record(record)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {t: [(c[1], c[2], c[3]) for c in db.execute(f"PRAGMA table_info({t})")] for t in ("decisions", "feedback")}
        assert columns == {
            "decisions": [
                ("request_id", "TEXT", 1),
                ("timestamp", "REAL", 1),
                ("experiment", "TEXT", 0),
                ("arm", "TEXT", 0),
                ("shadow", "INTEGER", 1),
                ("record", "TEXT", 1),
            ],
            "feedback": [("request_id", "TEXT", 1), ("timestamp", "REAL", 1), ("record", "TEXT", 1)],
        }
        indexed = {
            (table, tuple(c[2] for c in db.execute(f"PRAGMA index_info({index[1]})")))
            for table in ("decisions", "feedback")
            for index in db.execute(f"PRAGMA index_list({table})")
        }
        assert indexed == {("decisions", ("request_id",)), ("decisions", ("experiment", "arm")), ("feedback", ("request_id",))}
        rows = db.execute(
            "SELECT request_id, timestamp, experiment, arm, shadow, record FROM decisions ORDER BY rowid"
        ).fetchall()
        assert [r[:5] for r in rows] == [
            ("r1", 1_700_000_000.25, "exp-1", "treatment", 0),
            ("r2", 1_700_000_000.25, None, None, 1),
        ]
        assert [DecisionRecord.from_dict(json.loads(r[5])) for r in rows] == decisions
        [(request_id, record)] = db.execute("SELECT request_id, record FROM feedback").fetchall()
        assert request_id == "r1" and FeedbackRecord.from_dict(json.loads(record)) == feedback


def test_sqlite_rolls_back_a_failed_batch_and_keeps_working(tmp_path):
    sink = SqliteSink(tmp_path / "d.sqlite")
    sink.write([make_decision("ok-1")])
    with pytest.raises(sqlite3.IntegrityError):
        sink.write([make_decision("lost"), make_decision(None)])  # type: ignore[arg-type]  # NOT NULL fails mid-batch
    sink.write([make_decision("ok-2")])
    sink.close()
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT request_id FROM decisions ORDER BY rowid")] == ["ok-1", "ok-2"]


# -- integrity under concurrent writers ------------------------------------------------------------


def test_eight_threads_share_one_log(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(JsonlSink(path), batch_size=64)

    def write(thread: int) -> None:
        for i in range(500):
            assert log.record(make_decision(f"t{thread}-{i}"))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert log.close(timeout_s=WAIT_S)
    ids = [r.request_id for r in read_jsonl(path)]
    assert len(ids) == 8 * 500 and set(ids) == {f"t{t}-{i}" for t in range(8) for i in range(500)}
    assert log.dropped == 0 and log.sink_errors == 0 and log.written == 8 * 500


def _append_from_process(kind: str, path: str, worker: int, n: int, start: threading.Barrier) -> None:
    """Runs in a spawned process: its own DecisionLog appending ``n`` big records (many KB a batch)."""
    sink = JsonlSink(path) if kind == "jsonl" else SqliteSink(path)
    log = DecisionLog(sink, queue_size=n + 1, batch_size=64)
    start.wait(timeout=60)
    for i in range(n):
        log.record(make_decision(f"p{worker}-{i}", n_ids=60))
    log.record(FeedbackRecord(f"p{worker}-0", time.time(), clicked=("doc-1",)))
    assert log.close(timeout_s=60)
    assert log.dropped == 0 and log.sink_errors == 0, (log.dropped, log.sink_errors)


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_four_processes_append_to_one_file(tmp_path, kind):
    path = tmp_path / f"decisions.{kind}"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    processes = [ctx.Process(target=_append_from_process, args=(kind, str(path), w, 500, start)) for w in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]

    if kind == "jsonl":
        records = read_jsonl(path)  # every line parses: no torn or interleaved lines
        decisions = [r.request_id for r in records if isinstance(r, DecisionRecord)]
        feedback = [r.request_id for r in records if isinstance(r, FeedbackRecord)]
        assert all(isinstance(r, FeedbackRecord) or len(r.top_ids) == 60 for r in records)
    else:
        with sqlite3.connect(path) as db:
            decisions = [json.loads(r[0])["request_id"] for r in db.execute("SELECT record FROM decisions")]
            feedback = [r[0] for r in db.execute("SELECT request_id FROM feedback")]
    assert len(decisions) == 4 * 500  # no loss, no duplicates
    assert set(decisions) == {f"p{w}-{i}" for w in range(4) for i in range(500)}
    assert sorted(feedback) == [f"p{w}-0" for w in range(4)]


# -- never blocks, bounded memory, failing sinks ---------------------------------------------------


class BlockingSink(ListSink):
    """Blocks inside write until ``release`` is set: a hung disk or collector."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, records: Sequence[LogRecord]) -> None:
        self.entered.set()
        assert self.release.wait(timeout=WAIT_S)
        super().write(records)


def test_record_never_blocks_and_counts_every_drop(caplog):
    sink = BlockingSink()
    log = DecisionLog(sink, queue_size=100, batch_size=1000)
    log.record(make_decision("first"))
    assert sink.entered.wait(timeout=WAIT_S)  # the writer now holds "first" and is stuck in write()

    caplog.set_level(logging.WARNING, logger="rerank_router.decisions")
    started = time.perf_counter()
    accepted = [log.record(make_decision(f"r{i}")) for i in range(10 * 100)]
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0  # 1,000 calls against a hung sink: microseconds each, never a wait
    assert accepted.count(True) == 100 and log.dropped == 900
    assert log.pending == 100  # memory is bounded by queue_size
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "r5" not in drops[0].getMessage()  # warned once; no record content

    sink.release.set()
    assert log.flush(timeout_s=WAIT_S)
    assert [r.request_id for r in sink.records] == ["first", *(f"r{i}" for i in range(100))]
    assert log.written == 101 and log.dropped == 900
    log.close()


def test_flush_times_out_while_the_sink_hangs():
    sink = BlockingSink()
    log = DecisionLog(sink)
    log.record(make_decision("r1"))
    assert not log.flush(timeout_s=0.05)
    sink.release.set()
    assert log.flush(timeout_s=WAIT_S)
    log.close()


class FlakySink(ListSink):
    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.calls = 0

    def write(self, records: Sequence[LogRecord]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError("disk full while writing SECRET-CONTENT")
        super().write(records)


def test_a_failing_sink_does_not_kill_the_writer(caplog):
    caplog.set_level(logging.WARNING, logger="rerank_router.decisions")
    sink = FlakySink(fail_on={1, 2})
    log = DecisionLog(sink)
    for i in range(3):
        log.record(make_decision(f"r{i}"))
        assert log.flush(timeout_s=WAIT_S)  # one batch per record
    assert log.sink_errors == 2 and log.written == 1
    assert [r.request_id for r in sink.records] == ["r2"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["decision sink FlakySink failed: OSError"]  # once per interval, type only
    assert log.close(timeout_s=WAIT_S)


def test_a_sink_that_fails_to_close_is_survived(caplog):
    class BadClose(ListSink):
        def close(self) -> None:
            raise RuntimeError("nope")

    log = DecisionLog(BadClose())
    log.record(make_decision("r1"))
    assert log.close(timeout_s=WAIT_S)
    assert "failed to close: RuntimeError" in caplog.text


def test_close_is_idempotent_drops_later_records_and_closes_the_sink_in_the_writer_thread():
    sink = ListSink()
    log = DecisionLog(sink)
    log.record(make_decision("r1"))
    assert log.close(timeout_s=WAIT_S) and log.close(timeout_s=WAIT_S)
    assert sink.closes == 1 and sink.closed_by == "rerank-router-decisions"
    assert [r.request_id for r in sink.records] == ["r1"]
    assert not log.record(make_decision("late")) and log.dropped == 1
    assert log.record_feedback("r1", clicked=["doc-1"]) is False and log.dropped == 2
    assert log.flush(timeout_s=0.1) and log.closed


def test_record_rejects_what_is_not_a_record():
    with DecisionLog(ListSink()) as log, pytest.raises(TypeError, match="DecisionRecord or FeedbackRecord"):
        log.record({"request_id": "r1"})  # type: ignore[arg-type]


# -- feedback -----------------------------------------------------------------------------------


def test_feedback_joins_outcomes_to_decisions(tmp_path):
    path = tmp_path / "log.jsonl"
    with DecisionLog(JsonlSink(path), clock=lambda: 1234.5) as log:
        log.record(make_decision("r1"))
        log.record_feedback("r1", clicked=["doc-3", "doc-1"], relevance={"doc-3": 3, "doc-4": 0.5})
        log.record_feedback("r1", relevance={"doc-1": 1})
    decision, click, grade = read_jsonl(path)
    assert click == FeedbackRecord("r1", 1234.5, clicked=("doc-3", "doc-1"), relevance={"doc-3": 3.0, "doc-4": 0.5})
    assert grade == FeedbackRecord("r1", 1234.5, relevance={"doc-1": 1.0})
    assert decision.request_id == click.request_id


@pytest.mark.parametrize(
    ("request_id", "kwargs", "message"),
    [
        ("", {}, "request_id must be a non-empty str"),
        ("  ", {}, "request_id must be a non-empty str"),
        (None, {}, "request_id must be a non-empty str"),
        ("r1", {"clicked": "doc-1"}, "clicked must be a list of document ids .* wrap a single id in a list"),
        ("r1", {"clicked": {"doc-1"}}, "clicked must be a list of document ids"),
        ("r1", {"clicked": ["doc-1", 7]}, r"clicked\[1\] is int; document ids are str"),
        ("r1", {"relevance": [("doc-1", 1)]}, "relevance must be a mapping"),
        ("r1", {"relevance": {"doc-1": float("nan")}}, r"relevance\['doc-1'\] must be a finite number"),
        ("r1", {"relevance": {"doc-1": float("inf")}}, "must be a finite number"),
        ("r1", {"relevance": {"doc-1": "3"}}, "must be a finite number"),
        ("r1", {"relevance": {"doc-1": True}}, "must be a finite number"),
        ("r1", {"relevance": {1: 3}}, "relevance key 1 is not a str document id"),
    ],
)
def test_bad_feedback_says_what_to_fix(request_id, kwargs, message):
    with DecisionLog(ListSink()) as log:
        with pytest.raises(InvalidFeedbackError, match=message) as info:
            log.record_feedback(request_id, **kwargs)
        assert isinstance(info.value, InvalidRequestError) and isinstance(info.value, ValueError)
        assert log.dropped == 0


# -- OpenTelemetry ------------------------------------------------------------------------------


def test_otel_spans_carry_the_decision_and_no_text():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # private: the global provider is left alone
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    decision = make_decision("r1", query="secret query words", top_texts=tuple(f"text of doc {i}" for i in range(5)))
    with DecisionLog(OtelSink(provider)) as log:
        log.record(decision)
        log.record_feedback("r1", clicked=["doc-2"], relevance={"doc-2": 3, "doc-0": 0})

    span, feedback = exporter.get_finished_spans()
    assert span.name == "rerank_router.decision" and feedback.name == "rerank_router.feedback"
    attrs = dict(span.attributes or {})
    assert attrs["rerank_router.request_id"] == "r1"
    assert attrs["rerank_router.experiment"] == "exp-1" and attrs["rerank_router.arm"] == "treatment"
    assert attrs["rerank_router.shadow"] is False and attrs["rerank_router.policy"] == "constrained"
    assert attrs["rerank_router.chosen"] == "bm25>cohere@50"
    assert tuple(attrs["rerank_router.backends"]) == ("bm25", "cohere")  # type: ignore[arg-type]
    assert attrs["rerank_router.latency_ms"] == 42.5 and attrs["rerank_router.predicted_latency_ms"] == 38.0
    assert attrs["rerank_router.predicted_cost_usd"] == 0.002
    assert "rerank_router.actual_cost_usd" not in attrs  # unknown (None): left out
    assert attrs["rerank_router.degraded"] is True and attrs["rerank_router.degraded_reason"] == "cohere failed: HTTP 503"
    assert attrs["rerank_router.n_documents"] == 100
    assert tuple(attrs["rerank_router.top_ids"]) == decision.top_ids  # type: ignore[arg-type]
    assert span.end_time == int(decision.timestamp * 1e9)
    assert span.start_time == span.end_time - int(42.5 * 1e6)
    assert span.parent is None
    assert [e.name for e in span.events] == ["rerank_router.stage"] * 2
    assert dict(span.events[1].attributes or {})["rerank_router.error"] == "HTTP 503"

    everything = json.dumps(
        [dict(s.attributes or {}) for s in (span, feedback)] + [dict(e.attributes or {}) for e in span.events]
    )
    assert "secret query words" not in everything and "text of doc" not in everything

    fb = dict(feedback.attributes or {})
    assert fb["rerank_router.request_id"] == "r1" and tuple(fb["rerank_router.clicked"]) == ("doc-2",)  # type: ignore[arg-type]
    assert fb["rerank_router.n_judgements"] == 2


def test_otel_sink_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'rerank-router\[otel\]'"):
        OtelSink()


# -- no text, no secret -------------------------------------------------------------------------

QUERY = "quixotic marmalade zeppelin"
DOC_TEXTS = [f"quixotic passage {i} about platypus-{i}-zanzibar marmalade" for i in range(12)]


def capture(result, *, include_text: bool, path: Path, query: str = QUERY) -> str:
    record = decision_from_result(
        result,
        query=query,
        latency_budget_ms=1000.0,
        max_cost_usd=None,
        domain="web",
        top_k=5,
        include_text=include_text,
        timestamp=time.time(),
    )
    with DecisionLog(JsonlSink(path)) as log:
        log.record(record)
    return path.read_text(encoding="utf-8")


def test_no_document_or_query_text_is_logged_unless_opted_in(tmp_path, make_router):
    router = make_router({"fake": FakeBackend("fake", spec={"quality": {"web": 0.8}})})
    docs = [{"id": f"id-{i}", "text": t} for i, t in enumerate(DOC_TEXTS)]
    result = router.rerank(QUERY, docs, top_n=3, latency_budget_ms=1000)

    default = capture(result, include_text=False, path=tmp_path / "default.jsonl")
    assert "zanzibar" not in default and "platypus" not in default and "marmalade" not in default
    [record] = read_jsonl(tmp_path / "default.jsonl")
    assert isinstance(record, DecisionRecord)
    assert record.query is None and record.top_texts is None and record.query_digest == key_digest(QUERY)
    assert record.top_ids == tuple(item.id for item in result.items[:5]) and record.n_documents == 12
    assert record.backends == ("fake",) and record.stages[0].backend == "fake" and record.policy == result.explanation.policy

    opted_in = capture(result, include_text=True, path=tmp_path / "text.jsonl")
    [record] = read_jsonl(tmp_path / "text.jsonl")
    assert isinstance(record, DecisionRecord)
    assert QUERY in opted_in and record.query == QUERY
    assert record.top_texts == tuple(item.text for item in result.items[:5]) and "zanzibar" in opted_in


def test_decision_from_result_maps_every_field(make_router):
    router = make_router({"fake": FakeBackend("fake")})
    result = router.rerank(QUERY, DOC_TEXTS, top_n=2)
    record = decision_from_result(
        result,
        query=QUERY,
        latency_budget_ms=None,
        max_cost_usd=0.5,
        domain="legal",
        top_k=3,
        include_text=False,
        timestamp=99.0,
        experiment="exp",
        arm="b",
        shadow=True,
        assignment_key=key_digest("user-42"),
        tenant="acme",
        query_salt="pepper",
    )
    assert (record.request_id, record.timestamp, record.top_n) == (result.request_id, 99.0, 2)
    assert (record.chosen, record.reason, record.fallbacks) == (
        result.explanation.chosen,
        result.explanation.reason,
        result.explanation.fallbacks,
    )
    assert len(record.top_ids) == 3 and record.latency_ms == result.latency_ms
    assert (record.max_cost_usd, record.latency_budget_ms, record.domain) == (0.5, None, "legal")
    assert (record.experiment, record.arm, record.shadow, record.tenant) == ("exp", "b", True, "acme")
    assert record.assignment_key == key_digest("user-42") and "user-42" not in json.dumps(record.to_dict())
    assert record.query_digest == key_digest(QUERY, "pepper") != key_digest(QUERY)
    assert [s.latency_ms for s in record.stages] == [s.latency_ms for s in result.stages]


SECRET = "sk-test-SECRET123"


def test_no_api_key_reaches_the_log_even_on_errors_and_with_text(tmp_path, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", SECRET)
    path = tmp_path / "decisions.jsonl"
    with LoopbackRerankServer(api_key=SECRET) as server:
        router = Router(
            {"backends": {"cohere": {"type": "cohere", "model": "rerank-v3.5", "base_url": server.base_url("cohere")}}}
        )
        log = DecisionLog(JsonlSink(path))
        try:
            server.script([Fault.server_error(503)] * 3 + [Fault.error(401), None])  # 3 failed attempts, a 401, then success
            for _ in range(3):
                result = router.rerank(QUERY, DOC_TEXTS, latency_budget_ms=5000)
                for include_text in (False, True):
                    log.record(
                        decision_from_result(
                            result,
                            query=QUERY,
                            latency_budget_ms=5000,
                            max_cost_usd=None,
                            domain="web",
                            top_k=10,
                            include_text=include_text,
                            timestamp=time.time(),
                        )
                    )
                log.record_feedback(result.request_id, clicked=[result.items[0].id])
        finally:
            assert log.close(timeout_s=WAIT_S)
            router.close()
        assert server.requests and all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)

    text = path.read_text(encoding="utf-8")
    assert SECRET not in text and "SECRET123" not in text
    decisions = [r for r in read_jsonl(path) if isinstance(r, DecisionRecord)]
    errors = [s.error for r in decisions for s in r.stages if not s.ok]
    assert any("503" in (e or "") for e in errors) and any("401" in (e or "") for e in errors)  # the error path was logged
    assert decisions[-1].stages[-1].ok and decisions[-1].actual_cost_usd is not None


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_file_sinks_need_a_path(sink):
    with pytest.raises(ValidationError, match=f"path is required for sink '{sink}'"):
        DecisionLogConfig(sink=sink)
    with pytest.raises(ConfigError, match=r"decision_log: .*path is required"):
        load_config({"decision_log": {"sink": sink}})


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="include_txt"):
        DecisionLogConfig.model_validate({"path": "x.jsonl", "include_txt": True})
    with pytest.raises(ValidationError, match="top_k"):
        DecisionLogConfig(path="x.jsonl", top_k=0)
    with pytest.raises(ValidationError, match="queue_size"):
        DecisionLogConfig(path="x.jsonl", queue_size=0)
    with pytest.raises(ValidationError, match="sink"):
        DecisionLogConfig.model_validate({"sink": "kafka"})
    defaults = DecisionLogConfig(path="x.jsonl")
    assert (defaults.sink, defaults.include_text, defaults.top_k, defaults.queue_size) == ("jsonl", False, 10, 10_000)


def test_build_decision_log(tmp_path):
    assert build_decision_log(DecisionLogConfig(sink="none")) is None
    for sink, cls in (("jsonl", JsonlSink), ("sqlite", SqliteSink)):
        log = build_decision_log(DecisionLogConfig(sink=sink, path=str(tmp_path / "sub" / f"d.{sink}"), queue_size=7))
        assert log is not None and isinstance(log.sink, cls)
        log.record(make_decision("r1"))
        assert log.close(timeout_s=WAIT_S) and log.written == 1
    pytest.importorskip("opentelemetry")
    log = build_decision_log(DecisionLogConfig(sink="otel"))
    assert log is not None and isinstance(log.sink, OtelSink)
    log.close()


def test_public_surface_is_pinned():
    assert set(router.decisions.__all__) == {
        "SCHEMA_VERSION",
        "SINKS",
        "DecisionLog",
        "DecisionLogConfig",
        "DecisionRecord",
        "DecisionSink",
        "FeedbackRecord",
        "InvalidFeedbackError",
        "JsonlSink",
        "LogRecord",
        "OtelSink",
        "SqliteSink",
        "StageRecord",
        "build_decision_log",
        "build_sink",
        "decision_from_result",
        "feedback_record",
        "key_digest",
    }
    assert all(hasattr(router.decisions, name) for name in router.decisions.__all__)
