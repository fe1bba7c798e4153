"""The collector as a service: real NATS and Redis, fake NVML, fake engines over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.contracts import decode_envelope, names, utc_now
from hyperinfer.contracts.backend.v1 import BackendStateReported
from hyperinfer.contracts.config.v1 import BackendConfig, ConfigSnapshot
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported
from hyperinfer.gpu_collector.adapters.fake_nvml import FakeGpu, FakeNvml
from hyperinfer.gpu_collector.adapters.nvml import NvmlGpuSource
from hyperinfer.gpu_collector.app import create_app
from hyperinfer.gpu_collector.settings import GpuCollectorSettings
from hyperinfer.gpu_collector.testing.fake_engines import EngineServer, FakeVllm
from hyperinfer.runtime import Service
from hyperinfer.runtime.testing.servers import free_port
from nats.aio.msg import Msg

pytestmark = pytest.mark.bus


class Inbox:
    """Every envelope published on a subject pattern, decoded and validated."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._arrived = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.items.append(decode_envelope(msg.data).data)
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[Any], bool], timeout_s: float = 5.0) -> Any:
        async def scan() -> Any:
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(scan(), timeout_s)


def settings(nats_url: str, redis_url: str, **kw: Any) -> GpuCollectorSettings:
    return GpuCollectorSettings(
        nats_url=nats_url,
        redis_url=redis_url,
        node_name="node-a",
        http_port=0,
        poll_interval_s=0.2,
        scrape_interval_s=0.2,
        scrape_timeout_s=0.5,
        **kw,
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def started(service: Service) -> Service:
    await service.startup()
    return service


async def test_fake_nvml_source_publishes_valid_v1_metrics_with_unsupported_fields_absent(
    nats_url: str, redis_url: str, nc: nats.NATS
) -> None:
    inbox = Inbox()
    await nc.subscribe(names.GPU_METRICS_PREFIX + ".>", cb=inbox.on_msg)
    gpus = [
        FakeGpu(uuid="GPU-0", utilization_gpu=40),
        FakeGpu(uuid="GPU-1", unsupported={"ecc", "mig"}),
    ]
    service = await started(
        create_app(settings(nats_url, redis_url), gpu_source=NvmlGpuSource(FakeNvml(gpus)))
    )
    try:
        report: GpuMetricsReported = await inbox.wait_for(lambda r: r.status == "ok")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://t"
        ) as http:
            detailed = (await http.get("/health/detailed")).json()
            metrics = (await http.get("/metrics")).text
    finally:
        await service.shutdown()
    assert report.node == "node-a"
    assert [g.uuid for g in report.gpus] == ["GPU-0", "GPU-1"]
    assert report.gpus[0].utilization_gpu_pct == 40
    assert report.gpus[0].ecc_errors_corrected == 0
    assert report.gpus[1].ecc_errors_corrected is None
    assert report.gpus[1].mig_mode is None
    assert detailed["gpu"]["status"] == "ok"
    assert detailed["gpu"]["gpus"] == 2
    labels = 'gpu="0",name="NVIDIA H100 80GB HBM3",node="node-a",uuid="GPU-0"'
    assert f"hyperinfer_gpu_utilization_percent{{{labels}}} 40.0" in metrics
    assert 'hyperinfer_gpu_ecc_errors_corrected{gpu="0"' in metrics
    assert 'hyperinfer_gpu_ecc_errors_corrected{gpu="1"' not in metrics


async def test_no_gpu_host_starts_reports_no_gpu_stays_ready_and_heartbeats(
    nats_url: str, redis_url: str, nc: nats.NATS
) -> None:
    inbox = Inbox()
    await nc.subscribe(names.gpu_metrics_subject("node-a"), cb=inbox.on_msg)
    no_library = NvmlGpuSource(FakeNvml(library_present=False))
    service = await started(create_app(settings(nats_url, redis_url), gpu_source=no_library))
    try:
        first = await inbox.wait_for(lambda r: r.status == "no_gpu")
        await inbox.wait_for(lambda r: r is not first)  # a second heartbeat: it keeps beating
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://t"
        ) as http:
            ready = await http.get("/health/ready")
            detailed = (await http.get("/health/detailed")).json()
            metrics = (await http.get("/metrics")).text
    finally:
        await service.shutdown()
    assert first.detail == "NVML unavailable: NVML Shared Library Not Found"
    assert ready.status_code == 200
    assert detailed["gpu"]["status"] == "no_gpu"
    assert 'hyperinfer_gpu_node_status{node="node-a",status="no_gpu"} 1.0' in metrics


