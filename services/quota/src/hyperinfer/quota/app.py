"""Composition root of the quota service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.quota.settings import QuotaSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from prometheus_client import CollectorRegistry


def create_app(settings: QuotaSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("quota")
    infra = Infra.for_service("quota", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)

    async def shutdown() -> None:
        await infra.close()

    return Service("quota", app, settings, startup, shutdown)
