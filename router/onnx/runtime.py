"""Serving an exported model with onnxruntime and ``tokenizers`` only: no torch, no transformers.

An export folder (see :mod:`router.onnx.export`) holds ``model.onnx``, the model's fast tokenizer as
``tokenizer.json`` and ``manifest.json`` (what the graph computes, its inputs, the default max
length). :func:`load_exported` opens it as an :class:`OnnxCrossEncoder` or an :class:`OnnxBiEncoder`.

The work per call, in order:

1. tokenize with ``tokenizers`` (Rust, no Python per token): (query, document) pairs for a
   cross-encoder, single texts for a bi-encoder, truncated to ``max_length`` tokens including the
   special tokens; a pair is cut "longest first", as Hugging Face and sentence-transformers do;
2. plan batches (:func:`plan_batches`): with ``bucketing``, items sorted by token length and cut into
   batches of ``batch_size``, so each batch pads only to its own longest item, which is close to
   the rest; without it, batches in input order, each padded to its longest item;
3. run each batch through one ``onnxruntime.InferenceSession`` (CPU), threads and graph
   optimisation level as configured, and put the outputs back in input order.

Scores: a cross-encoder's last logit through a sigmoid (as the torch path's ``CrossEncoder`` with
``activation_fn=Sigmoid``); a bi-encoder's (cosine(query, document) + 1) / 2, pooling and
normalisation being part of the graph.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from router.onnx import MANIFEST, MODEL_FILE, TOKENIZER_FILE

__all__ = [
    "OnnxBiEncoder",
    "OnnxCrossEncoder",
    "OnnxEncoder",
    "SessionSettings",
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


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """onnxruntime session options. ``threads=None`` lets onnxruntime use one per physical core."""

    threads: int | None = None
    graph_optimization: GraphOptimization = "all"

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _LEVELS[self.graph_optimization]
        options.log_severity_level = 3  # errors only: fusion notices are noise in a service's logs
        return options


def plan_batches(lengths: Sequence[int], batch_size: int, *, bucketing: bool) -> list[list[int]]:
    """Item indices per batch. Bucketing sorts by length (stable, so equal lengths keep their order)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if bucketing else list(range(len(lengths)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return manifest


class OnnxEncoder:
    """One exported model: session, tokenizer, batching. Thread-safe (onnxruntime sessions are)."""

    kind: str = ""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        bucketing: bool = True,
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
        self.batch_size = batch_size
        self.bucketing = bucketing
        self.settings = settings or SessionSettings()
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

    def _run(self, encodings: Sequence[Encoding]) -> FloatArray:
        """The graph's first output for each encoding, in input order (rows stacked)."""
        lengths = [len(e.ids) for e in encodings]
        rows: list[FloatArray | None] = [None] * len(encodings)
        for batch in plan_batches(lengths, self.batch_size, bucketing=self.bucketing):
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
            out = np.asarray(self.session.run(None, {name: feed[name] for name in self.input_names})[0], dtype=np.float32)
            for row, i in enumerate(batch):
                rows[i] = out[row]
        if not encodings:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([r for r in rows if r is not None])


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
    return cls(folder, max_length=max_length, batch_size=batch_size, bucketing=bucketing, settings=settings)
