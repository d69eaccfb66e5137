"""Ranking quality through ir-measures (pytrec_eval underneath): no metric is written by hand here.

Measures: nDCG@10 over graded gains, MRR@10 (``RR(rel=r)@10``) and Recall@k (``R(rel=r)@k``)
with documents of grade >= ``rel`` counted relevant (2 for TREC DL, as NIST does). Rankings are
lists of docids, best first; they are handed to ir-measures as descending scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.errors import MissingDependencyError

__all__ = ["MeasureSet", "Rankings", "aggregate", "per_query"]

Rankings = Mapping[str, Sequence[str]]
"""qid -> docids, best first."""


def _ir_measures() -> Any:
    try:
        import ir_measures
    except ImportError as exc:
        raise MissingDependencyError("evaluation needs ir-measures: pip install 'rerank-router[eval]'") from exc
    return ir_measures


@dataclass(frozen=True, slots=True)
class MeasureSet:
    """Which measures to report; names are ir-measures' own (``nDCG@10``, ``RR(rel=2)@10``, ``R(rel=2)@20``)."""

    rel: int = 2
    recall_at: tuple[int, ...] = (20,)
    ndcg_at: int = 10
    mrr_at: int = 10

    def measures(self) -> list[Any]:
        m = _ir_measures()
        out = [m.nDCG @ self.ndcg_at, m.RR(rel=self.rel) @ self.mrr_at]
        out.extend(m.R(rel=self.rel) @ k for k in self.recall_at)
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(str(x) for x in self.measures())

    @property
    def primary(self) -> str:
        return f"nDCG@{self.ndcg_at}"

    @property
    def labels(self) -> dict[str, str]:
        """ir-measures name -> short label for tables (nDCG@10, MRR@10, R@20)."""
        out = {self.primary: self.primary, f"RR(rel={self.rel})@{self.mrr_at}": f"MRR@{self.mrr_at}"}
        out.update({f"R(rel={self.rel})@{k}": f"R@{k}" for k in self.recall_at})
        return out


def _run(rankings: Rankings) -> dict[str, dict[str, float]]:
    return {qid: {docid: float(len(docs) - i) for i, docid in enumerate(docs)} for qid, docs in rankings.items()}


def _qrels(qrels: Mapping[str, Mapping[str, int]], qids: Iterable[str]) -> dict[str, dict[str, int]]:
    return {q: dict(qrels[q]) for q in qids if q in qrels}


def aggregate(
    qrels: Mapping[str, Mapping[str, int]], rankings: Rankings, measures: MeasureSet = MeasureSet()
) -> dict[str, float]:
    """Mean of each measure over the ranked queries that have judgments (ir-measures' calc_aggregate)."""
    if not rankings:
        return {name: float("nan") for name in measures.names}
    result = _ir_measures().calc_aggregate(measures.measures(), _qrels(qrels, rankings), _run(rankings))
    return {str(k): float(v) for k, v in result.items()}


def per_query(
    qrels: Mapping[str, Mapping[str, int]], rankings: Rankings, measures: MeasureSet = MeasureSet()
) -> dict[str, dict[str, float]]:
    """qid -> measure -> value (ir-measures' iter_calc)."""
    out: dict[str, dict[str, float]] = {}
    for m in _ir_measures().iter_calc(measures.measures(), _qrels(qrels, rankings), _run(rankings)):
        out.setdefault(m.query_id, {})[str(m.measure)] = float(m.value)
    return out
