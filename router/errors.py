"""One exception tree for the whole router.

Every error the router raises derives from :class:`RerankRouterError`; provider and library
errors are translated at the boundary to the most specific class here with ``raise ... from exc``.

    RerankRouterError
    ├── InvalidRequestError (ValueError)      bad arguments to route_rerank(): fix the call
    │   ├── EmptyQueryError
    │   ├── QueryTooLongError
    │   ├── InvalidDocumentsError
    │   │   ├── DuplicateIdError
    │   │   └── TooManyDocumentsError
    │   ├── InvalidTopNError
    │   ├── InvalidBudgetError
    │   ├── InvalidConstraintsError
    │   └── InvalidFeedbackError              bad arguments to record_feedback()
    ├── ConfigError (ValueError)              bad configuration: fix the YAML / dict
    │   └── UnknownNameError                  a name not in a registry; lists the valid ones
    └── BackendError                          one backend call failed; the executor falls back
        ├── BackendUnavailableError           cannot be loaded or reached at all
        │   └── MissingDependencyError (ImportError)   an optional extra is not installed
        ├── BackendTimeoutError
        │   └── DeadlineExceededError         the request's own deadline cut the call
        ├── RateLimitedError                  429; carries retry_after seconds when given
        ├── AuthenticationError               401 / 403
        ├── BadRequestError                   400 / 422: the provider rejected the input
        ├── ServerError                       5xx
        ├── MalformedResponseError            wrong length, NaN scores, bad JSON, bad indices
        └── ConstraintViolationError          the executor refused a stage that breaks a hard rule

``tests/test_error_tree.py`` builds this drawing from the classes and checks that it matches.

No router error carries a credential (invariant 5): every message passes through
:func:`router.secrets.redact` when the error is built, and :func:`scrub_exception` scrubs an
error's ``__cause__`` / ``__context__`` chain, where an SDK's exception may quote the provider's
body with the key in it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from router.secrets import RedactedError, redact

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "ConfigError",
    "ConstraintViolationError",
    "DeadlineExceededError",
    "DuplicateIdError",
    "EmptyQueryError",
    "InvalidBudgetError",
    "InvalidConstraintsError",
    "InvalidDocumentsError",
    "InvalidFeedbackError",
    "InvalidRequestError",
    "InvalidTopNError",
    "MalformedResponseError",
    "MissingDependencyError",
    "QueryTooLongError",
    "RateLimitedError",
    "RerankRouterError",
    "ServerError",
    "TooManyDocumentsError",
    "UnknownNameError",
]  # the tree only (tests/test_error_tree.py); scrub_exception is imported by name

_FOREIGN_CHARS = 500
"""At most this much of a foreign exception's message is kept in a scrubbed chain."""


class RerankRouterError(Exception):
    """Base class of every error raised by rerank-router. Its message never carries a credential:
    text arguments are redacted (:func:`router.secrets.redact`) on construction."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class InvalidRequestError(RerankRouterError, ValueError):
    """The arguments of a rerank call are invalid; the message says what to fix."""


class EmptyQueryError(InvalidRequestError):
    pass


class QueryTooLongError(InvalidRequestError):
    pass


class InvalidDocumentsError(InvalidRequestError):
    pass


class DuplicateIdError(InvalidDocumentsError):
    pass


class TooManyDocumentsError(InvalidDocumentsError):
    pass


class InvalidTopNError(InvalidRequestError):
    pass


class InvalidBudgetError(InvalidRequestError):
    pass


class InvalidConstraintsError(InvalidRequestError):
    pass


class InvalidFeedbackError(InvalidRequestError):
    """``record_feedback`` got arguments it cannot store; the message says what to fix."""


class ConfigError(RerankRouterError, ValueError):
    """A configuration is invalid; the message names the field's path and what is allowed."""


class UnknownNameError(ConfigError):
    """A name is not in a registry. ``valid`` lists the names that are."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = tuple(sorted(valid))
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(self.valid)}")


class BackendError(RerankRouterError):
    """A backend call failed. ``backend`` is the configured backend name."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        self.backend = backend
        super().__init__(f"{backend}: {message}" if backend else message)


class BackendUnavailableError(BackendError):
    pass


class MissingDependencyError(BackendUnavailableError, ImportError):
    pass


class BackendTimeoutError(BackendError):
    pass


class DeadlineExceededError(BackendTimeoutError):
    """The call was cut by the request's deadline: says nothing about the backend's health."""


class RateLimitedError(BackendError):
    def __init__(self, message: str, *, backend: str = "", retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, backend=backend)


class AuthenticationError(BackendError):
    pass


class BadRequestError(BackendError):
    pass


class ServerError(BackendError):
    pass


class MalformedResponseError(BackendError):
    pass


class ConstraintViolationError(BackendError):
    """A plan's stage breaks a hard rule (license, data residency, allowed backends): the executor
    re-checks every stage before calling it and refuses, whatever policy made the plan."""


def scrub_exception(exc: BaseException, secrets: Iterable[SecretStr | str | None] = ()) -> BaseException:
    """``exc`` with its cause/context chain scrubbed in place, and returned.

    Router errors keep their class, their messages redacted again against ``secrets`` (the key
    values the caller knows); every other link becomes a :class:`~router.secrets.RedactedError`
    with the same traceback and the original's class name and redacted, shortened message."""
    seen: dict[int, BaseException] = {}
    values = list(secrets)

    def clean(link: BaseException) -> BaseException:
        done = seen.get(id(link))
        if done is not None:
            return done
        out: BaseException
        if isinstance(link, RerankRouterError | RedactedError):
            link.args = tuple(redact(a, values) if isinstance(a, str) else a for a in link.args)
            out = link
        else:
            try:
                text = str(link)
            except Exception:  # a broken __str__ must not hide the error being scrubbed
                text = ""
            name = f"{type(link).__module__}.{type(link).__qualname__}"
            out = RedactedError(name, redact(text, values)[:_FOREIGN_CHARS]).with_traceback(link.__traceback__)
            out.__suppress_context__ = link.__suppress_context__
        seen[id(link)] = out
        if link.__cause__ is not None:
            out.__cause__ = clean(link.__cause__)
        if link.__context__ is not None:
            out.__context__ = clean(link.__context__)
        return out

    return clean(exc)
