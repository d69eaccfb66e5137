"""Loaders on the real shared data, and ir-measures numbers that agree with its README.

Skipped cleanly where ../shared/data is absent. Nothing here copies the data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.offline.evaluation import EvalHarness, load_cranfield, load_dataset, load_trec_dl, read_trec_run
from router.offline.evaluation.metrics import MeasureSet, aggregate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DL19, DL21, CRAN = DATA / "trec-dl19", DATA / "trec-dl21", DATA / "cranfield"

pytest.importorskip("ir_measures")
needs_dl19 = pytest.mark.skipif(not (DL19 / "bm25-top100.json").is_file(), reason="../shared/data/trec-dl19 absent")
needs_dl21 = pytest.mark.skipif(not (DL21 / "bm25-top100.json").is_file(), reason="../shared/data/trec-dl21 absent")
needs_cran = pytest.mark.skipif(not (CRAN / "cran.all.1400").is_file(), reason="../shared/data/cranfield absent")


@pytest.fixture(scope="module")
def dl19():
    return load_trec_dl(DL19)


def _by_rank(run_file: Path, dataset):
    ranks = read_trec_run(run_file)
    return {q.qid: sorted((c.docid for c in q.candidates), key=lambda d: ranks[q.qid].get(d, 10**9)) for q in dataset.queries}


@needs_dl19
def test_dl19_loads_queries_candidates_judgments_and_runs(dl19):
    assert len(dl19) == 43
    assert dl19.domain == "web"
    assert all(len(q.candidates) == 100 for q in dl19.queries)
    assert set(dl19.runs) == {"rankgpt-gpt-3.5-turbo", "rankvicuna-7b"}
    grades = {g for judged in dl19.qrels.values() for g in judged.values()}
    assert grades == {0, 1, 2, 3}
    first = dl19.queries[0]
    assert first.qid == "264014" and first.text == "how long is life cycle of flea"
    top = first.candidates[0]
    assert isinstance(top.score, float)  # the hit's BM25 score, handed to the router as the document's `score`
    assert first.documents()[0] == {"text": top.text, "id": top.docid, "score": top.score}
    assert load_dataset(DL19).qids == dl19.qids


@needs_dl19
@pytest.mark.parametrize(
    ("run", "expected"),
    [(None, 0.5058), ("rankgpt-gpt-3.5-turbo", 0.680), ("rankvicuna-7b", 0.667)],
)
def test_dl19_ndcg_agrees_with_the_readme(dl19, run, expected):
    bm25 = {q.qid: [c.docid for c in q.candidates] for q in dl19.queries}
    rankings = bm25 if run is None else _by_rank(dl19.runs[run], dl19)
    assert aggregate(dl19.qrels, rankings)["nDCG@10"] == pytest.approx(expected, abs=0.001)


@needs_dl19
def test_replayed_tiers_through_the_router_reproduce_the_recorded_runs(dl19):
    """The same numbers through a real Router: replay backends over all 100 candidates."""
    spec = {"license": "Apache-2.0", "pricing": {"scheme": "per_call", "usd": 0.01}, "latency": {"per_doc_ms": 10}}
    config = {
        "backends": {
            "rankgpt": {"type": "replay", "run": str(dl19.runs["rankgpt-gpt-3.5-turbo"]), "spec": spec},
            "rankvicuna": {"type": "replay", "run": str(dl19.runs["rankvicuna-7b"]), "spec": spec},
        }
    }
    with EvalHarness(dl19, config) as harness:
        runs = {r.label: r for r in harness.tiers()}
    assert runs["retriever-order"].ndcg == pytest.approx(0.5058, abs=0.001)
    assert runs["rankgpt"].ndcg == pytest.approx(0.680, abs=0.001)
    assert runs["rankvicuna"].ndcg == pytest.approx(0.667, abs=0.001)
    gpt = runs["rankgpt"]
    assert gpt.cost_mean == pytest.approx(0.01)
    assert gpt.latency_p50 == pytest.approx(1000, rel=0.05)  # 100 candidates x 10 ms, on the simulated clock
    assert gpt.tier_mix == {"rankgpt": 43} and gpt.degraded == 0
    assert set(gpt.metrics) == {"nDCG@10", "RR(rel=2)@10", "R(rel=2)@20"}


@needs_dl21
def test_dl21_bm25(tmp_path):
    dl21 = load_trec_dl(DL21)
    assert len(dl21) == 53 and dl21.runs == {}
    rankings = {q.qid: [c.docid for c in q.candidates] for q in dl21.queries}
    assert aggregate(dl21.qrels, rankings)["nDCG@10"] == pytest.approx(0.4458, abs=0.001)


@needs_cran
def test_cranfield_gotchas_and_bm25():
    pytest.importorskip("bm25s")
    cran = load_cranfield(CRAN)
    assert len(cran) == 225 and cran.domain == "scientific"
    # cranqrel numbers queries by position in cran.qry (whose .I ids skip numbers): query 3 is ".I 004".
    assert cran.queries[2].qid == "3" and cran.queries[2].text.startswith("what problems of heat conduction in composite slabs")
    # codes 1..4 and -1 become gains 4..1 and 0: query 1 judges doc 184 with code 2, doc 12 with code 3.
    assert cran.qrels["1"]["184"] == 3 and cran.qrels["1"]["12"] == 2
    assert 0 in {g for judged in cran.qrels.values() for g in judged.values()}
    assert all(len(q.candidates) == 100 for q in cran.queries)
    rankings = {q.qid: [c.docid for c in q.candidates] for q in cran.queries}
    assert aggregate(cran.qrels, rankings)["nDCG@10"] == pytest.approx(0.352, abs=0.001)
    assert MeasureSet().labels["RR(rel=2)@10"] == "MRR@10"
