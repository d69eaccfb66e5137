"""Big, hostile and unlucky inputs (issue 12, findings 2, 9, 12, 13, 14): a typed error or a clear
one-line CLI message, cheaply, never a traceback or a megabyte message; results that pickle and
have a JSON form."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pytest

from router import (
    ConfigError,
    Document,
    DuplicateIdError,
    EmptyQueryError,
    InvalidBudgetError,
    InvalidDocumentsError,
    InvalidTopNError,
    RerankResult,
    Router,
    TooManyDocumentsError,
)
from router.cli import main
from router.config import load_config
from router.testing import FakeBackend
from router.validation import ECHO_CHARS, MAX_ERROR_LINES, echo

DOCS = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog"]


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend("fake", spec={"quality": {"web": 0.7}})


@pytest.fixture
def router(make_router, fake):
    return make_router({"fake": fake})


# -- finding 2: size and count first, cheaply ------------------------------------------------------


class Untouchable(Sequence[str]):
    """A sequence that claims ten million items and fails if any is read."""

    def __len__(self) -> int:
        return 10_000_000

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        raise AssertionError("an item was read before the count was checked")


def test_the_document_count_is_checked_before_any_item_is_read(router, fake):
    with pytest.raises(TooManyDocumentsError, match=r"10000000 documents is over limits\.max_documents=1000"):
        router.rerank("cat", Untouchable())
    assert fake.calls == []


def test_a_million_documents_are_refused_in_microseconds_not_seconds(router):
    docs = [{"text": "doc", "metadata": {"k": 1}}] * 1_000_000
    started = time.perf_counter()
    with pytest.raises(TooManyDocumentsError):
        router.rerank("cat", docs)
    assert time.perf_counter() - started < 0.5  # was ~3 s: every item was normalised first


def test_query_length_is_checked_before_its_characters_are_scanned(make_router, fake):
    router = make_router({"fake": fake}, limits={"max_query_chars": 10})
    with pytest.raises(Exception, match=r"limits\.max_query_chars=10"):
        router.rerank("\u200b" * 5_000_000, DOCS)


# -- finding 9: results pickle, deep-copy, asdict, and have a JSON form -------------------------------


@pytest.fixture
def result(make_router) -> RerankResult:
    backend = FakeBackend("fake", spec={"quality": {"web": 0.8}})
    docs = [
        {"text": "dogs bark", "id": "a", "metadata": {"n": np.int64(1), "tags": ("x", "y"), "inf": math.inf}},
        {"text": "the cat sat", "id": "b", "metadata": {"nested": {"deep": [1, 2]}, "when": Path("/tmp")}},
        Document(text="a cat and a dog", id="c", metadata={"lang": "en"}),
    ]
    return make_router({"fake": backend}).rerank("the cat", docs, top_n=2)


def test_results_pickle_and_deepcopy_to_equal_results(result):
    for copied in (pickle.loads(pickle.dumps(result)), copy.deepcopy(result), copy.copy(result)):
        assert copied == result
        assert copied.by_id("b").metadata["nested"] == {"deep": [1, 2]}
        with pytest.raises(TypeError):
            copied.by_id("b").metadata["n"] = 2  # type: ignore[index]


def test_asdict_works_on_results(result):
    data = dataclasses.asdict(result)
    assert [item["id"] for item in data["items"]] == ["b", "c", "a"]
    assert data["explanation"]["chosen"] == "fake"


def test_to_dict_is_json_with_the_documented_shape(result):
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)  # strict JSON: no NaN, no objects
    assert json.loads(text) == data
    assert set(data) == {
        "request_id",
        "items",
        "top_n",
        "stages",
        "latency_ms",
        "predicted_latency_ms",
        "predicted_cost_usd",
        "actual_cost_usd",
        "degraded",
        "degraded_reason",
        "explanation",
        "experiment",
        "arm",
        "cache_hits",  # the score cache (router.cache): 0, 0, 0.0 when it is off
        "cache_misses",
        "cache_saved_usd",
        "scores_calibrated",
    }
    assert data["request_id"] == result.request_id
    assert data["scores_calibrated"] is False
    assert [set(item) for item in data["items"]] == [{"index", "id", "score", "text", "metadata", "raw_score", "scored_by"}] * 3
    assert data["items"][0]["scored_by"] == "fake" and data["items"][0]["raw_score"] == data["items"][0]["score"]
    first = data["items"][0]
    assert (first["index"], first["id"], first["text"]) == (1, "b", "the cat sat")
    assert first["metadata"] == {"nested": {"deep": [1, 2]}, "when": "/tmp"}  # what JSON cannot hold: str()
    assert data["items"][2]["metadata"] == {"n": 1, "tags": ["x", "y"], "inf": None}
    assert data["stages"][0]["backend"] == "fake" and data["stages"][0]["ok"] is True
    assert data["explanation"]["options"][0]["name"] == "fake"
    assert data["degraded"] is False and data["degraded_reason"] is None
    assert [item["id"] for item in result.to_dict(top_only=True)["items"]] == ["b", "c"]
    assert result.items[0].to_dict() == first


def test_cli_rerank_json_prints_the_result(tmp_path, capsys):
    config = tmp_path / "bm25.yaml"
    config.write_text("backends: {bm25: {type: lexical}}\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"dogs bark"\n{"text": "the cat sat", "id": "c1", "metadata": {"src": "wiki"}}\n"a bird"\n')
    code = main(["--config", str(config), "rerank", "--query", "cat", "--docs", str(docs), "--top-n", "1", "--json", "--cold"])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(out.out)
    assert data["items"] == [
        {
            "index": 1,
            "id": "c1",
            "score": data["items"][0]["score"],
            "text": "the cat sat",
            "metadata": {"src": "wiki"},
            "raw_score": data["items"][0]["score"],
            "scored_by": "bm25",
        }
    ]
    assert data["top_n"] == 1 and data["stages"][0]["backend"] == "bm25"


# -- finding 12: CLI user errors exit 2 with one line -------------------------------------------------


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def bm25_config(tmp_path: Path) -> Path:
    path = tmp_path / "bm25.yaml"
    path.write_text("backends: {bm25: {type: lexical}}\n")
    return path


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        ("DIR", "is a directory"),
        (b'"ok"\n"caf\xe9"\n', r"docs\.jsonl:2: not UTF-8 text"),
        (b'"ok"\n{"text": "x"\n', r"docs\.jsonl:2: not JSON"),
        (b'"ok"\n5\n', r"docs\.jsonl:2: a JSON number; each line must be a JSON string or an object"),
        (b"[1, 2]\n", r"docs\.jsonl:1: a JSON array"),
    ],
)
@pytest.mark.parametrize("command", ["rerank", "plan"])
def test_bad_docs_files_exit_2_with_one_line(tmp_path, capsys, bm25_config, content, fragment, command):
    docs = tmp_path / "docs.jsonl"
    if content == "DIR":
        docs.mkdir()
    elif content is not None:
        docs.write_bytes(content)
    line = _cli_error(capsys, ["--config", str(bm25_config), command, "--query", "cat", "--docs", str(docs)])
    assert line.startswith(f"error: --docs {docs}")
    assert __import__("re").search(fragment, line), line


def test_a_binary_config_exits_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "binary.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    line = _cli_error(capsys, ["--config", str(config), "backends"])
    assert "is not UTF-8 text" in line


def test_yaml_syntax_errors_are_one_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("backends:\n  x: {type: lexical\n")
    line = _cli_error(capsys, ["--config", str(config), "backends"])
    assert "broken.yaml is not valid YAML: line " in line


def test_files_with_a_byte_order_mark_are_read(tmp_path, capsys):
    config = tmp_path / "bom.yaml"
    config.write_bytes(b"\xef\xbb\xbfbackends: {bm25: {type: lexical}}\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b'\xef\xbb\xbf"a cat"\n{"text": "a dog"}\n')
    code = main(["--config", str(config), "rerank", "--query", "cat", "--docs", str(docs), "--json", "--cold"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert [item["text"] for item in json.loads(out.out)["items"]] == ["a cat", "a dog"]


def test_non_commercial_flag_is_gone_and_says_why(capsys, bm25_config, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"a"\n')
    line = _cli_error(capsys, ["--config", str(bm25_config), "rerank", "--query", "q", "--docs", str(docs), "--non-commercial"])
    assert "--non-commercial was removed" in line and "commercial_use: false" in line


def test_cli_reads_no_more_documents_than_the_limit(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("backends: {bm25: {type: lexical}}\nlimits: {max_documents: 3}\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"a"\n' * 4 + "not json at all\n")  # the bad line is past the limit: never read
    line = _cli_error(capsys, ["--config", str(config), "rerank", "--query", "q", "--docs", str(docs)])
    assert "is over limits.max_documents=3" in line


# -- finding 13: config validation gaps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("backends: {}\ndomain: web\nbackends: {}\n", r"line 3, column 1: .*found the key 'backends' twice \(first on line 1\)"),
        ("backends:\n  a: {type: lexical}\n  a: {type: lexical}\n", r"found the key 'a' twice"),
        ("budgets: {latency_ms: 5, latency_ms: 6}\n", r"found the key 'latency_ms' twice"),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, text, fragment):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("budgets:\n  <<: {latency_ms: 100, max_cost_usd: 0.001}\n  latency_ms: 250\n")
    assert load_config(path).budgets.latency_ms == 250


def _spec_config(spec: dict[str, Any]) -> dict[str, Any]:
    return {"backends": {"bm25": {"type": "lexical", "spec": spec}}}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"quality": {"web": math.nan}}, r"spec\.quality\.web: Input should be"),
        ({"quality": {"web": 1.5}}, r"spec\.quality\.web: Input should be less than or equal to 1"),
        ({"quality": {"web": -0.1}}, r"spec\.quality\.web: Input should be greater than or equal to 0"),
        ({"pricing": {"scheme": "per_call", "usd": math.inf}}, r"spec\.pricing\.usd: Input should be a finite number"),
        ({"latency": {"overhead_ms": math.nan}}, r"spec\.latency\.overhead_ms"),
        ({"cold_start_ms": math.inf}, r"spec\.cold_start_ms: Input should be a finite number"),
        ({"max_documents": True}, r"spec\.max_documents: Input should be a number, not a boolean"),
    ],
)
def test_spec_numbers_must_be_finite_and_in_range(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Router(_spec_config(spec)).close()


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True])
def test_token_estimates_must_be_positive_finite_numbers(value):
    with pytest.raises(ConfigError, match=r"token_estimates\.gemma:"):
        load_config({"token_estimates": {"gemma": value}})


@pytest.mark.parametrize(
    ("budgets", "fragment"),
    [({"latency_ms": True}, "not a boolean"), ({"max_cost_usd": math.nan}, "finite"), ({"latency_ms": math.inf}, "finite")],
)
def test_budget_defaults_refuse_bools_and_non_finite_numbers(budgets, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config({"budgets": budgets})


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("gpu-box:8000", "no http:// or https:// scheme"),
        ("ftp://gpu-box", "no http:// or https:// scheme"),
        ("http://", "has no host"),
        ("http://gpu box:8000", "whitespace"),
        ("http://gpu-box:99999", "is not a URL"),
        ("", "no http:// or https:// scheme"),
    ],
)
def test_base_url_must_be_an_http_url(url, fragment):
    config = {"backends": {"tei": {"type": "http", "protocol": "tei", "model": "BAAI/bge-reranker-base", "base_url": url}}}
    with pytest.raises(ConfigError, match=r"backends: tei\.base_url: base_url must be an http:// or https:// URL.*" + fragment):
        load_config(config)


def test_base_url_errors_do_not_echo_userinfo():
    config = {"backends": {"tei": {"type": "http", "protocol": "tei", "model": "m", "base_url": "htp://user:hunter2@gpu-box"}}}
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "https://api.cohere.com", "http://[::1]:80/v1", "http://gpu-box"])
def test_good_base_urls_pass(url):
    load_config({"backends": {"tei": {"type": "http", "protocol": "tei", "model": "m", "base_url": url}}})


def test_decision_log_path_errors_are_config_errors(tmp_path):
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "not-sqlite").write_text("plain text, not an SQLite database " * 10)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ({"sink": "jsonl", "path": str(tmp_path / "a-dir")}, "is a directory"),
        ({"sink": "jsonl", "path": str(blocker / "under-a-file.jsonl")}, "cannot be written"),
        ({"sink": "sqlite", "path": str(tmp_path / "not-sqlite")}, "is not an SQLite database"),
        ({"sink": "jsonl", "path": "bad\0name.jsonl"}, "NUL"),
    ]
    for decision_log, fragment in cases:
        with pytest.raises(ConfigError, match=fragment):
            Router({"backends": {}, "decision_log": decision_log}).close()


def _bomb(levels: int) -> str:
    lines = ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_yaml_anchor_bomb_is_refused_quickly_in_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("backends:\n  b:\n    type:\n" + _bomb(9).replace("  ", "      "))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="anchor/alias bomb") as info:
        load_config(path)
    assert time.perf_counter() - started < 1.0
    assert len(str(info.value)) < 500


def test_error_messages_cap_what_they_echo():
    shared: list[Any] = ["lol"] * 9
    for _ in range(4):  # a mapping with shared references: 9**5 leaves, a 400 KB repr
        shared = [shared] * 9
    for config in (
        {"backends": {"b": {"type": shared}}},  # pydantic's own message quotes the input
        {"domain": shared},
        {"policy": {"name": "fixed", "params": {"backend": "x" * 100_000}}},
        {"limits": {"max_documents": "9" * 100_000}},
    ):
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert len(str(info.value)) < 2_000, str(info.value)[:300]


def test_many_errors_are_counted_not_listed():
    with pytest.raises(ConfigError) as info:
        Router(_spec_config({"quality": {f"domain{i}": 2.0 for i in range(5_000)}})).close()
    lines = str(info.value).splitlines()
    assert len(lines) == 1 + MAX_ERROR_LINES + 1
    assert lines[-1].strip() == f"... and {5_000 - MAX_ERROR_LINES:,} more errors"


def test_echo_is_bounded_and_masks_userinfo():
    assert len(echo("x" * 1_000_000)) < ECHO_CHARS + 40
    assert "1,000,000 characters" in echo("x" * 1_000_000)
    assert echo("redis://:s3cret@cache:6379/0") == "'redis://***@cache:6379/0'"
    assert "s3cret" not in echo(["redis://:s3cret" + "@" + "h" * 500])
    assert "s3cret" not in echo("redis://:s3cret" + "@" + "h" * 500)


# -- finding 14: one validation path for every way a document arrives ----------------------------------


@pytest.mark.parametrize("bad_id", [["x"], {"x": 1}, 1.5, True, None, b"x"])
def test_a_document_with_a_bad_id_is_a_typed_error_at_construction(bad_id):
    with pytest.raises(InvalidDocumentsError, match=r"Document\.id is \w+; ids must be str or int"):
        Document(text="a", id=bad_id)


@pytest.mark.parametrize("bad_id", [["x"], {"x": 1}, 1.5, True, b"x"])
def test_a_record_with_a_bad_id_is_the_same_error(router, fake, bad_id):
    with pytest.raises(InvalidDocumentsError, match=r"documents\[1\]\['id'\] is \w+; ids must be str or int"):
        router.rerank("cat", ["ok", {"text": "a", "id": bad_id}])
    assert fake.calls == []


@pytest.mark.parametrize("make", [lambda i: Document(text="a", id=i), lambda i: {"text": "a", "id": i}])
def test_int_ids_are_strings_whichever_way_they_arrive(router, make):
    assert Document(text="a", id=5).id == "5"  # type: ignore[arg-type]
    assert Document(text="a", id=np.int64(7)).id == "7"  # type: ignore[arg-type]
    result = router.rerank("cat", [make(5), "b"])
    assert result.items[0].id == "5" or result.items[1].id == "5"
    assert result.by_id("5").index == 0
    with pytest.raises(DuplicateIdError, match="share the id '5'"):
        router.rerank("cat", [make(5), make("5")])


@pytest.mark.parametrize("metadata", [[1, 2], 0, "meta", 3.5, ("k", "v")])
def test_metadata_must_be_a_mapping_whichever_way_it_arrives(router, metadata):
    with pytest.raises(InvalidDocumentsError, match=r"Document\.metadata must be a mapping, got \w+"):
        Document(text="a", id="x", metadata=metadata)
    with pytest.raises(InvalidDocumentsError, match=r"documents\[0\]\['metadata'\] must be a mapping, got \w+"):
        router.rerank("cat", [{"text": "a", "metadata": metadata}])


def test_none_metadata_means_none(router):
    assert dict(Document(text="a", id="x", metadata=None).metadata) == {}  # type: ignore[arg-type]
    assert dict(router.rerank("cat", [{"text": "a", "metadata": None}]).items[0].metadata) == {}


def test_document_text_must_be_a_str_at_construction():
    with pytest.raises(InvalidDocumentsError, match="Document text is int; document text must be a str"):
        Document(text=3, id="x")  # type: ignore[arg-type]


def test_a_document_is_frozen_and_pickles():
    doc = Document(text="a", id="x", metadata={"k": [1]})
    assert pickle.loads(pickle.dumps(doc)) == doc
    with pytest.raises(TypeError):
        doc.metadata["k"] = 2  # type: ignore[index]


@pytest.mark.parametrize("query", ["\x00", "\u200b", "\ufeff", "\u200b \ufeff\t\x00", "\u2028\u3000", "\u3164"])
def test_queries_of_invisible_characters_are_empty(router, fake, query):
    with pytest.raises(EmptyQueryError, match="query is empty"):
        router.rerank(query, DOCS)
    assert fake.calls == []


@pytest.mark.parametrize("query", ["\u200bcat", "\ufeffcat", "猫", "🐈"])
def test_queries_with_a_visible_character_pass(router, query):
    assert len(router.rerank(query, DOCS).items) == 3


def test_numpy_integers_are_accepted_like_ints(router):
    result = router.rerank("cat", DOCS, top_n=np.int64(2), latency_budget_ms=np.int32(5_000), max_cost_usd=np.float32(0.5))
    assert result.top_n == 2 and isinstance(result.top_n, int)


@pytest.mark.parametrize("value", [True, np.bool_(True)])
def test_bools_are_not_numbers(router, value):
    with pytest.raises(InvalidTopNError, match="got bool"):
        router.rerank("cat", DOCS, top_n=value)
    with pytest.raises(InvalidBudgetError, match="must be a number, got bool"):
        router.rerank("cat", DOCS, latency_budget_ms=value)
    with pytest.raises(InvalidBudgetError, match="must be a number, got bool"):
        router.rerank("cat", DOCS, max_cost_usd=value)


def test_long_ids_are_not_echoed_whole(router):
    long_id = "x" * 1_000_000
    with pytest.raises(DuplicateIdError) as info:
        router.rerank("cat", [{"text": "a", "id": long_id}, {"text": "b", "id": long_id}])
    assert len(str(info.value)) < 500
