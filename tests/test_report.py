"""The read path of A/B experiments: log reader (JSONL, SQLite), bootstrap statistics, the report and
its verdict, and ``rerank-router report`` end to end. Logs are written here with the record schema."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest

from router.cli import main
from router.decisions.reader import LogContents, merge_feedback, read_log
from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import ConfigError, UnknownNameError
from router.offline.report.report import build_report
from router.offline.report.stats import bootstrap, compare, is_paired, mean, quantile

ir_measures = pytest.importorskip("ir_measures")


# -- fixtures -----------------------------------------------------------------------------------------
def decision(
    rid: str,
    arm: str | None = "control",
    *,
    experiment: str | None = "ab",
    shadow: bool = False,
    top_ids: Sequence[str] = ("d0", "d1", "d2"),
    latency_ms: float = 50.0,
    actual: float | None = 0.001,
    predicted: float | None = 0.001,
    degraded: bool = False,
    backends: Sequence[str] = ("minilm",),
    timestamp: float = 0.0,
) -> DecisionRecord:
    return DecisionRecord(
        request_id=rid,
        timestamp=timestamp,
        policy="constrained",
        chosen="+".join(backends),
        reason="test",
        fallbacks=(),
        backends=tuple(backends),
        stages=(),
        n_documents=len(top_ids),
        top_n=len(top_ids),
        top_ids=tuple(top_ids),
        latency_ms=latency_ms,
        predicted_latency_ms=latency_ms,
        predicted_cost_usd=predicted,
        actual_cost_usd=actual,
        degraded=degraded,
        degraded_reason="deadline" if degraded else None,
        latency_budget_ms=None,
        max_cost_usd=None,
        domain="web",
        experiment=experiment if arm is not None else None,
        arm=arm,
        shadow=shadow,
    )


def feedback(
    rid: str, clicked: Sequence[str] = (), relevance: dict[str, float] | None = None, timestamp: float = 1.0
) -> FeedbackRecord:
    return FeedbackRecord(rid, timestamp, tuple(clicked), relevance or {})


Record = DecisionRecord | FeedbackRecord


def write_jsonl(path: Path, records: Iterable[Record], extra_lines: Sequence[str] = ()) -> Path:
    lines = [json.dumps(r.to_dict()) for r in records]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


def write_sqlite(path: Path, records: Iterable[Record], torn: int = 0) -> Path:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE decisions (request_id TEXT, timestamp REAL, experiment TEXT, arm TEXT, shadow INTEGER, record TEXT)"
        )
        db.execute("CREATE TABLE feedback (request_id TEXT, timestamp REAL, record TEXT)")
        for r in records:
            if isinstance(r, DecisionRecord):
                db.execute(
                    "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                    (r.request_id, r.timestamp, r.experiment, r.arm, int(r.shadow), json.dumps(r.to_dict())),
                )
            else:
                db.execute("INSERT INTO feedback VALUES (?, ?, ?)", (r.request_id, r.timestamp, json.dumps(r.to_dict())))
        for i in range(torn):
            db.execute("INSERT INTO decisions VALUES (?, 0, 'ab', 'x', 0, ?)", (f"torn{i}", '{"kind": "decis'))
    db.close()
    return path


def ab_log(
    *,
    n: int = 60,
    good: Sequence[str] = ("control",),
    arms: Sequence[str] = ("control", "cheap"),
    cost: dict[str, float] | None = None,
    graded: bool = True,
    seed: int = 1,
) -> list[Record]:
    """``n`` requests per arm. Arms in ``good`` mostly rank the relevant documents first, the others
    mostly last; request i of every good arm gets the same order, so good arms tie exactly on quality."""
    cost = cost or {}
    records: list[Record] = []
    for a, arm in enumerate(arms):
        noise = np.random.default_rng([seed, a])
        for i in range(n):
            rid = f"{arm}-{i}"
            order = ["r1", "r2", "n1", "n2", "n3"]
            shift = int(np.random.default_rng([seed, i]).integers(0, 3)) + (0 if arm in good else 2)
            order = order[-shift:] + order[:-shift] if shift else order
            c = cost.get(arm, 0.001) * float(noise.uniform(0.9, 1.1))
            records.append(decision(rid, arm, top_ids=order, latency_ms=float(noise.normal(80, 10)), actual=c, timestamp=i))
            if graded:
                records.append(feedback(rid, relevance={"r1": 3, "r2": 2, "n1": 0}))
            else:
                records.append(feedback(rid, clicked=["r1"]))
    return records


# -- reader -------------------------------------------------------------------------------------------
def test_jsonl_reader_skips_and_counts_torn_lines(tmp_path):
    records = [decision("a"), decision("b", "cheap"), feedback("a", clicked=["d1"])]
    path = write_jsonl(
        tmp_path / "log.jsonl",
        records,
        extra_lines=[
            "",
            "   ",
            "not json",
            "[1, 2]",
            '{"kind": "other"}',
            '{"kind": "decision", "request_id": "x"}',
            '{"kind": "decis',
        ],
    )
    log = read_log(path)
    assert [d.request_id for d in log.decisions] == ["a", "b"]
    assert log.decisions[1] == records[1]
    assert log.feedback["a"].clicked == ("d1",)
    assert log.invalid_lines == 5
    assert log.invalid_examples[0].endswith("log.jsonl:6")
    assert log.sources == (str(path),)


def test_jsonl_reader_survives_a_torn_multibyte_character(tmp_path):
    path = write_jsonl(tmp_path / "log.jsonl", [decision("a")])
    with path.open("ab") as stream:
        stream.write('{"kind": "feedback", "request_id": "é'.encode()[:-1])
    log = read_log(path)
    assert len(log.decisions) == 1 and log.invalid_lines == 1


def test_sqlite_reader_reads_the_schema_and_counts_bad_rows(tmp_path):
    records = [decision("a"), decision("a", "cheap", shadow=True), feedback("a", clicked=["d0"]), feedback("a", clicked=["d2"])]
    log = read_log(write_sqlite(tmp_path / "log.sqlite", records, torn=2))
    assert [(d.arm, d.shadow) for d in log.decisions] == [("control", False), ("cheap", True)]
    assert log.feedback["a"].clicked == ("d0", "d2")
    assert log.invalid_lines == 2


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_format_is_sniffed_without_a_known_suffix(tmp_path, kind):
    records = [decision("a"), feedback("a", clicked=["d0"])]
    path = tmp_path / "decisions.log"
    (write_sqlite if kind == "sqlite" else write_jsonl)(path, records)
    log = read_log(path)
    assert len(log.decisions) == 1 and "a" in log.feedback


def test_feedback_merges_clicks_in_arrival_order_and_later_grades_override(tmp_path):
    first = write_jsonl(
        tmp_path / "one.jsonl",
        [
            decision("a"),
            feedback("a", ["d1"], {"d1": 1, "d2": 2}, timestamp=1),
            feedback("a", ["d0", "d1"], {"d1": 3}, timestamp=3),
        ],
    )
    second = write_sqlite(tmp_path / "two.db", [feedback("a", ["d2"], {"d2": 0}, timestamp=2)])
    merged = read_log([first, second]).feedback["a"]
    assert merged.clicked == ("d1", "d2", "d0")
    assert dict(merged.relevance) == {"d1": 3.0, "d2": 0.0}
    assert merged.timestamp == 3


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_log(tmp_path / "missing.jsonl")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ValueError, match=r"other\.db: not a decision log"):
        read_log(tmp_path / "other.db")


def test_reader_reads_what_the_sinks_write_even_while_the_sqlite_writer_is_open(tmp_path):
    from router.decisions.jsonl import JsonlSink
    from router.decisions.sqlite import SqliteSink

    records = [decision("a"), decision("a", "cheap", shadow=True), feedback("a", ["d1"], {"d1": 2})]
    jsonl, db = JsonlSink(tmp_path / "log.jsonl"), SqliteSink(tmp_path / "log.sqlite")
    try:
        for sink in (jsonl, db):
            sink.write(records)
        for path in ("log.jsonl", "log.sqlite"):
            log = read_log(tmp_path / path)
            assert log.decisions == tuple(records[:2]) and log.feedback["a"] == records[2] and log.invalid_lines == 0
    finally:
        jsonl.close()
        db.close()


# -- statistics ---------------------------------------------------------------------------------------
def test_mean_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        sample = rng.normal(3.0, 2.0, size=60)
        iv = bootstrap(sample, mean, rng=rng)
        covered += iv.low <= 3.0 <= iv.high
    assert 0.9 <= covered / 200 <= 0.99


def test_quantile_interval_covers_the_true_median():
    rng = np.random.default_rng(8)
    covered = sum(
        (iv := bootstrap(rng.normal(0.0, 1.0, size=80), quantile(0.5), rng=rng, resamples=1000)).low <= 0.0 <= iv.high
        for _ in range(100)
    )
    assert 0.88 <= covered / 100 <= 1.0


def test_bootstrap_is_reproducible_with_a_seeded_generator_and_degenerate_below_two_values():
    data = [1.0, 2.0, 5.0, 7.0]
    assert bootstrap(data, rng=np.random.default_rng(3)) == bootstrap(data, rng=np.random.default_rng(3))
    assert bootstrap([], rng=np.random.default_rng(0)).n == 0
    one = bootstrap([4.0], rng=np.random.default_rng(0))
    assert one.estimate == 4.0 and not one.defined and not one.excludes_zero


def test_paired_bootstrap_is_chosen_when_arms_share_request_ids():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.3, size=100)  # per-request difficulty dominates the spread
    control = {f"q{i}": float(v) for i, v in enumerate(base)}
    shadow = {f"q{i}": float(v) + 0.03 + float(rng.normal(0, 0.01)) for i, v in enumerate(base)}
    other = {f"r{i}": v for i, v in enumerate(shadow.values())}
    assert is_paired(shadow, control) and not is_paired(other, control)
    paired = compare(shadow, control, rng=rng)
    unpaired = compare(other, control, rng=rng)
    assert paired.paired is True and unpaired.paired is False
    assert paired.excludes_zero and paired.low > 0  # +0.03 found against noise of 0.3 only when paired
    assert not unpaired.excludes_zero
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 5


def test_relative_contrast():
    rng = np.random.default_rng(0)
    cheap = {f"a{i}": 0.4 + 0.01 * (i % 3) for i in range(50)}
    dear = {f"b{i}": 1.0 + 0.01 * (i % 3) for i in range(50)}
    iv = compare(cheap, dear, rng=rng, contrast="relative")
    assert iv.estimate == pytest.approx(np.mean(list(cheap.values())) / np.mean(list(dear.values())) - 1)
    assert iv.high < 0


# -- report -------------------------------------------------------------------------------------------
def test_a_clear_quality_difference_names_the_winner_with_an_interval_excluding_zero():
    log_records = ab_log(good=("control",), cost={"control": 0.002, "cheap": 0.0005})
    report = build_report(_log(log_records))
    assert report.metric == "nDCG@10" and report.baseline == "control"
    verdict = report.verdict
    assert verdict.winner == "control" and verdict.basis == "quality" and verdict.against == "cheap"
    assert verdict.interval is not None and verdict.interval.low > 0
    assert verdict.text.startswith("control wins: nDCG@10 +") and "over cheap (95% CI " in verdict.text
    (comparison,) = report.comparisons
    assert comparison.quality.high < 0 and comparison.paired is False
    assert comparison.text.startswith("cheap: nDCG@10 −") and "vs control — significantly worse" in comparison.text
    assert "per 1,000 requests (95% CI −$" in comparison.text and "significantly cheaper" in comparison.text


def test_no_difference_gives_no_verdict():
    records = ab_log(good=("control", "cheap"))
    report = build_report(_log(records))
    (comparison,) = report.comparisons
    assert not comparison.quality.excludes_zero
    assert "no significant difference in nDCG@10 vs control" in comparison.text and "keep collecting" in comparison.text
    assert report.verdict.winner is None and report.verdict.text.startswith("no winner yet")


def test_same_quality_and_significantly_cheaper_wins_on_cost():
    report = build_report(_log(ab_log(good=("control", "cheap"), cost={"control": 0.0025, "cheap": 0.001})))
    verdict = report.verdict
    assert verdict.winner == "cheap" and verdict.basis == "cost" and verdict.against == "control"
    assert verdict.interval is not None and verdict.interval.high < 0
    assert verdict.interval.estimate == pytest.approx(-0.6, abs=0.02)
    assert re.fullmatch(
        r"cheap wins: same nDCG@10 within CI, (59|60|61)% cheaper than control \(95% CI \d+% to \d+%\)", verdict.text
    )


def test_with_three_arms_a_significantly_worse_arm_cannot_win_on_cost():
    costs = {"control": 0.0025, "cheap": 0.001, "bad": 0.0001}
    report = build_report(_log(ab_log(arms=("control", "cheap", "bad"), good=("control", "cheap"), cost=costs)))
    assert report.verdict.winner == "cheap" and report.verdict.against == "control"
    assert [c.arm for c in report.comparisons] == ["cheap", "bad"]
    assert "significantly worse" in report.comparisons[1].text


def test_graded_quality_is_ir_measures_ndcg_at_10():
    rel = {"d2": 3.0, "d3": 1.0, "d9": 2.0}
    records = [decision("q", top_ids=["d1", "d2", "d3"]), feedback("q", relevance=rel)]
    report = build_report(_log(records))
    # trec_eval's nDCG: linear gains, log2(rank + 1) discounts
    dcg = 3 / np.log2(3) + 1 / np.log2(4)
    ideal = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    expected = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10], {"q": {"d2": 3, "d3": 1, "d9": 2}}, {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    )[ir_measures.nDCG @ 10]
    assert expected == pytest.approx(dcg / ideal)
    assert report.arm("control").quality.estimate == pytest.approx(expected)
    assert report.verdict.text == "no winner yet: only one arm (control)"


def test_clicks_only_give_click_mrr():
    records = [
        decision("a", top_ids=["d0", "d1", "d2"]),
        feedback("a", clicked=["d1"]),
        decision("b", top_ids=["d0", "d1", "d2"]),
        feedback("b", clicked=["d0", "d2"]),
        decision("c", top_ids=["d0", "d1"]),
        feedback("c", clicked=["x"]),  # clicked a document outside the top 10
        decision("d"),
        feedback("d"),  # shown, nothing clicked
        decision("e"),  # no feedback: latency and cost only
    ]
    report = build_report(_log(records))
    arm = report.arm("control")
    assert report.metric == "MRR@10"
    assert arm.n_requests == 5 and arm.n_feedback == 4 and arm.n_quality == 4
    assert arm.quality.estimate == pytest.approx((0.5 + 1.0 + 0 + 0) / 4)


def test_forcing_ndcg_without_grades_says_what_to_do():
    report = build_report(_log([decision("a"), feedback("a", ["d0"]), decision("b"), feedback("b", ["d1"])]), metric="ndcg@10")
    assert report.arm("control").n_quality == 0
    assert any("use --metric mrr@10" in note for note in report.notes)


def test_shadow_arm_is_compared_paired_and_can_be_left_out():
    rng = np.random.default_rng(2)
    records: list[Record] = []
    for i in range(50):
        rid = f"q{i}"
        relevant = [f"r{i}"]
        good = [f"r{i}", "n1", "n2"]
        bad = ["n1", "n2", f"r{i}"] if i % 5 else good
        records.append(decision(rid, "control", top_ids=good, latency_ms=float(rng.normal(200, 20)), actual=0.002))
        records.append(
            decision(rid, "shadow", shadow=True, top_ids=bad, latency_ms=float(rng.normal(30, 5)), actual=None, predicted=0.0)
        )
        records.append(feedback(rid, clicked=relevant, relevance={f"r{i}": 3.0}))  # graded: shadows can be judged
    report = build_report(_log(records))
    assert report.baseline == "control"
    (comparison,) = report.comparisons
    assert comparison.paired and comparison.quality.high < 0 and comparison.latency_p95_ms.high < 0
    shadow = report.arm("shadow")
    assert shadow.n_shadow == 50 and shadow.cost_source == "predicted" and shadow.n_cost_predicted == 50
    assert any("shadow: cost is the predicted cost for 50 of 50 requests" in n for n in report.notes)
    without = build_report(_log(records), include_shadow=False)
    assert [a.arm for a in without.arms] == ["control"] and without.comparisons == ()


def test_per_arm_tier_mix_degraded_share_and_default_baseline():
    records = [decision(f"a{i}", "a", backends=("minilm",)) for i in range(3)]
    records += [decision(f"b{i}", "b", backends=("minilm", "cohere"), degraded=i == 0) for i in range(4)]
    report = build_report(_log(records))
    b = report.arm("b")
    assert report.baseline == "b"  # most primary traffic
    assert b.degraded_share == pytest.approx(0.25) and b.tier_mix == {"minilm → cohere": 1.0}
    assert report.verdict.text.startswith("no winner yet: too little feedback")


def test_experiment_selection_and_unknown_names():
    records = [decision("a", experiment="one"), decision("b", "cheap", experiment="two")]
    with pytest.raises(ConfigError, match="several experiments \\(one, two\\); choose one with --experiment"):
        build_report(_log(records))
    assert [a.arm for a in build_report(_log(records), experiment="two").arms] == ["cheap"]
    with pytest.raises(UnknownNameError, match="valid experiment names: one, two"):
        build_report(_log(records), experiment="three")
    with pytest.raises(UnknownNameError, match="unknown arm 'nope'; valid arm names: control"):
        build_report(_log(records), experiment="one", baseline="nope")
    with pytest.raises(ConfigError, match="none assigned to an experiment arm"):
        build_report(_log([decision("x", None)]))


def test_report_dict_and_text():
    report = build_report(_log(ab_log(good=("control",))), resamples=500, seed=4)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"experiment", "metric", "baseline", "level", "resamples", "seed", "sources", "invalid_lines",
                         "arms", "comparisons", "verdict", "notes"}  # fmt: skip
    assert data["resamples"] == 500 and data["seed"] == 4
    arm = data["arms"][0]
    assert {"quality", "latency_p50_ms", "latency_p95_ms", "cost_usd_per_request", "cost_usd_per_1k", "tier_mix"} <= set(arm)
    assert set(arm["quality"]) == {"estimate", "low", "high", "level", "n"}
    assert data["verdict"]["winner"] == "control" and data["verdict"]["interval"]["low"] > 0
    text = report.format()
    assert "| control (baseline) |" in text and "verdict: control wins" in text


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_report_end_to_end(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")

    def no_router(*args: object, **kwargs: object) -> None:
        raise AssertionError("report must not build a Router")

    monkeypatch.setattr("router.cli.Router", no_router)
    log = write_jsonl(tmp_path / "log.jsonl", ab_log(good=("control",), graded=False), extra_lines=['{"kind": "feedb'])
    out_json, out_png = tmp_path / "out" / "report.json", tmp_path / "out" / "report.png"
    code = main(["report", str(log), "--json", str(out_json), "--plot", str(out_png), "--resamples", "500", "--seed", "1"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "verdict: control wins: MRR@10 +" in stdout and "skipped 1 invalid log line (first: " in stdout
    report = json.loads(out_json.read_text())
    assert report["metric"] == "MRR@10" and report["verdict"]["winner"] == "control" and report["invalid_lines"] == 1
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", [], "missing.jsonl: no such decision log"),
        ("empty", [], "no decisions in the log"),
        ("ok", ["--baseline", "nope"], "--baseline: unknown arm 'nope'; valid arm names: cheap, control"),
        ("ok", ["--experiment", "nope"], "--experiment: unknown experiment 'nope'; valid experiment names: ab"),
    ],
)
def test_cli_report_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, setup, args, message):
    path = tmp_path / ("missing.jsonl" if setup == "missing" else "log.jsonl")
    if setup == "empty":
        path.write_text("\n")
    elif setup == "ok":
        write_jsonl(path, ab_log(n=5))
    assert main(["report", str(path), *args]) == 2
    assert message in capsys.readouterr().err


def _log(records: Sequence[Record]) -> LogContents:
    return LogContents(
        decisions=tuple(r for r in records if isinstance(r, DecisionRecord)),
        feedback=merge_feedback(r for r in records if isinstance(r, FeedbackRecord)),
    )


def test_clicks_do_not_score_a_shadow_arm() -> None:
    """Clicks were on the served ranking: a shadow arm gets no click MRR (graded feedback still scores it)."""
    records: list[Record] = []
    for i in range(6):
        records += [
            decision(f"r{i}", "served", top_ids=("a", "b", "c")),
            decision(f"r{i}", "shadow", shadow=True, top_ids=("c", "b", "a")),
        ]
    clicked = _log([*records, *(feedback(f"r{i}", clicked=["a"]) for i in range(6))])
    report = build_report(clicked, metric="mrr@10")
    assert report.arm("served").n_quality == 6 and report.arm("shadow").n_quality == 0
    assert any("no click MRR for shadow runs" in n for n in report.notes)
    graded = _log([*records, *(feedback(f"r{i}", relevance={"c": 3.0}) for i in range(6))])
    assert build_report(graded).arm("shadow").n_quality == 6
