"""`rerank-router eval` and `calibrate` end to end on a tiny labelled set written into tmp_path.

Backends: BM25 over the candidates (free, live) and a recorded "strong" model replayed from a TREC
run file (priced per call), so the whole path runs offline in seconds.
"""

from __future__ import annotations

import json

import pytest
import yaml

from policies import create_policy
from router.cli import main
from router.offline.evaluation import EvalHarness, cross_validate, cross_validate_constrained, evaluate_options, load_jsonl
from router.offline.fitting import option_grid
from router.profile import load_profile

pytest.importorskip("ir_measures")
pytest.importorskip("bm25s")

TOPICS = [
    "solar power",
    "river floods",
    "jazz music",
    "mountain goats",
    "tea leaves",
    "chess openings",
    "city bikes",
    "rain forests",
]


@pytest.fixture
def labelled(tmp_path):
    """8 queries x 6 candidates; two relevant ones sit at the bottom of the first-stage order."""
    rows, qrels, run = [], [], []
    for i, topic in enumerate(TOPICS):
        qid = f"q{i}"
        word = topic.split()[0]
        texts = [
            f"{word} unrelated filler {j} about other things" if j < 4 else f"all about {topic} and {topic} facts {j}"
            for j in range(6)
        ]
        if i % 2:  # on odd queries the relevant texts do not repeat the query words: BM25 cannot find them
            texts[4], texts[5] = f"passage {i} four", f"passage {i} five"
        candidates = [{"id": f"{qid}d{j}", "text": t} for j, t in enumerate(texts)]
        rows.append({"qid": qid, "query": topic, "candidates": candidates})
        qrels += [f"{qid} 0 {qid}d{j} {2 if j >= 4 else 0}" for j in range(6)]
        order = [5, 4, 0, 1, 2, 3]  # the recorded model puts the relevant ones first
        run += [f"{qid} Q0 {qid}d{j} {rank} {10 - rank} strong" for rank, j in enumerate(order, 1)]
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    (tmp_path / "strong.run").write_text("\n".join(run) + "\n")
    config = {
        "backends": {
            "bm25": {"type": "lexical"},
            "strong": {
                "type": "replay",
                "run": str(tmp_path / "strong.run"),
                "spec": {
                    "license": "Apache-2.0",
                    "pricing": {"scheme": "per_call", "usd": 0.01},
                    "latency": {"overhead_ms": 100, "per_doc_ms": 20},
                    "quality": {"web": 0.95},
                },
            },
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _args(d, *extra):
    return ["--config", str(d / "config.yaml"), *extra]


def test_eval_end_to_end(labelled, capsys):
    d = labelled
    code = main(
        _args(
            d,
            "eval",
            "--dataset", str(d / "set.jsonl"),
            "--qrels", str(d / "qrels.txt"),
            "--policy", "constrained",
            "--policy", "cheapest",
            "--cascades", "2,3",
            "--sweep", "0,0.5,1",
            "--cv", "2",
            "--max-cost", "1",
            "--out", str(d / "report.json"),
            "--plot", str(d / "frontier.png"),
            "--no-progress",
        )
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| run | kind | nDCG@10 | MRR@10 | R@20 | $ / 1k q | p50 ms | p95 ms | degraded | tier mix |" in out
    report = json.loads((d / "report.json").read_text())
    runs = {r["label"]: r for r in report["runs"]}
    expected = {"retriever-order", "bm25", "strong", "bm25@all -> strong@2", "constrained", "cheapest"}
    assert expected | {"learned (2-fold CV)", "constrained (2-fold CV)"} <= set(runs)
    assert runs["constrained (2-fold CV)"]["budget"] == "$1/query"
    assert runs["strong"]["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert runs["strong"]["cost_usd"]["per_1k_queries"] == pytest.approx(10.0)
    assert runs["strong"]["latency_ms"]["p50"] == pytest.approx(220, rel=0.1)  # 100 + 6 x 20 ms, simulated
    assert runs["retriever-order"]["metrics"]["nDCG@10"] < runs["bm25"]["metrics"]["nDCG@10"] < 1.0
    assert runs["constrained"]["tier_mix"] == {"strong": 8}
    assert runs["cheapest"]["cost_usd"]["mean_per_query"] == 0.0
    assert runs["constrained"]["budget"] == "$1/query"
    assert len(runs["constrained"]["per_query"]) == 8
    summary = report["summary"]
    assert summary["strong"]["label"] == "strong" and summary["weak"]["label"] == "bm25"
    assert set(summary["policies"]) == {"constrained", "cheapest"}
    assert 0 <= summary["policies"]["constrained"]["apgr"] <= 1.5
    assert len(report["cv"]["per_fold"]) == 2
    assert (d / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_then_eval_the_fitted_policy(labelled, capsys):
    d = labelled
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress"]
    assert main(_args(d, "eval", *data, "--out", str(d / "report.json"))) == 0
    profile = d / "profile.yaml"
    assert main(_args(d, "calibrate", "--quality-from", str(d / "report.json"), "--out", str(profile))) == 0
    assert load_profile(profile).backends["strong"]["quality"] == {"web": 1.0}
    code = main(_args(d, "calibrate", *data, "--fit-learned", "--escalation-share", "0.5", "--ks", "2", "--out", str(profile)))
    assert code == 0
    fitted = load_profile(profile)
    assert fitted.learned is not None and "learned.tradeoff" in fitted.thresholds
    assert fitted.thresholds["cascade.expected_escalation"] == 0.5
    assert fitted.backends["strong"]["quality"] == {"web": 1.0}  # merged, not replaced
    capsys.readouterr()
    assert main(_args(d, "eval", *data, "--no-tiers", "--policy", f"learned:profile={profile}")) == 0
    assert "learned" in capsys.readouterr().out


def test_calibrate_latency_of_a_local_backend(labelled, capsys):
    d = labelled
    profile = d / "latency.yaml"
    args = ["calibrate", "--latency", "--backends", "bm25", "--grid-candidates", "2,8", "--grid-tokens", "8,32"]
    assert main(_args(d, *args, "--repeats", "1", "--no-progress", "--out", str(profile))) == 0
    latency = load_profile(profile).backends["bm25"]["latency"]
    assert set(latency) >= {"overhead_ms", "per_doc_ms", "per_token_ms", "per_token_sq_ms", "source"}
    assert "2x2 grid" in latency["source"]


def test_cli_errors_are_clear(labelled, capsys):
    d = labelled
    assert main(_args(d, "eval", "--dataset", str(d / "set.jsonl"))) == 2
    assert "--qrels" in capsys.readouterr().err
    assert main(_args(d, "calibrate", "--out", str(d / "p.yaml"))) == 2
    assert "nothing to calibrate" in capsys.readouterr().err
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress", "--no-tiers"]
    assert main(_args(d, "eval", *data, "--cv", "2", "--cv-policies", "learned,nope")) == 2
    assert "--cv-policies: nope" in capsys.readouterr().err


def test_cross_validation_never_routes_a_query_with_a_model_fitted_on_it(labelled):
    d = labelled
    dataset = load_jsonl(d / "set.jsonl", d / "qrels.txt")
    with EvalHarness(dataset, d / "config.yaml") as harness:
        specs = {name: b.spec for name, b in harness.backends.items()}
        options = option_grid(specs, (2,))
        runs = evaluate_options(harness, options)
        cv = cross_validate(harness, runs, options, folds=4, target_quality_share=1.0)
    assert sorted(r.qid for r in cv.run.records) == sorted(dataset.qids)
    for model, fold in zip(cv.models, cv.folds, strict=True):
        assert f"({fold['train']})" in model.fitted_on and fold["train"] + fold["test"] == 8
    assert cv.run.ndcg >= runs["bm25"].ndcg


def test_per_query_budgets(labelled, capsys):
    d = labelled
    budgets = d / "budgets.jsonl"
    # Half the queries may spend nothing: they stay on the free tier; the rest may buy the strong one.
    budgets.write_text("\n".join(json.dumps({"qid": f"q{i}", "max_cost_usd": 0.0 if i < 4 else 1.0}) for i in range(8)))
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress", "--no-tiers"]
    assert main(_args(d, "eval", *data, "--budgets", str(budgets), "--out", str(d / "r.json"))) == 0
    [run] = json.loads((d / "r.json").read_text())["runs"]
    served = {r["qid"]: r["served"] for r in run["per_query"]}
    assert {served[f"q{i}"] for i in range(4)} <= {"bm25", "retriever-order"}
    assert {served[f"q{i}"] for i in range(4, 8)} == {"strong"}
    assert run["budget"] == "per-query"
    # A latency budget is a deadline: 100 ms rules out the strong tier's modelled 220 ms.
    assert main(_args(d, "eval", *data, "--budget-ms", "100", "--out", str(d / "r2.json"))) == 0
    [fast] = json.loads((d / "r2.json").read_text())["runs"]
    assert "strong" not in fast["tier_mix"]
    # The cross-validated constrained policy runs under the same budgets; --cv-policies picks it alone.
    args = ["--cv", "2", "--cv-policies", "constrained", "--budgets", str(budgets), "--out", str(d / "r3.json")]
    assert main(_args(d, "eval", *data, *args)) == 0
    _, cv = json.loads((d / "r3.json").read_text())["runs"]
    assert cv["label"] == "constrained (2-fold CV)" and cv["budget"] == "per-query"
    assert {r["served"] for r in cv["per_query"] if r["qid"] in {"q0", "q1", "q2", "q3"}} <= {"bm25", "retriever-order"}


def test_calibrate_fits_the_constrained_policy_and_a_config_runs_it(labelled, capsys):
    d = labelled
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt"), "--no-progress"]
    profile = d / "profile.yaml"
    assert main(_args(d, "calibrate", *data, "--fit-constrained", "--ks", "2,3", "--out", str(profile))) == 0
    fitted = load_profile(profile)
    assert fitted.backends["strong"]["quality"] == {"web": 1.0}
    assert fitted.backends["bm25"]["quality"]["web"] < 1.0
    # On odd queries BM25 buries the relevant passages below its top 3, so a strong stage over its
    # top 2 or 3 recovers little of the gap: the curve saturates far beyond the measured k.
    assert fitted.thresholds["cascade.saturation_k"] > 3
    config = yaml.safe_load((d / "config.yaml").read_text())
    config["profile"] = str(profile)
    config["policy"] = {"name": "constrained", "params": {"profile": str(profile), "cascade_k": [2, 3]}}
    (d / "fitted.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    code = main(["--config", str(d / "fitted.yaml"), "eval", *data, "--no-tiers", "--max-cost", "1", "--out", str(d / "r.json")])
    assert code == 0
    [run] = json.loads((d / "r.json").read_text())["runs"]
    assert run["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert run["tier_mix"] == {"strong": 8}  # within the ceiling, and rated above every cascade


def test_constrained_cross_validation_plans_with_each_folds_fit(labelled):
    d = labelled
    dataset = load_jsonl(d / "set.jsonl", d / "qrels.txt")
    with EvalHarness(dataset, d / "config.yaml") as harness:
        specs = {name: b.spec for name, b in harness.backends.items()}
        options = option_grid(specs, (2,))
        runs = evaluate_options(harness, options)
        cv = cross_validate_constrained(harness, runs, options, folds=4, seed=1)
        # Spec overrides reach the planner: rated below BM25, the strong tier is never chosen.
        demoted = harness.run("demoted", create_policy("constrained"), specs={"strong": {"quality": {"web": 0.1}}})
        with pytest.raises(ValueError, match="unknown backend"):
            harness.run("bad", create_policy("constrained"), specs={"nope": {}})
    assert sorted(r.qid for r in cv.run.records) == sorted(dataset.qids)
    for fit, fold in zip(cv.models, cv.folds, strict=True):
        assert f"({fold['train']})" in fit.fitted_on and fit.queries == fold["train"] == 6
        assert fold["quality"] == {k: round(v, 4) for k, v in fit.quality.items()} and fold["saturation_k"] == fit.saturation_k
    assert cv.run.ndcg == pytest.approx(1.0)
    assert set(demoted.tier_mix) == {"bm25"}
    assert harness.backends["strong"].spec.quality_for("web") == 0.95  # the shared backend is untouched


def test_offline_ab_through_the_decision_log(labelled, capsys):
    """eval --decision-log: each policy is an arm, each query a request (paired), its qrels the
    feedback; `report` then names the winner with its interval."""
    d = labelled
    log = d / "offline.jsonl"
    data = ["--dataset", str(d / "set.jsonl"), "--qrels", str(d / "qrels.txt")]
    policies = ["--policy", "fixed:backend=strong", "--policy", "cheapest"]
    assert main(_args(d, "eval", *data, *policies, "--no-tiers", "--decision-log", str(log), "--no-progress")) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    decisions = [r for r in records if r["kind"] == "decision"]
    assert {r["arm"] for r in decisions} == {"fixed {'backend': 'strong'}", "cheapest"}
    assert sorted(r["request_id"] for r in decisions) == sorted([f"q{i}" for i in range(8)] * 2)
    assert len([r for r in records if r["kind"] == "feedback"]) == 8  # once per query
    capsys.readouterr()
    assert main(["report", str(log), "--json", str(d / "ab.json")]) == 0
    report = json.loads((d / "ab.json").read_text())
    assert report["verdict"]["winner"] == "fixed {'backend': 'strong'}" and report["verdict"]["basis"] == "quality"
    assert all(c["quality"]["paired"] for c in report["comparisons"])
