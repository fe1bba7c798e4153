"""Composition root of the gpu-collector service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.gpu_collector.settings import GpuCollectorSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from prometheus_client import CollectorRegistry


def create_app(settings: GpuCollectorSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("gpu-collector")
    infra = Infra.for_service("gpu-collector", settings, nats=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)

    async def shutdown() -> None:
        await infra.close()

    return Service("gpu-collector", app, settings, startup, shutdown)
