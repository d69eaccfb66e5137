"""Step 1: bad input fails with the specific typed error and a message saying what to fix."""

from __future__ import annotations

import math
from typing import Any

import pytest

from router import (
    Constraints,
    Document,
    DuplicateIdError,
    EmptyQueryError,
    InvalidBudgetError,
    InvalidConstraintsError,
    InvalidDocumentsError,
    InvalidRequestError,
    InvalidTopNError,
    QueryTooLongError,
    TooManyDocumentsError,
)
from router.testing import FakeBackend

DOCS = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog"]
API_SPEC = {
    "license": "proprietary",
    "data_leaves_premises": True,
    "provider": "cohere",
    "pricing": {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 100},
    "quality": {"web": 0.99},
}


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend("fake", spec={"quality": {"web": 0.7}})


@pytest.fixture
def router(make_router, fake):
    return make_router({"fake": fake})


# -- query -------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\n\t "])
def test_empty_query(router, query):
    with pytest.raises(EmptyQueryError, match="query is empty"):
        router.rerank(query, DOCS)


@pytest.mark.parametrize("query", [None, 42, b"bytes", ["a list"]])
def test_non_str_query(router, query):
    with pytest.raises(InvalidRequestError, match=r"query must be a str, got " + type(query).__name__):
        router.rerank(query, DOCS)


def test_query_too_long_names_the_limit(make_router, fake):
    router = make_router({"fake": fake}, limits={"max_query_chars": 10})
    with pytest.raises(QueryTooLongError, match=r"limits\.max_query_chars=10"):
        router.rerank("a" * 11, DOCS)


# -- documents -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "fragment"),
    [
        ([], "documents is empty"),
        ((), "documents is empty"),
        ("just one string", "must be a list"),
        (b"bytes", "must be a list"),
        ({"text": "a mapping, not a list"}, "must be a list"),
        (None, "must be a list"),
        (42, "must be a list"),
    ],
)
def test_documents_must_be_a_non_empty_list(router, documents, fragment):
    with pytest.raises(InvalidDocumentsError, match=fragment):
        router.rerank("cat", documents)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (7, r"documents\[1\] is int; each document must be a str, a mapping with a 'text' key"),
        (None, r"documents\[1\] is NoneType"),
        ({"body": "no text key"}, r"documents\[1\] is a mapping without a 'text' key \(keys: \['body'\]\)"),
        ({"text": 3}, r"documents\[1\] text is int; document text must be a str"),
        ({"text": None}, r"documents\[1\] text is NoneType"),
        ({"text": "ok", "metadata": "nope"}, r"documents\[1\]\['metadata'\] must be a mapping"),
        ({"text": "ok", "id": 1.5}, r"documents\[1\]\['id'\] is float"),
    ],
)
def test_non_text_items_name_their_position(router, fake, bad, fragment):
    with pytest.raises(InvalidDocumentsError, match=fragment):
        router.rerank("cat", ["fine", bad, "fine too"])
    assert fake.calls == []


def test_duplicate_explicit_ids(router):
    docs = [{"text": "a", "id": "x"}, {"text": "b", "id": "y"}, {"text": "c", "id": "x"}]
    with pytest.raises(DuplicateIdError, match=r"documents\[2\] and documents\[0\] share the id 'x'; ids must be unique"):
        router.rerank("cat", docs)


def test_duplicate_explicit_id_against_a_positional_one(router):
    # The second document has no id, so its id is its position "1": the same as the first's.
    docs = [{"text": "a", "id": "1"}, "b"]
    with pytest.raises(DuplicateIdError, match=r"share the id '1'.*omit ids to use positions"):
        router.rerank("cat", docs)


def test_int_and_str_ids_collide(router):
    with pytest.raises(DuplicateIdError):
        router.rerank("cat", [{"text": "a", "id": 5}, {"text": "b", "id": "5"}])


def test_empty_text_is_kept_not_dropped(router):
    result = router.rerank("cat", ["cat", "", "dog"])
    assert sorted(result.indices) == [0, 1, 2]


def test_too_many_documents(router, fake):
    with pytest.raises(TooManyDocumentsError, match=r"10000 documents is over limits\.max_documents=1000"):
        router.rerank("cat", ["doc"] * 10_000)
    assert fake.calls == []


def test_max_documents_is_configurable(make_router, fake):
    router = make_router({"fake": fake}, limits={"max_documents": 2})
    with pytest.raises(TooManyDocumentsError, match=r"limits\.max_documents=2"):
        router.rerank("cat", DOCS)


