"""Composition root of the router service: the only place that wires things.

NATS in: engine state, GPU metrics, telemetry rollups, resolve requests. Redis in: the
config snapshot (``ConfigAgent``). Out: the versioned routing table (Redis for the data
plane, NATS ``hyperinfer.router.v1.table``), ``/v1/routing/explain``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.lifecycle import stop_tasks
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.router import api
from hyperinfer.router.bus import subscribe
from hyperinfer.router.metrics import RouterMetrics
from hyperinfer.router.publisher import TablePublisher
from hyperinfer.router.settings import RouterSettings
from hyperinfer.router.state import RouterState
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.runtime.bus import Bus
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)
SERVICE = "router"


def create_app(
    settings: RouterSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Service:
    registry = CollectorRegistry()
    health = Health(SERVICE)
    infra = Infra.for_service(SERVICE, settings, nats=True, redis=True)
    infra.register(health)
    redis = infra.require_redis().client
    bus = Bus(infra.require_nats(), source=SERVICE)
    agent = ConfigAgent(redis)
    state = RouterState(settings.tuning())
    publisher = TablePublisher(
        state=state,
        policy=settings.policy(),
        config=lambda: agent.snapshot,
        redis=redis,
        bus=bus,
        recompute_interval_s=settings.recompute_interval_s,
        publish_max_interval_s=settings.publish_max_interval_s,
        material_change=settings.material_change,
        leader_lease_s=settings.leader_lease_s,
        clock=clock,
    )

    def config_changed(_: ConfigSnapshot) -> None:
        publisher.wake.set()

    agent.on_change(config_changed)
    registry.register(RouterMetrics(publisher))
    health.add_detail("routing", publisher.status)
    health.add_detail("config", agent.status)
    app = build_http_app(health, registry)
    api.mount(
        app,
        publisher=publisher,
        config_version=lambda: agent.version,
        admin_key=settings.admin_key.get_secret_value(),
        internal_key=settings.internal_key.get_secret_value(),
    )
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await agent.start(wait_s=1.0)
        await subscribe(bus, state, publisher, clock, rng or random.Random())
        tasks.append(asyncio.create_task(publisher.run(), name="routing-table"))

    async def shutdown() -> None:
        await stop_tasks(tasks, settings.shutdown_grace_s / 2)
        await publisher.resign()
        await agent.stop()  # bounded: the watcher stops its task with stop_task
        await bus.close()
        await infra.close()

    return Service(SERVICE, app, settings, startup, shutdown)
