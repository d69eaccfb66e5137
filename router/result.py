"""What a rerank call returns: frozen, typed, with small helpers.

Every result type pickles, deep-copies and goes through ``dataclasses.asdict``; ``to_dict()``
gives its JSON form (plain dicts, lists, strings, numbers, booleans and None; the keys are the
attribute names), the body a JSON API would return.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.documents import EMPTY_METADATA as _EMPTY
from router.documents import Document, FrozenMap, PositionalDocuments
from router.plan import Option, Plan
from router.shells import shell_of

__all__ = ["Explanation", "OptionReport", "RankedItem", "RerankResult", "StageReport"]


@dataclass(frozen=True, slots=True)
class RankedItem:
    index: int
    """Position of the document in the input list."""
    id: str
    score: float | None
    """On [0, 1], never above the score of an item ranked before it; an estimate of P(relevant)
    where the result's ``scores_calibrated`` is True (router.scores); None if no model scored it
    (only the last items of a result can be None)."""
    text: str
    metadata: Mapping[str, Any] = field(default_factory=FrozenMap)
    """The document's metadata, read-only."""
    raw_score: float | None = None
    """The score as the backend that scored it last returned it (on that backend's [0, 1] scale)."""
    scored_by: str | None = None
    """The name of that backend; None if no model scored it."""

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, FrozenMap):
            object.__setattr__(self, "metadata", FrozenMap(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        """``{"index", "id", "score", "text", "metadata", "raw_score", "scored_by"}``, JSON-ready."""
        return _fields(self)

    @classmethod
    def _many(
        cls,
        documents: Sequence[Document],
        order: Iterable[int],
        score_of: Callable[[int], float | None],
        raw_of: Callable[[int], float | None] | None = None,
        scored_by_of: Callable[[int], str | None] | None = None,
    ) -> tuple[RankedItem, ...]:
        """``RankedItem(i, d.id, score_of(i), d.text, d.metadata, raw_of(i), scored_by_of(i))`` for
        each position ``i`` in ``order`` (``d = documents[i]``; a missing ``raw_of`` or
        ``scored_by_of`` gives None), as the constructor would build them (the router's hot path:
        the frozen ``__init__`` costs a call and an ``object.__setattr__`` per field)."""
        # Each item filled in place: the shell has no Python ``__init__`` (one called through its
        # class costs more than the stores themselves), so ``shell()`` only allocates.
        frozen, shell = FrozenMap, _ItemShell
        same = raw_of is score_of  # scores as the backend gave them (the common case): one lookup
        raw_of = raw_of or _none
        scored_by_of = scored_by_of or _none
        out: list[Any] = []
        append = out.append
        if type(documents) is PositionalDocuments:  # plain strings: no Document to read
            texts, ids = documents.texts, documents.ids
            for i in order:
                score = score_of(i)
                item = shell()
                item.index = i
                item.id = ids[i]
                item.score = score
                item.text = texts[i]
                item.metadata = _EMPTY
                item.raw_score = score if same else raw_of(i)
                item.scored_by = scored_by_of(i)
                item.__class__ = cls  # type: ignore[assignment]
                append(item)
            return tuple(out)
        for i in order:
            d = documents[i]
            metadata = d.metadata
            if type(metadata) is not frozen:
                append(cls(i, d.id, score_of(i), d.text, metadata, raw_of(i), scored_by_of(i)))
                continue
            score = score_of(i)
            item = shell()
            item.index = i
            item.id = d.id
            item.score = score
            item.text = d.text
            item.metadata = metadata
            item.raw_score = score if same else raw_of(i)
            item.scored_by = scored_by_of(i)
            item.__class__ = cls  # type: ignore[assignment]
            append(item)
        return tuple(out)

    @classmethod
    def _ranked(
        cls, documents: Sequence[Document], order: Iterable[int], scores: Iterable[float], raws: Iterable[float], by: str
    ) -> tuple[RankedItem, ...]:
        """``RankedItem(i, d.id, score, d.text, d.metadata, raw, by)`` for each ``i``, ``score``,
        ``raw`` of ``order``, ``scores`` and ``raws`` together: one backend scored every item
        (:meth:`_many` without a lookup per item)."""
        frozen, shell = FrozenMap, _ItemShell
        out: list[Any] = []
        append = out.append
        if type(documents) is PositionalDocuments:  # plain strings: no Document to read
            texts, ids, empty = documents.texts, documents.ids, _EMPTY
            for i, score, raw in zip(order, scores, raws, strict=True):
                item = shell()
                item.index = i
                item.id = ids[i]
                item.score = score
                item.text = texts[i]
                item.metadata = empty
                item.raw_score = raw
                item.scored_by = by
                item.__class__ = cls  # type: ignore[assignment]
                append(item)
            return tuple(out)
        for i, score, raw in zip(order, scores, raws, strict=True):
            d = documents[i]
            metadata = d.metadata
            if type(metadata) is not frozen:
                append(cls(i, d.id, score, d.text, metadata, raw, by))
                continue
            item = shell()
            item.index = i
            item.id = d.id
            item.score = score
            item.text = d.text
            item.metadata = metadata
            item.raw_score = raw
            item.scored_by = by
            item.__class__ = cls  # type: ignore[assignment]
            append(item)
        return tuple(out)


def _none(_: int) -> None:
    return None


class _ItemShell:
    """A RankedItem's slots without the frozen ``__setattr__``: filled by plain attribute stores,
    then turned into a :class:`RankedItem` by ``__class__`` assignment (same slots, same layout;
    the frozen ``__init__`` costs a call and an ``object.__setattr__`` per field)."""

    __slots__ = RankedItem.__slots__  # the same names in the same order: the layouts match
    index: int
    id: str
    score: float | None
    text: str
    metadata: FrozenMap
    raw_score: float | None
    scored_by: str | None


assert _ItemShell.__slots__ == RankedItem.__slots__ and _ItemShell.__basicsize__ == RankedItem.__basicsize__


@dataclass(frozen=True, slots=True)
class StageReport:
    backend: str
    model: str
    candidates_in: int
    ok: bool
    latency_ms: float
    predicted_latency_ms: float
    cost_usd: float | None
    """From billed units where the provider reports them; None if the price is unknown."""
    predicted_cost_usd: float | None
    error: str | None = None
    attempts: int = 1
    """Calls made, retries included."""
    hedged: bool = False
    """A second, hedged call was sent because the first ran past the backend's observed p95."""
    cached: int = 0
    """Documents whose scores came from the score cache (router.cache), or from an identical
    call another request had in flight (``coalesced``), not from a call of this request's."""
    cache_misses: int = 0
    """Documents of a cached backend sent to it (0 where the backend is not cached)."""
    coalesced: bool = False
    """The scores came from an identical concurrent call (one backend call served both)."""
    saved_usd: float | None = None
    """The predicted cost of what the cache and coalescing spared; None where neither served."""

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True, slots=True)
class OptionReport:
    name: str
    latency_ms: float
    cost_usd: float | None
    quality: float | None
    rejected: tuple[str, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True, slots=True)
class Explanation:
    policy: str
    chosen: str
    reason: str
    fallbacks: tuple[str, ...]
    options: tuple[OptionReport, ...]
    notes: tuple[str, ...]

    @classmethod
    def from_plan(cls, plan: Plan, notes: tuple[str, ...]) -> Explanation:
        names: dict[int, str] = {}  # an Option's name is built each time it is read: once per option here

        def name(option: Option) -> str:
            known = names.get(id(option))
            if known is None:
                known = names[id(option)] = option.name
            return known

        report = _new_option_report
        options = tuple(
            [
                report(
                    name(option := a.option),
                    (estimate := option.estimate).latency_ms,
                    estimate.cost_usd,
                    estimate.quality,
                    tuple(map(str, a.rejections)) if a.rejections else (),
                    option.notes,
                )
                for a in plan.assessed
            ]
        )
        return (_new_explanation if cls is Explanation else cls)(
            policy=plan.policy,
            chosen=name(plan.primary),
            reason=plan.reason,
            fallbacks=tuple(map(name, plan.fallbacks)),
            options=options,
            notes=notes,
        )

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)

    def __str__(self) -> str:
        lines = [f"policy {self.policy}: chose {self.chosen} ({self.reason})"]
        if self.fallbacks:
            lines.append(f"fallbacks: {' > '.join(self.fallbacks)}")
        lines.append(f"{'option':<28} {'pred ms':>9} {'pred $':>10} {'quality':>8}  verdict")
        for o in self.options:
            cost = "unknown" if o.cost_usd is None else f"{o.cost_usd:.6f}"
            quality = "unknown" if o.quality is None else f"{o.quality:.3f}"
            verdict = "; ".join(o.rejected) if o.rejected else "feasible"
            lines.append(f"{o.name:<28} {o.latency_ms:>9.1f} {cost:>10} {quality:>8}  {verdict}")
            lines.extend(f"{'':<30}note: {n}" for n in o.notes)
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RerankResult:
    request_id: str
    items: tuple[RankedItem, ...]
    """Every input document exactly once, best first."""
    top_n: int
    stages: tuple[StageReport, ...]
    latency_ms: float
    predicted_latency_ms: float
    predicted_cost_usd: float | None
    actual_cost_usd: float | None
    degraded: bool
    """True when the order is not the planned option's full output (a fallback, a failed later
    stage, or the deadline)."""
    degraded_reason: str | None
    explanation: Explanation
    experiment: str | None = None
    """The experiment this request took part in (config ``experiment:``), if any."""
    arm: str | None = None
    """The arm that served it (sticky by the experiment's key)."""
    cache_hits: int = 0
    """Scores served from the score cache or a coalesced call, over every stage that served."""
    cache_misses: int = 0
    """Documents sent to cached backends."""
    cache_saved_usd: float = 0.0
    """The predicted cost of what the cache and coalescing spared."""
    scores_calibrated: bool = False
    """True when every scored item's ``score`` is an estimate of P(relevant) from a fitted
    calibration of the backend that scored it (profile ``scores:``, router.scores); False: the
    scores are the backends' own [0, 1] scales, and the explanation's notes say why."""

    def to_dict(self, *, top_only: bool = False) -> dict[str, Any]:
        """The JSON form: every attribute by name, ``items`` best first (only the first ``top_n``
        with ``top_only``), ``stages`` and ``explanation`` as nested objects. ``json.dumps`` takes it
        as is (``allow_nan=False`` too); metadata values JSON cannot hold are turned into strings."""
        data = _fields(self)
        if top_only:
            data["items"] = data["items"][: self.top_n]
        return data

    def top(self, k: int | None = None) -> tuple[RankedItem, ...]:
        """The first ``k`` items (default: the request's top_n)."""
        return self.items[: self.top_n if k is None else k]

    def by_id(self, doc_id: str) -> RankedItem:
        for item in self.items:
            if item.id == doc_id:
                return item
        raise KeyError(doc_id)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple([item.index for item in self.items])  # a list first: faster than a generator

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends whose scores shaped the returned order."""
        return tuple(s.backend for s in self.stages if s.ok)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(s.model for s in self.stages if s.ok)


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: _json_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _json_value(value: object) -> Any:
    """``value`` as plain JSON data: dataclasses and mappings become dicts (keys as strings),
    tuples, lists and sets lists; numbers stay numbers (numpy scalars included), except NaN and
    infinities, which JSON has no words for: None; anything else becomes ``str(value)``."""
    if value is None or isinstance(value, str | bool):
        return value
    if type(value).__name__ == "bool_":  # numpy's
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    return str(value)


# Constructors for the results built on every call (router.shells): the same classes, the same values.
new_stage_report: Callable[..., StageReport] = shell_of(StageReport)
new_rerank_result: Callable[..., RerankResult] = shell_of(RerankResult)
_new_option_report: Callable[..., OptionReport] = shell_of(OptionReport)
_new_explanation: Callable[..., Explanation] = shell_of(Explanation)
