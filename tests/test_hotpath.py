"""The hot path's shortcuts (issue 13) give exactly what the plain code gives."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
import pickle
import random
from collections.abc import Callable, Iterator
from types import MappingProxyType, SimpleNamespace

import pytest

from policies.context import PlanningContext
from router.backends.base import Scores
from router.catalog import LatencyParams
from router.documents import Document, PositionalDocuments, normalize_documents, normalize_for_scoring
from router.errors import MalformedResponseError
from router.executor import _validate
from router.features import _COUNT_TABLE_CHARS, TokenStats, _estimated_doc_stats
from router.latency import item_tokens, latency_from_sums, predict_latency_ms, stage_sums
from router.plan import Estimate, Option, Plan
from router.profile import ScoreCalibration
from router.result import Explanation, OptionReport, RankedItem, RerankResult, StageReport, new_rerank_result, new_stage_report
from router.scores import ScoreBook
from router.tokens import EstimatedTokenCounter


def _estimated_counts(counter: EstimatedTokenCounter, query: str, texts: list[str], *known: int | list[int]) -> list[int] | None:
    """The query's and the texts' counts as one list, as ``counter.count`` gives them (None: no table)."""
    found = _estimated_doc_stats(counter, query, texts, *known)  # type: ignore[arg-type]
    return None if found is None else [found[0], *found[1]]


def test_estimated_counts_match_the_counter() -> None:
    rng = random.Random(1)
    for _ in range(5_000):
        counter = EstimatedTokenCounter("f", rng.choice([4.52, 4.49, 4.0, 2.5, 2.0, 1.0]))
        query = "q" * rng.randint(0, 5)
        texts = ["x" * rng.randint(0, 30) for _ in range(rng.randint(0, 6))]
        got = _estimated_counts(counter, query, texts)
        if got is not None:
            assert got == counter.count([query, *texts])


def test_estimated_counts_from_known_lengths_match_the_counter() -> None:
    rng = random.Random(5)
    for _ in range(1_000):
        counter = EstimatedTokenCounter("f", rng.choice([4.52, 2.5, 1.0]))
        texts = ["x" * rng.randint(0, 40) for _ in range(rng.randint(1, 6))]
        lengths = list(map(len, texts))
        assert _estimated_counts(counter, "qq", texts, lengths, max(lengths)) == counter.count(["qq", *texts])


def test_estimated_stats_carry_the_sums_a_full_pass_gives() -> None:
    rng = random.Random(7)
    for ratio in (4.49, 4.52, 3.0):
        counter = EstimatedTokenCounter("f", ratio)
        for _ in range(50):
            texts = ["w" * rng.randrange(0, 3000) for _ in range(rng.randrange(0, 40))]
            found = _estimated_doc_stats(counter, "a query", texts)
            assert found is not None
            query_count, docs, sq_sum, top = found
            fast = TokenStats._of("f", False, query_count, docs, sq_sum, top)
            plain = TokenStats("f", False, *counter.count(["a query", *texts])[:1], tuple(counter.count(texts)))
            assert fast == plain and pickle.loads(pickle.dumps(fast)) == plain
            assert (fast.doc_sum, fast.doc_sq_sum, fast.doc_max) == (plain.doc_sum, plain.doc_sq_sum, plain.doc_max)


def test_count_tables_grow_and_stop_at_their_bound() -> None:
    counter = EstimatedTokenCounter("f", 3.7)
    for n in (5, 1500, 9000):  # the table grows past its first size
        texts = ["y" * k for k in range(n - 3, n + 1)]
        assert _estimated_counts(counter, "q", texts) == counter.count(["q", *texts])
    assert _estimated_counts(counter, "q", ["z" * (_COUNT_TABLE_CHARS + 1)]) is None


def test_stage_sums_match_item_tokens() -> None:
    rng = random.Random(2)
    params = LatencyParams(overhead_ms=1.3, per_doc_ms=0.01, per_token_ms=3e-4, per_token_sq_ms=1.1e-7)
    for _ in range(2_000):
        stats = TokenStats("f", False, rng.randint(0, 50), tuple(rng.randint(0, 600) for _ in range(rng.randint(0, 50))))
        spec = SimpleNamespace(input=rng.choice(["pair", "single"]), max_tokens_per_doc=rng.choice([None, 300, 512]))
        sums = stage_sums(spec, stats, len(stats.docs))  # type: ignore[arg-type]
        if sums is not None:
            tokens = item_tokens(spec, stats)  # type: ignore[arg-type]
            assert sums == (len(tokens), sum(tokens), sum(t * t for t in tokens))
            assert latency_from_sums(params, *sums) == predict_latency_ms(params, tokens)
    assert stage_sums(SimpleNamespace(input="pair", max_tokens_per_doc=10), TokenStats("f", False, 5, (9,)), 1) is None  # type: ignore[arg-type]


def test_token_stats_pickle_and_compare_as_before() -> None:
    stats = TokenStats("f", True, 3, (1, 2))
    assert pickle.loads(pickle.dumps(stats)) == stats == TokenStats("f", True, 3, (1, 2))
    assert (stats.total, stats.max, stats.doc_sq_sum) == (3, 2, 5)


def test_ranked_items_built_fast_equal_the_constructor() -> None:
    docs = normalize_documents(["a", {"text": "b", "id": 7, "metadata": {"k": 1}}])
    items = RankedItem._many(docs, [1, 0], {1: 0.5}.get, {1: 0.7}.get, {1: "m"}.get)
    assert items == (RankedItem(1, "7", 0.5, "b", {"k": 1}, 0.7, "m"), RankedItem(0, "0", None, "a"))
    assert RankedItem._many(docs, [1], {1: 0.5}.get) == (RankedItem(1, "7", 0.5, "b", {"k": 1}),)
    same = {1: 0.5}.get  # scores as the backend gave them: one lookup serves score and raw_score
    assert RankedItem._many(docs, [1], same, same) == (RankedItem(1, "7", 0.5, "b", {"k": 1}, 0.5),)
    assert pickle.loads(pickle.dumps(items)) == items
    assert [i.to_dict() for i in items] == [
        {"index": 1, "id": "7", "score": 0.5, "text": "b", "metadata": {"k": 1}, "raw_score": 0.7, "scored_by": "m"},
        {"index": 0, "id": "0", "score": None, "text": "a", "metadata": {}, "raw_score": None, "scored_by": None},
    ]
    with pytest.raises(AttributeError):
        items[0].score = 1.0  # type: ignore[misc]


def test_shell_built_documents_and_items_are_the_public_types() -> None:
    """Documents and RankedItems filled through their shells (``__class__`` assignment) are
    indistinguishable from constructed ones: type, equality, pickle, deepcopy, asdict, frozen."""
    built = normalize_documents(["a", "b"]) + normalize_documents(["x", {"text": "5"}])[1:]  # plain-string and mixed paths
    assert [type(d) for d in built] == [Document] * 3
    assert built == (Document("a", "0"), Document("b", "1"), Document("5", "1"))
    items = RankedItem._many(built, [1, 0], {1: 0.5, 0: 0.25}.get, {1: 0.5, 0: 0.25}.get, {1: "m", 0: "m"}.get)
    made = (RankedItem(1, "1", 0.5, "b", {}, 0.5, "m"), RankedItem(0, "0", 0.25, "a", {}, 0.25, "m"))
    for value, expected in [
        *zip(built, (Document("a", "0"), Document("b", "1"), Document("5", "1")), strict=True),
        *zip(items, made, strict=True),
    ]:
        assert type(value) is type(expected) and value == expected
        assert pickle.loads(pickle.dumps(value)) == expected and copy.deepcopy(value) == expected
        assert dataclasses.asdict(value) == dataclasses.asdict(expected) and repr(value) == repr(expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("n", [1, 3, 1030])  # past the made-once ids too
def test_plain_strings_stand_for_the_documents_they_would_be(n: int) -> None:
    """A request of plain strings keeps them as PositionalDocuments: a Sequence that reads, compares,
    pickles and copies as the tuple of Documents the general path builds."""
    texts = [f"text {i}" for i in range(n)]
    general = normalize_for_scoring([*texts[:-1], {"text": texts[-1]}]).documents  # one mapping: the general path
    plain = normalize_for_scoring(texts).documents
    assert type(plain) is PositionalDocuments and type(general) is tuple
    expected = tuple(Document(t, str(i)) for i, t in enumerate(texts))
    assert general == expected
    assert plain == expected and expected == plain and plain == PositionalDocuments(tuple(texts))
    assert (plain != expected) is False and plain != expected[:-1] and plain != PositionalDocuments(("other",))
    assert plain != list(expected)  # as a tuple is not equal to a list
    assert len(plain) == n and list(plain) == list(expected) and tuple(plain) == expected
    assert [plain[i] for i in (0, n - 1, -1, -n)] == [expected[i] for i in (0, n - 1, -1, -n)]
    assert plain[1:3] == expected[1:3] and plain[::-1] == expected[::-1]
    assert all(type(d) is Document for d in plain)
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            plain[bad]
    with pytest.raises(TypeError):
        plain["0"]  # type: ignore[call-overload]
    assert repr(plain) == repr(expected)
    for unhashable in (plain, expected):  # a Document's metadata is not hashable
        with pytest.raises(TypeError):
            hash(unhashable)
    assert pickle.loads(pickle.dumps(plain)) == expected and copy.deepcopy(plain) == expected
    assert normalize_documents(texts) == expected and type(normalize_documents(texts)) is tuple
    # The items read the texts and ids, not Documents: the same items as from the Documents.
    order = list(range(n))[::-1]
    scores = [1.0 - i / (2 * n) for i in range(n)]
    assert RankedItem._ranked(plain, order, scores, scores, "m") == RankedItem._ranked(expected, order, scores, scores, "m")
    score_of = dict(zip(order[:2], scores[:2], strict=True)).get
    assert RankedItem._many(plain, order, score_of) == RankedItem._many(expected, order, score_of)
    assert RankedItem._many(plain, order, score_of, score_of, {order[0]: "m"}.get) == RankedItem._many(
        expected, order, score_of, score_of, {order[0]: "m"}.get
    )


def test_a_request_of_plain_strings_compares_as_one_of_documents() -> None:
    from router.request import build_request

    plain = build_request("q", ["a", "b"], context={"request_id": "r"})
    documents = build_request("q", [Document("a", "0"), Document("b", "1")], context={"request_id": "r"})
    assert type(plain.documents) is PositionalDocuments and type(documents.documents) is tuple
    assert plain == documents and documents == plain
    assert plain.texts_for_scoring(1) == documents.texts_for_scoring(1) == ["a", "b"]


def test_result_constructors_build_the_public_types() -> None:
    """``new_stage_report`` / ``new_rerank_result`` (slotted shells) give what the classes' own
    constructors give, defaults included, and the same frozen, picklable instances."""
    stage = {"backend": "c", "model": "m", "candidates_in": 3, "ok": True, "latency_ms": 1.5}
    stage |= {"predicted_latency_ms": 2.0, "cost_usd": 0.001, "predicted_cost_usd": None}
    fast, plain = new_stage_report(**stage), StageReport(**stage)
    explanation = Explanation("p", "c", "why", (), (OptionReport("c", 1.0, None, 0.5, (), ("n",)),), ())
    common = {"request_id": "r", "items": (), "top_n": 3, "stages": (plain,), "latency_ms": 1.0}
    common |= {"predicted_latency_ms": 2.0, "predicted_cost_usd": 0.1, "actual_cost_usd": None, "degraded": False}
    common |= {"degraded_reason": None, "explanation": explanation, "arm": "a"}
    pairs = [(fast, plain), (new_rerank_result(**common), RerankResult(**common))]
    for value, expected in pairs:
        assert type(value) is type(expected) and value == expected and repr(value) == repr(expected)
        assert pickle.loads(pickle.dumps(value)) == expected and copy.deepcopy(value) == expected
        assert dataclasses.asdict(value) == dataclasses.asdict(expected) and value.to_dict() == expected.to_dict()
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.latency_ms = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        new_stage_report(backend="c")  # a field without a default is required, as in the constructor


def test_one_pass_collects_clipped_texts() -> None:
    out = normalize_for_scoring(["abcdef", {"text": "ab"}], max_chars=4)
    assert out.texts == ("abcd", "ab") and out.chars == 6 and out.clipped == 1
    assert [d.text for d in out.documents] == ["abcdef", "ab"]
    assert out.lengths == (4, 2)


@pytest.mark.parametrize("docs", [["abcdef", "ab", ""], ["abcdef", {"text": "ab"}], ["x" * 9, "y"], ["abc", "abc"]])
@pytest.mark.parametrize("max_chars", [None, 4, 100])
def test_step_one_lengths_are_the_scoring_texts_lengths(docs: list[object], max_chars: int | None) -> None:
    from router.request import build_request

    out = normalize_for_scoring(docs, max_chars=max_chars)
    assert out.lengths == tuple(map(len, out.texts)) and out.chars == sum(out.lengths)
    request = build_request("q", docs)
    for limit in (request.scoring_max_chars, 3):  # its own, and one it did not clip for
        assert list(request.lengths_for_scoring(limit)) == [len(t) for t in request.texts_for_scoring(limit)]


def test_token_stats_filled_in_place_equal_the_constructor() -> None:
    made = TokenStats._of("f", False, 3, (1, 2, 4), 21, 4)
    built = TokenStats("f", False, 3, (1, 2, 4))
    assert type(made) is TokenStats and made == built and repr(made) == repr(built)
    assert (made.doc_sum, made.doc_sq_sum, made.doc_max) == (built.doc_sum, built.doc_sq_sum, built.doc_max)
    assert pickle.loads(pickle.dumps(made)) == built and copy.deepcopy(made) == built
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.query = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ((0.5, 1, True), None),
        ((math.inf, "x"), "non-numeric"),
        ((math.nan, 0.5), "non-finite"),
        ((1e308, 1e308), None),
        ((10**400, 0.5), OverflowError),
    ],
)
def test_validate_as_before(values: tuple[object, ...], error: object) -> None:
    scores = Scores(values=values)  # type: ignore[arg-type]
    if error is None:
        assert _validate(scores, len(values), "b") == values
    elif error is OverflowError:
        with pytest.raises(OverflowError):
            _validate(scores, len(values), "b")
    else:
        with pytest.raises(MalformedResponseError, match=str(error)):
            _validate(scores, len(values), "b")


def test_reverse_sort_keeps_ties_in_order() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        values = [rng.choice([0.0, -0.0, 0.5, 1, 1.0, 0.25]) for _ in range(rng.randint(1, 30))]
        n = len(values)
        assert sorted(range(n), key=lambda k: -values[k]) == sorted(range(n), key=values.__getitem__, reverse=True)


def test_scores_sorted_are_the_scores_at_the_ranking() -> None:
    """The executor's ranking through a list's __getitem__, and its scores in rank order by sorting
    the scores themselves: the same objects in the same order as read at each ranked index."""
    rng = random.Random(4)
    for _ in range(2_000):
        values = tuple(rng.choice([0.0, -0.0, 0.5, 1, 1.0, 0.25, True]) for _ in range(rng.randint(1, 30)))
        ranked = sorted(range(len(values)), key=values.__getitem__, reverse=True)
        assert sorted(range(len(values)), key=list(values).__getitem__, reverse=True) == ranked
        by_sort = sorted(values, reverse=True)
        assert [type(v) for v in by_sort] == [type(values[k]) for k in ranked]
        assert [repr(v) for v in by_sort] == [repr(values[k]) for k in ranked]


def test_cohere_fast_json_reads_answers_as_json_does() -> None:
    """orjson's decode (``_fast_json``) is taken only where it gives what ``json.loads`` gives."""
    pytest.importorskip("orjson")
    from router.backends.cohere import CohereBackend
    from tests.conftest import build_remote

    backend = build_remote(CohereBackend, "cohere", {"model": "rerank-v3.5", "base_url": "http://127.0.0.1:9"})
    rng = random.Random(4)
    tricky_numbers = ["1", "0.5", "1e-320", "0.1000000000000000055511151231257827", "18446744073709551616", "-0", "NaN", "1e400"]
    taken = 0
    for _ in range(3_000):
        n = rng.randint(0, 6)
        order = rng.sample(range(n), n)
        if n and rng.random() < 0.2:
            order[rng.randrange(n)] = rng.choice([0, n, -1, 2**64, True])
        scores = [repr(rng.random()) if rng.random() < 0.8 else rng.choice(tricky_numbers) for _ in range(n)]
        results = ",".join(f'{{"index": {str(i).lower()}, "relevance_score": {s}}}' for i, s in zip(order, scores, strict=True))
        units = rng.choice(["1", "2.0", "true", '"1"', "NaN", "18446744073709551617", "1e30", "null"])
        body = f'{{"id": "x", "results": [{results}], "meta": {{"billed_units": {{"search_units": {units}}}}}}}'.encode()
        if rng.random() < 0.05:
            body = b"\xef\xbb\xbf" + body  # a BOM: json reads it, orjson refuses
        fast = backend._fast_json(body, n)
        if fast is None:
            continue
        taken += 1
        expected = backend._parse_json(json.loads(body), n)
        assert fast == expected and [type(v) for v in fast.values] == [type(v) for v in expected.values]
        assert all(math.copysign(1, a) == math.copysign(1, b) for a, b in zip(fast.values, expected.values, strict=True))
    assert taken > 500


