"""Composition root of the ingress service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from prometheus_client import CollectorRegistry


def create_app(settings: IngressSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("ingress")
    infra = Infra.for_service("ingress", settings, nats=True, redis=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)

    async def shutdown() -> None:
        await infra.close()

    return Service("ingress", app, settings, startup, shutdown)
