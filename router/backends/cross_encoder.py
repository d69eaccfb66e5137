"""Local cross-encoder through sentence-transformers ``CrossEncoder`` (torch).

Scores are the model's single logit through a sigmoid: [0, 1], as ms-marco cross-encoders are
trained. Inputs longer than ``max_length`` (default: the model's own) are truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from router.backends.local import LocalModelBackend, LocalModelConfig
from router.backends.model_source import ModelSource

__all__ = ["CrossEncoderBackend", "CrossEncoderConfig"]


class CrossEncoderConfig(LocalModelConfig):
    type: Literal["cross_encoder"] = "cross_encoder"


class CrossEncoderBackend(LocalModelBackend):
    config_model = CrossEncoderConfig
    default_spec: ClassVar[dict[str, Any]] = {
        "provider": "local",
        "input": "pair",
        "max_tokens_per_doc": 512,
        "cold_start_ms": 5000,
    }

    def _load(self, source: ModelSource) -> Any:
        import torch
        from sentence_transformers import CrossEncoder

        return CrossEncoder(
            source.load_from,
            device=self.config.device,
            max_length=self.config.max_length,
            local_files_only=source.local_files_only,
            activation_fn=torch.nn.Sigmoid(),
        )

    def _score(self, model: Any, query: str, documents: Sequence[str]) -> Sequence[float]:
        if not documents:
            return []
        scores = model.predict(
            [(query, d) for d in documents],
            batch_size=self.config.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(x) for x in scores.reshape(len(documents), -1)[:, -1]]
