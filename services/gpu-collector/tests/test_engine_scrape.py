"""Scraping fake vLLM and Triton engines over real HTTP, and unreachable ones."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from hyperinfer.gpu_collector.adapters.engine_http import HttpEngineClient
from hyperinfer.gpu_collector.engines import ReportContext, ScrapeTarget
from hyperinfer.gpu_collector.handlers import scrape_backend
from hyperinfer.gpu_collector.testing.fake_engines import EngineServer, FakeTriton, FakeVllm
from hyperinfer.runtime.testing.servers import free_port

CTX = ReportContext(node="n1", observed_at=datetime.now(UTC), interval_s=1.0)


@pytest.fixture
async def client() -> AsyncIterator[HttpEngineClient]:
    engine_client = HttpEngineClient(timeout_s=0.5)
    yield engine_client
    await engine_client.close()


def vllm_target(url: str) -> ScrapeTarget:
    return ScrapeTarget("b1", "vllm", url, url + "/metrics", ("m",))


def triton_target(url: str, models: tuple[str, ...] = ("a",)) -> ScrapeTarget:
    return ScrapeTarget("t1", "triton", url, url + "/metrics", models)


async def test_vllm_scrape_reports_queue_and_windowed_latency(client: HttpEngineClient) -> None:
    engine = FakeVllm("m", slots=1, service_time_s=0.05)
    server = await EngineServer(engine.app()).start()
    try:
        target = vllm_target(server.url)
        first, counters = await scrape_backend(client, target, None, CTX)
        engine.extra_waiting = 7
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            replies = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body) for _ in range(3))
            )
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert replies[0].json()["usage"]["completion_tokens"] == 16
        second, _ = await scrape_backend(client, target, counters, CTX)
    finally:
        await server.stop()
    assert first.healthy is True
    assert first.waiting_requests == 0
    assert second.waiting_requests == 7
    assert second.requests_success_total == 3
    assert second.latency_ms_avg is not None
    assert second.latency_ms_avg >= 50  # one slot: the queue shows in end-to-end latency


async def test_unreachable_backend_is_unhealthy_with_a_reason_promptly(
    client: HttpEngineClient,
) -> None:
    target = vllm_target(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    state, counters = await scrape_backend(client, target, None, CTX)
    assert time.monotonic() - started < 1.0
    assert state.healthy is False
    assert counters is None
    assert state.detail is not None
    assert "cannot scrape" in state.detail
    assert "ConnectError" in state.detail


async def test_a_server_that_never_answers_fails_within_the_timeout(
    client: HttpEngineClient,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        state, _ = await scrape_backend(client, vllm_target(url), None, CTX)
        elapsed = time.monotonic() - started
        tstate, _ = await scrape_backend(client, triton_target(url), None, CTX)
    finally:
        silent.close()
    assert elapsed < 1.5
    assert state.healthy is False
    assert "ReadTimeout" in (state.detail or "")
    assert tstate.healthy is False


async def test_vllm_metrics_route_failing_is_unhealthy(client: HttpEngineClient) -> None:
    engine = FakeVllm("m")
    server = await EngineServer(engine.app()).start()
    try:
        target = ScrapeTarget("b1", "vllm", server.url, server.url + "/nope", ())
        state, _ = await scrape_backend(client, target, None, CTX)
        engine.healthy = False
        sick, _ = await scrape_backend(client, vllm_target(server.url), None, CTX)
    finally:
        await server.stop()
    assert state.healthy is False
    assert "HTTP 404" in (state.detail or "")
    assert (sick.healthy, sick.detail) == (False, "/health answered 503")


async def test_triton_health_readiness_and_metrics_through_tritonclient(
    client: HttpEngineClient,
) -> None:
    engine = FakeTriton(["a", "b"])
    engine.pending = 4
    server = await EngineServer(engine.app()).start()
    try:
        target = triton_target(server.url, ("a", "b"))
        first, counters = await scrape_backend(client, target, None, CTX)
        engine.record(ok=4, failed=1, duration_ms=12.0)
        engine.ready_models.discard("b")
        second, _ = await scrape_backend(client, target, counters, CTX)
        engine.live = False
        dead, _ = await scrape_backend(client, target, None, CTX)
    finally:
        await server.stop()
    assert (first.healthy, first.pending_requests, first.ready_models) == (True, 4, ["a", "b"])
    assert (second.healthy, second.not_ready_models) == (True, ["b"])
    assert second.error_rate == pytest.approx(0.2)
    assert second.latency_ms_avg == pytest.approx(12.0)
    assert (dead.healthy, dead.detail) == (False, "server not live")


async def test_triton_down_is_unhealthy(client: HttpEngineClient) -> None:
    state, _ = await scrape_backend(
        client, triton_target(f"http://127.0.0.1:{free_port()}"), None, CTX
    )
    assert state.healthy is False
    assert "cannot reach Triton" in (state.detail or "")


async def test_engine_server_restarts_on_the_same_port() -> None:
    server = await EngineServer(FakeVllm().app()).start()
    port = server.port
    await server.stop()
    assert not server.running
    await server.start()
    try:
        assert server.port == port
        assert server.running
    finally:
        await server.stop()