def test_a_megabyte_document_is_clipped_for_scoring_but_returned_whole(router, fake):
    big = "cat " * 262_144  # 1 MiB
    result = router.rerank("cat", ["dog", big, "bird"])
    limit = router.config.limits.max_document_chars
    assert len(fake.calls) == 1
    sent = fake.calls[0][1]
    assert max(len(t) for t in sent) <= limit
    assert sent[1] == big[:limit]
    assert result.by_id("1").text == big
    assert result.items[0].index == 1  # the only document that mentions a cat
    assert any("1 document(s) clipped to" in n and str(limit) in n for n in result.explanation.notes)
    assert "clipped" in str(result.explanation)


def test_clipping_limit_is_configurable(make_router, fake):
    router = make_router({"fake": fake}, limits={"max_document_chars": 10})
    result = router.rerank("cat", ["cat " * 10, "short"])
    assert [len(t) for t in fake.calls[0][1]] == [10, 5]
    assert result.by_id("0").text == "cat " * 10


def test_records_round_trip_to_ranked_items(router):
    docs = [
        {"text": "dogs bark", "id": "d-1", "metadata": {"source": "wiki", "rank": 1}},
        {"text": "the cat sat", "id": 77},
        Document(text="a cat and a dog", id="doc-3", metadata={"lang": "en"}),
        "a plain string",
    ]
    result = router.rerank("cat", docs)
    by_index = {item.index: item for item in result.items}
    assert by_index[0].id == "d-1"
    assert dict(by_index[0].metadata) == {"source": "wiki", "rank": 1}
    assert by_index[0].text == "dogs bark"
    assert by_index[1].id == "77"  # int ids become strings
    assert dict(by_index[1].metadata) == {}
    assert by_index[2].id == "doc-3"
    assert dict(by_index[2].metadata) == {"lang": "en"}
    assert by_index[3].id == "3"  # no id: its position
    assert result.by_id("77").index == 1


def test_metadata_is_not_shared_with_the_caller(router):
    meta = {"k": "v"}
    result = router.rerank("cat", [{"text": "cat", "metadata": meta}])
    meta["k"] = "changed"
    assert result.items[0].metadata["k"] == "v"


# -- top_n ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top_n", "fragment"),
    [
        (0, "top_n must be >= 1, got 0"),
        (-1, "top_n must be >= 1, got -1"),
        (True, "got bool"),
        (2.0, "got float"),
        ("2", "got str"),
    ],
)
def test_bad_top_n(router, top_n, fragment):
    with pytest.raises(InvalidTopNError, match=fragment):
        router.rerank("cat", DOCS, top_n=top_n)


def test_top_n_over_n_is_clamped_with_a_note(router):
    result = router.rerank("cat", DOCS, top_n=10)
    assert result.top_n == 3
    assert len(result.top()) == 3
    assert "top_n=10 clamped to the 3 documents given" in result.explanation.notes
    assert len(result.items) == 3


def test_top_n_limits_top_not_items(router):
    result = router.rerank("cat", DOCS, top_n=1)
    assert len(result.top()) == 1
    assert len(result.items) == 3


# -- budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (math.nan, "must be finite"),
        (math.inf, "must be finite"),
        (-math.inf, "must be finite"),
        (-1, "must be > 0, got -1"),
        (0, "must be > 0, got 0"),
        (0.0, "must be > 0"),
        (600_001, "over the sanity limit 600000; check the unit"),
        (True, "must be a number, got bool"),
        ("100", "must be a number, got str"),
    ],
)
def test_bad_latency_budget(router, fake, value, fragment):
    with pytest.raises(InvalidBudgetError, match="latency_budget_ms.*" + fragment):
        router.rerank("cat", DOCS, latency_budget_ms=value)
    assert fake.calls == []


def test_latency_budget_at_the_sanity_limit_is_accepted(router):
    assert router.rerank("cat", DOCS, latency_budget_ms=600_000).degraded is False


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (math.nan, "must be finite"),
        (math.inf, "must be finite"),
        (-0.01, "must be >= 0"),
        (100.01, "over the sanity limit 100; check the unit"),
        (False, "must be a number, got bool"),
    ],
)
def test_bad_cost_ceiling(router, value, fragment):
    with pytest.raises(InvalidBudgetError, match="max_cost_usd.*" + fragment):
        router.rerank("cat", DOCS, max_cost_usd=value)


