"""The HTTP gateway, ``rerank-router serve`` (extra ``serve``): Cohere v2, Jina/vLLM, TEI and a
native endpoint in front of one Router per worker, with tenants, budgets, metrics and drain.

    router.service.config   the ``service:`` block (pydantic; no web framework)
    router.service.wire     wire formats: parse bodies, render results and errors per format
    router.service.tenants  API keys -> tenants; rpm limits and spend caps (Redis when shared)
    router.service.admission  bounded in-flight requests per worker
    router.service.pinning  ``model: <backend>`` through the ``fixed`` policy
    router.service.metrics  Prometheus families (multiprocess with several workers)
    router.service.app      the Starlette app and its per-worker Gateway
    router.service.server   uvicorn workers, SIGTERM drain

Importing this package loads no web framework: ``router.service.app`` and ``.server`` do.
"""

from router.service.config import ServiceConfig, TenantConfig

__all__ = ["ServiceConfig", "TenantConfig"]
