"""Serving an exported model with onnxruntime and ``tokenizers`` only: no torch, no transformers.

An export folder (see :mod:`router.onnx.export`) holds ``model.onnx``, the model's fast tokenizer as
``tokenizer.json`` and ``manifest.json`` (what the graph computes, its inputs, the default max
length). :func:`load_exported` opens it as an :class:`OnnxCrossEncoder` or an :class:`OnnxBiEncoder`.

The work per call, in order:

1. tokenize with ``tokenizers`` (Rust, no Python per token): (query, document) pairs for a
   cross-encoder, single texts for a bi-encoder, truncated to ``max_length`` tokens including the
   special tokens; a pair is cut "longest first", as Hugging Face and sentence-transformers do;
2. plan batches (:func:`plan_batches`): with ``bucketing``, items sorted by token length and cut into
   batches of at most ``batch_size`` items and ``max_batch_tokens`` padded tokens (rows x longest),
   so each batch pads only to its own longest item, which is close to the rest, and long items go
   in small batches; without it, batches of ``batch_size`` in input order, each padded to its
   longest item;
3. run the batches through one ``onnxruntime.InferenceSession`` (CPU), ``workers`` of them at once
   (concurrent ``run()`` calls, each on ``threads`` intra-op threads; onnxruntime releases the GIL),
   the costliest first, and put the outputs back in input order.

Why several batches at once rather than several threads per batch: a MiniLM-sized batch is a chain
of small GEMMs and element-wise ops, which split badly across cores within an op (every op ends at
a barrier, and one core's delay stalls the other). One worker per core, one thread each, keeps the
cores busy on whole batches. On 2 cores (MiniLM-L6 int8, 100 candidates of 64-512 tokens), against
one run at a time on two intra-op threads with batches of 32 (this module's first default): two
one-thread workers 1.1x-1.3x faster, the budget of padded tokens per batch 1.1x-1.2x on top,
1.25x-1.5x together (``benchmarks/README.md``, local tier).

Scores: a cross-encoder's last logit through a sigmoid (as the torch path's ``CrossEncoder`` with
``activation_fn=Sigmoid``); a bi-encoder's (cosine(query, document) + 1) / 2, pooling and
normalisation being part of the graph.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from router.onnx import MANIFEST, MODEL_FILE, TOKENIZER_FILE

__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "OnnxBiEncoder",
    "OnnxCrossEncoder",
    "OnnxEncoder",
    "SessionSettings",
    "available_cpus",
    "load_exported",
    "plan_batches",
]

GraphOptimization = Literal["disable", "basic", "extended", "all"]

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

FloatArray = npt.NDArray[np.float32]

DEFAULT_MAX_BATCH_TOKENS = 256
"""Padded tokens per bucketed batch. On MiniLM-L6 int8 (2 cores, two workers), budgets of 256 and 384
ran fastest at 64 tokens (1.1x over 128 or 512: bigger batches pad more, smaller ones pay the
per-run overhead) and budgets of 128-512 within 2% of each other at 256 and 512 tokens."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """onnxruntime session options, and how many batches run at once.

    ``workers``: batches in flight at once, each a ``run()`` call on the one session (``None``: one
    per CPU this process may use). ``threads``: onnxruntime's intra-op threads per run (``None``: 1
    when several workers share the cores, else onnxruntime's default, one per physical core).
    """

    threads: int | None = None
    graph_optimization: GraphOptimization = "all"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")

    def worker_count(self) -> int:
        return self.workers if self.workers is not None else available_cpus()

    def intra_op_threads(self) -> int | None:
        """Threads per run; None: onnxruntime's default."""
        if self.threads is not None:
            return self.threads
        return 1 if self.worker_count() > 1 else None

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        threads = self.intra_op_threads()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _LEVELS[self.graph_optimization]
        options.log_severity_level = 3  # errors only: fusion notices are noise in a service's logs
        return options


