"""Step 2: what the planner needs to know about one request, computed once."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from router.request import RerankRequest
from router.shells import shell_of
from router.tokens import EstimatedTokenCounter, TokenCounter, TokenCounters, TokenizersCounter

__all__ = ["CHARS_PER_TOKEN_BOUND", "EXACT_COUNT_SHARE", "Features", "TokenStats", "extract_features"]

CHARS_PER_TOKEN_BOUND = 10
"""Characters counted per token a tier can read: English WordPiece/BPE averages 4-5, so a prefix
this long holds at least the tokens a tier reads except in text of unusually long words."""

EXACT_COUNT_SHARE = 0.2
"""Exact token counts may take at most this share of the time a request has left."""


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Token lengths under one tokenizer family (special tokens excluded)."""

    family: str
    exact: bool
    query: int
    docs: tuple[int, ...]
    doc_sum: int = field(init=False, repr=False, compare=False)
    """Σ docs, Σ docs², max(docs): computed once, so the planner's latency model needs no pass."""
    doc_sq_sum: int = field(init=False, repr=False, compare=False)
    doc_max: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        docs = self.docs
        object.__setattr__(self, "doc_sum", sum(docs))
        object.__setattr__(self, "doc_sq_sum", sum(map(operator.mul, docs, docs)))
        object.__setattr__(self, "doc_max", max(docs, default=0))

    @classmethod
    def _of(cls, family: str, exact: bool, query: int, docs: tuple[int, ...], doc_sq_sum: int, doc_max: int) -> TokenStats:
        """``TokenStats(family, exact, query, docs)`` where the caller already has Σ docs² and
        max(docs) (the estimated counts' tables give both without a pass)."""
        made: Any = _new(_TokenStatsShell)  # filled in place (router.shells): no object.__setattr__ per field
        made.family = family
        made.exact = exact
        made.query = query
        made.docs = docs
        made.doc_sum = sum(docs)
        made.doc_sq_sum = doc_sq_sum
        made.doc_max = doc_max
        made.__class__ = TokenStats
        return cast(TokenStats, made)

    @property
    def total(self) -> int:
        return self.doc_sum

    @property
    def max(self) -> int:
        return self.doc_max


class _TokenStatsShell:
    """TokenStats' slots without the frozen ``__setattr__`` (filled, then given TokenStats' class)."""

    __slots__ = TokenStats.__slots__


assert _TokenStatsShell.__basicsize__ == TokenStats.__basicsize__


@dataclass(frozen=True, slots=True)
class Features:
    n_candidates: int
    top_n: int
    domain: str
    tokens: Mapping[str, TokenStats]
    notes: tuple[str, ...] = ()
    """What the planner should know about how these were computed (e.g. estimated counts)."""
    retriever_scores: tuple[float, ...] | None = None
    """The retriever's score of each candidate (documents' ``score``; router.request), or None."""

    def token_stats(self, family: str) -> TokenStats:
        return self.tokens[family]


_new_features: Callable[..., Features] = shell_of(Features)

_COUNT_TABLE_CHARS = 1 << 16
"""Texts up to this long are counted from a table (grown to the longest text seen; at most 64K
entries, about 2 MB, per ratio)."""
_COUNT_TABLE_RATIOS = 8
"""Tables kept (one per chars-per-token ratio; the catalog's families use three); other ratios count as usual."""
_count_tables: dict[float, list[int]] = {}
_square_tables: dict[float, tuple[list[int], list[int]]] = {}
"""Per ratio: (the count table it was made from, each count squared)."""
_new = object.__new__


def _count_table(ratio: float, longest: int) -> list[int] | None:
    """``table[n]`` = :class:`EstimatedTokenCounter`'s count of a text of ``n`` characters at
    ``ratio``, for every ``n <= longest``: a lookup per text instead of a division and a
    ``round`` (a pure function of the length, so the table is built once per ratio and grown by
    doubling). None past :data:`_COUNT_TABLE_CHARS` or :data:`_COUNT_TABLE_RATIOS`."""
    table = _count_tables.get(ratio)
    if table is not None and longest < len(table):
        return table
    if longest > _COUNT_TABLE_CHARS or (table is None and len(_count_tables) >= _COUNT_TABLE_RATIOS):
        return None
    size = min(_COUNT_TABLE_CHARS, max(longest, 2 * len(table or ()), 1023)) + 1
    table = [0, *(max(1, round(n / ratio)) for n in range(1, size))]
    _count_tables[ratio] = table  # a new list: a thread reading the old one still reads right counts
    return table


