"""Batch reranking: Router.rerank_many and `rerank-router batch` (router.batch)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from integrations_support import API_KEY, api_config, make_requests, read_jsonl, write_jsonl

from router.batch import BatchOutcome, BatchRequest, ResultsFile, read_requests, result_record
from router.cli import main
from router.errors import InvalidRequestError
from router.testing import FakeBackend, Fault, LoopbackRerankServer

ROOT = Path(__file__).resolve().parents[1]


def _permutation(record, request):
    assert sorted(record["result"]["indices"]) == list(range(len(request["documents"])))


def test_rerank_many_keeps_input_order_and_answers_each_item(make_router):
    api = FakeBackend("api", spec={"quality": {"web": 0.9}, "data_leaves_premises": True, "license": "proprietary"})
    local = FakeBackend("local", spec={"quality": {"web": 0.5}})
    router = make_router({"api": api, "local": local})
    requests = [
        {"id": "a", "query": "green tea", "documents": ["green tea", "black tea", "coffee"]},
        {"id": "b", "query": "", "documents": ["x"]},  # empty query: that item's error
        {"id": "c", "query": "tea", "documents": ["tea"], "constraints": {"on_premise": True}, "top_n": 1},
        {"id": "d", "query": "tea", "documents": [{"text": "t", "id": "1"}, {"text": "u", "id": "1"}]},  # duplicate ids
        {"id": "e", "query": "tea"},  # no documents: not a request
        BatchRequest("f", "black tea", ["green tea", "black tea"], context={"request_id": "mine"}),
    ]
    seen = []
    outcomes = router.rerank_many(requests, concurrency=3, on_outcome=seen.append)
    assert [o.id for o in outcomes] == ["a", "b", "c", "d", "e", "f"]
    assert sorted(o.id for o in seen) == sorted(o.id for o in outcomes)
    a, b, c, d, e, f = outcomes
    assert a.ok and a.result.backends == ("api",) and a.result.indices == (0, 1, 2) and a.result.request_id == "a"
    assert (b.ok, b.error_type) == (False, "EmptyQueryError")
    assert c.result.backends == ("local",) and c.result.top_n == 1  # the request's own constraints and top_n
    assert d.error_type == "DuplicateIdError" and e.error_type == "InvalidRequestError"
    assert f.result.request_id == "mine" and f.result.indices == (1, 0)
    assert a.record()["result"] == result_record(a.result) and b.record()["error"]["type"] == "EmptyQueryError"
    # batch defaults apply where a request gives none; the request's own win
    on_prem = router.rerank_many(requests[:1], constraints={"on_premise": True}, top_n=2)
    assert on_prem[0].result.backends == ("local",) and on_prem[0].result.top_n == 2


async def test_concurrency_is_bounded(make_router):
    in_flight = peak = 0

    class Counting(FakeBackend):
        async def rerank(self, query, documents):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await asyncio.sleep(0.005)
                return await super().rerank(query, documents)
            finally:
                in_flight -= 1

    router = make_router({"fake": Counting("fake", spec={"quality": {"web": 0.8}})})
    requests = [{"id": str(i), "query": "tea", "documents": ["tea", "cup"]} for i in range(40)]
    outcomes = await router.arerank_many(requests, concurrency=4)
    assert all(o.ok for o in outcomes) and [o.id for o in outcomes] == [str(i) for i in range(40)]
    assert peak == 4
    with pytest.raises(InvalidRequestError, match="concurrency"):
        await router.arerank_many(requests, concurrency=0)


def test_api_rate_limit_holds_across_the_batch(monkeypatch):
    from router import Router

    monkeypatch.setenv("CO_API_KEY", API_KEY)
    with LoopbackRerankServer(api_key=API_KEY) as server:
        config = api_config(server, resilience={"backends": {"cohere": {"limits": {"rpm": 6}}}})
        router = Router(config)
        try:
            docs = ["green tea", "black tea", "milk"]
            assert router.rerank("green tea", docs).backends == ("cohere",)  # loads the SDK: 1 of the 6
            requests = [{"id": str(i), "query": "green tea", "documents": docs} for i in range(12)]
            outcomes = router.rerank_many(requests, concurrency=8, latency_budget_ms=1500)
        finally:
            router.close()
    # Without the limiter all 12 would reach the API; with it, the minute's budget of 6 at most
    # (a call can still be cut by the deadline), and the others are served on-premise or degraded.
    assert 2 <= len(server.requests) <= 6
    assert all(o.ok and sorted(o.result.indices) == [0, 1, 2] for o in outcomes)
    assert sum(o.result.backends == ("cohere",) for o in outcomes) <= 5


def test_results_file_resumes_past_a_torn_line(tmp_path):
    out = tmp_path / "results.jsonl"
    partial = tmp_path / "results.jsonl.partial"
    partial.write_text('{"id":"a","ok":true}\n{"id":"b","ok":true}\n{"id":"c","o', encoding="utf-8")
    results = ResultsFile(out)
    assert results.open() == {"a", "b"}
    results.write({"id": "c", "ok": False})
    assert not out.exists()  # nothing at the output path until every request is answered
    assert results.commit(["c", "b", "a"]) == 3
    assert [r["id"] for r in read_jsonl(out)] == ["c", "b", "a"] and not partial.exists()
    # a complete output from an earlier run: its ids are skipped, its lines kept
    again = ResultsFile(out)
    assert again.open() == {"a", "b", "c"}
    again.write({"id": "d", "ok": True})
    again.commit(["a", "b", "c", "d"])
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b", "c", "d"]


def test_one_run_per_output_at_a_time(tmp_path):
    first = ResultsFile(tmp_path / "out.jsonl")
    first.open()
    with pytest.raises(InvalidRequestError, match="another batch run"):
        ResultsFile(tmp_path / "out.jsonl").open()
    first.close()
    second = ResultsFile(tmp_path / "out.jsonl")
    second.open()
    second.close()


def test_duplicate_request_ids_are_refused(tmp_path, capsys):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "query": "q", "documents": ["a"]}] * 2)
    with pytest.raises(InvalidRequestError, match="already on line 1"):
        read_requests(path)
    assert main(["--config", str(_bm25_config(tmp_path)), "batch", "--input", str(path), "--output", str(tmp_path / "o")]) == 2
    assert "already on line 1" in capsys.readouterr().err


def _bm25_config(tmp_path):
    path = tmp_path / "bm25.yaml"
    path.write_text(yaml.safe_dump({"backends": {"bm25": {"type": "lexical"}}}), encoding="utf-8")
    return path


def _fault_schedule(n):
    """Per server request: 429s (with Retry-After), 5xx, malformed bodies, dropped connections, slow answers."""
    schedule = []
    for i in range(n):
        if i % 11 == 3:
            schedule.append(Fault.rate_limited(retry_after=0.01))
        elif i % 13 == 5:
            schedule.append(Fault.server_error(503))
        elif i % 37 == 7:
            schedule.append(Fault.malformed_json())
        elif i % 53 == 11:
            schedule.append(Fault.bad_indices("duplicate"))
        elif i % 71 == 13:
            schedule.append(Fault.dropped_connection())
        elif i % 7 == 2:
            schedule.append(Fault.slow(0.004))
        else:
            schedule.append(None)
    return schedule


def _config_file(tmp_path, server):
    config = api_config(
        server,
        resilience={
            "default": {"retries": {"attempts": 3, "initial_s": 0.001, "max_s": 0.01, "jitter_s": 0.0}},
            "backends": {"cohere": {"limits": {"rpm": 1_000_000}}},
        },
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _input_file(tmp_path, requests):
    path = write_jsonl(tmp_path / "requests.jsonl", requests)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1000] = "{not json"  # one malformed line: answered as an error under its line id
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_two_thousand_requests_with_faults_kill_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    requests = make_requests(2000)
    expected_ids = [r["id"] for r in requests]
    expected_ids[1000] = "line-1001"
    inp, out = _input_file(tmp_path, requests), tmp_path / "results.jsonl"
    partial = tmp_path / "results.jsonl.partial"
    with LoopbackRerankServer(api_key=API_KEY) as server:
        server.script(_fault_schedule(6000))
        config = _config_file(tmp_path, server)
        args = ["--config", str(config), "batch", "--input", str(inp), "--output", str(out), "--no-progress"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", *args, "--concurrency", "4"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while not (partial.exists() and partial.read_bytes().count(b"\n") >= 300):
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the batch did not start"
                time.sleep(0.01)
            proc.kill()  # mid-run: SIGKILL, no clean-up
        finally:
            proc.wait(timeout=30)
        assert not out.exists()  # atomic: the output appears only when complete
        first = partial.read_bytes()
        kept = [json.loads(line) for line in first.split(b"\n")[:-1]]  # the complete lines
        assert 300 <= len(kept) < 2000
        capsys.readouterr()
        assert main([*args, "--concurrency", "32"]) == 0
        assert f"{len(kept)} already answered" in capsys.readouterr().err
    records = read_jsonl(out)
    assert [r["id"] for r in records] == expected_ids  # every request once, in input order
    assert not partial.exists()
    by_id = {r["id"]: r for r in records}
    for record in kept:  # what the killed run wrote is kept as written, not redone
        assert by_id[record["id"]] == record
    served = {"cohere": 0, "bm25": 0}
    for request, record in zip(requests, records, strict=True):
        if record["id"] == "line-1001":
            assert record == {"id": "line-1001", "ok": False, "error": record["error"]}
            assert record["error"]["type"] == "InvalidRequestError"
        elif request["query"] == "":
            assert not record["ok"] and record["error"]["type"] == "EmptyQueryError"
        else:
            assert record["ok"], record
            _permutation(record, request)
            assert record["result"]["request_id"] == request["id"]
            for backend in record["result"]["backends"]:
                served[backend] += 1
    assert served["cohere"] > 1500 and served["bm25"] > 0  # faults that outlast the retries fell back


def test_batch_command_defaults_and_a_rerun_of_a_complete_output(tmp_path, capsys):
    requests = make_requests(30, invalid_every=0)
    inp = write_jsonl(tmp_path / "in.jsonl", requests)
    out = tmp_path / "out.jsonl"
    args = ["--config", str(_bm25_config(tmp_path)), "batch", "--input", str(inp), "--output", str(out), "--top-n", "2"]
    assert main([*args, "--no-progress"]) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [r["id"] for r in requests]
    assert {r["result"]["top_n"] for r in records} == {3}  # the requests give top_n 3; the default is for others
    assert main([*args]) == 0  # already complete: nothing redone, output unchanged
    assert "30 already answered, 0 ok" in capsys.readouterr().err
    assert read_jsonl(out) == records


def test_batch_outcome_record_shapes():
    outcome = BatchOutcome("x", error_type="EmptyQueryError", error_message="query is empty")
    assert not outcome.ok and outcome.record() == {
        "id": "x",
        "ok": False,
        "error": {"type": "EmptyQueryError", "message": "query is empty"},
    }
    with pytest.raises(InvalidRequestError, match="unknown request field"):
        BatchRequest.from_json({"query": "q", "documents": [], "budget": 1}, default_id="1")
