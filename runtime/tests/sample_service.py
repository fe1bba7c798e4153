"""A service made only of runtime pieces, run as a real process by the runtime tests.

``HYPERINFER_SAMPLE_DEPS`` picks its dependencies (default ``nats,redis,postgres``).
Besides the runtime's routes it serves ``GET /slow?seconds=S`` (holds a request open,
for the drain test) and ``GET /work`` (logs one line inside the request).
"""

from __future__ import annotations

import asyncio

from hyperinfer.runtime import (
    Health,
    Infra,
    Service,
    ServiceSettings,
    build_http_app,
    get_logger,
    run_service,
)
from prometheus_client import CollectorRegistry
from pydantic_settings import SettingsConfigDict

log = get_logger("sample")


class SampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="HYPERINFER_SAMPLE_", extra="ignore", populate_by_name=True, frozen=True
    )

    http_port: int = 0
    deps: str = "nats,redis,postgres"
    stubborn_task: bool = False  # a background task that swallows every cancellation


async def stubborn() -> None:
    """What a library bug can leave behind: a task that no cancel ends."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


async def slow(seconds: float) -> dict[str, float]:
    log.info("slow request started")
    await asyncio.sleep(seconds)
    log.info("slow request finished")
    return {"slept": seconds}


async def work() -> dict[str, bool]:
    log.info("working")
    return {"ok": True}


def create_app(settings: SampleSettings) -> Service:
    deps = set(settings.deps.split(","))
    background: set[asyncio.Task[None]] = set()
    health = Health("sample")
    infra = Infra.for_service(
        "sample",
        settings,
        nats="nats" in deps,
        redis="redis" in deps,
        postgres="postgres" in deps,
    )
    infra.register(health)
    app = build_http_app(health, CollectorRegistry())
    app.get("/slow")(slow)
    app.get("/work")(work)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        if settings.stubborn_task:
            background.add(asyncio.create_task(stubborn(), name="stubborn"))

    return Service("sample", app, settings, startup, infra.close)


if __name__ == "__main__":
    run_service("sample", SampleSettings, create_app)
