"""Composition root of the telemetry service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.telemetry.settings import TelemetrySettings
from prometheus_client import CollectorRegistry


def create_app(settings: TelemetrySettings) -> Service:
    registry = CollectorRegistry()
    health = Health("telemetry")
    infra = Infra.for_service("telemetry", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)

    async def shutdown() -> None:
        await infra.close()

    return Service("telemetry", app, settings, startup, shutdown)
