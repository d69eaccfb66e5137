"""One way to turn a pydantic ValidationError into a :class:`~router.errors.ConfigError`.

Every config block, profile and policy's params is validated by pydantic; the message names each
field's dotted path and what is allowed, e.g. ``backends.minilm.cross_encoder.batch_size: Input
should be greater than or equal to 1 (got 0)``.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from router.errors import ConfigError
from router.secrets import is_secret_field, redact

__all__ = ["config_error", "validation_lines"]

ECHO_CHARS = 200
"""At most this much of an offending value is echoed back (a YAML anchor bomb is megabytes)."""


def _echo(value: object) -> str:
    text = repr(value)
    head = redact(text[: ECHO_CHARS * 4])  # redacted before it is cut, so no credential is left half-shown
    return head if len(text) <= ECHO_CHARS else head[:ECHO_CHARS] + f"... ({len(text):,} characters)"


def validation_lines(
    exc: ValidationError,
    prefix: str = "",
    *,
    show_input: bool = False,
    hint: Callable[[ErrorDetails], str] | None = None,
) -> list[str]:
    """One ``path: message`` line per error, the path under ``prefix`` (e.g. ``policy.params``).

    ``show_input`` appends ``(got ...)`` for scalar inputs; ``hint`` may append text per error."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        line = f"{prefix}.{path}: " if prefix and path else f"{prefix or path}: "
        line += error["msg"]
        extra = hint(error) if hint is not None else ""
        if extra:
            line += f" ({extra})"
        elif is_secret_field(error["loc"]):  # never echo what was given in a secret-bearing field
            if error["loc"] and error["loc"][-1] == "api_key":
                line += " (the value is not shown; keys go in the environment: name the variable in api_key_env)"
        elif show_input and error["type"] != "missing" and not isinstance(error["input"], dict):
            line += f" (got {_echo(error['input'])})"
        lines.append(line)
    return lines


def config_error(
    exc: ValidationError,
    header: str = "invalid config",
    prefix: str = "",
    *,
    show_input: bool = False,
    hint: Callable[[ErrorDetails], str] | None = None,
) -> ConfigError:
    """``header:`` then one indented line per error (see :func:`validation_lines`)."""
    lines = validation_lines(exc, prefix, show_input=show_input, hint=hint)
    return ConfigError(f"{header}:\n  " + "\n  ".join(lines))
