"""Shared machinery of in-process model backends: lazy, once-only, thread-safe loading.

The model loads on first use in a worker thread (so the event loop keeps running), under a lock
(so concurrent first calls load it once). Scoring runs in a worker thread too, at most
``max_concurrency`` at a time: on a small CPU, parallel forward passes only thrash.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from router.backends.base import Availability, Backend, Scores
from router.backends.model_source import ModelSource, resolve_model_source
from router.catalog import BackendSpec
from router.errors import BackendUnavailableError, MissingDependencyError
from router.tokens import TokenCounter, TokenizersCounter

__all__ = ["LocalModelBackend", "LocalModelConfig"]


def _quiet_loaders() -> None:
    # Weight-loading progress bars are noise in a service's logs.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class LocalModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """Hub id, local folder, or pkg:PACKAGE (see router.backends.model_source)."""
    catalog: str | None = None
    """Catalog entry to take the spec from (default: ``model``)."""
    device: str = "cpu"
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int | None = Field(None, ge=8)
    max_concurrency: int = Field(1, ge=1, le=64)
    spec: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the catalog spec (license, latency, quality, pricing, ...)."""


class LocalModelBackend(Backend):
    """Subclasses implement ``_load(source)`` and ``_score(model, query, documents)``."""

    requires: ClassVar[str] = "sentence_transformers"
    extra: ClassVar[str] = "local"

    def __init__(self, name: str, config: LocalModelConfig, spec: BackendSpec) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self._model: Any = None
        self._source: ModelSource | None = None
        self._load_error: str | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._counter: TokenCounter | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r})"

    def _resolve(self) -> ModelSource:
        if self._source is None:
            self._source = resolve_model_source(self.config.model)
        return self._source

    def availability(self) -> Availability:
        if self._model is not None:
            return Availability(True)
        if self._load_error is not None:
            return Availability(False, self._load_error)
        if importlib.util.find_spec(self.requires) is None:
            return Availability(False, f"{self.requires} is not installed: pip install 'rerank-router[{self.extra}]'")
        source = self._resolve()
        return Availability(source.available, source.reason, warm=False)

    def _ensure_loaded(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is not None:
                return self._model
            if self._load_error is not None:
                raise BackendUnavailableError(self._load_error, backend=self.name)
            if importlib.util.find_spec(self.requires) is None:
                raise MissingDependencyError(
                    f"{self.requires} is not installed: pip install 'rerank-router[{self.extra}]'", backend=self.name
                )
            source = self._resolve()
            if not source.available:
                raise BackendUnavailableError(source.reason, backend=self.name)
            try:
                self._before_load()
                self._model = self._load(source)
            except Exception as exc:  # any loader failure makes the backend unavailable, with the cause
                self._load_error = f"failed to load {self.config.model}: {type(exc).__name__}: {exc}"
                raise BackendUnavailableError(self._load_error, backend=self.name) from exc
            return self._model

    def _before_load(self) -> None:
        """Runs under the load lock before ``_load``; the default silences transformers' progress bars."""
        _quiet_loaders()

    def _load(self, source: ModelSource) -> Any:
        raise NotImplementedError

    def _score(self, model: Any, query: str, documents: Sequence[str]) -> Sequence[float]:
        raise NotImplementedError

    def _tokenizer(self, model: Any) -> Any:
        """The model's Hugging Face fast tokenizer's ``tokenizers.Tokenizer``, if any."""
        tokenizer = getattr(model, "tokenizer", None)
        return getattr(tokenizer, "backend_tokenizer", None)

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        cold = self._model is None

        def work() -> list[float]:
            model = self._ensure_loaded()
            with self._slots:
                return [float(x) for x in self._score(model, query, documents)]

        return Scores(tuple(await asyncio.to_thread(work)), cold_start=cold)

    def load(self) -> None:
        """Load now rather than on the first request (for warm-up at start)."""
        self._ensure_loaded()

    def token_counter(self) -> TokenCounter | None:
        if self._model is None:
            return None
        if self._counter is None:  # built once: copying a tokenizer costs ~20 ms, and this runs per request
            backend_tokenizer = self._tokenizer(self._model)
            if backend_tokenizer is None:
                return None
            self._counter = TokenizersCounter(self.spec.tokenizer_family, backend_tokenizer)
        return self._counter

    async def aclose(self) -> None:
        return None