@pytest.mark.parametrize("value", [0, 0.0, 100])
def test_cost_ceiling_bounds_are_accepted(router, value):
    assert len(router.rerank("cat", DOCS, max_cost_usd=value).items) == 3


def test_budget_errors_are_value_errors(router):
    # Apps that catch ValueError for bad arguments keep working.
    with pytest.raises(ValueError):
        router.rerank("cat", DOCS, latency_budget_ms=-5)


# -- constraints and context -----------------------------------------------------------------------


def test_unknown_constraint_lists_the_fields(router):
    with pytest.raises(InvalidConstraintsError, match=r"on_prem.*fields: commercial_use, on_premise"):
        router.rerank("cat", DOCS, constraints={"on_prem": True})


def test_constraints_must_be_a_mapping(router):
    with pytest.raises(InvalidConstraintsError, match=r"must be a router\.Constraints or a mapping, got list"):
        router.rerank("cat", DOCS, constraints=[("on_premise", True)])


def test_context_must_be_a_mapping(router):
    with pytest.raises(InvalidRequestError, match="context must be a mapping, got str"):
        router.rerank("cat", DOCS, context="web")


def test_context_request_id_names_the_result(router):
    assert router.rerank("cat", DOCS, context={"request_id": "req-42"}).request_id == "req-42"


@pytest.mark.parametrize(
    "request_constraints",
    [{"on_premise": False}, Constraints(on_premise=False), {"on_premise": False, "commercial_use": False}],
)
def test_request_cannot_loosen_config_on_premise(make_router, request_constraints: Any):
    api = FakeBackend("api", spec=API_SPEC)
    local = FakeBackend("local", spec={"quality": {"web": 0.5}})
    router = make_router({"api": api, "local": local}, constraints={"on_premise": True})
    result = router.rerank("cat", DOCS, constraints=request_constraints, max_cost_usd=1.0)
    assert result.backends == ("local",)
    assert api.calls == []
    option = next(o for o in result.explanation.options if o.name == "api")
    assert any(r.startswith("on_premise:") for r in option.rejected)


def test_request_cannot_loosen_config_commercial_use(make_router):
    nc = FakeBackend("nc", spec={"license": "CC-BY-NC-4.0", "quality": {"web": 0.99}})
    local = FakeBackend("local", spec={"quality": {"web": 0.5}})
    router = make_router({"nc": nc, "local": local}, constraints={"commercial_use": True})
    result = router.rerank("cat", DOCS, constraints={"commercial_use": False})
    assert result.backends == ("local",)
    assert nc.calls == []


def test_request_can_tighten_config(make_router):
    api = FakeBackend("api", spec=API_SPEC)
    local = FakeBackend("local", spec={"quality": {"web": 0.5}})
    router = make_router({"api": api, "local": local})
    assert router.plan("cat", DOCS, max_cost_usd=1.0).primary.name == "api"
    assert router.plan("cat", DOCS, max_cost_usd=1.0, constraints={"on_premise": True}).primary.name == "local"
    blocked = router.plan("cat", DOCS, max_cost_usd=1.0, constraints={"blocked_backends": {"api"}})
    assert blocked.primary.name == "local"


def test_config_budgets_are_request_defaults(make_router):
    api = FakeBackend("api", spec=API_SPEC)
    local = FakeBackend("local", spec={"quality": {"web": 0.5}})
    router = make_router({"api": api, "local": local}, budgets={"max_cost_usd": 0.0})
    assert router.plan("cat", DOCS).primary.name == "local"
    assert router.plan("cat", DOCS, max_cost_usd=0.01).primary.name == "api"


def test_request_cannot_unblock_a_backend(make_router):
    blocked = FakeBackend("blocked", spec={"quality": {"web": 0.9}})
    other = FakeBackend("other", spec={"quality": {"web": 0.5}})
    router = make_router({"blocked": blocked, "other": other}, constraints={"blocked_backends": ["blocked"]})
    result = router.rerank("cat", DOCS, constraints={"blocked_backends": [], "allowed_backends": ["blocked", "other"]})
    assert result.backends == ("other",)
    assert blocked.calls == []


def test_allowed_backends_intersect(make_router):
    backends = {name: FakeBackend(name, spec={"quality": {"web": q}}) for name, q in (("a", 0.9), ("b", 0.8), ("c", 0.7))}
    router = make_router(backends, constraints={"allowed_backends": ["b", "c"]})
    assert router.plan("cat", DOCS).primary.name == "b"
    assert router.plan("cat", DOCS, constraints={"allowed_backends": ["a", "c"]}).primary.name == "c"
