"""The lean ONNX path of the local tier: export with torch once, serve with onnxruntime + tokenizers.

- :mod:`router.onnx.export`: torch.onnx export of a cross-encoder or a sentence-transformers
  bi-encoder, optional int8 quantization, and the on-disk cache of exports (needs torch to export,
  not to look up).
- :mod:`router.onnx.runtime`: tokenization, length-bucketed batching and an onnxruntime session;
  imports neither torch nor transformers.
- ``router.backends.onnx_encoders``: the ``onnx_cross_encoder`` and ``onnx_bi_encoder`` backends.

This package imports nothing heavy itself: import the submodule you need. An export is one folder
holding these three files (and, for a graph over 2 GB, its external weights):
"""

from __future__ import annotations

__all__ = ["MANIFEST", "MODEL_FILE", "TOKENIZER_FILE"]

MODEL_FILE = "model.onnx"
"""The graph (int8 when the export is quantized)."""
TOKENIZER_FILE = "tokenizer.json"
"""The model's fast tokenizer, as ``tokenizers`` saves it."""
MANIFEST = "manifest.json"
"""What the graph computes (kind, inputs, output, pooling), max lengths, source and versions; written last."""
