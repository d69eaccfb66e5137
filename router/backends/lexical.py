"""Lexical tier: BM25 (bm25s) over the candidates of one request.

The candidates are indexed per call (bm25s does this in well under a millisecond per hundred
passages), so the score needs no corpus-wide index. Score = s / (1 + s) for BM25 score s >= 0:
monotone, on [0, 1). Documents sharing no term with the query score 0 and keep the order the
executor gives them (the retriever's).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.backends.base import AVAILABLE, Availability, Backend, Scores
from router.catalog import BackendSpec
from router.errors import MissingDependencyError
from router.tokens import TokenCounter

__all__ = ["LexicalBackend", "LexicalConfig"]


class LexicalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["lexical"] = "lexical"
    catalog: str = "bm25"
    k1: float = Field(1.5, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    stopwords: str | None = "en"
    spec: dict[str, Any] = Field(default_factory=dict)


class LexicalBackend(Backend):
    config_model = LexicalConfig
    default_spec: ClassVar[dict[str, Any]] = {"provider": "local", "input": "single", "license": "MIT"}
    scores_depend_on_candidates: ClassVar[bool] = True
    """BM25 statistics come from the request's own candidates: a document's score is not its own
    alone, so the score cache (router.cache) never keeps one."""

    def __init__(self, name: str, config: LexicalConfig, spec: BackendSpec) -> None:
        self.name = name
        self.config = config
        self.spec = spec

    def __repr__(self) -> str:
        return f"LexicalBackend(name={self.name!r})"

    def availability(self) -> Availability:
        if sys.modules.get("bm25s") is not None:  # imported: no search of the path
            return AVAILABLE
        if importlib.util.find_spec("bm25s") is None:
            return Availability(False, "bm25s is not installed: pip install 'rerank-router[lexical]'")
        return Availability(True, warm="bm25s" in sys.modules)

    def load(self) -> None:
        """Import bm25s now (about half a second here) rather than in the first request."""
        import bm25s  # noqa: F401

    def _score(self, query: str, documents: Sequence[str]) -> list[float]:
        try:
            import bm25s
        except ImportError as exc:
            raise MissingDependencyError(
                "bm25s is not installed: pip install 'rerank-router[lexical]'", backend=self.name
            ) from exc
        if not documents:
            return []
        corpus = bm25s.tokenize(list(documents), stopwords=self.config.stopwords, show_progress=False)
        if not corpus.vocab:  # every candidate empty or stopwords only: bm25s.index would raise
            return [0.0] * len(documents)
        index = bm25s.BM25(k1=self.config.k1, b=self.config.b)
        index.index(corpus, show_progress=False)
        terms = bm25s.tokenize(query, stopwords=self.config.stopwords, return_ids=False, show_progress=False)[0]
        known = [t for t in terms if t in index.vocab_dict]
        if not known:
            return [0.0] * len(documents)
        return [float(s) / (1.0 + float(s)) for s in index.get_scores(known)]

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        return Scores(tuple(await asyncio.to_thread(self._score, query, documents)))

    def token_counter(self) -> TokenCounter | None:
        return None

    async def aclose(self) -> None:
        return None
