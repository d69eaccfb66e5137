"""Step 1: normalise and validate the arguments of one call into a RerankRequest."""

from __future__ import annotations

import math
import numbers
import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

from router.constraints import Constraints, coerce_constraints
from router.documents import Document, normalize_for_scoring
from router.errors import (
    EmptyQueryError,
    InvalidBudgetError,
    InvalidRequestError,
    InvalidTopNError,
    QueryTooLongError,
)
from router.retrieval import retriever_scores
from router.shells import shell_of
from router.validation import NotBool

__all__ = [
    "MAX_COST_USD",
    "MAX_LATENCY_BUDGET_MS",
    "RequestLimits",
    "RequestOptions",
    "RerankRequest",
    "build_request",
    "is_blank",
]

# Above these a budget is almost surely a unit mistake (seconds for ms, cents for dollars).
MAX_LATENCY_BUDGET_MS = 600_000.0
MAX_COST_USD = 100.0


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of one rerank call besides query and documents (``Router.arerank``)."""

    top_n: int | None
    latency_budget_ms: float | None
    max_cost_usd: float | None
    constraints: Constraints | Mapping[str, Any] | None
    context: Mapping[str, Any] | None
    cache: bool | None


class RequestLimits(BaseModel):
    """Bounds on what one call may carry. Configurable under `limits:`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_documents: Annotated[int, NotBool] = Field(1000, ge=1)
    """More candidates than this is an error (Cohere and Voyage advise at most 1,000 per call)."""
    max_query_chars: Annotated[int, NotBool] = Field(32_768, ge=1)
    """A longer query is an error: no reranker context holds it."""
    max_document_chars: Annotated[int, NotBool] = Field(131_072, ge=1)
    """Longer documents are clipped to this many characters for scoring (~32K tokens, the longest
    context in the catalog); the result still returns the whole original document."""


@dataclass(frozen=True, slots=True)
class RerankRequest:
    query: str
    documents: Sequence[Document]
    """A tuple of Documents, or for plain strings their :class:`~router.documents.PositionalDocuments`."""
    top_n: int
    latency_budget_ms: float | None
    max_cost_usd: float | None
    constraints: Constraints
    context: Mapping[str, Any]
    request_id: str
    clipped_documents: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    scoring_texts: tuple[str, ...] = ()
    """Each document's text clipped to ``scoring_max_chars``, made while the documents were checked."""
    scoring_max_chars: int = -1
    scoring_chars: int = -1
    """The total characters of ``scoring_texts`` (-1: not known)."""
    scoring_lengths: tuple[int, ...] = ()
    """``len`` of each of ``scoring_texts`` (empty: not known)."""
    cache: bool = True
    """False: the score cache (router.cache) is neither read nor written for this request."""
    retriever_scores: tuple[float, ...] | None = None
    """The retriever's score of each document, when every one carries one (router.retrieval)."""

    def texts_for_scoring(self, max_chars: int) -> Sequence[str]:
        if max_chars == self.scoring_max_chars and len(self.scoring_texts) == len(self.documents):
            return self.scoring_texts
        return [d.text[:max_chars] for d in self.documents]

    def lengths_for_scoring(self, max_chars: int) -> Sequence[int]:
        """``len`` of each of :meth:`texts_for_scoring`."""
        if max_chars == self.scoring_max_chars and len(self.scoring_lengths) == len(self.documents):
            return self.scoring_lengths
        return list(map(len, self.texts_for_scoring(max_chars)))

    def scoring_chars_for(self, max_chars: int) -> int:
        """The total characters of :meth:`texts_for_scoring`."""
        if max_chars == self.scoring_max_chars and self.scoring_chars >= 0:
            return self.scoring_chars
        return sum(len(t) for t in self.texts_for_scoring(max_chars))


# Characters that show nothing: a query made only of these is empty (a NUL, a zero-width space,
# a byte-order mark, ...). Categories: control, format, separators; plus the letters that render
# as blanks (Hangul fillers, the braille blank).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """True when ``text`` has no visible character (stops at the first one it finds)."""
    first = text[:1]
    if first.isalnum() and first not in _BLANK_LETTERS:  # a letter or digit shows (the common first character)
        return False
    return all(ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)


