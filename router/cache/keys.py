"""Cache keys: a digest of each document's text as sent for scoring, and a fingerprint of
everything about a backend that changes the score it gives.

A key is ``prefix + document digest`` (16 + 16 bytes): the prefix is a blake2b digest of the
namespace (tenant or shared), the backend's name, its fingerprint and the query. The document's
text is hashed after clipping (``limits.max_document_chars``), i.e. exactly what the backend is
sent; a backend's own truncation, template and instruction are in its fingerprint. No text is
kept: only these digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from router.backends.base import Backend

__all__ = ["DIGEST_BYTES", "SCORE_SPEC_FIELDS", "digests", "fingerprint", "key_prefix", "text_digest"]

DIGEST_BYTES = 16

# The parts of a BackendSpec that change a score (prices, limits on calls, latency and quality
# figures do not).
SCORE_SPEC_FIELDS = (
    "model",
    "provider",
    "input",
    "tokenizer_family",
    "max_tokens_per_doc",
    "max_query_tokens",
    "template",
    "score_scale",
    "logit_scale",
)

# Config fields that only change how a call is made, never what it returns. Every other field
# (model, revision, max_length, template, instruction, score_mapping, base_url, batch sizes...)
# is in the fingerprint: an unknown field invalidates rather than serves a stale score.
_OPERATIONAL_CONFIG_FIELDS = frozenset(
    {
        "spec",  # the score-changing part of the spec is read from the resolved spec itself
        "api_key_env",
        "timeout_s",
        "max_concurrency",
        "max_connections",
        "max_request_tokens",
        "transport",
        "internal_hosts",
        "threads",
        "workers",
        "export_if_missing",
        "cache_dir",
    }
)


def text_digest(text: str) -> bytes:
    # surrogatepass: a lone surrogate in a document must hash, not raise
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def digests(texts: Sequence[str]) -> tuple[bytes, ...]:
    """One digest per text, in order."""
    blake2b = hashlib.blake2b
    try:  # strict UTF-8 is surrogatepass's output for every string it can encode, and faster
        return tuple([blake2b(t.encode(), digest_size=DIGEST_BYTES).digest() for t in texts])
    except UnicodeEncodeError:
        return tuple(map(text_digest, texts))


def fingerprint(backend: Backend, version: str = "") -> str:
    """A hex digest of the backend's class, its score-changing spec fields and config fields,
    and ``version`` (config ``cache.version``: change it to drop every cached score)."""
    spec = backend.spec
    parts: dict[str, Any] = {
        "class": f"{type(backend).__module__}.{type(backend).__qualname__}",
        "spec": {name: getattr(spec, name) for name in SCORE_SPEC_FIELDS},
        "version": version,
    }
    config = getattr(backend, "config", None)
    if isinstance(config, BaseModel):
        dumped = config.model_dump(mode="json")
        parts["config"] = {k: v for k, v in dumped.items() if k not in _OPERATIONAL_CONFIG_FIELDS}
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def key_prefix(namespace: str, backend: str, backend_fingerprint: str, query: str) -> bytes:
    """The first half of every key of one (namespace, backend, query)."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for part in (namespace, backend, backend_fingerprint, query):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no two tuples hash alike
        h.update(data)
    return h.digest()
