"""rerank-router: per-query routing of reranking across local, self-hosted and API rerankers.

    from router import route_rerank
    result = route_rerank("what is a cross-encoder?", ["doc one", "doc two"], top_n=1)
    result.top()[0].text, result.explanation

Importing this package loads no torch, onnxruntime or provider SDK: they load on first use. It
imports nothing at all until a name is used: each public name resolves from its module on first
access (module ``__getattr__``), so ``import policies`` and ``import router.plan`` never pull the
engine in, and leaf modules can be imported in any order.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from router.api import aroute_rerank, get_default_router, record_feedback, route_rerank, set_default_router
    from router.backends.base import Availability, Backend, Scores, Usage
    from router.catalog import BackendSpec, LatencyParams, Pricing, load_catalog
    from router.config import RouterConfig, load_config
    from router.constraints import Constraints
    from router.documents import Document
    from router.engine import Router
    from router.errors import (
        AuthenticationError,
        BackendError,
        BackendTimeoutError,
        BackendUnavailableError,
        BadRequestError,
        ConfigError,
        DeadlineExceededError,
        DuplicateIdError,
        EmptyQueryError,
        InvalidBudgetError,
        InvalidConstraintsError,
        InvalidDocumentsError,
        InvalidRequestError,
        InvalidTopNError,
        MalformedResponseError,
        MissingDependencyError,
        QueryTooLongError,
        RateLimitedError,
        RerankRouterError,
        ServerError,
        TooManyDocumentsError,
        UnknownNameError,
    )
    from router.plan import Plan
    from router.request import RequestLimits
    from router.result import Explanation, RankedItem, RerankResult, StageReport

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "aroute_rerank": "router.api",
    "AuthenticationError": "router.errors",
    "Availability": "router.backends.base",
    "Backend": "router.backends.base",
    "BackendError": "router.errors",
    "BackendSpec": "router.catalog",
    "BackendTimeoutError": "router.errors",
    "BackendUnavailableError": "router.errors",
    "BadRequestError": "router.errors",
    "ConfigError": "router.errors",
    "Constraints": "router.constraints",
    "DeadlineExceededError": "router.errors",
    "Document": "router.documents",
    "DuplicateIdError": "router.errors",
    "EmptyQueryError": "router.errors",
    "Explanation": "router.result",
    "get_default_router": "router.api",
    "InvalidBudgetError": "router.errors",
    "InvalidConstraintsError": "router.errors",
    "InvalidDocumentsError": "router.errors",
    "InvalidRequestError": "router.errors",
    "InvalidTopNError": "router.errors",
    "LatencyParams": "router.catalog",
    "load_catalog": "router.catalog",
    "load_config": "router.config",
    "MalformedResponseError": "router.errors",
    "MissingDependencyError": "router.errors",
    "Plan": "router.plan",
    "Pricing": "router.catalog",
    "QueryTooLongError": "router.errors",
    "RankedItem": "router.result",
    "RateLimitedError": "router.errors",
    "record_feedback": "router.api",
    "RequestLimits": "router.request",
    "RerankResult": "router.result",
    "RerankRouterError": "router.errors",
    "route_rerank": "router.api",
    "Router": "router.engine",
    "RouterConfig": "router.config",
    "Scores": "router.backends.base",
    "ServerError": "router.errors",
    "set_default_router": "router.api",
    "StageReport": "router.result",
    "TooManyDocumentsError": "router.errors",
    "UnknownNameError": "router.errors",
    "Usage": "router.backends.base",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'router' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AuthenticationError",
    "Availability",
    "Backend",
    "BackendError",
    "BackendSpec",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "ConfigError",
    "Constraints",
    "DeadlineExceededError",
    "Document",
    "DuplicateIdError",
    "EmptyQueryError",
    "Explanation",
    "InvalidBudgetError",
    "InvalidConstraintsError",
    "InvalidDocumentsError",
    "InvalidRequestError",
    "InvalidTopNError",
    "LatencyParams",
    "MalformedResponseError",
    "MissingDependencyError",
    "Plan",
    "Pricing",
    "QueryTooLongError",
    "RankedItem",
    "RateLimitedError",
    "RequestLimits",
    "RerankResult",
    "RerankRouterError",
    "Router",
    "RouterConfig",
    "Scores",
    "ServerError",
    "StageReport",
    "TooManyDocumentsError",
    "UnknownNameError",
    "Usage",
    "__version__",
    "aroute_rerank",
    "get_default_router",
    "load_catalog",
    "load_config",
    "record_feedback",
    "route_rerank",
    "set_default_router",
]
