"""Local bi-encoder through sentence-transformers ``SentenceTransformer``.

Score = (cosine(query, document) + 1) / 2, so it lies on [0, 1] like the other backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from router.backends.local import LocalModelBackend, LocalModelConfig
from router.backends.model_source import ModelSource

__all__ = ["BiEncoderBackend", "BiEncoderConfig"]


class BiEncoderConfig(LocalModelConfig):
    type: Literal["bi_encoder"] = "bi_encoder"


class BiEncoderBackend(LocalModelBackend):
    config_model = BiEncoderConfig
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "local",
        "input": "single",
        "max_tokens_per_doc": 256,
        "cold_start_ms": 5000,
    }

    def _load(self, source: ModelSource) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(source.load_from, device=self.config.device, local_files_only=source.local_files_only)
        if self.config.max_length is not None:
            model.max_seq_length = self.config.max_length
        return model

    def _score(self, model: Any, query: str, documents: Sequence[str]) -> Sequence[float]:
        if not documents:
            return []
        embeddings = model.encode(
            [query, *documents],
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        cosine = embeddings[1:] @ embeddings[0]
        return [float((c + 1.0) / 2.0) for c in cosine]
