"""The FastAPI app every service starts from: request ids, health routes, /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from hyperinfer.runtime.health import Health
from hyperinfer.runtime.logs import request_id_var
from hyperinfer.runtime.tracing import extract_from
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_http_app(
    health: Health,
    registry: CollectorRegistry,
    lifespan: Lifespan | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with ``x-request-id``, tracing, health routes and ``/metrics``."""
    app = FastAPI(
        title=f"HyperInfer {health.service}",
        version=health.version,
        lifespan=lifespan,
        **fastapi_kwargs,
    )
    duration = Histogram(
        "hyperinfer_http_request_duration_seconds",
        "HTTP request duration by route and status",
        ["route", "method", "status"],
        registry=registry,
    )
    app.middleware("http")(_request_middleware(health.service, duration))
    _add_health_routes(app, health, registry)
    return app


def _request_middleware(
    service: str, duration: Histogram
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    tracer = trace.get_tracer(f"hyperinfer.{service}")

    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        parent = extract_from(request.headers)
        name = f"{request.method} {request.url.path}"
        try:
            with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER):
                response = await call_next(request)
        finally:
            request_id_var.reset(token)
        response.headers["x-request-id"] = request_id
        route = request.scope.get("route")
        duration.labels(
            getattr(route, "path", "unmatched"), request.method, str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response

    return middleware


def _add_health_routes(app: FastAPI, health: Health, registry: CollectorRegistry) -> None:
    @app.get("/health", tags=["health"])
    async def liveness() -> dict[str, str]:
        return {"status": "ok", "service": health.service}

    @app.get("/health/ready", tags=["health"])
    async def readiness() -> Response:
        deps = await health.readiness()
        failing = sorted(name for name, state in deps.items() if state != "ok")
        body: dict[str, Any] = {"status": "ready" if not failing else "not_ready", "checks": deps}
        if failing:
            body["failing"] = failing
        return Response(
            orjson.dumps(body), status_code=503 if failing else 200, media_type="application/json"
        )

    @app.get("/health/detailed", tags=["health"])
    async def detailed() -> dict[str, Any]:
        return await health.detailed()

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
