"""Hard constraints on where a request may be scored: license and data residency.

Constraints from the config are the floor; a request can only tighten them (``tightened``), so
an app cannot loosen an operator's on-premise or commercial-use rule by passing arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from router.errors import InvalidConstraintsError
from router.validation import validation_lines

__all__ = ["Constraints", "coerce_constraints", "license_allows_commercial_use"]

# SPDX ids whose terms allow commercial use. "proprietary" marks a closed API used under its
# provider's commercial terms. Anything CC-*-NC-* forbids it; anything else is unknown and is
# treated as not allowed for commercial requests (set `license:` in config to fix).
_COMMERCIAL_OK = frozenset({"Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "CC-BY-4.0", "proprietary"})


def license_allows_commercial_use(license_id: str) -> bool | None:
    """True or False where the license is known, None where it is not."""
    if license_id in _COMMERCIAL_OK:
        return True
    if "-NC" in license_id.upper():
        return False
    return None


class Constraints(BaseModel):
    """Per-request hard filters. Every plan and every fallback obeys them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commercial_use: bool = True
    """The request serves a commercial product: non-commercial (CC-BY-NC) or unknown licenses are out."""
    on_premise: bool = False
    """No byte of the request may leave the premises: closed APIs are out."""
    allowed_licenses: frozenset[str] | None = None
    """If set, only backends under these SPDX ids (or 'proprietary')."""
    allowed_backends: frozenset[str] | None = None
    blocked_backends: frozenset[str] = frozenset()
    allow_truncation: bool = True
    """False: reject backends whose context would cut a document or the query."""

    def tightened(self, other: Constraints) -> Constraints:
        """The stricter of the two on every field."""
        allowed_licenses = _intersect(self.allowed_licenses, other.allowed_licenses)
        allowed_backends = _intersect(self.allowed_backends, other.allowed_backends)
        return Constraints(
            commercial_use=self.commercial_use or other.commercial_use,
            on_premise=self.on_premise or other.on_premise,
            allowed_licenses=allowed_licenses,
            allowed_backends=allowed_backends,
            blocked_backends=self.blocked_backends | other.blocked_backends,
            allow_truncation=self.allow_truncation and other.allow_truncation,
        )


def _intersect(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def coerce_constraints(value: Constraints | Mapping[str, Any] | None) -> Constraints | None:
    if value is None or isinstance(value, Constraints):
        return value
    if not isinstance(value, Mapping):
        raise InvalidConstraintsError(f"constraints must be a router.Constraints or a mapping, got {type(value).__name__}")
    try:
        return Constraints.model_validate(dict(value))
    except ValidationError as exc:
        problems = "; ".join(validation_lines(exc))
    # Raised outside the handler: pydantic's own text echoes the input (maybe a secret), and it
    # must not ride along as __cause__ or __context__.
    raise InvalidConstraintsError(f"invalid constraints ({problems}); fields: {', '.join(Constraints.model_fields)}")
