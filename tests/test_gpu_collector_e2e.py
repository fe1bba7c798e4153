"""The real gpu-collector process on this GPU-less machine: starts, no_gpu, heartbeats.

Real NVML bindings (``nvmlInit`` raises ``NVMLError_LibraryNotFound`` here), real NATS and
Redis, the service's own entry point, SIGTERM at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import nats
import pynvml
import pytest
from hyperinfer.contracts import decode_envelope, names
from hyperinfer.contracts.gpu.v1 import GpuMetricsReported
from hyperinfer.runtime.testing.servers import free_port, wait_for_port

pytestmark = [pytest.mark.bus, pytest.mark.e2e]


def _has_nvml() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()  # pragma: no cover - GPU machines only
    return True  # pragma: no cover


@pytest.fixture
def collector(nats_url: str, redis_url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    if _has_nvml():  # pragma: no cover - GPU machines only
        pytest.skip("this machine has NVML: the no-GPU path cannot be shown here")
    port = free_port()
    env = {
        **os.environ,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_NODE_NAME": "e2e-node",
        "HYPERINFER_GPU_COLLECTOR_HTTP_PORT": str(port),
        "HYPERINFER_GPU_COLLECTOR_POLL_INTERVAL_S": "0.3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperinfer.gpu_collector"], env=env, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, timeout_s=30)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_starts_reports_no_gpu_keeps_ready_and_heartbeats(
    nats_url: str, collector: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = collector
    conn = await nats.connect(nats_url)
    beats: asyncio.Queue[GpuMetricsReported] = asyncio.Queue()

    async def on_msg(msg: object) -> None:
        await beats.put(decode_envelope(msg.data).data)  # type: ignore[attr-defined]

    await conn.subscribe(names.gpu_metrics_subject("e2e-node"), cb=on_msg)
    try:
        first = await asyncio.wait_for(beats.get(), 10)
        second = await asyncio.wait_for(beats.get(), 10)
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        ready = await http.get("/health/ready")
        detailed = (await http.get("/health/detailed")).json()

    assert first.status == second.status == "no_gpu"
    assert first.node == "e2e-node"
    assert first.detail == "NVML unavailable: NVML Shared Library Not Found"
    assert second.collected_at > first.collected_at
    assert ready.status_code == 200, ready.text
    assert detailed["gpu"]["status"] == "no_gpu"
    assert detailed["dependencies"] == {"nats": "ok", "redis": "ok"}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()
