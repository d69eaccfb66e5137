"""Keeping secrets out of what the router says: errors, reprs, explanations, exception chains.

Invariant 5: API keys come from the environment (or a secret store), never from what the router
prints. Three tools, used where text leaves the router:

- :func:`redact` removes what looks like a credential (URL userinfo, ``sk-``/``pa-``-style keys,
  ``Bearer``/``Basic`` tokens, ``api_key=...`` pairs) and any known secret values from a text. Every
  :class:`~router.errors.RerankRouterError` passes its message through it, so no router error
  carries a credential-shaped string whoever built the message.
- :func:`router.errors.scrub_exception` does the same for an error's ``__cause__`` / ``__context__`` chain: a
  foreign link (an SDK's exception that may quote the provider's body, with the key in it) is
  replaced by a :class:`RedactedError` holding its class name and its redacted message.
- :func:`env_var_name` validates a config field that names an environment variable
  (``api_key_env``, ``redis_url_env``): a name, not a value pasted there by mistake. It never
  echoes what it rejects.

Secret-bearing config fields (:func:`is_secret_field`) are never echoed by a config error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

__all__ = [
    "REDACTED",
    "RedactedError",
    "env_var_name",
    "is_secret_field",
    "looks_like_a_key",
    "redact",
    "safe_url",
    "url_without_credentials",
]

REDACTED = "***"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME_MAX = 128

# What a credential looks like in free text. Each pattern keeps its first group and hides the rest.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/@'\"<>]+@"), rf"\1{REDACTED}@"),
    # Authorization header values (Basic only when it is base64, not the word "Basic ...")
    (re.compile(r"\b([Bb]earer\s+)[A-Za-z0-9._~+/\-]{8,}=*"), rf"\1{REDACTED}"),
    (re.compile(r"\b(Basic\s+)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}=*"), rf"\1{REDACTED}"),
    # Provider key shapes: OpenAI-style sk-, Voyage pa-, Hugging Face hf_, GitHub, Slack, Jina, AWS ids
    (
        re.compile(
            r"\b(?:sk|pk|rk|pa|sess)[-_][A-Za-z0-9_\-]{8,}"
            r"|\b(?:hf|ghp|gho|ghs|glpat|jina|xai)_[A-Za-z0-9_\-]{8,}"
            r"|\bxox[abprs]-[A-Za-z0-9\-]{8,}"
            r"|\bAKIA[0-9A-Z]{16}\b"
        ),
        REDACTED,
    ),
    # key=value and "key": "value" pairs (query strings, JSON and form bodies)
    (
        re.compile(
            r"""((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd|pwd|token)"""
            r"""(?:\s*=\s*|["']\s*:\s*["']?))[^\s"'&,;}]+""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
)

# Config field names whose values are secrets, or where a secret gets pasted by mistake (*_env,
# headers, the shared_state block whose Redis URL may carry a password).
_SECRET_FIELD = re.compile(
    r"(?:.*[_-])?(?:api[_-]?key|key|token|secret|password|passwd|credentials?|auth|authorization|"
    r"headers?|cookie|redis_url|dsn|url_env|key_env|env)|shared_state",
    re.IGNORECASE,
)


def _values(secrets: Iterable[SecretStr | str | None]) -> list[str]:
    out = []
    for s in secrets:
        value = s.get_secret_value() if isinstance(s, SecretStr) else s
        if value and len(value) >= 4:  # a one-letter "secret" would shred every message
            out.append(value)
    return sorted(set(out), key=len, reverse=True)


def redact(text: str, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """``text`` with every known secret value and every credential-shaped substring as ``***``."""
    for value in _values(secrets):
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def looks_like_a_key(value: str) -> bool:
    """True for a string that is more likely a pasted credential than a name: a provider key shape,
    or a long token mixing upper- and lower-case letters and digits with no separator."""
    if redact(value) != value:
        return True
    return (
        len(value) >= 24
        and "_" not in value
        and any(c.islower() for c in value)
        and any(c.isupper() for c in value)
        and any(c.isdigit() for c in value)
    )


def env_var_name(value: str | None) -> str | None:
    """A pydantic validator for a field naming an environment variable. Rejects anything that is
    not a name (``[A-Za-z_][A-Za-z0-9_]*``) or that looks like a key, without echoing it."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value) or len(value) > _ENV_NAME_MAX:
        raise ValueError(
            "must be the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not its value "
            "(the value given is not shown: if it is a secret, rotate it and put it in the environment)"
        )
    if looks_like_a_key(value):
        raise ValueError(
            "looks like a key, not the name of an environment variable (not shown: if it is a "
            "secret, rotate it, put it in the environment and name the variable here)"
        )
    return value


def url_without_credentials(value: str) -> str:
    """A pydantic validator for a URL field (``base_url``): no ``user:password@`` in it, since a URL
    is shown in reprs, explanations and errors. Never echoes what it rejects."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value  # not a URL at all: the field's own checks say so
    if "@" in parts.netloc:
        raise ValueError(
            "must not carry credentials (user:password@): give the key in the environment variable "
            "named by api_key_env (the URL given is not shown)"
        )
    return value


def is_secret_field(loc: Iterable[object]) -> bool:
    """True if a config location (pydantic ``loc``) is, or is inside, a secret-bearing field."""
    return any(isinstance(part, str) and _SECRET_FIELD.fullmatch(part) for part in loc)


def safe_url(url: str) -> str:
    """``url`` without its userinfo (``user:password@``) and without its query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedactedError(Exception):
    """Stands in for a foreign exception in a router error's chain
    (:func:`router.errors.scrub_exception`): its class and its message with credentials removed
    (the original may quote a provider's body, key included)."""

    def __init__(self, original_type: str, message: str) -> None:
        self.original_type = original_type
        super().__init__(f"{original_type}: {message}" if message else original_type)