def plan_batches(lengths: Sequence[int], batch_size: int, *, bucketing: bool, max_tokens: int | None = None) -> list[list[int]]:
    """Item indices per batch.

    Bucketing sorts by length (stable, so equal lengths keep their order) and closes a batch at
    ``batch_size`` items or when the next item would take its padded size (rows x longest length)
    over ``max_tokens`` (an item longer than that goes alone). Without bucketing: ``batch_size``
    items at a time in input order (``max_tokens`` does not apply).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not bucketing:
        return [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Sorted ascending, so item i is the batch's longest once added.
        if batch and (len(batch) == batch_size or (max_tokens is not None and (len(batch) + 1) * lengths[i] > max_tokens)):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return manifest


class OnnxEncoder:
    """One exported model: session, tokenizer, batching, and a pool of ``workers`` threads that run
    batches (started on first use, shared by concurrent callers, so they never oversubscribe the
    cores). Thread-safe (onnxruntime sessions are)."""

    kind: str = ""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        bucketing: bool = True,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        settings: SessionSettings | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder)
        if self.manifest.get("kind") != self.kind:
            raise ValueError(f"{self.folder} holds a {self.manifest.get('kind')!r} export, not {self.kind!r}")
        limit = int(self.manifest["max_position_length"])
        self.max_length = int(max_length if max_length is not None else self.manifest["max_length"])
        if not 2 < self.max_length <= limit:
            raise ValueError(f"max_length {self.max_length} is outside this model's range (3..{limit})")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1")
        self.batch_size = batch_size
        self.bucketing = bucketing
        self.max_batch_tokens = max_batch_tokens
        self.settings = settings or SessionSettings()
        self.workers = self.settings.worker_count()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.session = ort.InferenceSession(
            str(self.folder / MODEL_FILE), self.settings.session_options(), providers=["CPUExecutionProvider"]
        )
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._pad_id = int(self.manifest.get("pad_token_id", 0))
        # The serving tokenizer truncates; a copy counts tokens without truncation (see token_counter).
        self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first", direction="right")

    def __repr__(self) -> str:
        quantize = self.manifest.get("quantize", "none")
        return f"{type(self).__name__}({str(self.folder)!r}, quantize={quantize!r}, max_length={self.max_length})"

    def close(self) -> None:
        """Stop the batch workers' threads (a later call starts them again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-batch")
            return self._pool

    def _run_batch(self, encodings: Sequence[Encoding], lengths: Sequence[int], batch: Sequence[int]) -> FloatArray:
        width = max(lengths[i] for i in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, i in enumerate(batch):
            e = encodings[i]
            n = lengths[i]
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return np.asarray(self.session.run(None, {name: feed[name] for name in self.input_names})[0], dtype=np.float32)

    def _run(self, encodings: Sequence[Encoding]) -> FloatArray:
        """The graph's first output for each encoding, in input order (rows stacked)."""
        if not encodings:
            return np.zeros((0, 0), dtype=np.float32)
        lengths = [len(e.ids) for e in encodings]
        batches = plan_batches(lengths, self.batch_size, bucketing=self.bucketing, max_tokens=self.max_batch_tokens)
        outputs: list[FloatArray]
        if self.workers > 1 and len(batches) > 1:
            # Costliest first (rows x longest), so the last batches to finish are small ones.
            batches.sort(key=lambda b: len(b) * max(lengths[i] for i in b), reverse=True)
            outputs = list(self._executor().map(lambda b: self._run_batch(encodings, lengths, b), batches))
        else:
            outputs = [self._run_batch(encodings, lengths, b) for b in batches]
        result = np.empty((len(encodings), outputs[0].shape[1]), dtype=np.float32)
        for batch, out in zip(batches, outputs, strict=True):
            result[batch] = out
        return result


class OnnxCrossEncoder(OnnxEncoder):
    """A sequence-classification cross-encoder: one score per (query, document) pair."""

    kind = "cross_encoder"

    def encode(self, query: str, documents: Sequence[str]) -> list[Encoding]:
        encodings: list[Encoding] = self.tokenizer.encode_batch([(query, d) for d in documents])
        return encodings

    def logits(self, query: str, documents: Sequence[str]) -> FloatArray:
        """Raw logits, shape (len(documents), num_labels)."""
        if not documents:
            return np.zeros((0, int(self.manifest.get("num_labels", 1))), dtype=np.float32)
        return self._run(self.encode(query, documents))

    def score(self, query: str, documents: Sequence[str]) -> npt.NDArray[np.float64]:
        """sigmoid(last logit) per document, on [0, 1]."""
        logits = self.logits(query, documents).astype(np.float64)
        if not len(documents):
            return np.zeros(0, dtype=np.float64)
        result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logits[:, -1]))
        return result


class OnnxBiEncoder(OnnxEncoder):
    """A sentence-transformers bi-encoder: pooled (and, if the model says so, normalised) embeddings."""

    kind = "bi_encoder"

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        encodings: list[Encoding] = self.tokenizer.encode_batch(list(texts))
        return encodings

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embeddings, shape (len(texts), dim); unit length when the manifest says ``normalize``."""
        if not texts:
            return np.zeros((0, int(self.manifest.get("dimension", 0))), dtype=np.float32)
        return self._run(self.encode(texts))

    def score(self, query: str, documents: Sequence[str]) -> npt.NDArray[np.float64]:
        """(cosine(query, document) + 1) / 2 per document, on [0, 1]."""
        if not documents:
            return np.zeros(0, dtype=np.float64)
        vectors = self.embed([query, *documents]).astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        cosine = vectors[1:] @ vectors[0]
        result: npt.NDArray[np.float64] = np.clip((cosine + 1.0) / 2.0, 0.0, 1.0)
        return result


def load_exported(
    folder: str | Path,
    *,
    max_length: int | None = None,
    batch_size: int = 32,
    bucketing: bool = True,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    settings: SessionSettings | None = None,
) -> OnnxCrossEncoder | OnnxBiEncoder:
    """Open an export folder as the encoder its manifest names."""
    kind = _read_manifest(Path(folder)).get("kind")
    cls: type[OnnxCrossEncoder] | type[OnnxBiEncoder]
    if kind == OnnxCrossEncoder.kind:
        cls = OnnxCrossEncoder
    elif kind == OnnxBiEncoder.kind:
        cls = OnnxBiEncoder
    else:
        raise ValueError(f"{folder}: unknown export kind {kind!r}")
    return cls(
        folder,
        max_length=max_length,
        batch_size=batch_size,
        bucketing=bucketing,
        max_batch_tokens=max_batch_tokens,
        settings=settings,
    )
