"""Documents as the router sees them, and the normalisation of what callers pass in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from router.errors import DuplicateIdError, InvalidDocumentsError

__all__ = ["Document", "DocumentInput", "normalize_documents"]


@dataclass(frozen=True, slots=True)
class Document:
    """One candidate: its text, a caller-visible id, and free-form metadata."""

    text: str
    id: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


DocumentInput = str | Mapping[str, Any] | Document


def _one(item: object, position: int) -> tuple[str, str | None, Mapping[str, Any]]:
    if isinstance(item, Document):
        return item.text, item.id, item.metadata
    if isinstance(item, str):
        return item, None, MappingProxyType({})
    if isinstance(item, Mapping):
        if "text" not in item:
            raise InvalidDocumentsError(
                f"documents[{position}] is a mapping without a 'text' key "
                f"(keys: {sorted(map(str, item))[:8]}); give each record a 'text' string"
            )
        text = item["text"]
        raw_id = item.get("id")
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise InvalidDocumentsError(f"documents[{position}]['metadata'] must be a mapping")
        if raw_id is not None and not isinstance(raw_id, str | int):
            raise InvalidDocumentsError(f"documents[{position}]['id'] is {type(raw_id).__name__}; ids must be str or int")
        return text, None if raw_id is None else str(raw_id), MappingProxyType(dict(metadata))
    raise InvalidDocumentsError(
        f"documents[{position}] is {type(item).__name__}; each document must be a str, "
        "a mapping with a 'text' key, or a router.Document"
    )


def normalize_documents(documents: object) -> tuple[Document, ...]:
    """Turn strings, records and Documents into Documents with unique ids.

    A document without an id gets its position as id ("0", "1", ...). An empty text is allowed
    (it scores low, it is never dropped); a non-string text, an empty list or a duplicate id is an
    :class:`InvalidDocumentsError`.
    """
    if isinstance(documents, str | bytes) or not isinstance(documents, Sequence):
        raise InvalidDocumentsError(f"documents must be a list (or other sequence) of documents, got {type(documents).__name__}")
    if len(documents) == 0:
        raise InvalidDocumentsError("documents is empty; pass at least one candidate to rerank")
    out: list[Document] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(documents):
        text, doc_id, metadata = _one(item, position)
        if not isinstance(text, str):
            raise InvalidDocumentsError(f"documents[{position}] text is {type(text).__name__}; document text must be a str")
        doc_id = str(position) if doc_id is None else doc_id
        if doc_id in seen:
            raise DuplicateIdError(
                f"documents[{position}] and documents[{seen[doc_id]}] share the id {doc_id!r}; "
                "ids must be unique (omit ids to use positions)"
            )
        seen[doc_id] = position
        out.append(Document(text=text, id=doc_id, metadata=metadata))
    return tuple(out)
