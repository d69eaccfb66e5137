"""The retriever's own scores, when documents carry them: evidence for the adaptive policy.

A document given as a mapping may carry the first-stage retriever's score as ``score``
(``{"text": ..., "id": ..., "score": 12.7}``); with config ``retriever_score_key: KEY`` a score in
``metadata[KEY]`` (mappings and :class:`~router.documents.Document`) is read too. Scores are used
only when every candidate has one (a margin over some of them means nothing); strings have none.
A score that is present but not a finite real number (a bool, a string, NaN, infinity) is the
caller's bug and is refused with :class:`~router.errors.InvalidDocumentsError`, rather than
silently steering a routing decision.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from router.documents import Document
from router.errors import InvalidDocumentsError
from router.validation import echo

__all__ = ["SCORE_FIELD", "retriever_scores"]

SCORE_FIELD = "score"
"""A mapping document's top-level key for the retriever's score."""

_MISSING = object()


def _raw(item: object, key: str | None) -> object:
    if isinstance(item, Document):
        return item.metadata.get(key, _MISSING) if key is not None else _MISSING
    if isinstance(item, Mapping):
        if SCORE_FIELD in item:
            return item[SCORE_FIELD]
        metadata = item.get("metadata")
        if key is not None and isinstance(metadata, Mapping):
            return metadata.get(key, _MISSING)
    return _MISSING


def _number(value: object, position: int) -> float:
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        kind = "bool" if isinstance(value, bool) or type(value).__name__ == "bool_" else type(value).__name__
        raise InvalidDocumentsError(f"documents[{position}] retriever score must be a number, got {kind} ({echo(value)})")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidDocumentsError(f"documents[{position}] retriever score must be finite, got {number}")
    return number


def retriever_scores(documents: Sequence[object], key: str | None = None) -> tuple[float, ...] | None:
    """One score per document in order, or None unless every document carries one.

    ``documents``: the request's documents as given (already checked to be a sequence)."""
    if not documents or type(documents[0]) is str:
        return None  # strings carry no score (a mixed list starting with one: none either)
    out: list[float] = []
    missing = False
    for position, item in enumerate(documents):
        value = _raw(item, key)
        if value is _MISSING or value is None:
            missing = True  # keep checking the rest: a hostile value elsewhere is still refused
            continue
        out.append(_number(value, position))
    return None if missing else tuple(out)
