"""Export a Hugging Face cross-encoder or a sentence-transformers bi-encoder to ONNX, cached.

Why our own exporter: sentence-transformers' ONNX backend needs optimum, which does not install
beside sentence-transformers 6 (see ../shared/facts/providers.md, Library facts). This path needs
torch, transformers and onnx to *export*, and only onnxruntime + tokenizers to *serve*
(:mod:`router.onnx.runtime`).

What is exported
    cross_encoder: ``AutoModelForSequenceClassification`` (BERT, MiniLM, XLM-R class ...); output
        ``logits`` (batch, num_labels); the runtime takes sigmoid(last logit).
    bi_encoder: a sentence-transformers folder's transformer with its pooling (mean, CLS or max, from
        ``1_Pooling/config.json``) and its L2 normalisation (when ``modules.json`` lists Normalize)
        *inside the graph*; output ``embeddings`` (batch, dim). One graph to run, and int8
        quantization leaves pooling and normalisation in fp32 (it only touches MatMul weights).

How
    ``torch.onnx.export(..., dynamo=False)``: the TorchScript exporter, which needs no onnxscript;
    opset 17; dynamic batch and sequence axes on every input; the model traced with eager attention
    (a plain MatMul/Softmax pattern that onnxruntime's graph optimiser fuses into its Attention
    kernel) on a padded two-item batch. Each export is checked against torch on that batch.
    ``quantize="int8"``: ``onnxruntime.quantization.quantize_dynamic``, int8 weights per output
    channel on MatMul nodes only (per-tensor int8 lost too much: cosine to fp32 down to 0.90 on
    MiniLM-L6; per channel, about 0.99), activations quantized at run time.

Cache
    ``cache_root()``: ``$RERANK_ROUTER_CACHE/onnx``, else ``~/.cache/rerank-router/onnx``. One folder
    per export, named ``<model>-<key>-<tools>``: ``key`` hashes the model's content (the sha256 of its
    files; for a Hugging Face snapshot folder, its revision), the export options and this module's
    ``EXPORT_FORMAT``; ``tools`` hashes the versions of torch, transformers, onnx and onnxruntime.
    A new library version makes a new export where the exporter is installed; where it is not (a
    serving image without torch) any export with the same ``key`` is used. Exports are written to a
    temporary folder and renamed into place, so concurrent exporters never leave a half-written
    folder: the first rename wins, the others drop their copy and use it.

Command line (export at build time, serve without torch)::

    python -m router.onnx.export MODEL --kind cross_encoder|bi_encoder [--quantize int8] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from router.onnx import MANIFEST, MODEL_FILE, TOKENIZER_FILE

__all__ = [
    "EXPORT_FORMAT",
    "ExportOptions",
    "cache_root",
    "ensure_export",
    "export_model",
    "exporter_available",
    "find_export",
    "local_folder",
    "model_fingerprint",
]

EXPORT_FORMAT = 1
"""Bump when the exported graph or the folder layout changes: old cache entries are then ignored."""

ExportKind = Literal["cross_encoder", "bi_encoder"]
Quantize = Literal["none", "int8"]

_EXPORTER_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime")
# Files that make up a model's content; the rest (README, other runtimes' exports) does not count.
_CONTENT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")
_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}
_SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")
_FP32_CHECK_ATOL = 1e-3


@dataclass(frozen=True, slots=True)
class ExportOptions:
    kind: ExportKind
    quantize: Quantize = "none"
    opset: int = 17


def cache_root() -> Path:
    base = os.environ.get("RERANK_ROUTER_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "rerank-router"
    return root / "onnx"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def exporter_available(quantize: Quantize = "none") -> str | None:
    """None when the exporter's libraries are installed (torch and transformers; onnx too for int8);
    else what is missing and how to install it."""
    needed = ("torch", "transformers", "onnx") if quantize == "int8" else ("torch", "transformers")
    missing = [p for p in needed if _package_version(p) is None]
    if not missing:
        return None
    return (
        f"exporting to ONNX needs {' and '.join(missing)}, not installed: pip install 'rerank-router[local,onnx]' "
        "(or export where they are, with `python -m router.onnx.export`, into a cache this process reads)"
    )


def _tools_key() -> str:
    versions = {p: _package_version(p) for p in _EXPORTER_PACKAGES}
    return _digest(versions)[:8]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _content_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in _SKIP_DIRS for part in relative.parts[:-1]):
            continue
        if path.is_file() and path.suffix in _CONTENT_SUFFIXES:
            files.append(path)
    return files


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Memoised on (path, size, mtime): a process hashes a model's weights once (~75 ms per 90 MB here).
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_fingerprint(folder: str | Path) -> str:
    """``rev:<commit>`` for a Hugging Face snapshot folder, else ``sha256:<hash of its content files>``."""
    folder = Path(folder)
    snapshot = _SNAPSHOT.search(str(folder.resolve()) + "/")
    if snapshot is not None:
        return f"rev:{snapshot.group(1)}"
    h = hashlib.sha256()
    for path in _content_files(folder):
        stat = path.stat()
        h.update(f"{path.relative_to(folder).as_posix()}\0{_file_sha256(str(path), stat.st_size, stat.st_mtime_ns)}\0".encode())
    return f"sha256:{h.hexdigest()}"


def local_folder(load_from: str, *, local_files_only: bool = True) -> Path:
    """The folder holding a model: ``load_from`` itself, or a hub id's snapshot in the Hugging Face
    cache (downloaded first unless ``local_files_only``; other runtimes' exports are skipped)."""
    folder = Path(load_from).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            load_from,
            local_files_only=local_files_only,
            ignore_patterns=["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "*.gguf"],
        )
    )


