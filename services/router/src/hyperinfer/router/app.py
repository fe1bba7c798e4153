"""Composition root of the router service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.router.settings import RouterSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from prometheus_client import CollectorRegistry


def create_app(settings: RouterSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("router")
    infra = Infra.for_service("router", settings, nats=True, redis=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)

    async def shutdown() -> None:
        await infra.close()

    return Service("router", app, settings, startup, shutdown)
