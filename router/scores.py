"""Result scores: each document's backend score mapped to one scale, monotone in rank.

A backend returns scores on its own [0, 1] scale (its module documents the mapping from what the
model or API answers: a probability, a logit by ``sigmoid(s / logit_scale)`` from the catalog,
a cosine by ``(c + 1) / 2``, a recorded rank by ``1 - (rank - 1) / R``). Those scales are not
comparable: 0.5 from one backend and 0.5 from another need not mean the same. Where the config
(from a profile's ``scores:``, fitted by ``rerank-router calibrate --scores``) holds a calibration
for the backend that scored a document and the request's domain (else the backend's ``*`` entry),
the score becomes that calibration's estimate of P(relevant): isotonic (piecewise-linear
interpolation through fitted points, found by bisection) or Platt (``sigmoid(a * s + b)``). A
backend without one keeps its own scale, clipped to [0, 1]; the result then says its scores are
uncalibrated (``RerankResult.scores_calibrated`` False, and a note naming the backends).

A cascade's later stage scores only what the stage before it ranked highest, and being there is
evidence of its own: at the same score those documents are relevant more (or less) often than
across all candidates. A calibration under ``"<backend> after <previous>"`` (router.profile.after_key),
fitted on that stage's output in that cascade (``calibrate --scores --score-cascades``), is used for
the backend's documents when it ran right after ``previous``; the backend's own calibration otherwise.

Merging so order and scores agree. The executor decides the order; mapping scores never changes
it. In a cascade the top k carry the strong stage's scores and the rest the cheap stage's, so the
mapped scores need not fall with rank: the last of the strong stage's k can score below the first
document it never saw. The result's scores are therefore the pool-adjacent-violators projection
of the mapped scores onto non-increasing sequences over the final order: each run of documents
whose mapped scores rise against the order is replaced by its mean. Of the sequences that agree
with the order it is the nearest to the per-document estimates (least squares), and it keeps the
sum of the estimates within each pooled run, so the expected number of relevant documents above
any threshold is what the per-document estimates say (a running minimum, the other obvious
choice, pushes the whole tail of a cascade down to the strong stage's lowest score and so keeps
fewer relevant documents above a threshold than the calibration says). A result whose mapped
scores already fall with rank (a single stage, the common case) is left exactly as mapped.

Documents no model scored (the tail the first stage did not take, or every document when the
retriever's order is kept) have no score: None, and they always come after every scored one.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from router.profile import ANY_DOMAIN, ScoreCalibration, after_key
from router.shells import shell_of

__all__ = ["NO_SCORES_NOTE", "IsotonicMap", "PlattMap", "ScoreBook", "ScoredOrder", "build_map", "pool_non_increasing"]

NO_SCORES_NOTE = "scores uncalibrated: no model scored the documents"

# Notes are cached per (uncalibrated backends, domain); the domain comes from the request, so bound it.
_NOTE_CACHE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class IsotonicMap:
    """Piecewise-linear through ``(x[i], y[i])``; ``y[0]`` below ``x[0]``, ``y[-1]`` above ``x[-1]``."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, score: float) -> float:
        x, y = self.x, self.y
        i = bisect_right(x, score)
        if i == 0:
            return y[0]
        if i == len(x):
            return y[-1]
        x0, x1 = x[i - 1], x[i]
        y0 = y[i - 1]
        return y0 + (y[i] - y0) * (score - x0) / (x1 - x0)  # x1 > score >= x0, so x1 > x0


@dataclass(frozen=True, slots=True)
class PlattMap:
    """``sigmoid(a * score + b)``."""

    a: float
    b: float

    def __call__(self, score: float) -> float:
        z = self.a * score + self.b
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


ScoreMap = IsotonicMap | PlattMap


def build_map(calibration: ScoreCalibration) -> ScoreMap:
    if calibration.method == "isotonic":
        return IsotonicMap(tuple(calibration.x), tuple(calibration.y))
    assert calibration.a is not None and calibration.b is not None  # validated by ScoreCalibration
    return PlattMap(calibration.a, calibration.b)


def pool_non_increasing(values: Sequence[float]) -> list[float]:
    """The least-squares non-increasing fit of ``values`` (pool adjacent violators, equal weights)."""
    sums: list[float] = []
    counts: list[int] = []
    for v in values:
        total, count = v, 1
        while sums and sums[-1] * count < total * counts[-1]:  # previous mean < this mean: pool
            total += sums.pop()
            count += counts.pop()
        sums.append(total)
        counts.append(count)
    out: list[float] = []
    for total, count in zip(sums, counts, strict=True):
        out.extend([total / count] * count)
    return out


@dataclass(frozen=True, slots=True)
class ScoredOrder:
    """What result assembly needs: document index -> score, whether calibrated, and the note if not."""

    scores: Mapping[int, float]
    calibrated: bool
    note: str | None


_new_scored_order: Callable[..., ScoredOrder] = shell_of(ScoredOrder)


