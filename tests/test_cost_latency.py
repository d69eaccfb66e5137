"""Pure unit tests of the estimators: cost per pricing scheme, the latency model, token counting."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from router import BackendSpec, LatencyParams, Usage
from router.cost import billed_cost_usd, predict_cost_usd, predict_usage
from router.features import TokenStats
from router.latency import fit_latency_params, item_tokens, predict_latency_ms
from router.testing import FakeBackend
from router.tokens import DEFAULT_CHARS_PER_TOKEN, EstimatedTokenCounter, TokenCounters


def spec(**fields) -> BackendSpec:
    return BackendSpec.model_validate({"model": "m", **fields})


SEARCH_UNITS = {"scheme": "per_search_unit", "usd": 0.002, "docs_per_unit": 100}

# -- cost: per_search_unit ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_docs", "units"), [(1, 1), (99, 1), (100, 1), (101, 2), (200, 2), (201, 3), (1000, 10)])
def test_search_units_per_100_documents(n_docs, units):
    s = spec(pricing=SEARCH_UNITS)
    usage = predict_usage(s, 10, [50] * n_docs)
    assert usage.search_units == units
    assert usage.requests == 1
    assert predict_cost_usd(s, 10, [50] * n_docs, 0) == pytest.approx(units * 0.002)


def test_long_documents_count_as_several_chunks():
    s = spec(pricing={**SEARCH_UNITS, "chunk_tokens": 500})
    # query + document = 1,210 tokens = 3 chunks of 500
    assert predict_usage(s, 10, [1200] * 10).search_units == 1  # 30 chunks
    assert predict_usage(s, 10, [1200] * 34).search_units == 2  # 102 chunks
    assert predict_usage(s, 10, [490] * 100).search_units == 1  # exactly one chunk each
    assert predict_usage(s, 10, [491] * 100).search_units == 2  # just over: two chunks each
    assert predict_usage(s, 10, [0] * 100).search_units == 1  # an empty document is still one


def test_context_cap_limits_chunks():
    # The provider truncates to its context first, so a document cannot cost more chunks than that.
    s = spec(pricing={**SEARCH_UNITS, "chunk_tokens": 500}, max_tokens_per_doc=990)
    assert predict_usage(s, 10, [100_000] * 50).search_units == 1  # 2 chunks each, 100 chunks


def test_split_requests_are_billed_per_call():
    s = spec(pricing=SEARCH_UNITS, max_documents=100, split_requests=True)
    usage = predict_usage(s, 10, [50] * 150)
    assert usage.requests == 2
    assert usage.search_units == 2  # 100 + 50: each call rounds up on its own
    assert predict_usage(s, 10, [50] * 250).search_units == 3
    assert predict_usage(s, 10, [50] * 100).requests == 1


def test_billed_search_units():
    s = spec(pricing=SEARCH_UNITS)
    assert billed_cost_usd(s, Usage(search_units=3), 123) == pytest.approx(0.006)
    assert billed_cost_usd(s, Usage(), 123) is None  # units not reported: unknown


# -- cost: per_token, per_gpu_hour, per_call, free, unknown -------------------------------------------


def test_per_token_is_query_times_docs_plus_doc_tokens():
    s = spec(pricing={"scheme": "per_token", "usd": 1e-6})
    usage = predict_usage(s, 5, [10, 20, 30])
    assert usage.tokens == 5 * 3 + 60
    assert predict_cost_usd(s, 5, [10, 20, 30], 0) == pytest.approx(75e-6)
    assert billed_cost_usd(s, Usage(tokens=1_000), 0) == pytest.approx(1e-3)
    assert billed_cost_usd(s, Usage(), 0) is None


def test_per_gpu_hour_is_time_held():
    s = spec(pricing={"scheme": "per_gpu_hour", "usd": 2.0})
    assert predict_cost_usd(s, 5, [10] * 10, 1_800) == pytest.approx(2.0 * 1_800 / 3_600_000)
    assert billed_cost_usd(s, Usage(), 36_000) == pytest.approx(0.02)
    assert billed_cost_usd(s, Usage(), 0) == 0


def test_per_call():
    s = spec(pricing={"scheme": "per_call", "usd": 0.01})
    assert predict_cost_usd(s, 5, [10] * 500, 99) == pytest.approx(0.01)
    assert billed_cost_usd(s, Usage(requests=3), 99) == pytest.approx(0.03)


def test_free():
    s = spec(pricing={"scheme": "free", "usd": None})
    assert predict_cost_usd(s, 5, [10] * 10, 1_000) == 0.0
    assert billed_cost_usd(s, Usage(), 1_000) == 0.0
    assert spec().pricing.scheme == "free"


@pytest.mark.parametrize("scheme", ["per_search_unit", "per_token", "per_gpu_hour", "per_call"])
def test_unknown_price_is_none(scheme):
    s = spec(pricing={"scheme": scheme, "usd": None})
    assert predict_cost_usd(s, 5, [10] * 10, 100) is None
    assert billed_cost_usd(s, Usage(search_units=1, tokens=100), 100) is None


def test_usage_adds_up():
    total = Usage(search_units=1, tokens=None) + Usage(search_units=2, tokens=10)
    assert total == Usage(search_units=3, tokens=10, requests=2)
    assert (Usage() + Usage()).search_units is None


# -- latency ----------------------------------------------------------------------------------------


def test_predict_latency_formula():
    params = LatencyParams(overhead_ms=10, per_doc_ms=2, per_token_ms=0.5, per_token_sq_ms=0.01)
    # 10 + 2*2 + 0.5*(10+20) + 0.01*(100+400)
    assert predict_latency_ms(params, [10, 20]) == pytest.approx(34.0)
    assert predict_latency_ms(params, []) == 10
    assert predict_latency_ms(LatencyParams(), [1000] * 1000) == 0


def test_latency_is_linear_in_candidates_and_quadratic_in_length():
    params = LatencyParams(per_token_sq_ms=1e-3)
    base = predict_latency_ms(params, [100] * 10)
    assert predict_latency_ms(params, [100] * 20) == pytest.approx(2 * base)
    assert predict_latency_ms(params, [200] * 10) == pytest.approx(4 * base)


def test_item_tokens():
    stats = TokenStats(family="f", exact=False, query=7, docs=(10, 1_000))
    pair = spec(max_tokens_per_doc=512)
    assert item_tokens(pair, stats) == [7 + 10 + 3, 512]
    assert item_tokens(pair, stats, truncate=False) == [20, 1_010]
    assert item_tokens(pair, stats, [5]) == [15]
    single = spec(input="single")
    assert item_tokens(single, stats) == [12, 1_002]


def synthetic(params: LatencyParams) -> list[tuple[Sequence[int], float]]:
    grid = itertools.product([1, 10, 50, 100, 300], [16, 64, 128, 256, 512])
    return [([t] * n, predict_latency_ms(params, [t] * n)) for n, t in grid]


def test_fit_recovers_known_coefficients():
    pytest.importorskip("scipy")
    truth = LatencyParams(overhead_ms=150.0, per_doc_ms=0.3, per_token_ms=0.16, per_token_sq_ms=7e-5)
    fitted = fit_latency_params(synthetic(truth), source="synthetic")
    assert fitted.source == "synthetic"
    for field in ("overhead_ms", "per_doc_ms", "per_token_ms", "per_token_sq_ms"):
        assert getattr(fitted, field) == pytest.approx(getattr(truth, field), rel=1e-4, abs=1e-9), field


def test_fit_never_returns_negative_coefficients():
    pytest.importorskip("scipy")
    # A pure per-token process with jitter: the fit must stay a valid LatencyParams (all >= 0).
    truth = LatencyParams(per_token_ms=0.2)
    samples = [(tokens, ms * (1.05 if i % 2 else 0.95)) for i, (tokens, ms) in enumerate(synthetic(truth))]
    fitted = fit_latency_params(samples)
    assert min(fitted.overhead_ms, fitted.per_doc_ms, fitted.per_token_ms, fitted.per_token_sq_ms) >= 0
    assert fitted.per_token_ms == pytest.approx(0.2, rel=0.1)


# -- tokens -------------------------------------------------------------------------------------------


def test_estimated_counter():
    counter = EstimatedTokenCounter("bert-wordpiece", 4.49)
    assert counter.count(["x" * 449, "", "a", "x" * 45]) == [100, 0, 1, 10]
    assert counter.exact is False


def test_counters_default_estimates():
    counters = TokenCounters()
    assert counters.get("bert-wordpiece").chars_per_token == DEFAULT_CHARS_PER_TOKEN["bert-wordpiece"] == 4.49
    assert counters.get("some-bpe").chars_per_token == 4.0
    assert counters.get("some-bpe").family == "some-bpe"
    assert TokenCounters({"some-bpe": 3.0}).get("some-bpe").count(["x" * 30]) == [10]


class WordCounter:
    """An exact counter for a made-up family: one token per whitespace-separated word."""

    exact = True

    def __init__(self, family: str = "words") -> None:
        self.family = family

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


def test_counters_prefer_a_registered_exact_counter():
    counters = TokenCounters()
    exact = WordCounter("bert-wordpiece")
    counters.register(exact)
    assert counters.get("bert-wordpiece") is exact
    counters.register(WordCounter("bert-wordpiece"))  # the first one registered stays
    assert counters.get("bert-wordpiece") is exact
    assert counters.get("other").exact is False


def test_tokenizers_counter_counts_without_truncation():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from router.tokens import TokenizersCounter

    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3}
    model_tokenizer = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    model_tokenizer.pre_tokenizer = Whitespace()
    model_tokenizer.enable_truncation(max_length=2)
    counter = TokenizersCounter("toy", model_tokenizer)
    assert counter.exact is True
    assert counter.count(["the cat sat on the mat", ""]) == [6, 0]
    assert model_tokenizer.truncation is not None  # the model's own tokenizer is untouched
    assert len(model_tokenizer.encode("the cat sat").ids) == 2


class ExactFake(FakeBackend):
    def token_counter(self) -> WordCounter:
        return WordCounter(self.spec.tokenizer_family)


def test_router_uses_a_backends_exact_counter(make_router):
    fields = {"tokenizer_family": "words", "latency": {"per_token_ms": 1.0}, "input": "single"}
    exact = ExactFake("exact", spec=fields)
    plan = make_router({"exact": exact}).plan("q", ["one two three", "four five"])
    # single input: (3 + 2) + (2 + 2) tokens with special tokens, at 1 ms each
    assert plan.primary.estimate.latency_ms == pytest.approx(9.0)
    assert not any("token counts estimated" in n for n in plan.primary.notes)

    estimated = make_router({"est": FakeBackend("est", spec=fields)}).plan("q", ["one two three", "four five"])
    assert any("token counts estimated (words not loaded)" in n for n in estimated.primary.notes)
