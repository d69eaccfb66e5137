"""Local cross-encoder and bi-encoder on the lean ONNX path: onnxruntime + tokenizers at serve time.

``onnx_cross_encoder`` scores like ``cross_encoder`` (sigmoid of the last logit) and
``onnx_bi_encoder`` like ``bi_encoder`` ((cosine + 1) / 2), from a graph exported once with torch
(:mod:`router.onnx.export`) and cached on disk. Serving imports neither torch nor transformers; a
process that finds its export in the cache loads in well under a second.

Config, besides the usual ``model`` / ``catalog`` / ``batch_size`` / ``max_length`` / ``spec``:

- ``quantize``: ``int8`` (default: dynamic int8 weights, the fast CPU setting) or ``none`` (fp32,
  the torch path's scores to about 1e-6);
- ``bucketing``: sort items by token length and pad per batch (default true), batches of at most
  ``batch_size`` items and ``max_batch_tokens`` padded tokens (default 256; null: no token cap);
- ``workers``: batches run at once, each on its own thread (default: one per CPU the process may
  use); ``threads``: onnxruntime's intra-op threads per batch (default: 1 with several workers,
  else one per physical core); ``graph_optimization``: onnxruntime's level (default ``all``).
  Several one-thread batches at once beat one batch on every core here (router/onnx/runtime.py);
- ``export_if_missing``: export on first load when the cache has no export (default true; needs
  torch: ``pip install 'rerank-router[local]'``). False: the backend is unavailable until an export
  is there (``python -m router.onnx.export MODEL --kind ... --quantize ...``);
- ``cache_dir``: where exports live (default ``$RERANK_ROUTER_CACHE/onnx`` or
  ``~/.cache/rerank-router/onnx``).

Catalog: the tier has its own entries, ``<model id>@onnx-int8`` and ``<model id>@onnx``, with a
latency model fitted on this path (``benchmarks/calibrate_onnx.py``). ``catalog`` (or ``model``)
names the model; when the catalog holds the tier's entry for it, that entry is used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from router.backends.base import Availability
from router.backends.local import LocalModelBackend, LocalModelConfig
from router.backends.model_source import ModelSource
from router.catalog import BackendSpec, load_catalog
from router.errors import BackendUnavailableError, MissingDependencyError

# The runtime's default, repeated here so that validating a config imports no onnxruntime
# (tests/test_onnx_tier.py checks the two agree).
DEFAULT_MAX_BATCH_TOKENS = 256

__all__ = [
    "OnnxBiEncoderBackend",
    "OnnxBiEncoderConfig",
    "OnnxCrossEncoderBackend",
    "OnnxCrossEncoderConfig",
    "OnnxEncoderConfig",
    "tier_catalog_key",
]

# How long a "no export in the cache" answer is trusted before looking again (another process may export).
_NEGATIVE_LOOKUP_TTL_S = 30.0


def tier_catalog_key(model: str, quantize: str) -> str:
    """The catalog entry of this tier for ``model``: ``<model>@onnx-int8`` or ``<model>@onnx``."""
    return f"{model}@onnx-int8" if quantize == "int8" else f"{model}@onnx"


class OnnxEncoderConfig(LocalModelConfig):
    device: Literal["cpu"] = "cpu"
    quantize: Literal["none", "int8"] = "int8"
    bucketing: bool = True
    threads: int | None = Field(None, ge=1, le=256)
    workers: int | None = Field(None, ge=1, le=256)
    max_batch_tokens: int | None = Field(DEFAULT_MAX_BATCH_TOKENS, ge=1)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    export_if_missing: bool = True
    cache_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _tier_catalog_entry(cls, data: Any) -> Any:
        """``catalog`` -> ``<catalog or model>@onnx[-int8]`` when the catalog has that entry."""
        if isinstance(data, dict):
            base = data.get("catalog") or data.get("model")
            if isinstance(base, str):
                key = tier_catalog_key(base, str(data.get("quantize", "int8")))
                if key in load_catalog():
                    data = {**data, "catalog": key}
        return data


class OnnxCrossEncoderConfig(OnnxEncoderConfig):
    type: Literal["onnx_cross_encoder"] = "onnx_cross_encoder"


class OnnxBiEncoderConfig(OnnxEncoderConfig):
    type: Literal["onnx_bi_encoder"] = "onnx_bi_encoder"


class _OnnxEncoderBackend(LocalModelBackend):
    requires: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str] = "onnx"
    kind: ClassVar[Literal["cross_encoder", "bi_encoder"]]
    config: OnnxEncoderConfig

    def __init__(self, name: str, config: OnnxEncoderConfig, spec: BackendSpec) -> None:
        if config.max_length is not None and "max_tokens_per_doc" not in config.spec:
            spec = spec.model_copy(update={"max_tokens_per_doc": config.max_length})
        super().__init__(name, config, spec)
        self._export: Path | None = None
        self._looked_at = -float("inf")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r}, quantize={self.config.quantize!r})"

    def _options(self) -> Any:
        from router.onnx.export import ExportOptions

        return ExportOptions(kind=self.kind, quantize=self.config.quantize)

    def _cached_export(self) -> Path | None:
        """The export in the cache, if any (a miss is remembered for a while: a lookup hashes the model)."""
        if self._export is not None or time.monotonic() - self._looked_at < _NEGATIVE_LOOKUP_TTL_S:
            return self._export
        from router.onnx.export import find_export, local_folder

        source = self._resolve()
        self._looked_at = time.monotonic()
        try:
            folder = local_folder(source.load_from, local_files_only=True)
        except Exception:  # a hub model not downloaded yet: certainly not exported
            return None
        self._export = find_export(self.config.model, folder, self._options(), self.config.cache_dir)
        return self._export

    def _export_problem(self) -> tuple[type[BackendUnavailableError], str] | None:
        """Why this backend cannot get an export, or None when it has one or can make one."""
        from router.onnx.export import exporter_available

        missing = exporter_available(self.config.quantize)
        if missing is None and self.config.export_if_missing:
            return None
        if self._cached_export() is not None:
            return None
        if not self.config.export_if_missing:
            return BackendUnavailableError, (
                f"no ONNX export of {self.config.model} (quantize={self.config.quantize}) in the cache and "
                f"export_if_missing is false: run `python -m router.onnx.export {self.config.model} --kind {self.kind} "
                f"--quantize {self.config.quantize}`"
            )
        return MissingDependencyError, f"{self.config.model} is not exported yet, and {missing}"

    def availability(self) -> Availability:
        base = super().availability()
        if not base.ok or self._model is not None:
            return base
        problem = self._export_problem()
        return base if problem is None else Availability(False, problem[1], warm=False)

    def _ensure_loaded(self) -> Any:
        if self._model is None and self._load_error is None and self._resolve().available:
            problem = self._export_problem()
            if problem is not None:
                error, message = problem
                raise error(message, backend=self.name)
        return super()._ensure_loaded()

    def _before_load(self) -> None:
        return None  # nothing to silence, and importing transformers would cost ~0.7 s

    def _load(self, source: ModelSource) -> Any:
        from router.onnx.export import ensure_export, local_folder
        from router.onnx.runtime import SessionSettings, load_exported

        export = self._cached_export()
        if export is None:
            folder = local_folder(source.load_from, local_files_only=source.local_files_only)
            export = self._export = ensure_export(self.config.model, folder, self._options(), self.config.cache_dir)
        return load_exported(
            export,
            max_length=self.config.max_length,
            batch_size=self.config.batch_size,
            bucketing=self.config.bucketing,
            max_batch_tokens=self.config.max_batch_tokens,
            settings=SessionSettings(
                threads=self.config.threads, graph_optimization=self.config.graph_optimization, workers=self.config.workers
            ),
        )

    def _score(self, model: Any, query: str, documents: Sequence[str]) -> Sequence[float]:
        if not documents:
            return []
        return [float(x) for x in model.score(query, documents)]

    def _tokenizer(self, model: Any) -> Any:
        return model.tokenizer


class OnnxCrossEncoderBackend(_OnnxEncoderBackend):
    config_model = OnnxCrossEncoderConfig
    kind = "cross_encoder"
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "local",
        "input": "pair",
        "max_tokens_per_doc": 512,
        # Import onnxruntime + tokenizers and open a cached export: ~0.5 s measured here (MiniLM-L6,
        # 2 cores). A first export adds ~10 s (torch import and trace) on top.
        "cold_start_ms": 1000,
    }


class OnnxBiEncoderBackend(_OnnxEncoderBackend):
    config_model = OnnxBiEncoderConfig
    kind = "bi_encoder"
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "local",
        "input": "single",
        "max_tokens_per_doc": 256,
        "cold_start_ms": 1000,  # as for the cross-encoder
    }