class ScoreBook:
    """A Router's score maps, built once from its config's ``scores:`` (backend -> domain -> calibration)."""

    def __init__(self, calibrations: Mapping[str, Mapping[str, ScoreCalibration]]) -> None:
        self._maps: dict[tuple[str, str], ScoreMap] = {
            (backend, domain): build_map(c) for backend, by_domain in calibrations.items() for domain, c in by_domain.items()
        }
        self._backends = frozenset(backend for backend, _ in self._maps)
        self.contextual = any(" after " in backend for backend in self._backends)
        """Some calibration is for a backend as a later cascade stage (:func:`router.profile.after_key`)."""
        self._notes: dict[tuple[frozenset[str], str], str] = {}

    def __bool__(self) -> bool:
        return bool(self._maps)

    def lookup(self, backend: str, domain: str, after: str | None = None) -> ScoreMap | None:
        """The map for ``backend`` in ``domain`` (else its any-domain one) as a stage run right after
        ``after`` where one is fitted for that, else as a backend alone; None if neither."""
        if after is not None:
            found = self._find(after_key(backend, after), domain)
            if found is not None:
                return found
        return self._find(backend, domain)

    def _find(self, key: str, domain: str) -> ScoreMap | None:
        if key not in self._backends:
            return None
        found = self._maps.get((key, domain))
        return found if found is not None else self._maps.get((key, ANY_DOMAIN))

    def assemble(
        self,
        order: Sequence[int],
        raw: Mapping[int, float],
        scored_by: Mapping[int, str],
        domain: str,
        after: Mapping[str, str] | None = None,
    ) -> ScoredOrder:
        """Scores for the documents of ``order`` that a backend scored (``raw``: index -> the
        backend's score, ``scored_by``: index -> its name), mapped and made non-increasing in rank.
        ``after``: backend -> the stage that ran right before it in the option that served."""
        if not raw:
            return ScoredOrder(raw, False, NO_SCORES_NOTE)
        scored = [i for i in order if i in raw] if len(raw) < len(order) else order
        uncalibrated: set[str]
        changed = True
        if not self._maps:  # nothing to map: the backends' own scales, clipped (C-level passes where possible)
            values = list(map(raw.__getitem__, scored))
            changed = min(values) < 0.0 or max(values) > 1.0
            if changed:
                values = [0.0 if v < 0.0 else 1.0 if v > 1.0 else v for v in values]
            uncalibrated = set(scored_by.values())
        else:
            values, uncalibrated = self._mapped(scored, raw, scored_by, domain, after or {})
        if any(map(operator.lt, values, islice(values, 1, None))):  # some score above the one before it (in C)
            values, changed = pool_non_increasing(values), True
        note = self._note(frozenset(uncalibrated), domain) if uncalibrated else None
        # Unchanged (a single stage's scores on [0, 1], the common case): the backend's own mapping serves.
        scores = dict(zip(scored, values, strict=True)) if changed else raw
        return _new_scored_order(scores, not uncalibrated, note)

    def assemble_ranked(
        self, ranked: list[float], backend: str, domain: str, after: Mapping[str, str] | None = None
    ) -> tuple[list[float], bool, str | None]:
        """:meth:`assemble` where one backend scored every document and the order is its ranking:
        ``ranked`` holds its scores in that order (non-increasing). The scores in the same order
        (``ranked`` itself where nothing changes), whether they are calibrated, and the note."""
        if not ranked:
            return ranked, False, NO_SCORES_NOTE
        found = self.lookup(backend, domain, (after or {}).get(backend)) if self._maps else None
        if found is None:  # the backend's own scale, clipped: still non-increasing, its ends say whether to clip
            values = ranked
            if ranked[-1] < 0.0 or ranked[0] > 1.0:
                values = [0.0 if v < 0.0 else 1.0 if v > 1.0 else v for v in ranked]
            return values, False, self._note(frozenset((backend,)), domain)
        values = [found(v) for v in ranked]
        if any(map(operator.lt, values, islice(values, 1, None))):
            values = pool_non_increasing(values)
        return values, True, None

    def _mapped(
        self, scored: Sequence[int], raw: Mapping[int, float], scored_by: Mapping[int, str], domain: str, after: Mapping[str, str]
    ) -> tuple[list[float], set[str]]:
        maps: dict[str, ScoreMap | None] = {}
        uncalibrated: set[str] = set()
        values: list[float] = []
        append = values.append
        for i in scored:
            name = scored_by[i]
            if name in maps:
                found = maps[name]
            else:
                found = maps[name] = self.lookup(name, domain, after.get(name))
                if found is None:
                    uncalibrated.add(name)
            v = raw[i]
            append(found(v) if found is not None else (0.0 if v < 0.0 else 1.0 if v > 1.0 else v))
        return values, uncalibrated

    def _note(self, names: frozenset[str], domain: str) -> str:
        key = (names, domain)
        note = self._notes.get(key)
        if note is None:
            note = (
                f"scores uncalibrated: no score calibration for {', '.join(sorted(names))} in domain {domain!r}; "
                "scores are each backend's own [0, 1] scale (fit one with rerank-router calibrate --scores)"
            )
            if len(self._notes) < _NOTE_CACHE_LIMIT:
                self._notes[key] = note
        return note
