"""Documents as the router sees them, and the one validation path every document takes.

A document arrives as a string, a mapping (``{"text": ..., "id": ..., "metadata": {...}}``, e.g. a
line of JSON) or a :class:`Document`; all three are checked by the same rules (:func:`_checked`):
text is a ``str``; an id is a ``str`` or an ``int`` (not a bool) and is kept as a string (``5``
becomes ``"5"``, so ``5`` and ``"5"`` are the same id); metadata is a mapping (None: none), copied
into a read-only :class:`FrozenMap`.
"""

from __future__ import annotations

import itertools
import numbers
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from router.errors import DuplicateIdError, InvalidDocumentsError, TooManyDocumentsError
from router.shells import shell_of
from router.validation import echo

__all__ = [
    "EMPTY_METADATA",
    "Document",
    "DocumentInput",
    "FrozenMap",
    "Normalized",
    "PositionalDocuments",
    "normalize_documents",
    "normalize_for_scoring",
]


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that pickles, deep-copies and compares like the dict it was made from.

    (``types.MappingProxyType`` is read-only too, but cannot be pickled or deep-copied.)"""

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_data", dict(items))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return FrozenMap, (self._data,)


_EMPTY = FrozenMap()
EMPTY_METADATA = _EMPTY
"""The metadata of a document that has none (one shared read-only mapping)."""


@dataclass(frozen=True, slots=True)
class Document:
    """One candidate: its text, a caller-visible id (a string; an int is turned into one), and
    read-only metadata. Invalid fields raise :class:`~router.errors.InvalidDocumentsError`."""

    text: str
    id: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        _, doc_id, metadata = _checked(self.text, self.id, self.metadata, "Document", attribute=True)
        object.__setattr__(self, "id", doc_id)
        object.__setattr__(self, "metadata", metadata)


DocumentInput = str | Mapping[str, Any] | Document


def _checked(
    text: object, doc_id: object, metadata: object, where: str, *, attribute: bool = False
) -> tuple[str, str, FrozenMap]:
    """The one set of rules for a document's fields; ``where`` names it in errors."""

    def name(part: str) -> str:
        return f"{where}.{part}" if attribute else f"{where}[{part!r}]"

    if not isinstance(text, str):
        raise InvalidDocumentsError(f"{where} text is {type(text).__name__}; document text must be a str")
    if isinstance(doc_id, str):
        pass
    elif isinstance(doc_id, numbers.Integral) and not isinstance(doc_id, bool):
        doc_id = str(int(doc_id))
    else:
        raise InvalidDocumentsError(f"{name('id')} is {type(doc_id).__name__}; ids must be str or int")
    if metadata is None:
        frozen = _EMPTY
    elif isinstance(metadata, FrozenMap):
        frozen = metadata
    elif isinstance(metadata, Mapping):
        frozen = FrozenMap(metadata)
    else:
        raise InvalidDocumentsError(f"{name('metadata')} must be a mapping, got {type(metadata).__name__}")
    return text, doc_id, frozen


def _one(item: object, position: int) -> Document:
    if isinstance(item, Document):
        return item
    where = f"documents[{position}]"
    if isinstance(item, str):
        return _document(item, str(position), _EMPTY)
    if isinstance(item, Mapping):
        if "text" not in item:
            keys = sorted(map(str, itertools.islice(item, 8)))
            raise InvalidDocumentsError(
                f"{where} is a mapping without a 'text' key (keys: {echo(keys)}); give each record a 'text' string"
            )
        raw_id = item.get("id")
        text, doc_id, metadata = _checked(item["text"], str(position) if raw_id is None else raw_id, item.get("metadata"), where)
        return _document(text, doc_id, metadata)
    raise InvalidDocumentsError(
        f"{where} is {type(item).__name__}; each document must be a str, a mapping with a 'text' key, or a router.Document"
    )


class _DocumentShell:
    """A Document's slots without the frozen ``__setattr__``: filled by plain attribute stores,
    then turned into a :class:`Document` by ``__class__`` assignment (same slots, same layout; an
    instance of a frozen dataclass built field by field costs a call per field)."""

    __slots__ = Document.__slots__  # the same names in the same order: the layouts match

    def __init__(self, text: str, doc_id: str, metadata: FrozenMap) -> None:
        self.text = text
        self.id = doc_id
        self.metadata = metadata
        self.__class__ = Document  # type: ignore[assignment]


assert _DocumentShell.__slots__ == Document.__slots__ and _DocumentShell.__basicsize__ == Document.__basicsize__

_N_IDS = 1024
_PLAIN_STR = {str}
_IDS = tuple(map(str, range(_N_IDS)))
"""Positions as ids, made once."""


_document: Callable[[str, str, FrozenMap], Document] = _DocumentShell  # type: ignore[assignment]
"""A Document from fields already checked by :func:`_checked` (no second check)."""


def position_ids(n: int) -> Sequence[str]:
    """``str(i)`` for ``i`` in ``range(n)`` (the made-once ids where they reach)."""
    return _IDS if n <= _N_IDS else tuple(map(str, range(n)))


