"""The backend registry: config ``type:`` -> backend class, and building a backend from its config.

``BACKEND_TYPES`` maps a config ``type:`` to its class; each class carries its pydantic
``config_model`` and the ``default_spec`` used when the model is not in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from router.backends.base import Availability, Backend, Scores, Usage
from router.backends.bi_encoder import BiEncoderBackend, BiEncoderConfig
from router.backends.cohere import CohereBackend, CohereConfig
from router.backends.cross_encoder import CrossEncoderBackend, CrossEncoderConfig
from router.backends.http import HttpBackend, HttpConfig
from router.backends.lexical import LexicalBackend, LexicalConfig
from router.backends.onnx_encoders import (
    OnnxBiEncoderBackend,
    OnnxBiEncoderConfig,
    OnnxCrossEncoderBackend,
    OnnxCrossEncoderConfig,
)
from router.backends.replay import ReplayBackend, ReplayConfig
from router.backends.voyage import VoyageBackend, VoyageConfig
from router.catalog import BackendSpec, load_catalog, merge_spec

__all__ = [
    "BACKEND_TYPES",
    "Availability",
    "Backend",
    "BackendConfig",
    "Scores",
    "Usage",
    "build_backend",
]

BACKEND_TYPES: Mapping[str, Any] = {
    "cross_encoder": CrossEncoderBackend,
    "bi_encoder": BiEncoderBackend,
    "onnx_cross_encoder": OnnxCrossEncoderBackend,
    "onnx_bi_encoder": OnnxBiEncoderBackend,
    "lexical": LexicalBackend,
    "cohere": CohereBackend,
    "voyage": VoyageBackend,
    "http": HttpBackend,
    "replay": ReplayBackend,
}

BackendConfig = Annotated[
    CrossEncoderConfig
    | BiEncoderConfig
    | OnnxCrossEncoderConfig
    | OnnxBiEncoderConfig
    | LexicalConfig
    | CohereConfig
    | VoyageConfig
    | HttpConfig
    | ReplayConfig,
    Field(discriminator="type"),
]


def build_backend(name: str, config: Any) -> Backend:
    cls = BACKEND_TYPES[config.type]
    key = getattr(config, "catalog", None) or getattr(config, "model", None) or name
    base: BackendSpec | None = load_catalog().get(key)
    if base is None:
        base = merge_spec(None, key, cls.default_spec, where=f"backends.{name}")
    spec = merge_spec(base, key, config.spec, where=f"backends.{name}.spec")
    backend: Backend = cls(name, config, spec)
    return backend
