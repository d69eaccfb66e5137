"""Shared validation: pydantic errors as :class:`~router.errors.ConfigError`, bounded echoes, strict YAML.

Every config block, profile and policy's params is validated by pydantic; the message names each
field's dotted path and what is allowed, e.g. ``backends.minilm.cross_encoder.batch_size: Input
should be greater than or equal to 1 (got 0)``.

Whatever an error message repeats back from its input goes through :func:`echo`, which bounds
both the text and the work of making it: a YAML anchor bomb is a tiny file that expands to
millions of nodes, and must not become a megabyte message (or a minute spent building one).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BeforeValidator, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from router.errors import ConfigError
from router.secrets import is_secret_field, redact

__all__ = [
    "ECHO_CHARS",
    "MAX_ERROR_LINES",
    "MAX_YAML_NODES",
    "FiniteFloat",
    "HttpUrl",
    "NotBool",
    "check_http_url",
    "config_error",
    "echo",
    "load_yaml",
    "validation_lines",
]

ECHO_CHARS = 200
"""At most this much of an offending value is echoed back (a YAML anchor bomb is megabytes)."""
MAX_ERROR_LINES = 20
"""At most this many field errors are listed in one message; the rest are counted."""
MAX_YAML_NODES = 1_000_000
"""A YAML document that expands (aliases followed) to more nodes than this is refused before it is
built: real configs have thousands; an anchor bomb has billions."""


class _Repr(reprlib.Repr):
    """reprlib's bounded repr, credentials redacted in every string before it is cut."""

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(redact(x[: ECHO_CHARS * 4]), level)


_repr = _Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 8
_repr.maxstring = _repr.maxother = _repr.maxlong = ECHO_CHARS


def echo(value: object) -> str:
    """``repr(value)`` for an error message: at most about :data:`ECHO_CHARS` long, credentials
    redacted (router.secrets) before it is cut, so none is left half-shown.

    Nested containers are abbreviated while the repr is built, so the cost is bounded too (an
    anchor bomb's repr would be megabytes)."""
    if isinstance(value, str):
        head = redact(value[: ECHO_CHARS * 4])
        if len(value) <= ECHO_CHARS:
            return repr(head)
        return repr(head[:ECHO_CHARS]) + f"... ({len(value):,} characters)"
    return _cap(redact(_repr.repr(value)))


def _cap(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


def validation_lines(
    exc: ValidationError,
    prefix: str = "",
    *,
    show_input: bool = False,
    hint: Callable[[ErrorDetails], str] | None = None,
) -> list[str]:
    """One ``path: message`` line per error, the path under ``prefix`` (e.g. ``policy.params``).

    ``show_input`` appends ``(got ...)`` for scalar inputs; ``hint`` may append text per error.
    Each line is bounded (pydantic's own messages can embed the input), and past
    :data:`MAX_ERROR_LINES` errors the rest are counted, not listed."""
    lines = []
    errors = exc.errors(include_url=False, include_context=False)
    for error in errors[:MAX_ERROR_LINES]:
        path = _cap(".".join(str(p) for p in error["loc"]))
        line = f"{prefix}.{path}: " if prefix and path else f"{prefix or path}: "
        line += _cap(redact(error["msg"][: ECHO_CHARS * 4]))
        extra = hint(error) if hint is not None else ""
        if extra:
            line += f" ({extra})"
        elif is_secret_field(error["loc"]):  # never echo what was given in a secret-bearing field
            if error["loc"] and error["loc"][-1] == "api_key":
                line += " (the value is not shown; keys go in the environment: name the variable in api_key_env)"
        elif show_input and error["type"] != "missing" and not isinstance(error["input"], dict):
            line += f" (got {echo(error['input'])})"
        lines.append(line)
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"... and {len(errors) - MAX_ERROR_LINES:,} more errors")
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


# -- field types ------------------------------------------------------------------------------------


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads True as 1.0; in a config (``latency_ms: yes``) that is a mistake.
    if isinstance(value, bool):
        raise PydanticCustomError("not_bool", "Input should be a number, not a boolean")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


NotBool = BeforeValidator(_not_bool)
"""Refuses a boolean where a number belongs: ``Annotated[int, NotBool]``."""
FiniteFloat = Annotated[float, NotBool, AfterValidator(_finite)]
"""A float that is neither a boolean nor NaN nor infinite (add bounds with ``Field``)."""


def check_http_url(value: str) -> str:
    """``value`` if it is an ``http://`` or ``https://`` URL with a host; else ValueError."""
    problem = None
    if not isinstance(value, str):
        problem = f"is {type(value).__name__}"
    elif any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problem = "contains whitespace or control characters"
    else:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0-65535)
        except ValueError:
            problem = "is not a URL"
        else:
            if parts.scheme not in ("http", "https"):
                problem = "has no http:// or https:// scheme"
            elif not parts.hostname:
                problem = "has no host"
    if problem is not None:
        raise ValueError(f"base_url must be an http:// or https:// URL such as http://gpu-box:8000; {echo(value)} {problem}")
    return value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]
"""A ``base_url``: http(s), with a host."""


# -- YAML -------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently).

    Keys brought in by a merge (``<<: *base``) may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {echo(key)} twice (first on line {first}); give each key once",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias followed, counted without building anything."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done or not children:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and documents past :data:`MAX_YAML_NODES`.

    Raises :class:`yaml.YAMLError` (callers add the file name)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"it expands to more than {MAX_YAML_NODES:,} values once aliases are followed (an anchor/alias bomb?)"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("it is nested too deeply") from None
    finally:
        loader.dispose()
