"""rerank-router: per-query routing of reranking across local, self-hosted and API rerankers.

    from router import route_rerank
    result = route_rerank("what is a cross-encoder?", ["doc one", "doc two"], top_n=1)
    result.top()[0].text, result.explanation

Importing this package loads no torch, onnxruntime or provider SDK: they load on first use.
"""

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