class PositionalDocuments(Sequence[Document]):
    """Plain strings as the Documents they stand for: item ``i`` is ``Document(texts[i], str(i))``
    with no metadata, made when it is read. A request of plain strings (the common call) holds
    this, not a Document per string; what reads every document at once (the result's items)
    reads ``texts`` and ``ids`` instead. Compares, pickles and copies as the tuple of those
    Documents would (and, like it, is not hashable)."""

    __slots__ = ("ids", "texts")
    texts: tuple[str, ...]
    ids: Sequence[str]
    """``str(i)`` for each position (at least ``len(texts)`` of them)."""

    def __init__(self, texts: tuple[str, ...]) -> None:
        self.texts = texts
        self.ids = position_ids(len(texts))

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Document: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Document, ...]: ...

    def __getitem__(self, index: int | slice) -> Document | tuple[Document, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        text = self.texts[index]  # the IndexError / TypeError of a tuple
        position = operator.index(index)
        return _document(text, self.ids[position if position >= 0 else position + len(self.texts)], _EMPTY)

    def __iter__(self) -> Iterator[Document]:
        return map(_document, self.texts, self.ids, itertools.repeat(_EMPTY))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PositionalDocuments):
            return self.texts == other.texts
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as the tuple's: a Document's metadata is not hashable

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self) -> tuple[type[PositionalDocuments], tuple[tuple[str, ...]]]:
        return PositionalDocuments, (self.texts,)


def normalize_documents(documents: object, *, max_documents: int | None = None) -> tuple[Document, ...]:
    """Turn strings, records and Documents into Documents with unique string ids.

    The count is checked first (``max_documents``), before any item is looked at. A document
    without an id gets its position as id ("0", "1", ...). An empty text is allowed (it scores low,
    it is never dropped); a non-string text, an id that is not a str or int, metadata that is not a
    mapping, an empty list or a duplicate id is an :class:`InvalidDocumentsError`.
    """
    return tuple(normalize_for_scoring(documents, max_documents=max_documents).documents)


@dataclass(frozen=True, slots=True)
class Normalized:
    """What one pass over the documents yields: the Documents, their texts clipped for scoring,
    the total characters of those texts, how many were clipped and each one's length."""

    documents: Sequence[Document]
    """A tuple, or for plain strings only their :class:`PositionalDocuments`."""
    texts: tuple[str, ...]
    chars: int
    clipped: int
    lengths: tuple[int, ...] = ()
    """``len`` of each of ``texts`` (empty: not known)."""


_new_normalized: Callable[..., Normalized] = shell_of(Normalized)


def normalize_for_scoring(documents: object, *, max_documents: int | None = None, max_chars: int | None = None) -> Normalized:
    """:func:`normalize_documents`, and in the same pass each text clipped to ``max_chars`` (None:
    not clipped), the clipped texts' total characters and the number of texts clipped."""
    if isinstance(documents, str | bytes) or not isinstance(documents, Sequence):
        raise InvalidDocumentsError(f"documents must be a list (or other sequence) of documents, got {type(documents).__name__}")
    count = len(documents)
    if count == 0:
        raise InvalidDocumentsError("documents is empty; pass at least one candidate to rerank")
    if max_documents is not None and count > max_documents:
        raise TooManyDocumentsError(
            f"{count} documents is over limits.max_documents={max_documents}; "
            "pre-filter the candidates or raise the limit in config"
        )
    cap = max_chars if max_chars is not None else -1
    shell = _document
    if set(map(type, documents)) == _PLAIN_STR:
        # Only plain strings: their ids are their positions, unique by construction; nothing to
        # check, and no Document made for each (PositionalDocuments makes one where it is read).
        plain = PositionalDocuments(tuple(documents))
        lengths = tuple(map(len, plain.texts))  # once: the step's checks and step 2's token counts read them
        chars = sum(lengths)
        if cap < 0 or chars <= cap or max(lengths) <= cap:  # no more in all than the cap: none is over it
            return _new_normalized(plain, plain.texts, chars, 0, lengths)
        texts = tuple(t if len(t) <= cap else t[:cap] for t in plain.texts)
        lengths = tuple(map(len, texts))
        return _new_normalized(plain, texts, sum(lengths), sum(1 for t in plain.texts if len(t) > cap), lengths)
    out: list[Document] = []
    texts_: list[str] = []
    sizes: list[int] = []
    seen: dict[str, int] = {}
    chars = clipped = 0
    for position, item in enumerate(documents):
        if type(item) is str:  # the common case, inline: no call, no check beyond the type
            doc_id = _IDS[position] if position < _N_IDS else str(position)
            document = shell(item, doc_id, _EMPTY)
        else:
            document = _one(item, position)
            doc_id = document.id
        if doc_id in seen:
            raise DuplicateIdError(
                f"documents[{position}] and documents[{seen[doc_id]}] share the id {echo(doc_id)}; "
                "ids must be unique (omit ids to use positions)"
            )
        seen[doc_id] = position
        out.append(document)
        text = document.text
        size = len(text)
        if 0 <= cap < size:
            text = text[:cap]
            size = cap
            clipped += 1
        texts_.append(text)
        sizes.append(size)
        chars += size
    return _new_normalized(tuple(out), tuple(texts_), chars, clipped, tuple(sizes))
