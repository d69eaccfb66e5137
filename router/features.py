"""Step 2: what the planner needs to know about one request, computed once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from router.request import RerankRequest
from router.tokens import TokenCounters

__all__ = ["Features", "TokenStats", "extract_features"]


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Token lengths under one tokenizer family (special tokens excluded)."""

    family: str
    exact: bool
    query: int
    docs: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.docs)

    @property
    def max(self) -> int:
        return max(self.docs, default=0)


@dataclass(frozen=True, slots=True)
class Features:
    n_candidates: int
    top_n: int
    domain: str
    tokens: Mapping[str, TokenStats]

    def token_stats(self, family: str) -> TokenStats:
        return self.tokens[family]


def extract_features(
    request: RerankRequest,
    families: Iterable[str],
    counters: TokenCounters,
    *,
    default_domain: str,
    max_document_chars: int,
) -> Features:
    texts = request.texts_for_scoring(max_document_chars)
    stats: dict[str, TokenStats] = {}
    for family in sorted(set(families)):
        counter = counters.get(family)
        counts = counter.count([request.query, *texts])
        stats[family] = TokenStats(family=family, exact=counter.exact, query=counts[0], docs=tuple(counts[1:]))
    domain = str(request.context.get("domain") or default_domain)
    return Features(
        n_candidates=len(request.documents),
        top_n=request.top_n,
        domain=domain,
        tokens=MappingProxyType(stats),
    )
