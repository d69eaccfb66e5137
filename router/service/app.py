"""The ASGI app: one :class:`Gateway` (one Router) per worker process, behind Starlette routes.

Starlette rather than FastAPI: the gateway validates bodies itself (each wire format has its own
error shape, and limits are checked while the body is read), so FastAPI's request models and
OpenAPI layer would only add work on the hot path; Starlette is the routing and request/response
layer FastAPI itself runs on.

Every rerank request goes: auth -> rpm -> body (byte limit while reading) -> parse -> document
limits -> model (pin or policy; tenant rules) -> budgets (headers, tenant defaults and maxima) ->
admission -> spend reservation -> ``Router.arerank`` -> settle -> answer in the caller's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policies.registry import create_policy
from router import Router, RouterConfig, load_config
from router.constraints import Constraints, coerce_constraints
from router.documents import normalize_documents
from router.errors import InvalidRequestError, RerankRouterError, TooManyDocumentsError
from router.result import Explanation, RankedItem, RerankResult
from router.scores import NO_SCORES_NOTE
from router.service.admission import Admission, Overloaded
from router.service.config import ServiceConfig
from router.service.metrics import CONTENT_TYPE, Metrics
from router.service.pinning import PinnablePolicy, pinned
from router.service.tenants import CapRefused, Reservation, Tenant, Tenants
from router.service.wire import WireError, WireFormat, WireRequest, document_texts, error_body, parse, render
from router.validation import config_error

__all__ = ["Gateway", "create_app"]

access_log = logging.getLogger("rerank_router.access")
_log = logging.getLogger("rerank_router.service")

HEADER_BUDGET = "x-latency-budget-ms"
HEADER_COST = "x-max-cost-usd"
HEADER_REQUEST_ID = "x-request-id"


def service_config(config: RouterConfig) -> ServiceConfig:
    """The config's ``service:`` block, validated (an empty one when absent)."""
    try:
        return ServiceConfig.model_validate(config.service or {})
    except ValidationError as exc:
        raise config_error(exc, prefix="service") from None


