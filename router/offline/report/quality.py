"""The A/B report's quality per request, through ir-measures: nDCG@10 where feedback carries graded
relevance (grades rounded to integers), else click MRR@10 (a feedback record without clicks scores 0);
qrels from the feedback, run from ``top_ids`` best first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from router.decisions.record import DecisionRecord, FeedbackRecord
from router.errors import MissingDependencyError

__all__ = ["LABELS", "METRICS", "Metric", "quality_by_request", "resolve_metric"]

Metric = Literal["auto", "ndcg@10", "mrr@10"]
METRICS: tuple[Metric, ...] = ("auto", "ndcg@10", "mrr@10")
LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10"}


def resolve_metric(metric: Metric, decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord]) -> str:
    """``auto``: nDCG@10 if any decision's feedback is graded, else MRR@10."""
    if metric != "auto":
        return metric
    graded = any(feedback[d.request_id].relevance for d in decisions if d.request_id in feedback)
    return "ndcg@10" if graded else "mrr@10"


def quality_by_request(
    decisions: Sequence[DecisionRecord], feedback: Mapping[str, FeedbackRecord], metric: str
) -> dict[str, float]:
    """request id -> nDCG@10 (graded feedback) or MRR@10 (clicks), through ir-measures."""
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    judged: list[str] = []
    for d in decisions:
        fb = feedback.get(d.request_id)
        if fb is None or (metric == "ndcg@10" and not fb.relevance):
            continue
        if metric == "mrr@10" and d.shadow:
            continue  # users clicked the ranking they were served, not the shadow arm's
        judged.append(d.request_id)
        grades = {doc: round(g) for doc, g in fb.relevance.items()} if metric == "ndcg@10" else dict.fromkeys(fb.clicked, 1)
        if grades:
            qrels[d.request_id] = grades
        ranked: dict[str, float] = {}
        for i, doc in enumerate(d.top_ids):
            ranked.setdefault(doc, float(len(d.top_ids) - i))
        if ranked:
            run[d.request_id] = ranked
    if not judged:
        return {}
    ir = _ir_measures()
    measure = ir.nDCG @ 10 if metric == "ndcg@10" else ir.RR @ 10
    values = dict.fromkeys(judged, 0.0)  # no judged relevant document, or nothing ranked: 0
    if qrels and run:
        for m in ir.iter_calc([measure], qrels, run):
            values[m.query_id] = float(m.value)
    return values


def _ir_measures() -> Any:
    try:
        import ir_measures
    except ImportError as exc:
        raise MissingDependencyError("the report's quality needs ir-measures: pip install 'rerank-router[eval]'") from exc
    return ir_measures