def test_request_ids_are_uuid4_hex() -> None:
    import uuid

    from router.request import _uuid4_hex

    ids = {_uuid4_hex() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == value and len(value) == 32


def test_a_sole_backend_assembles_and_names_items_as_the_maps_do() -> None:
    """One stage that scored every document (``Execution.sole``): ``assemble_ranked`` and
    ``_ranked`` over its scores in rank order give what ``assemble`` and ``_many`` give over the
    index -> score and index -> backend maps, calibrated (fitted for it, after another stage, or
    not for it) or not."""
    rng = random.Random(11)
    iso = ScoreCalibration(method="isotonic", x=(0.0, 0.5, 1.0), y=(0.0, 0.2, 0.9), n=10, source="test")
    platt = ScoreCalibration(method="platt", a=5.0, b=-4.0, n=10)
    books = [ScoreBook({}), ScoreBook({"c": {"*": iso}}), ScoreBook({"c": {"web": platt}}), ScoreBook({"d": {"*": iso}})]
    books.append(ScoreBook({"c after a": {"*": iso}}))
    for _ in range(400):
        n = rng.randint(1, 30)
        values = [rng.choice([0.0, 1.0, -0.5, 1.5, 0.25, rng.uniform(-1.0, 2.0), rng.random()]) for _ in range(n)]
        order = sorted(range(n), key=values.__getitem__, reverse=True)  # how the executor ranks a stage
        ranked = list(map(values.__getitem__, order))
        raw = dict(zip(range(n), values, strict=True))
        by = dict.fromkeys(range(n), "c")
        docs = normalize_documents([f"t{i}" for i in range(n)])
        for book in books:
            for after in (None, {"c": "a"}):
                plain = book.assemble(order, raw, by, "web", after)
                scores, calibrated, note = book.assemble_ranked(ranked, "c", "web", after)
                assert [plain.scores[i] for i in order] == scores
                assert (plain.calibrated, plain.note) == (calibrated, note)
                score_of = raw.get if plain.scores is raw else plain.scores.get
                items = RankedItem._many(docs, order, score_of, raw.get, by.get)
                assert RankedItem._ranked(docs, order, scores, ranked, "c") == items
                assert [type(i) for i in items] == [RankedItem] * n
    assert ScoreBook({}).assemble_ranked([], "c", "web") == ([], False, ScoreBook({}).assemble([], {}, {}, "web").note)


def test_planning_constructors_build_the_public_types() -> None:
    """The shells planning and step 1 build per request (``router.shells``) give what the classes'
    own constructors give: type, equality, hash, pickle, deepcopy, asdict, repr, frozenness, and
    defaults (a default factory included)."""
    from policies.context import NOTHING_CACHED, BackendView, PlanningContext, new_backend_view, new_planning_context
    from router.backends.base import AVAILABLE
    from router.catalog import load_catalog
    from router.constraints import Constraints
    from router.features import Features
    from router.plan import (
        Assessed,
        Estimate,
        Option,
        Plan,
        Rejection,
        Stage,
        new_assessed,
        new_estimate,
        new_option,
        new_plan,
        new_stage,
    )
    from router.request import RerankRequest, _new_request

    spec = next(iter(load_catalog().values()))
    estimate = Estimate(1.5, None, 0.4)
    option = Option((Stage("a", 3),), estimate, ("n",), (estimate,))
    plan = Plan("p", option, (), (Assessed(option, (Rejection("r", "why"),)),), "because")
    features = Features(3, 3, "web", MappingProxyType({}))
    common = {"features": features, "constraints": Constraints(), "latency_budget_ms": 9.0, "max_cost_usd": None}
    common |= {"backends": MappingProxyType({}), "estimate": len}
    request = {"query": "q", "documents": (), "top_n": 3, "latency_budget_ms": None, "max_cost_usd": 0.1}
    request |= {"constraints": Constraints(), "context": MappingProxyType({}), "request_id": "r"}
    pairs = [
        (new_stage("a", 3), Stage("a", 3)),
        (new_stage("a", 3, 0.1), Stage("a", 3, 0.1)),
        (new_estimate(1.5, None, 0.4), estimate),
        (new_option((new_stage("a", 3),), new_estimate(1.5, None, 0.4), ("n",), (estimate,)), option),
        (new_option((), estimate), Option((), estimate)),
        (new_assessed(option, ()), Assessed(option, ())),
        (new_plan("p", option, (), plan.assessed, "because"), plan),
        (new_backend_view("a", spec, AVAILABLE), BackendView("a", spec, AVAILABLE)),
        (new_planning_context(**common), PlanningContext(**common)),
        (new_planning_context(**common, cached=NOTHING_CACHED, budget=None), PlanningContext(**common)),
        (_new_request(**request), RerankRequest(**request)),
        (_new_request(**request, notes=("x",), cache=False), RerankRequest(**request, notes=("x",), cache=False)),
    ]
    for value, expected in pairs:
        assert type(value) is type(expected) and value == expected and repr(value) == repr(expected)
        if not isinstance(value, PlanningContext | RerankRequest):  # they hold mappingproxies, which do not copy
            assert dataclasses.asdict(value) == dataclasses.asdict(expected)
            assert pickle.loads(pickle.dumps(value)) == expected and copy.deepcopy(value) == expected
        if not isinstance(value, PlanningContext | RerankRequest | BackendView):
            assert hash(value) == hash(expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, "changed")
    assert new_planning_context(**common).cached is NOTHING_CACHED
    with pytest.raises(TypeError):
        new_option(())  # a field without a default is required, as in the constructor


def test_estimate_counters_are_kept_per_family() -> None:
    from router.tokens import TokenCounters

    counters = TokenCounters({"f": 3.0})
    assert counters.estimate("f") is counters.estimate("f") == EstimatedTokenCounter("f", 3.0)
    assert counters.get("g") == EstimatedTokenCounter("g", TokenCounters().estimate("g").chars_per_token)


def test_estimated_doc_stats_read_through_one_itemgetter_as_by_map() -> None:
    """The counts read by one ``itemgetter`` per request (two texts or more) equal the counter's."""
    import operator

    rng = random.Random(13)
    for ratio in (4.49, 4.52, 2.0):
        counter = EstimatedTokenCounter("f", ratio)
        for _ in range(200):
            texts = ["w" * rng.randrange(0, 4000) for _ in range(rng.randrange(2, 60))]
            lengths = list(map(len, texts))
            fast = _estimated_doc_stats(counter, "q?", texts, lengths, max(lengths), operator.itemgetter(*lengths))
            plain = _estimated_doc_stats(counter, "q?", texts)
            counts = counter.count(["q?", *texts])
            assert fast == plain == (counts[0], tuple(counts[1:]), sum(c * c for c in counts[1:]), max(counts[1:]))


def test_per_call_value_constructors_build_the_public_types() -> None:
    """Usage, Scores, BatchResult, ScoredOrder, Features and Normalized through their shells."""
    from router.backends.base import Usage, new_scores, new_usage
    from router.backends.remote import BatchResult, new_batch_result
    from router.documents import Normalized, _new_normalized
    from router.features import Features, _new_features
    from router.scores import ScoredOrder, _new_scored_order

    usage = Usage(search_units=1.0)
    pairs = [
        (new_usage(search_units=1.0), usage),
        (new_usage(), Usage()),
        (new_scores((0.5,), usage), Scores((0.5,), usage)),
        (new_scores((0.5,)), Scores((0.5,))),
        (new_batch_result((0.5,), usage), BatchResult((0.5,), usage)),
        (_new_scored_order({0: 0.5}, False, "n"), ScoredOrder({0: 0.5}, False, "n")),
        (_new_features(3, 2, "web", {}, ("n",)), Features(3, 2, "web", {}, ("n",))),
        (_new_normalized((Document("a", "0"),), ("a",), 1, 0), Normalized((Document("a", "0"),), ("a",), 1, 0)),
    ]
    for value, expected in pairs:
        assert type(value) is type(expected) and value == expected and repr(value) == repr(expected)
        assert pickle.loads(pickle.dumps(value)) == expected and copy.deepcopy(value) == expected
        assert dataclasses.asdict(value) == dataclasses.asdict(expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)
    assert new_usage(search_units=1.0) + usage == usage + usage


def test_is_blank_with_its_first_character_fast_path_as_the_full_check() -> None:
    import unicodedata

    from router.request import _BLANK_LETTERS, _INVISIBLE_CATEGORIES, is_blank

    def full(text: str) -> bool:
        return all(ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)

    chars = [chr(c) for c in range(0x3200)] + sorted(_BLANK_LETTERS) + ["\U0001d7ce", "\U00020000", "\u3164", "\uffa0"]
    for ch in chars:
        for text in (ch, ch + " ", ch + "a", ch * 3):
            assert is_blank(text) == full(text), repr(text)
    assert is_blank("") and not is_blank("q")


def test_bucket_take_is_acquire_where_acquire_would_not_wait() -> None:
    import asyncio

    from router.resilience.limits import _Bucket

    async def run() -> None:
        taken, acquired = _Bucket(10, 60), _Bucket(10, 60)
        for amount in (1, 2.5, 3, 0):
            assert taken.take(amount)
            await acquired.acquire(amount)
            assert taken._level == acquired._level and taken._waker_handle is None is acquired._waker_handle
        assert not taken.take(4)  # over what is left: acquire must wait, nothing is taken
        assert taken._level == acquired._level
        assert not taken.take(11)  # over the capacity: acquire raises
        with pytest.raises(ValueError):
            await taken.acquire(11)
        waiter = asyncio.ensure_future(taken.acquire(4))  # waits for capacity
        await asyncio.sleep(0)
        assert taken._waiters and not taken.take(0.1)  # someone waits: take leaves the order to acquire
        waiter.cancel()

    loop = asyncio.new_event_loop()
    loop.time = lambda: 100.0  # type: ignore[method-assign]  # no leak between the two: the levels compare exactly
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


def test_cohere_wire_headers_follow_the_environment_and_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.backends.cohere import CohereBackend
    from router.errors import AuthenticationError
    from tests.conftest import build_remote

    backend = build_remote(CohereBackend, "cohere", {"model": "rerank-v3.5", "base_url": "http://127.0.0.1:9"})
    env = backend.config.api_key_env
    assert env
    monkeypatch.setenv(env, " key-one ")
    first = backend._headers()
    assert dict(first) == {"Authorization": "Bearer key-one", "Content-Type": "application/json", "Accept": "application/json"}
    assert backend._headers() is first and "key-one" not in repr(first) and "key-one" not in repr(backend)
    monkeypatch.setenv(env, "key-two")  # rotated: the next call sends the new key
    assert backend._headers()["Authorization"] == "Bearer key-two"
    monkeypatch.setenv(env, "  ")
    with pytest.raises(AuthenticationError):
        backend._headers()
    monkeypatch.delenv(env)
    with pytest.raises(AuthenticationError):
        backend._headers()


# -- sixth round (branch hot6): planning's kept verdicts, the executor's cheaper machinery ----------


def _rule_contexts() -> list[PlanningContext]:
    from router.testing.planning import planning_context

    specs = {
        "api": {"provider": "cohere", "license": "proprietary", "data_leaves_premises": True, "quality": {"web": 0.7}},
        "nc": {"license": "CC-BY-NC-4.0", "quality": {"web": 0.8}},
        "local": {"license": "Apache-2.0", "quality": {"web": 0.5}, "max_documents": 5},
    }
    out = []
    for constraints in (None, {"on_premise": True}, {"commercial_use": False}, {"blocked_backends": {"local"}}):
        for unavailable in (None, {"api": "no key"}):
            out.append(
                planning_context(
                    specs,
                    n=8,
                    top_n=3,
                    constraints=constraints,
                    unavailable=unavailable,
                    max_cost_usd=0.001,
                    latency_budget_ms=50,
                )
            )
    return out


def test_kept_rule_verdicts_give_what_every_rule_gives() -> None:
    from policies.context import RuleVerdicts
    from policies.rules import CONSTRAINT_RULES, DEFAULT_RULES, check_all
    from router.plan import new_stage

    for plain in _rule_contexts():
        kept = dataclasses.replace(plain, verdicts=RuleVerdicts(plain.backends, plain.constraints))
        options = [plain.estimate((new_stage(name, 8),)) for name in plain.backends] + [plain.estimate(())]
        options += [plain.estimate((new_stage(a, 8), new_stage(b, 3))) for a in plain.backends for b in plain.backends if a != b]
        for _ in range(2):  # the first pass fills the verdicts, the second reads them
            for option in options:
                for rules in (DEFAULT_RULES, CONSTRAINT_RULES, DEFAULT_RULES[::-1]):
                    assert check_all(option, kept, rules) == check_all(option, plain, rules)
        assert kept.verdicts is not None and kept.verdicts.steps


def test_kept_rule_verdicts_are_not_used_by_another_context() -> None:
    from policies.context import RuleVerdicts
    from policies.rules import DEFAULT_RULES, check_all
    from router.plan import new_stage

    contexts = _rule_contexts()
    first = contexts[0]
    verdicts = RuleVerdicts(first.backends, first.constraints)
    for ctx in contexts:
        bound = dataclasses.replace(ctx, verdicts=verdicts)  # bound to the first context's views and constraints
        for name in ctx.backends:
            option = ctx.estimate((new_stage(name, 8),))
            assert check_all(option, bound, DEFAULT_RULES) == check_all(option, ctx, DEFAULT_RULES)


def test_kept_verdicts_read_the_day_for_a_backend_with_an_end_date(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from policies import rules
    from policies.context import RuleVerdicts
    from router.plan import new_stage
    from router.testing.planning import planning_context

    ctx = planning_context({"old": {"quality": {"web": 0.5}, "license": "MIT", "available_until": "2026-06-01"}})
    kept = dataclasses.replace(ctx, verdicts=RuleVerdicts(ctx.backends, ctx.constraints))
    option = ctx.estimate((new_stage("old", 10),))
    monkeypatch.setattr(rules, "today", lambda: dt.date(2026, 5, 31))
    assert rules.check_all(option, kept, rules.CONSTRAINT_RULES) == ()
    monkeypatch.setattr(rules, "today", lambda: dt.date(2026, 6, 1))
    assert [r.rule for r in rules.check_all(option, kept, rules.CONSTRAINT_RULES)] == ["available_until"]


async def test_router_keeps_views_and_verdicts_until_a_backend_changes() -> None:
    from policies.rules import DEFAULT_RULES, check_all
    from router import Router
    from router.backends.base import Availability
    from router.testing import FakeBackend

    async def no_wait(_: float) -> None:
        return None

    flaky = FakeBackend("flaky", fail=lambda call: RuntimeError("down") if call < 100 else None, spec={"quality": {"web": 0.9}})
    steady = FakeBackend("steady", spec={"quality": {"web": 0.5}})
    config = {"backends": {}, "resilience": {"default": {"breaker": {"failure_threshold": 2}, "retries": {"attempts": 1}}}}
    router = Router(config, backends={"flaky": flaky, "steady": steady}, sleep=no_wait)
    docs = ["a b", "b c", "c d"]

    def planned() -> tuple[PlanningContext, Plan]:
        request = router._request("b", docs)
        ctx = router._context(request, router._features(request))
        return ctx, router.policy.plan(ctx)

    def plain_plan(ctx: PlanningContext) -> Plan:
        return router.policy.plan(dataclasses.replace(ctx, verdicts=None))

    one, plan_one = planned()
    two, plan_two = planned()
    assert two.backends is one.backends and two.verdicts is one.verdicts  # nothing changed: kept
    assert plan_one == plan_two == plain_plan(two)
    await router.arerank("b", docs)
    await router.arerank("b", docs)  # two failures: flaky's breaker opens
    three, plan_three = planned()
    assert three.backends is not one.backends and three.verdicts is not one.verdicts
    assert not three.backends["flaky"].availability.ok and plan_three == plain_plan(three)
    assert plan_three.primary.name == "steady"
    for option in (a.option for a in plan_three.assessed):
        assert check_all(option, three, DEFAULT_RULES) == check_all(
            option, dataclasses.replace(three, verdicts=None), DEFAULT_RULES
        )
    steady._available = Availability(False, "gone")  # the backend's own availability changes: new views
    four, _ = planned()
    assert four.backends is not three.backends and not four.backends["steady"].availability.ok
    other = router._request("b", docs, constraints={"blocked_backends": ["steady"]})
    five = router._context(other, router._features(other))
    assert five.verdicts is not four.verdicts and five.constraints == other.constraints
    same = router._request("b", docs, constraints={"blocked_backends": ["steady"]})  # equal constraints, another object
    assert router._context(same, router._features(same)).verdicts is five.verdicts
    await router.aclose()


def test_single_stage_estimate_is_the_stage_loop_figures() -> None:
    from router.plan import new_stage
    from router.testing.planning import planning_context

    ctx = planning_context(
        {"a": {"quality": {"web": 0.6}, "pricing": {"scheme": "per_search_unit", "usd": 0.002}}, "b": {"quality": {}}}, n=30
    )
    for name in ("a", "b"):
        one = ctx.estimate((new_stage(name, 30),))
        two = ctx.estimate((new_stage(name, 30), new_stage(name, 30)))  # the loop: figures of each stage summed
        (figures,) = one.stage_estimates
        assert two.stage_estimates == (figures, figures)
        assert one.estimate.latency_ms == figures.latency_ms and one.estimate.cost_usd == figures.cost_usd
        assert one.estimate.quality == figures.quality == two.estimate.quality
        assert one.notes == two.notes[len(two.notes) // 2 :] or one.notes == two.notes  # a quality note is said once
    assert ctx.estimate(()) == Option((), Estimate(0.0, 0.0, None)) and ctx.estimate(()) is ctx.estimate(())


def test_search_unit_usage_of_one_call_is_what_the_batches_give() -> None:
    from router.backends.batching import split_request
    from router.catalog import BackendSpec, Pricing
    from router.cost import predict_usage

    rng = random.Random(13)
    for _ in range(500):
        per_unit = rng.choice([1, 7, 100])
        spec = BackendSpec(
            model="m",
            pricing=Pricing(scheme="per_search_unit", usd=0.002, docs_per_unit=per_unit, chunk_tokens=4096),
            max_documents=rng.choice([None, 1000, 20]),
        )
        docs = [rng.randint(1, 300) for _ in range(rng.randint(0, 150))]
        usage = predict_usage(spec, 9, docs)
        batches = split_request(spec, 9, docs)
        assert usage.search_units == sum(math.ceil(len(b) / per_unit) for b in batches)
        assert usage.requests == len(batches) and type(usage.search_units) is int


async def test_cutoff_bounds_a_block_as_asyncio_timeout_does() -> None:
    from router.resilience.cutoff import Cutoff

    async with Cutoff(None) as scope:  # no bound
        await asyncio.sleep(0)
    assert not scope.expired()
    async with Cutoff(5.0) as scope:
        await asyncio.sleep(0)
    assert not scope.expired()
    with pytest.raises(TimeoutError):
        async with Cutoff(0.001) as scope:
            await asyncio.sleep(1)
    assert scope.expired()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the bound's cancellation was taken back

    async def cancelled_from_outside() -> None:
        async with Cutoff(5.0):
            await asyncio.sleep(1)

    inner = asyncio.ensure_future(cancelled_from_outside())
    await asyncio.sleep(0)
    inner.cancel()
    with pytest.raises(asyncio.CancelledError):  # the caller's cancellation is not turned into TimeoutError
        await inner

    async def swallowed() -> str:
        async with Cutoff(0.001) as scope:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                return "kept" if scope is not None else ""
        return ""

    assert await swallowed() == "kept"
    loop = asyncio.get_running_loop()
    assert not [h for h in loop._scheduled if not h.cancelled() and h._callback is not None and "Cutoff" in repr(h)]  # type: ignore[attr-defined]


def test_bucket_take_is_has_capacity_then_the_level() -> None:
    from router.resilience.limits import _Bucket

    rng = random.Random(3)
    fast, plain = _Bucket(10, 1), _Bucket(10, 1)
    clock = [1_000.0]
    for bucket in (fast, plain):
        bucket._event_loop = SimpleNamespace(time=lambda: clock[0], is_closed=lambda: False)  # type: ignore[assignment]
    for _ in range(2_000):
        clock[0] += rng.choice([0.0, 0.01, 0.1, 0.37, 1.5])
        amount = rng.choice([0.5, 1, 3, 11])
        took = fast.take(amount)
        if 0 <= amount <= plain.max_rate and plain.has_capacity(amount):
            plain._level += amount
            assert took
        else:
            assert not took
        assert fast._level == plain._level and fast._last_check == plain._last_check


async def test_limits_are_kept_per_loop_with_the_last_one_at_hand() -> None:
    import threading

    from router.resilience.limits import BackendLimits, LimitPolicy

    limits = BackendLimits(LimitPolicy(rpm=60, max_concurrency=2))
    here = limits._here()
    assert limits._here() is here
    other: list[object] = []
    threading.Thread(target=lambda: other.append(asyncio.run(_here_of(limits)))).start()
    while not other:
        await asyncio.sleep(0.001)
    assert other[0] is not here and limits._here() is here  # back on this loop: its own limits again


async def _here_of(limits: object) -> object:
    return limits._here()  # type: ignore[attr-defined]


async def test_retry_resumed_after_a_first_attempt_decides_as_the_loop_does() -> None:
    from router.errors import BadRequestError, ServerError
    from router.resilience.retry import RetryPolicy, retrying

    async def no_wait(_: float) -> None:
        return None

    for errors in ([ServerError("500")], [ServerError("500"), ServerError("502")], [BadRequestError("400")]):
        outcomes = []
        for resumed in (False, True):
            script = iter([*errors, None, None, None])
            calls = 0
            retry = retrying(RetryPolicy(attempts=3), deadline=None, clock=lambda: 0.0, rng=random.Random(1), sleep=no_wait)

            def once(script: Iterator[Exception | None] = script) -> str:
                nonlocal calls
                calls += 1
                error = next(script)
                if error is not None:
                    raise error
                return "ok"

            try:
                if resumed:
                    try:
                        result = once()
                    except Exception as exc:
                        retry.resume(exc)
                        async for attempt in retry:
                            with attempt:
                                result = once()
                else:
                    async for attempt in retry:
                        with attempt:
                            result = once()
                outcomes.append((result, calls))
            except Exception as exc:
                outcomes.append((type(exc).__name__, calls))
        assert outcomes[0] == outcomes[1]


def test_reordered_keeps_everything_below_the_stage() -> None:
    from router.executor import _reordered

    rng = random.Random(4)
    for _ in range(500):
        n = rng.randint(1, 30)
        order = list(range(n))
        k = rng.randint(1, n)
        head = rng.sample(range(k), k)
        assert _reordered(head, [], 0, n) == head + order[k:]
        later = rng.sample(range(n), n)
        head2 = rng.sample(later[:k], k)
        assert _reordered(head2, later, 1, n) == head2 + later[k:]


def test_breaker_success_writes_only_what_changes_in_process_and_always_to_a_shared_store() -> None:
    from router.resilience.breaker import BreakerRecord, BreakerState, CircuitBreaker, InMemoryBreakerStore

    class Counting(InMemoryBreakerStore):  # another type: stands for a shared store
        saves = 0

        def save(self, name: str, record: BreakerRecord) -> None:
            Counting.saves += 1
            super().save(name, record)

    local = CircuitBreaker("b")
    assert local.try_acquire()
    local.on_failure()
    assert local._store.load("b").consecutive_failures == 1
    local.on_success()  # a success after a failure resets the count
    assert local._store.load("b") == BreakerRecord() and local.status() == (BreakerState.CLOSED, "")
    local.on_success()
    shared = CircuitBreaker("b", store=Counting())
    for _ in range(3):
        assert shared.try_acquire()
        shared.on_success()
    assert Counting.saves == 3


def test_cascade_grid_is_the_sorted_counts_between_top_n_and_n() -> None:
    from policies.cascade import _grid

    rng = random.Random(8)
    for _ in range(300):
        ks = tuple(rng.sample(range(1, 300), rng.randint(0, 8)))
        top_n, n = rng.randint(1, 200), rng.randint(1, 300)
        assert _grid(ks, top_n, n) == tuple(sorted({k for k in ks if top_n <= k < n}))


def test_admission_reads_the_cpu_clock_only_where_it_is_used_and_learns_the_same() -> None:
    from router.admission import Admission, AdmissionConfig, Shed

    class Eager(Admission):
        """The code before the lazy reads: the clock read on every admission and completion."""

        def admit(self, time_left_ms: float | None, queued: int = 0) -> Shed | None:
            config = self.config
            now, wall = self._cpu_clock(), self._wall_clock()
            self._close_shed(now)
            self._learn_step(now, wall)
            if config.enabled and time_left_ms is not None and self.in_flight >= config.min_in_flight:
                expected = (self.in_flight + 1) * self._cpu_ms * self._contention + queued * self._shed_ms
                if expected > time_left_ms:
                    self.shed_count += 1
                    self._shed_mark = self._step_mark = now
                    self._step_wall = wall
                    return Shed("shed")
            if self.in_flight == 0:
                self._busy_since = now
            self.in_flight += 1
            return None

        def done(self) -> None:
            now = self._cpu_clock()
            self._shed_mark = self._step_mark = None
            self.in_flight -= 1
            self._done += 1
            if self.in_flight == 0:
                self._busy_s += now - self._busy_since
            if self._done < self.config.learn_every:
                return
            busy = self._busy_s + (now - self._busy_since if self.in_flight > 0 else 0.0)
            measured = max(busy - self._shed_s, 0.0) * 1000 / self._done
            self._cpu_ms = 0.5 * self._cpu_ms + 0.5 * max(measured, 0.05)
            self._busy_s, self._shed_s, self._done = 0.0, 0.0, 0
            if self.in_flight > 0:
                self._busy_since = now

    rng = random.Random(21)
    sheds, learnt = 0, 0
    now = [0.0]
    reads = {"lazy": 0, "eager": 0}

    def cpu(which: str) -> Callable[[], float]:
        def read() -> float:
            reads[which] += 1
            return now[0]

        return read

    for _ in range(40):
        now[0] = 0.0
        reads.update(lazy=0, eager=0)

        config = AdmissionConfig(cpu_ms_per_request=rng.choice([0.5, 3.0]), min_in_flight=rng.randint(1, 4), learn_every=4)
        lazy = Admission(config, cpu_clock=cpu("lazy"), wall_clock=lambda: now[0] * 1.3)
        eager = Eager(config, cpu_clock=cpu("eager"), wall_clock=lambda: now[0] * 1.3)
        in_flight = 0
        for _ in range(300):
            now[0] += rng.choice([0.0, 0.0001, 0.001, 0.004])
            if in_flight and rng.random() < 0.45:
                lazy.done()
                eager.done()
                in_flight -= 1
                continue
            left = rng.choice([None, 1.0, 5.0, 50.0])
            queued = rng.randint(0, 3)
            may_shed = lazy.may_shed()
            shed = lazy.admit(left, queued)
            assert (shed is None) == (eager.admit(left, queued) is None)
            assert may_shed or shed is None  # where it may not shed, admit(None) decides the same (the router's call)
            if shed is None:
                in_flight += 1
            elif rng.random() < 0.7:
                lazy.shed_done()
                eager.shed_done()
            state = ("in_flight", "_cpu_ms", "_shed_ms", "_contention", "_busy_s", "_shed_s", "_done", "shed_count")
            assert [getattr(lazy, k) for k in state] == [getattr(eager, k) for k in state]
        assert reads["lazy"] < reads["eager"]
        sheds += lazy.shed_count
        learnt += lazy.cpu_ms_per_request != config.cpu_ms_per_request
    assert sheds > 100 and learnt > 20  # both paths ran


def test_best_plan_is_min_then_plan_by_as_before() -> None:
    from policies.base import by_cost, by_latency, by_quality, plan_by
    from policies.simple import _best_plan
    from router.plan import Assessed, Rejection, Stage

    rng = random.Random(17)
    for _ in range(400):
        assessed = []
        for i in range(rng.randint(0, 6)):
            stages = () if rng.random() < 0.2 else (Stage(f"b{i}", 10),)
            estimate = Estimate(rng.choice([1.0, 2.0, 5.0]), rng.choice([None, 0.0, 0.001]), rng.choice([None, 0.5, 0.7]))
            rejections = (Rejection("r", "no"),) if rng.random() < 0.3 else ()
            assessed.append(Assessed(Option(stages, estimate), rejections))
        assessed.append(Assessed(Option((), Estimate(0.0, 0.0, None)), ()))
        for key in (by_quality, by_cost, by_latency):
            feasible = [a.option for a in assessed if a.feasible and a.option.stages]
            if not feasible:
                before = plan_by("p", assessed, key, "no backend passes the constraints: keeping the retriever's order")
            else:
                best = min(feasible, key=key)
                before = plan_by("p", assessed, key, f"{best.name} has the goal of the {len(feasible)} feasible option(s)")
            after = _best_plan("p", assessed, key, "goal")
            assert after == before and after.primary is before.primary
            assert all(a is b for a, b in zip(after.fallbacks, before.fallbacks, strict=True))