def _slug(reference: str) -> str:
    name = reference[4:] if reference.startswith("pkg:") else reference
    name = Path(name).name if Path(name).expanduser().is_dir() else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:60] or "model"


def _entry_prefix(reference: str, folder: Path, options: ExportOptions) -> str:
    key = _digest({"format": EXPORT_FORMAT, "model": model_fingerprint(folder), "options": asdict(options)})
    return f"{_slug(reference)}-{key[:16]}"


def _complete(entry: Path) -> bool:
    return (entry / MANIFEST).is_file() and (entry / MODEL_FILE).is_file() and (entry / TOKENIZER_FILE).is_file()


def find_export(reference: str, folder: str | Path, options: ExportOptions, cache_dir: str | Path | None = None) -> Path | None:
    """The cached export of the model in ``folder``, or None. Needs no torch.

    Where the exporter is installed, only an export made with the installed versions counts;
    elsewhere any export of the same model content and options does (the most recent).
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    prefix = _entry_prefix(reference, Path(folder), options)
    if exporter_available(options.quantize) is None:
        entry = root / f"{prefix}-{_tools_key()}"
        return entry if _complete(entry) else None
    if not root.is_dir():
        return None
    candidates = [p for p in root.glob(f"{prefix}-*") if _complete(p)]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def ensure_export(reference: str, folder: str | Path, options: ExportOptions, cache_dir: str | Path | None = None) -> Path:
    """The cached export, exporting (with torch) first if there is none."""
    found = find_export(reference, folder, options, cache_dir)
    return found if found is not None else export_model(reference, folder, options, cache_dir)


def export_model(reference: str, folder: str | Path, options: ExportOptions, cache_dir: str | Path | None = None) -> Path:
    """Export the model in ``folder`` into the cache (atomically) and return the entry's folder."""
    problem = exporter_available(options.quantize)
    if problem is not None:
        from router.errors import MissingDependencyError

        raise MissingDependencyError(problem)
    folder = Path(folder)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / f"{_entry_prefix(reference, folder, options)}-{_tools_key()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name[:40]}-", dir=root))
    try:
        manifest = _export_to(tmp, reference, folder, options)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _complete(entry):  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


# --- the torch side (imported only when exporting) -------------------------------------------------


def _max_position_length(config: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    # RoBERTa / XLM-R count positions from padding_idx + 1: two fewer usable positions.
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}:
        positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return positions


@dataclass(frozen=True, slots=True)
class _BiEncoderLayout:
    transformer: Path
    """The folder of the Transformer module (the model folder itself, or e.g. ``0_Transformer``)."""
    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None


