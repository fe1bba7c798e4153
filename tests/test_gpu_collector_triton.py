"""The collector's Triton path against a real Triton Inference Server (pytriton on CPU).

Live/ready and model readiness through ``tritonclient.http.aio``, and Triton's own
``nv_inference_*`` metrics, parsed into ``BackendStateReported`` — the same code the
collector runs against a GPU Triton.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.gpu_collector.adapters.engine_http import HttpEngineClient
from hyperinfer.gpu_collector.engines import ReportContext, ScrapeTarget, scrape_target
from hyperinfer.gpu_collector.handlers import scrape_backend
from hyperinfer.runtime.testing.servers import free_port

from tests.backends_fixtures import unavailable

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]
CTX = ReportContext(node="n1", observed_at=datetime.now(UTC), interval_s=1.0)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapeTarget]:
    if not all(importlib.util.find_spec(m) for m in ("pytriton", "tritonclient")):
        unavailable("nvidia-pytriton / tritonclient are not installed (uv group 'backends')")
    from hyperinfer.client.testing.triton_server import TritonServerProcess

    http_port, metrics_port = free_port(), free_port()
    server = TritonServerProcess(
        tmp_path_factory.mktemp("triton"), http_port, free_port(), metrics_port
    )
    server.start()
    config = BackendConfig(
        id="triton-cpu",
        name="triton",
        kind="triton",
        base_url=server.url,
        models=["tensor_add", "tinygen", "not_deployed"],
        tags=[f"metrics_url:http://127.0.0.1:{metrics_port}/metrics"],
    )
    target = scrape_target(config)
    assert target is not None
    yield target
    server.stop()


@pytest.fixture
async def client() -> AsyncIterator[HttpEngineClient]:
    engine_client = HttpEngineClient(timeout_s=2.0)
    yield engine_client
    await engine_client.close()


async def add(url: str, times: int) -> None:
    from tritonclient.http.aio import InferenceServerClient, InferInput

    triton = InferenceServerClient(url.removeprefix("http://"))
    try:
        for _ in range(times):
            a, b = InferInput("a", [3], "FP32"), InferInput("b", [3], "FP32")
            a.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
            b.set_data_from_numpy(np.array([4, 5, 6], dtype=np.float32))
            result = await triton.infer("tensor_add", [a, b])
            assert result.as_numpy("sum").tolist() == [5, 7, 9]
    finally:
        await triton.close()


async def test_real_triton_health_readiness_and_metrics(
    triton: ScrapeTarget, client: HttpEngineClient
) -> None:
    first, counters = await scrape_backend(client, triton, None, CTX)
    assert first.engine == "triton"
    assert first.healthy is True, first.detail
    assert first.ready_models == ["tensor_add", "tinygen"]
    assert first.not_ready_models == ["not_deployed"]
    assert first.detail == "models not ready: not_deployed"
    assert first.pending_requests == 0
    assert first.inference_count_total is not None
    assert counters is not None

    await add(triton.base_url, 5)
    second, _ = await scrape_backend(client, triton, counters, CTX)
    assert second.inference_count_total == first.inference_count_total + 5
    assert second.latency_ms_avg is not None
    assert second.latency_ms_avg > 0
    assert second.queue_time_ms_avg is not None
    assert second.error_rate == 0
    assert second.requests_per_s is not None
    assert second.requests_per_s > 0
