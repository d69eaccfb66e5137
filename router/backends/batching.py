"""How a request is split into provider calls: one rule for cost prediction (router.cost) and for the
remote backends that run the calls (router.backends.remote), so both agree on the split.

A list longer than ``spec.max_documents``, or heavier than ``spec.max_request_tokens`` (query +
document tokens per item, summed), becomes contiguous batches, each billed as its own call.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.catalog import BackendSpec

__all__ = ["counts_tokens", "plan_batches", "split_request"]


def plan_batches(weights: Sequence[int], max_documents: int | None, max_tokens: int | None) -> list[range]:
    """Contiguous batches of at most ``max_documents`` items and ``max_tokens`` total weight
    (a single item heavier than the budget goes alone). Greedy: 2,500 items at 1,000 make
    1,000 + 1,000 + 500."""
    batches: list[range] = []
    start, tokens = 0, 0
    for i, weight in enumerate(weights):
        count = i - start
        full = (max_documents is not None and count >= max_documents) or (
            max_tokens is not None and count > 0 and tokens + weight > max_tokens
        )
        if full:
            batches.append(range(start, i))
            start, tokens = i, 0
        tokens += weight
    if start < len(weights) or not batches:
        batches.append(range(start, len(weights)))
    return batches


def counts_tokens(spec: BackendSpec) -> bool:
    """Whether :func:`split_request` reads the documents' tokens for ``spec`` (else only their number)."""
    return spec.max_request_tokens is not None


def split_request(spec: BackendSpec, query_tokens: int, doc_tokens: Sequence[int]) -> list[range]:
    """The provider calls for one request to ``spec``'s backend, given the tokens of the query and
    of each document as sent (after truncation)."""
    if spec.max_request_tokens is None:
        if not spec.max_documents or len(doc_tokens) <= spec.max_documents:
            return [range(len(doc_tokens))]
        return plan_batches([0] * len(doc_tokens), spec.max_documents, None)
    return plan_batches([query_tokens + d for d in doc_tokens], spec.max_documents, spec.max_request_tokens)