async def test_scrapes_the_backends_the_config_names_and_reports_a_dead_one(
    nats_url: str, redis_url: str, nc: nats.NATS
) -> None:
    engine = FakeVllm("m", slots=2)
    engine.extra_waiting = 5
    server = await EngineServer(engine.app()).start()
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    snapshot = ConfigSnapshot(
        version=1,
        generated_at=utc_now(),
        backends={
            "live": BackendConfig(
                id="live",
                name="live",
                kind="openai_compatible",
                base_url=server.url + "/v1",
                tags=["engine:vllm"],
                models=["m"],
            ),
            "dead": BackendConfig(
                id="dead",
                name="dead",
                kind="openai_compatible",
                base_url=dead_url,
                tags=["engine:vllm"],
            ),
            "openai": BackendConfig(
                id="openai", name="openai", kind="openai", base_url="https://api.example"
            ),
        },
    )
    redis = aioredis.Redis.from_url(redis_url)
    await store_snapshot(redis, snapshot)
    inbox = Inbox()
    await nc.subscribe(names.BACKEND_STATE_PREFIX + ".>", cb=inbox.on_msg)
    service = await started(
        create_app(settings(nats_url, redis_url), gpu_source=NvmlGpuSource(FakeNvml()))
    )
    try:
        live: BackendStateReported = await inbox.wait_for(lambda s: s.backend_id == "live")
        dead: BackendStateReported = await inbox.wait_for(lambda s: s.backend_id == "dead")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://t"
        ) as http:
            detailed = (await http.get("/health/detailed")).json()
            metrics = (await http.get("/metrics")).text
    finally:
        await service.shutdown()
        await server.stop()
        await redis.aclose()
    assert (live.healthy, live.engine, live.waiting_requests, live.node) == (
        True,
        "vllm",
        5,
        "node-a",
    )
    assert dead.healthy is False
    assert "cannot scrape" in (dead.detail or "")
    assert not any(getattr(s, "backend_id", None) == "openai" for s in inbox.items)
    assert detailed["engines"]["dead"]["healthy"] is False
    assert 'hyperinfer_backend_waiting_requests{backend="live",engine="vllm"} 5.0' in metrics
    assert 'hyperinfer_backend_healthy{backend="dead",engine="vllm"} 0.0' in metrics


async def test_backends_added_to_or_removed_from_config_without_restart(
    nats_url: str, redis_url: str, nc: nats.NATS
) -> None:
    engine = FakeVllm("m")
    server = await EngineServer(engine.app()).start()
    redis = aioredis.Redis.from_url(redis_url)
    inbox = Inbox()
    await nc.subscribe(names.backend_state_subject("late"), cb=inbox.on_msg)
    service = await started(
        create_app(settings(nats_url, redis_url), gpu_source=NvmlGpuSource(FakeNvml()))
    )
    try:
        await asyncio.sleep(0.5)
        assert inbox.items == []
        late = BackendConfig(
            id="late",
            name="late",
            kind="openai_compatible",
            base_url=server.url + "/v1",
            tags=["engine:vllm"],
        )
        await store_snapshot(
            redis, ConfigSnapshot(version=2, generated_at=utc_now(), backends={"late": late})
        )
        state = await inbox.wait_for(lambda s: s.healthy)
        await store_snapshot(redis, ConfigSnapshot(version=3, generated_at=utc_now()))
        await asyncio.sleep(0.6)  # the agent applies v3; at least one scrape round follows
        count = len(inbox.items)
        await asyncio.sleep(0.6)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://t"
        ) as http:
            engines = (await http.get("/health/detailed")).json()["engines"]
    finally:
        await service.shutdown()
        await server.stop()
        await redis.aclose()
    assert state.backend_id == "late"
    assert len(inbox.items) == count  # removed from config: no longer scraped
    assert engines == {}