def _sentence_transformers_layout(folder: Path) -> _BiEncoderLayout:
    """Transformer folder, pooling, normalisation and max length from a sentence-transformers folder."""
    transformer, pooling, normalize = folder, "mean", False
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for m in modules:
            kind = str(m.get("type", ""))
            if kind.endswith(".Transformer"):
                transformer = folder / m.get("path", "")
            elif kind.endswith("Pooling"):
                config_file = folder / m.get("path", "") / "config.json"
                if config_file.is_file():
                    config = json.loads(config_file.read_text(encoding="utf-8"))
                    modes = [k for k in ("cls_token", "mean_tokens", "max_tokens") if config.get(f"pooling_mode_{k}")]
                    others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in modes]
                    if len(modes) != 1 or others:
                        raise ValueError(f"unsupported pooling in {config_file}: {config}")
                    pooling = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}[modes[0]]
    max_seq_length = None
    for candidate in (transformer / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if candidate.is_file():
            value = json.loads(candidate.read_text(encoding="utf-8")).get("max_seq_length")
            max_seq_length = int(value) if value else None
            break
    return _BiEncoderLayout(transformer, pooling, normalize, max_seq_length)


def _export_to(out: Path, reference: str, folder: Path, options: ExportOptions) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    layout = _sentence_transformers_layout(folder) if options.kind == "bi_encoder" else None
    model_dir = str(layout.transformer if layout is not None else folder)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    backend_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise ValueError(f"{reference}: no fast (Rust) tokenizer, which serving without transformers needs")
    config = AutoConfig.from_pretrained(model_dir)
    position_limit = _max_position_length(config)
    model_max = int(getattr(tokenizer, "model_max_length", position_limit) or position_limit)
    max_length = min(position_limit, model_max)
    input_names: list[str] = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    extra: dict[str, Any] = {}

    class Wrapper(torch.nn.Module):
        """Positional inputs in ``input_names`` order -> the one output the runtime reads."""

        def __init__(self, inner: torch.nn.Module, head: Any) -> None:
            super().__init__()
            self.inner = inner
            self.head = head

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(input_names, inputs, strict=True))
            out: torch.Tensor = self.head(self.inner(**named), named["attention_mask"])
            return out

    if options.kind == "cross_encoder":
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
        output_name = "logits"
        wrapper = Wrapper(model, lambda out, mask: out.logits)
        extra["num_labels"] = int(model.config.num_labels)
    else:
        assert layout is not None
        pooling, normalize = layout.pooling, layout.normalize
        if layout.max_seq_length is not None:
            max_length = min(max_length, layout.max_seq_length)
        model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
        output_name = "embeddings"

        def pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
            hidden = out.last_hidden_state
            if pooling == "cls":
                vectors = hidden[:, 0]
            elif pooling == "max":
                vectors = hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(vectors, p=2.0, dim=1) if normalize else vectors

        wrapper = Wrapper(model, pool)
        extra.update(pooling=pooling, normalize=normalize, dimension=int(model.config.hidden_size))
    model.eval()
    wrapper.eval()

    # A padded batch of two items of different lengths, so the trace keeps the attention mask.
    sample = tokenizer(
        ["what is the capital of france", "a query"],
        ["paris is the capital and the largest city of france", "a short passage"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] for n in input_names)
    # int8: the fp32 graph (and any external weights of a large one) goes to a subfolder, dropped after.
    fp32_path = out / "fp32" / MODEL_FILE if options.quantize == "int8" else out / MODEL_FILE
    fp32_path.parent.mkdir(exist_ok=True)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in input_names}
    axes[output_name] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            wrapper,
            args,
            str(fp32_path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=options.opset,
            do_constant_folding=True,
            dynamo=False,
        )
        expected = wrapper(*args).numpy()
    if options.quantize == "int8":
        _quantize_int8(fp32_path, out / MODEL_FILE)
        shutil.rmtree(fp32_path.parent)
    session = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: sample[n].numpy() for n in input_names})[0]
    max_abs_diff = float(np.abs(np.asarray(got) - expected).max())
    if options.quantize == "none" and not max_abs_diff <= _FP32_CHECK_ATOL:
        raise RuntimeError(f"ONNX export of {reference} differs from torch by {max_abs_diff:.3g} (> {_FP32_CHECK_ATOL})")
    backend_tokenizer.save(str(out / TOKENIZER_FILE))
    return {
        "format": EXPORT_FORMAT,
        "kind": options.kind,
        "quantize": options.quantize,
        "opset": options.opset,
        "source": reference,
        "fingerprint": model_fingerprint(folder),
        "model_type": getattr(config, "model_type", ""),
        "inputs": input_names,
        "output": output_name,
        "max_length": max_length,
        "max_position_length": position_limit,
        "pad_token_id": int(tokenizer.pad_token_id or 0),
        "check_max_abs_diff": max_abs_diff,
        "versions": {p: _package_version(p) for p in _EXPORTER_PACKAGES},
        "export_seconds": round(time.perf_counter() - started, 3),
        **extra,
    }


class _DropPreprocessingHint(logging.Filter):
    """quantize_dynamic logs a hint to run its static-quantization pre-processing on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = sum(p.stat().st_size for p in source.parent.iterdir()) > 1_800_000_000  # protobuf's 2 GB limit
    hint = _DropPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=large,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(hint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a model to ONNX into the rerank-router cache; print its folder.")
    parser.add_argument("model", help="hub id, local folder, or pkg:PACKAGE")
    parser.add_argument("--kind", choices=["cross_encoder", "bi_encoder"], default="cross_encoder")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: {cache_root()}")
    args = parser.parse_args(argv)
    from router.backends.model_source import resolve_model_source

    source = resolve_model_source(args.model)
    if not source.available:
        parser.error(source.reason)
    options = ExportOptions(kind=args.kind, quantize=args.quantize)
    print(
        ensure_export(
            args.model, local_folder(source.load_from, local_files_only=source.local_files_only), options, args.cache_dir
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