def _estimated_doc_stats(
    counter: TokenCounter,
    query: str,
    texts: Sequence[str],
    lengths: Sequence[int] | None = None,
    longest: int | None = None,
    pick: Callable[[list[int]], tuple[int, ...]] | None = None,
) -> tuple[int, tuple[int, ...], int, int] | None:
    """``counter.count([query, *texts])`` for an :class:`EstimatedTokenCounter`, from its
    :func:`_count_table` in C-level passes, as (the query's count, the texts' counts, Σ count², the
    largest count: a count is a non-decreasing function of the length, so the longest text has it);
    None where there is no table (count as usual). ``lengths`` / ``longest``: the texts' lengths
    and the longest, where the caller knows them.
    ``pick``: ``operator.itemgetter(*lengths)`` (two lengths or more), which reads a table at every
    length in one C call, where the caller made one for several families."""
    if type(counter) is not EstimatedTokenCounter:
        return None
    if lengths is None:
        lengths = list(map(len, texts))
    if longest is None:
        longest = max(lengths, default=0)
    ratio = counter.chars_per_token
    table = _count_table(ratio, max(len(query), longest))
    if table is None:
        return None
    squares = _square_tables.get(ratio)
    if squares is None or squares[0] is not table:
        squares = _square_tables[ratio] = (table, [n * n for n in table])
    if pick is None:
        return (
            table[len(query)],
            tuple(map(table.__getitem__, lengths)),
            sum(map(squares[1].__getitem__, lengths)),
            table[longest],
        )
    return table[len(query)], pick(table), sum(pick(squares[1])), table[longest]


def extract_features(
    request: RerankRequest,
    families: Iterable[str],
    counters: TokenCounters,
    *,
    default_domain: str,
    max_document_chars: int,
    read_tokens: Mapping[str, int | None] | None = None,
    time_left_ms: float | None = None,
) -> Features:
    """Token lengths per tokenizer family, within the time the request has.

    ``read_tokens``: per family, the most tokens of a document any configured tier of that family
    reads (None: no limit). Only a prefix of each document long enough for that many tokens
    (:data:`CHARS_PER_TOKEN_BOUND` characters per token) is counted: a tier never sees the rest.
    ``time_left_ms``: where exact counting is predicted to take more than
    :data:`EXACT_COUNT_SHARE` of it, the family's counts are estimated from characters instead
    (and a note says so)."""
    texts = request.texts_for_scoring(max_document_chars)
    lengths = request.lengths_for_scoring(max_document_chars)  # step 1's: for every family that counts whole texts
    longest = max(lengths, default=0)
    stats: dict[str, TokenStats] = {}
    notes: list[str] = []
    reads = read_tokens or {}
    # Families whose counters count alike (estimates at one ratio) share one count of the same prefixes.
    shared: dict[tuple[float, int], tuple[int, tuple[int, ...], int, int]] = {}
    pick = operator.itemgetter(*lengths) if len(lengths) >= 2 else None  # one C call per table read (one value: not a tuple)
    for family in sorted(set(families)):
        limit = reads.get(family)
        cap = max_document_chars if limit is None else min(max_document_chars, limit * CHARS_PER_TOKEN_BOUND)
        whole = cap >= longest  # no text is longer than the prefix counted
        clipped = texts if whole else [t if len(t) <= cap else t[:cap] for t in texts]
        counter: TokenCounter = counters.get(family)
        if counter.exact and time_left_ms is not None and isinstance(counter, TokenizersCounter):
            chars = request.scoring_chars_for(max_document_chars) if whole else sum(len(t) for t in clipped)
            predicted = counter.predict_ms(len(request.query) + chars)
            if predicted > EXACT_COUNT_SHARE * max(time_left_ms, 0.0):
                counter = counters.estimate(family)
                notes.append(
                    f"{family} token counts estimated: counting exactly would take ~{predicted:.0f} ms "
                    f"of the {max(time_left_ms, 0.0):.0f} ms left"
                )
        key = (counter.chars_per_token, min(cap, longest)) if type(counter) is EstimatedTokenCounter else None
        found = shared.get(key) if key is not None else None
        if found is None and key is not None:
            if whole:
                found = _estimated_doc_stats(counter, request.query, clipped, lengths, longest, pick)
            else:
                found = _estimated_doc_stats(counter, request.query, clipped, None, min(cap, longest))
            if found is not None:
                shared[key] = found
        if found is not None:
            query_count, docs, sq_sum, top = found
            stats[family] = TokenStats._of(family, counter.exact, query_count, docs, sq_sum, top)
            continue
        counts = counter.count([request.query, *clipped])
        stats[family] = TokenStats(family=family, exact=counter.exact, query=counts[0], docs=tuple(counts[1:]))
    domain = str(request.context.get("domain") or default_domain)
    return _new_features(
        n_candidates=len(request.documents),
        top_n=request.top_n,
        domain=domain,
        tokens=MappingProxyType(stats),
        notes=tuple(notes),
        retriever_scores=request.retriever_scores,
    )
