"""Composition root of the config service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.config.settings import ConfigSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.runtime.errors import RuntimeStartupError
from hyperinfer.runtime.logs import get_logger
from hyperinfer.runtime.migrate import MigrationError, apply_migrations
from prometheus_client import CollectorRegistry


def create_app(settings: ConfigSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("config")
    infra = Infra.for_service("config", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(health, registry)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        async with infra.require_postgres().pool.acquire() as conn:
            try:
                applied = await apply_migrations(conn, settings.migrations_dir)
            except MigrationError as exc:
                raise RuntimeStartupError(f"migrations failed: {exc}") from None
        get_logger(__name__).info("migrations applied", extra={"applied": applied})

    async def shutdown() -> None:
        await infra.close()

    return Service("config", app, settings, startup, shutdown)