def _is_bool(value: object) -> bool:
    # numpy.bool_ is neither a bool nor a number, but say "bool" for it all the same
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _check_number(name: str, value: object, *, low: float, high: float, low_inclusive: bool) -> float | None:
    """A finite real number (numpy scalars included, bools not) within bounds, as a float."""
    if value is None:
        return None
    plain = type(value) is float or type(value) is int  # the common case: neither a bool nor a numpy scalar
    if not plain and (_is_bool(value) or not isinstance(value, numbers.Real)):
        kind = "bool" if _is_bool(value) else type(value).__name__
        raise InvalidBudgetError(f"{name} must be a number, got {kind}")
    number = float(cast(float, value))  # a real number, checked above
    if math.isnan(number) or math.isinf(number):
        raise InvalidBudgetError(f"{name} must be finite, got {value}")
    too_low = number < low if low_inclusive else number <= low
    if too_low:
        relation = ">=" if low_inclusive else ">"
        raise InvalidBudgetError(f"{name} must be {relation} {low:g}, got {value}")
    if number > high:
        raise InvalidBudgetError(
            f"{name}={value} is over the sanity limit {high:g}; check the unit "
            "(latency budgets are milliseconds, costs are US dollars per request)"
        )
    return number


_new_request: Callable[..., RerankRequest] = shell_of(RerankRequest)
"""RerankRequest's constructor for every call (router.shells)."""

_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` (16 bytes of ``os.urandom``, the version and variant bits set) without
    building a UUID object."""
    return f"{int.from_bytes(os.urandom(16), 'big') & _UUID4_CLEAR | _UUID4_SET:032x}"


def build_request(
    query: object,
    documents: object,
    *,
    top_n: object = None,
    latency_budget_ms: object = None,
    max_cost_usd: object = None,
    constraints: Constraints | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    cache: object = None,
    limits: RequestLimits | None = None,
    default_constraints: Constraints | None = None,
    default_latency_budget_ms: float | None = None,
    default_max_cost_usd: float | None = None,
    retriever_score_key: str | None = None,
) -> RerankRequest:
    """Step 1. Sizes are checked first and cheaply (the query's length, the number of documents),
    before anything is copied or any item is looked at; then every field is validated."""
    limits = limits or RequestLimits()
    if not isinstance(query, str):
        raise InvalidRequestError(f"query must be a str, got {type(query).__name__}")
    if len(query) > limits.max_query_chars:
        raise QueryTooLongError(
            f"query has {len(query)} characters, over limits.max_query_chars={limits.max_query_chars}; "
            "shorten it or raise the limit in config"
        )
    if is_blank(query):
        raise EmptyQueryError("query is empty (nothing but whitespace or invisible characters); pass the user's search text")
    normalized = normalize_for_scoring(documents, max_documents=limits.max_documents, max_chars=limits.max_document_chars)
    docs = normalized.documents
    notes: list[str] = []
    if top_n is None:
        n_top = len(docs)
    else:
        if _is_bool(top_n) or not isinstance(top_n, numbers.Integral):
            kind = "bool" if _is_bool(top_n) else type(top_n).__name__
            raise InvalidTopNError(f"top_n must be an int or None, got {kind}")
        top_n = int(top_n)
        if top_n < 1:
            raise InvalidTopNError(f"top_n must be >= 1, got {top_n}")
        n_top = min(top_n, len(docs))
        if top_n > len(docs):
            notes.append(f"top_n={top_n} clamped to the {len(docs)} documents given")
    budget = _check_number("latency_budget_ms", latency_budget_ms, low=0, high=MAX_LATENCY_BUDGET_MS, low_inclusive=False)
    cost = _check_number("max_cost_usd", max_cost_usd, low=0, high=MAX_COST_USD, low_inclusive=True)
    request_constraints = coerce_constraints(constraints)
    merged = default_constraints or Constraints()
    if request_constraints is not None:
        merged = merged.tightened(request_constraints)
    if context is not None and not isinstance(context, Mapping):
        raise InvalidRequestError(f"context must be a mapping, got {type(context).__name__}")
    ctx = MappingProxyType(dict(context or {}))
    if cache is not None and not isinstance(cache, bool):
        raise InvalidRequestError(f"cache must be a bool or None, got {type(cache).__name__}")
    clipped = normalized.clipped
    if clipped:
        notes.append(f"{clipped} document(s) clipped to {limits.max_document_chars} characters for scoring")
    return _new_request(
        query=query,
        documents=docs,
        top_n=n_top,
        latency_budget_ms=budget if budget is not None else default_latency_budget_ms,
        max_cost_usd=cost if cost is not None else default_max_cost_usd,
        constraints=merged,
        context=ctx,
        request_id=str(ctx.get("request_id") or _uuid4_hex()),
        clipped_documents=clipped,
        notes=tuple(notes),
        scoring_texts=normalized.texts,
        scoring_max_chars=limits.max_document_chars,
        scoring_chars=normalized.chars,
        scoring_lengths=normalized.lengths,
        cache=cache is not False,
        retriever_scores=retriever_scores(cast(Sequence[object], documents), retriever_score_key),
    )
