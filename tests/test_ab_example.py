"""examples/ab_dl19.py end to end on a few requests: two arms and a shadow over DL19, clicks from
the qrels, a decision log, and a report that compares the arms. Skipped where ../shared/data is absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.skipif(not (DATA / "trec-dl19" / "bm25-top100.json").is_file(), reason="../shared/data absent")


def test_example_writes_a_log_and_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("ab_dl19", ROOT / "examples" / "ab_dl19.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    assert example.main(["--requests", "16", "--users", "8", "--out", str(tmp_path), "--data", str(DATA)]) == 0

    lines = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    decisions = [r for r in lines if r["kind"] == "decision" and not r["shadow"]]
    feedback = [r for r in lines if r["kind"] == "feedback"]
    assert len(decisions) == 16 == len(feedback)
    assert {r["arm"] for r in decisions} <= {"api", "cascade"}
    assert all(r["query"] is None and r["top_texts"] is None for r in lines if r["kind"] == "decision")
    report = json.loads((tmp_path / "ab-report.json").read_text())
    assert report["metric"] == "nDCG@10" and {a["arm"] for a in report["arms"]} >= {r["arm"] for r in decisions}
    assert report["verdict"]["text"]
    assert (tmp_path / "ab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "verdict:" in out