def _header_number(request: Request, name: str) -> float | None:
    raw = request.headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise WireError(400, f"header {name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise WireError(400, f"header {name} must be a finite number >= 0")
    return value


def _ascii(text: str, limit: int = 200) -> str:
    return text.encode("ascii", "replace").decode()[:limit].replace("\r", " ").replace("\n", " ")


@dataclass
class _Exchange:
    """What one request's answer, metrics and access-log line need to know."""

    request_id: str
    fmt: WireFormat
    tenant: str = "-"
    status: int = 200
    budget: float | None = None
    result: RerankResult | None = None


class Gateway:
    """What one worker holds: the Router, tenants, admission, metrics, and readiness."""

    def __init__(self, config: RouterConfig | str | None = None, *, router: Router | None = None) -> None:
        self.config = router.config if router is not None else load_config(config)
        self.service = service_config(self.config)
        self._given_router = router
        self.router: Router | None = router
        self.tenants: Tenants | None = None
        self.redis: Any = None
        self.admission = Admission(
            self.service.admission.max_in_flight, self.service.admission.max_queue, self.service.admission.min_work_ms
        )
        self.metrics = Metrics() if self.service.metrics else None
        self.ready = False
        self.draining = False
        self.warm_status: dict[str, str] = {}
        self._warm_task: asyncio.Task[None] | None = None
        self.valid_models: tuple[str, ...] = ()
        self._model_alias: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------------
    async def startup(self) -> None:
        shared = self.config.shared_state
        prefix = "rerank-router"
        url: Any = ""
        if shared is not None:
            from router.resilience.redis_store import redis_client

            prefix, url = shared.key_prefix, shared.url()
            self.redis = redis_client(url)
        self.tenants = Tenants(self.service, client=self.redis, prefix=prefix, url=url)
        if self.router is None:
            base = create_policy(self.config.policy.name, self.config.policy.params)
            self.router = Router(self.config, policy=PinnablePolicy(base))
        elif not isinstance(self.router.policy, PinnablePolicy):
            self.router.policy = PinnablePolicy(self.router.policy)
        names = list(self.router.backends)
        models: dict[str, list[str]] = {}
        for name, backend in self.router.backends.items():
            models.setdefault(backend.spec.model, []).append(name)
        self._model_alias = {m: b[0] for m, b in models.items() if len(b) == 1 and m not in names}
        self.valid_models = ("auto", *names, *sorted(self._model_alias))
        self._warm_task = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        assert self.router is not None
        try:
            self.warm_status = await asyncio.to_thread(self.router.warm_up)
        except Exception as exc:  # readiness stays 503 and says why
            self.warm_status = {"warm_up": type(exc).__name__}
            _log.warning("warm-up failed: %s", type(exc).__name__)
            return
        self.ready = True

    async def shutdown(self) -> None:
        """After the server stopped taking requests and in-flight ones finished: flush the decision log."""
        self.draining = True
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
        if self.router is not None:
            await self.router.adrain()
            if self._given_router is None:
                # aclose on this loop, where the Router's clients live (close() would use its own thread).
                await self.router.aclose()
        if self.redis is not None:
            self.redis.close()

    def readiness(self) -> tuple[int, dict[str, Any]]:
        if self.draining:
            return 503, {"status": "draining"}
        if not self.ready:
            return 503, {"status": "warming", "backends": self.warm_status}
        if self.redis is not None:
            try:
                self.redis.ping()
            except Exception as exc:
                return 503, {"status": "shared state unreachable", "error": type(exc).__name__}
        return 200, {
            "status": "ready",
            "backends": self.warm_status,
            "in_flight": self.admission.in_flight,
            "pid": str(os.getpid()),
        }

    # -- one request -----------------------------------------------------------------------------------
    def _pin(self, model: str | None, tenant: Tenant) -> str | None:
        if model is None or model in ("", "auto"):
            return None
        assert self.router is not None
        backend = model if model in self.router.backends else self._model_alias.get(model)
        if backend is None:
            raise WireError(
                404, f"unknown model {model!r}; valid models: {', '.join(self.valid_models)}", valid=self.valid_models
            )
        why = _tenant_refuses(tenant, backend, self.router)
        if why is not None:
            raise WireError(403, f"tenant {tenant.name} may not use {model}: {why}")
        return backend

    def _budgets(self, request: Request, wire: WireRequest, tenant: Tenant) -> tuple[float | None, float | None]:
        budget = wire.latency_budget_ms if wire.latency_budget_ms is not None else _header_number(request, HEADER_BUDGET)
        cost = wire.max_cost_usd if wire.max_cost_usd is not None else _header_number(request, HEADER_COST)
        for name, value in (("latency_budget_ms", budget), ("max_cost_usd", cost)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise WireError(400, f"{name} must be a number")
        b = tenant.config.budgets
        budget = b.latency_ms if budget is None else budget
        cost = b.max_cost_usd if cost is None else cost
        if budget is None:
            budget = self.config.budgets.latency_ms
        if b.latency_ms_limit is not None:
            budget = b.latency_ms_limit if budget is None else min(float(budget), b.latency_ms_limit)
        if b.max_cost_usd_limit is not None:
            cost = b.max_cost_usd_limit if cost is None else min(float(cost), b.max_cost_usd_limit)
        return (None if budget is None else float(budget)), (None if cost is None else float(cost))

    def _check_limits(self, wire: WireRequest) -> None:
        limits = self.service.limits
        max_docs = limits.max_documents or self.config.limits.max_documents
        if len(wire.documents) > max_docs:
            raise WireError(422, f"{len(wire.documents)} documents is over the limit of {max_docs} per request")
        if limits.max_document_chars is not None:
            for i, text in enumerate(document_texts(wire)):
                if len(text) > limits.max_document_chars:
                    raise WireError(
                        422, f"documents[{i}] has {len(text)} characters, over the limit of {limits.max_document_chars}"
                    )

    async def _reserve(
        self, tenant: Tenant, wire: WireRequest, pin: str | None, constraints: Any, budget: float | None, cost: float | None
    ) -> tuple[Reservation | None, float | None]:
        """Hold the planned cost in the tenant's caps; the ceiling becomes the amount held."""
        if not tenant.capped:
            return None, cost
        assert self.router is not None
        headroom = tenant.headroom()
        if headroom is not None and headroom <= 0:
            exhausted = tenant.exhausted()  # which cap, and whether it is only unreadable (Redis down)
            if exhausted is not None:
                raise WireError(exhausted.status, exhausted.message, retry_after=exhausted.retry_after)
        ceiling = headroom if cost is None else min(cost, headroom if headroom is not None else cost)
        with pinned(pin):
            plan = self.router.plan(
                wire.query,
                wire.documents,
                top_n=wire.top_n,
                latency_budget_ms=budget,
                max_cost_usd=ceiling,
                constraints=constraints,
            )
        predicted = plan.primary.estimate.cost_usd or 0.0
        held = tenant.reserve(predicted)
        if isinstance(held, CapRefused):
            raise WireError(held.status, held.message, retry_after=held.retry_after)
        return held, (predicted if predicted > 0 else ceiling)

    async def handle(self, request: Request, fmt: WireFormat, route: str) -> Response:
        """One rerank request on a compatible or native endpoint: errors in ``fmt``'s shape, then
        metrics and one access-log line whatever happened."""
        started = time.perf_counter()
        x = _Exchange(request_id=_ascii(request.headers.get(HEADER_REQUEST_ID) or uuid.uuid4().hex, 128), fmt=fmt)
        headers: dict[str, str] = {"x-request-id": x.request_id}
        try:
            try:
                return await self._serve(request, route, x, headers)
            except TooManyDocumentsError as exc:
                raise WireError(422, str(exc)) from None
            except InvalidRequestError as exc:
                raise WireError(400 if x.fmt != "tei" else 422, str(exc)) from None
        except WireError as exc:
            x.status = exc.status
            if exc.retry_after is not None:
                headers["retry-after"] = str(exc.retry_after)
            return _json(error_body(x.fmt, exc), exc.status, headers)
        except Exception as exc:
            x.status = 500
            _log.exception("request %s failed: %s", x.request_id, type(exc).__name__)
            return _json(error_body(x.fmt, WireError(500, f"internal error ({type(exc).__name__})")), 500, headers)
        finally:
            self._observe(route, x, time.perf_counter() - started)

    async def _serve(self, request: Request, route: str, x: _Exchange, headers: dict[str, str]) -> Response:
        """auth -> body -> parse -> rpm -> limits -> model -> budgets -> admission -> spend -> route."""
        if self.router is None or self.tenants is None or not self.ready:
            raise WireError(503, "the gateway is starting (models warming up)", retry_after=1)
        tenant = self.tenants.authenticate(request.headers.get("authorization"))
        if tenant is None:
            raise WireError(401, "missing or invalid API key (send Authorization: Bearer <key>)")
        x.tenant = tenant.name
        body = await read_body(request, self.service.limits.max_body_bytes)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise WireError(400 if x.fmt == "cohere" else 422, "the body is not valid JSON") from None
        if route == "/rerank" and isinstance(payload, Mapping) and "texts" in payload:
            x.fmt = "tei"
        wire = parse(x.fmt, payload)
        if tenant.rpm is not None and (wait := tenant.rpm.hit()) is not None:
            raise WireError(429, f"tenant {tenant.name}: over {tenant.rpm.rpm} requests per minute", retry_after=wait)
        self._check_limits(wire)
        pin = self._pin(wire.model, tenant)
        constraints = tenant.constraints
        if wire.constraints is not None:
            requested = coerce_constraints(wire.constraints)
            constraints = constraints.tightened(requested) if requested is not None else constraints
        if pin is not None and self.config.experiment is not None:  # arm policies ignore the pin: hold them to it
            constraints = constraints.tightened(Constraints(allowed_backends=frozenset({pin})))
        budget, cost = self._budgets(request, wire, tenant)
        x.budget = budget
        try:
            waited_ms = await self.admission.acquire(budget)
        except Overloaded as exc:
            full = "queue full" in exc.reason
            if self.metrics is not None:
                self.metrics.rejected.labels("queue_full" if full else "deadline").inc()
            if self.service.admission.on_overload == "degrade" and not full:
                x.result = retriever_order(x.request_id, wire, f"admission: {exc.reason}; kept the caller's order")
                return self._answer(x.fmt, x.result, wire, pin, headers)
            raise WireError(503, f"overloaded: {exc.reason}", retry_after=self.service.admission.retry_after_s) from None
        slot_started = time.perf_counter()
        reservation: Reservation | None = None
        try:
            if budget is not None:
                budget = max(1.0, budget - waited_ms)
            reservation, cost = await self._reserve(tenant, wire, pin, constraints, budget, cost)
            if self.metrics is not None:
                self.metrics.in_flight.inc()
            try:
                with pinned(pin):
                    x.result = await self.router.arerank(
                        wire.query,
                        wire.documents,
                        top_n=wire.top_n,
                        latency_budget_ms=budget,
                        max_cost_usd=cost,
                        constraints=constraints,
                        context={**wire.context, "request_id": x.request_id, "tenant": tenant.name},
                        cache=wire.cache,
                    )
            finally:
                if self.metrics is not None:
                    self.metrics.in_flight.dec()
        finally:
            self.admission.release((time.perf_counter() - slot_started) * 1000)
            if reservation is not None:
                # what was billed; a failure after reserving counts the plan (it may have been billed)
                reservation.settle(x.result.actual_cost_usd if x.result is not None else None)
        return self._answer(x.fmt, x.result, wire, pin, headers)

    def _observe(self, route: str, x: _Exchange, elapsed: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(route, x.status, x.tenant, elapsed, x.result, x.budget)
        if self.service.access_log and access_log.isEnabledFor(logging.INFO):
            r = x.result
            access_log.info(
                "request_id=%s tenant=%s route=%s status=%d backends=%s cost_usd=%s degraded=%s latency_ms=%.1f",
                x.request_id,
                x.tenant,
                route,
                x.status,
                ">".join(r.backends) if r is not None and r.backends else "-",
                "-" if r is None or r.actual_cost_usd is None else f"{r.actual_cost_usd:.6f}",
                "-" if r is None else str(r.degraded).lower(),
                elapsed * 1000,
            )

    def _answer(
        self, fmt: WireFormat, result: RerankResult, wire: WireRequest, pin: str | None, headers: dict[str, str]
    ) -> Response:
        served = ">".join(result.backends) or "none"
        model = ">".join(result.models) or (pin or "auto")
        headers.update(
            {
                "x-request-id": _ascii(result.request_id, 128),
                "x-rerank-router-backends": served,
                "x-rerank-router-cost-usd": "unknown" if result.actual_cost_usd is None else f"{result.actual_cost_usd:.6f}",
                "x-rerank-router-degraded": "true" if result.degraded else "false",
                "x-rerank-router-latency-ms": f"{result.latency_ms:.1f}",
            }
        )
        if result.degraded and result.degraded_reason:
            headers["x-rerank-router-degraded-reason"] = _ascii(result.degraded_reason)
        if result.arm is not None:
            headers["x-rerank-router-arm"] = _ascii(result.arm)
        return _json(render(fmt, result, wire, model), 200, headers)

    async def feedback(self, request: Request) -> Response:
        try:
            if self.router is None or self.tenants is None:
                raise WireError(503, "the gateway is starting", retry_after=1)
            tenant = self.tenants.authenticate(request.headers.get("authorization"))
            if tenant is None:
                raise WireError(401, "missing or invalid API key (send Authorization: Bearer <key>)")
            body = await read_body(request, self.service.limits.max_body_bytes)
            try:
                payload = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                raise WireError(400, "the body is not valid JSON") from None
            if not isinstance(payload, Mapping) or not isinstance(payload.get("request_id"), str):
                raise WireError(400, "the body must be an object with a request_id string")
            try:
                self.router.record_feedback(
                    payload["request_id"], clicked=payload.get("clicked") or (), relevance=payload.get("relevance")
                )
            except RerankRouterError as exc:
                raise WireError(400, str(exc)) from None
            return _json({"status": "accepted", "request_id": payload["request_id"]}, 202, {})
        except WireError as exc:
            return _json(error_body("native", exc), exc.status, {})


def _tenant_refuses(tenant: Tenant, backend: str, router: Router) -> str | None:
    """Why ``tenant``'s forced constraints rule ``backend`` out, or None."""
    c = tenant.constraints
    spec = router.backends[backend].spec
    if c.allowed_backends is not None and backend not in c.allowed_backends:
        return "not among the tenant's allowed backends"
    if backend in c.blocked_backends:
        return "blocked for the tenant"
    if c.on_premise and spec.data_leaves_premises:
        return "the tenant is on-premise only and this backend sends data off the premises"
    if c.commercial_use and spec.commercial_use is not True:
        return f"license {spec.license} does not allow commercial use"
    if c.allowed_licenses is not None and spec.license not in c.allowed_licenses:
        return f"license {spec.license} is not among the tenant's allowed licenses"
    return None


def retriever_order(request_id: str, wire: WireRequest, reason: str) -> RerankResult:
    """A degraded answer without scoring: every document in the caller's order."""
    docs = normalize_documents(wire.documents)
    items = tuple(RankedItem(index=i, id=d.id, score=None, text=d.text, metadata=d.metadata) for i, d in enumerate(docs))
    top_n = len(items) if wire.top_n is None else min(wire.top_n, len(items))
    return RerankResult(
        request_id=request_id,
        items=items,
        top_n=top_n,
        stages=(),
        latency_ms=0.0,
        predicted_latency_ms=0.0,
        predicted_cost_usd=0.0,
        actual_cost_usd=0.0,
        degraded=True,
        degraded_reason=reason,
        explanation=Explanation(
            policy="admission", chosen="retriever order", reason=reason, fallbacks=(), options=(), notes=(NO_SCORES_NOTE,)
        ),
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (Content-Length or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WireError(413, f"the body is {declared} bytes, over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WireError(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(payload: Any, status: int, headers: Mapping[str, str]) -> Response:
    return Response(orjson.dumps(payload), status_code=status, headers=dict(headers), media_type="application/json")


def create_app(
    config: RouterConfig | str | None = None, *, router: Router | None = None, gateway: Gateway | None = None
) -> Starlette:
    """The gateway as an ASGI app; ``app.state.gateway`` is its :class:`Gateway`.

    ``router``: serve this Router (e.g. one over ``router.testing.FakeBackend``s) instead of
    building one from ``config`` at startup. The Router is built and warmed in the worker that
    serves, after startup: readiness answers 503 until it is warm.
    """
    gw = gateway or Gateway(config, router=router)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    def rerank(fmt: WireFormat, path: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await gw.handle(request, fmt, path)

        return endpoint

    async def liveness(request: Request) -> Response:
        return _json({"status": "alive"}, 200, {})

    async def readiness(request: Request) -> Response:
        status, payload = await asyncio.to_thread(gw.readiness) if gw.redis is not None else gw.readiness()
        return _json(payload, status, {})

    async def metrics(request: Request) -> Response:
        if gw.metrics is None:
            return _json({"error": "metrics are off (service.metrics: false)"}, 404, {})
        if gw.router is not None:
            gw.metrics.breakers(gw.router.breaker_states())
        data = await asyncio.to_thread(gw.metrics.exposition) if gw.metrics.multiprocess else gw.metrics.exposition()
        return Response(data, media_type=CONTENT_TYPE)

    routes = [
        Route("/v2/rerank", rerank("cohere", "/v2/rerank"), methods=["POST"]),
        Route("/v1/rerank", rerank("jina", "/v1/rerank"), methods=["POST"]),
        Route("/rerank", rerank("jina", "/rerank"), methods=["POST"]),
        Route("/v1/route_rerank", rerank("native", "/v1/route_rerank"), methods=["POST"]),
        Route("/v1/feedback", gw.feedback, methods=["POST"]),
        Route("/health/liveness", liveness, methods=["GET"]),
        Route("/health/readiness", readiness, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app
