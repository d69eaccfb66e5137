"""Calibration profiles: measured values a config points to (``profile: path.yaml``), read once at load.

A profile is written by ``rerank-router calibrate`` (router.offline.calibration)::

    version: 1
    backends:                          # per-backend spec overrides, merged over catalog and `spec:`
      minilm-bi-encoder:
        latency: {overhead_ms: 212.0, per_token_ms: 0.41, source: "rerank-router calibrate ..."}
        quality: {web: 0.642}
    thresholds:                        # calibrated numbers, named by what they gate
      cascade.saturation_k: 20         # the constrained policy's cascade curve
      cascade.adaptive_margin: 0.08
    learned: {...}                     # a fitted policies.learned model
    adaptive: {...}                    # a fitted policies.adaptive escalation model
    scores:                            # score calibration per backend and domain ("*": any domain)
      bi-encoder:
        web: {method: isotonic, x: [0.41, 0.63, ...], y: [0.0, 0.12, ...], n: ..., source: "...", chosen_by: "..."}
        "*": {method: platt, a: ..., b: ..., n: ..., source: "..."}
      rankgpt after bi-encoder:        # rankgpt's scores as a cascade's later stage after bi-encoder
        web: {method: isotonic, ...}
    meta: {created: "...", notes: [...]}

Config reads the file once and hands the policies plain values (:func:`policy_params`): policies
read no files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.errors import ConfigError
from router.validation import config_error, load_yaml

__all__ = [
    "ANY_DOMAIN",
    "PROFILE_THRESHOLDS",
    "PROFILE_VERSION",
    "Profile",
    "ScoreCalibration",
    "after_key",
    "load_profile",
    "policy_params",
]

PROFILE_VERSION = 1

PROFILE_THRESHOLDS: Mapping[str, str] = {
    "cascade.saturation_k": "saturation_k",
    "cascade.adaptive_margin": "adaptive_margin",
    "cascade.expected_escalation": "expected_escalation",
}
"""Profile threshold name -> the constrained policy's param (policies.cascade.CascadeParams) it sets."""


ANY_DOMAIN = "*"
"""The ``scores:`` key of a calibration used for every domain without one of its own."""


def after_key(backend: str, previous: str) -> str:
    """The ``scores:`` key of ``backend``'s calibration as a cascade stage that ran after ``previous``
    (it then scores only what ``previous`` ranked highest, which changes what a score means)."""
    return f"{backend} after {previous}"


class ScoreCalibration(BaseModel):
    """A fitted map from one backend's [0, 1] score to P(relevant) (applied by router.scores).

    ``isotonic``: piecewise-linear interpolation through the points ``(x[i], y[i])`` (``x`` and
    ``y`` non-decreasing), flat beyond the ends. ``platt``: ``sigmoid(a * score + b)``, ``a >= 0``.
    Fitted by ``rerank-router calibrate --scores`` (router.offline.score_fit), which records how.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["isotonic", "platt"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float | None = None
    b: float | None = None
    n: int = Field(0, ge=0)
    """(score, relevant) pairs it was fitted on."""
    queries: int = Field(0, ge=0)
    relevant_grade: int | None = None
    """Documents judged at least this grade counted as relevant."""
    source: str = ""
    chosen_by: str = ""
    """How the method was chosen (e.g. cross-validated log-loss of both)."""

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.method == "isotonic":
            if not self.x or len(self.x) != len(self.y):
                raise ValueError("isotonic: x and y must be non-empty and of the same length")
            values = (*self.x, *self.y)
            if not all(math.isfinite(v) for v in values):
                raise ValueError("isotonic: x and y must be finite")
            if any(b < a for a, b in pairwise(self.x)) or any(b < a for a, b in pairwise(self.y)):
                raise ValueError("isotonic: x and y must be non-decreasing")
            if self.y[0] < 0 or self.y[-1] > 1:
                raise ValueError("isotonic: y must lie on [0, 1]")
        else:
            if self.a is None or self.b is None or not (math.isfinite(self.a) and math.isfinite(self.b)):
                raise ValueError("platt: a and b must be given and finite")
            if self.a < 0:
                raise ValueError("platt: a must be >= 0 (a higher score may not mean less relevant)")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = PROFILE_VERSION
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Backend name -> spec overrides (latency, quality, ...), merged over catalog and config."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    learned: dict[str, Any] | None = None
    """A fitted policies.learned model."""
    adaptive: dict[str, Any] | None = None
    """A fitted policies.adaptive escalation model (router.offline.fitting.fit_adaptive)."""
    scores: dict[str, dict[str, ScoreCalibration]] = Field(default_factory=dict)
    """Backend name (or ``"<backend> after <previous stage>"``, :func:`after_key`) -> domain (or ``*``) -> its
    score calibration (router.scores)."""
    meta: dict[str, Any] = Field(default_factory=dict)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    source = Path(path)
    try:
        raw = load_yaml(source.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read profile {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {source} is not valid YAML: {exc}") from exc
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, f"invalid profile {source}", prefix="profile") from exc


def _thresholds(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in PROFILE_THRESHOLDS.items():
        if name in profile.thresholds:
            value = profile.thresholds[name]
            out[field] = round(value) if field == "saturation_k" else (None if math.isinf(value) else value)
    return out


def policy_params(name: str, params: Mapping[str, Any], profile: str | os.PathLike[str] | Profile | None) -> dict[str, Any]:
    """A policy's params with profile values filled in: what ``create_policy`` is handed.

    ``params.profile`` (a profile for this policy alone) wins over the params beside it, as a
    profile's measured spec values win over ``spec:``; the config's top-level ``profile`` only fills
    what the params leave unset. The constrained policy takes the ``cascade.*`` thresholds, the
    learned policy the ``learned:`` section as its ``model``, the adaptive policy the ``adaptive:``
    section as its ``model`` and ``cascade.saturation_k`` for its fallback (today's curve, used while
    the profile has no model). Other policies are left as given. ``profile`` may be given already
    read (config reads the top-level one once for every policy and backend).
    """
    out = dict(params)
    own = out.pop("profile", None)
    if name not in ("constrained", "learned", "adaptive"):
        if own is not None:
            out["profile"] = own  # let the policy's own params validation reject it
        return out
    for path, wins in ((own, True), (profile, False)):
        if path is None:
            continue
        found = path if isinstance(path, Profile) else load_profile(path)
        if name == "constrained":
            values = _thresholds(found)
        elif name == "adaptive":
            values = {k: v for k, v in _thresholds(found).items() if k == "saturation_k"}
            if found.adaptive is not None:
                values["model"] = found.adaptive
        else:
            if found.learned is None:
                if not wins:
                    continue
                raise ConfigError(f"profile {path} has no `learned:` section; fit one with rerank-router calibrate --fit-learned")
            values = {"model": found.learned}
        out.update(values if wins else {k: v for k, v in values.items() if k not in out})
    return out
