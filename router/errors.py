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
"""

from __future__ import annotations

from collections.abc import Iterable

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
]


class RerankRouterError(Exception):
    """Base class of every error raised by rerank-router."""


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
