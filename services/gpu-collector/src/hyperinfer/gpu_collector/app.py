"""Composition root of the gpu-collector service: the only place that wires things.

Two loops run beside the HTTP app: NVML polls every ``poll_interval_s`` (published on
``hyperinfer.gpu.v1.metrics.<node>``; a ``no_gpu`` heartbeat on a host without GPU or
NVML) and engine scrapes every ``scrape_interval_s`` (``hyperinfer.backend.v1.state.<id>``)
of the backends the config snapshot names (see ``engines`` for the convention).
"""

from __future__ import annotations

import asyncio
import logging

from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.lifecycle import stop_tasks
from hyperinfer.contracts import names
from hyperinfer.contracts.backend.v1 import EVENT_STATE, BackendStateReported
from hyperinfer.contracts.gpu.v1 import EVENT_METRICS, GpuMetricsReported
from hyperinfer.gpu_collector.adapters.engine_http import HttpEngineClient
from hyperinfer.gpu_collector.adapters.fake_nvml import DemoNvml
from hyperinfer.gpu_collector.adapters.nvml import NvmlGpuSource
from hyperinfer.gpu_collector.engines import ScrapeTarget, scrape_targets
from hyperinfer.gpu_collector.metrics import CollectorMetrics
from hyperinfer.gpu_collector.monitors import EngineMonitor, GpuMonitor
from hyperinfer.gpu_collector.ports import EngineClient, GpuSource
from hyperinfer.gpu_collector.settings import GpuCollectorSettings
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.runtime.bus import Bus
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)
SERVICE = "gpu-collector"


def default_gpu_source(settings: GpuCollectorSettings) -> GpuSource:
    if settings.gpu_source == "fake":
        return NvmlGpuSource(DemoNvml(settings.fake_gpu_count))
    return NvmlGpuSource()


def create_app(
    settings: GpuCollectorSettings,
    *,
    gpu_source: GpuSource | None = None,
    engine_client: EngineClient | None = None,
) -> Service:
    registry = CollectorRegistry()
    health = Health(SERVICE)
    infra = Infra.for_service(SERVICE, settings, nats=True, redis=True)
    infra.register(health)
    bus = Bus(infra.require_nats(), source=SERVICE)
    agent = ConfigAgent(infra.require_redis().client)
    client = engine_client or HttpEngineClient(settings.scrape_timeout_s)

    async def publish_gpu(report: GpuMetricsReported) -> None:
        await bus.publish(names.gpu_metrics_subject(report.node), EVENT_METRICS, report)

    async def publish_state(state: BackendStateReported) -> None:
        await bus.publish(names.backend_state_subject(state.backend_id), EVENT_STATE, state)

    def targets() -> list[ScrapeTarget]:
        return scrape_targets(agent.snapshot, settings.node_name, settings.scrape_untagged)

    gpu = GpuMonitor(
        gpu_source or default_gpu_source(settings),
        settings.node_name,
        settings.poll_interval_s,
        publish_gpu,
    )
    engines = EngineMonitor(
        client, targets, settings.node_name, settings.scrape_interval_s, publish_state
    )
    registry.register(CollectorMetrics(gpu, engines))
    health.add_detail("gpu", gpu.status)
    health.add_detail("engines", engines.status)
    health.add_detail("config", agent.status)
    app = build_http_app(health, registry)
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await agent.start(wait_s=1.0)
        tasks.append(asyncio.create_task(gpu.run(), name="gpu-poll"))
        tasks.append(asyncio.create_task(engines.run(), name="engine-scrape"))

    async def shutdown() -> None:
        await stop_tasks(tasks, settings.shutdown_grace_s / 2)
        await agent.stop()  # bounded: the watcher stops its task with stop_task
        await client.close()
        await gpu.close()
        await bus.close()
        await infra.close()

    return Service(SERVICE, app, settings, startup, shutdown)
