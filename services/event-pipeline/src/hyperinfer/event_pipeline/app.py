"""Composition root of the event-pipeline service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs
from prometheus_client import CollectorRegistry


def create_app(settings: EventPipelineSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("event-pipeline")
    infra = Infra.for_service("event-pipeline", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await ensure_streams(infra.require_nats().jetstream, load_stream_configs("event-pipeline"))

    async def shutdown() -> None:
        await infra.close()

    return Service("event-pipeline", app, settings, startup, shutdown)
