"""One request, one trace: ingress → upstream call → usage event → ledger write.

A real ingress (uvicorn in a thread) and a real telemetry ledger (in this process) share
one tracer provider whose spans land in memory; Redis, NATS and PostgreSQL are real, the
upstream is the fake one. The caller's ``traceparent`` is continued by the ingress's
SERVER span; the upstream attempt and the usage event's PRODUCER span are its children;
the event carries the PRODUCER span's context in its stream field, and telemetry's
ledger-write span continues it after the row is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import names
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.ingress.testing import IngressThread
from hyperinfer.runtime.testing.servers import free_port
from hyperinfer.telemetry.app import create_app as telemetry_app
from hyperinfer.telemetry.settings import TelemetrySettings
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream().running_in_thread() as server:
        yield server


async def seed(redis_url: str, fake: FakeUpstream) -> Scenario:
    from hyperinfer.client.config_agent import store_snapshot

    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "fake-model")]},
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store_snapshot(client, world.snapshot)
    finally:
        await client.aclose()
    return world


def ingress_settings(redis_url: str, nats_url: str, tracing: str = "auto") -> IngressSettings:
    return IngressSettings(
        redis_url=redis_url,
        nats_url=nats_url,
        http_port=free_port(),
        environment="test",
        tracing=tracing,  # type: ignore[arg-type]
    )


async def chat(url: str, key: str, traceparent: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if traceparent:
        headers["traceparent"] = traceparent
    body = {"model": "small", "messages": [{"role": "user", "content": "trace me"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)


def one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    matching = [s for s in found if s.name == name]
    assert len(matching) == 1, (name, [s.name for s in found])
    return matching[0]


async def test_a_request_is_one_trace_from_ingress_to_ledger_write(
    redis_url: str,
    nats_url: str,
    postgres_dsn: str,
    fake: FakeUpstream,
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exporter, provider = spans
    world = await seed(redis_url, fake)
    telemetry = telemetry_app(
        TelemetrySettings(
            redis_url=redis_url,
            nats_url=nats_url,
            postgres_dsn=postgres_dsn,
            http_port=free_port(),
            environment="test",
            batch_max_wait_ms=20,
            idle_block_ms=50,
        ),
        tracer=provider.get_tracer("hyperinfer.telemetry.ledger"),
    )
    await telemetry.startup()
    try:
        with IngressThread(
            ingress_settings(redis_url, nats_url), tracer=provider.get_tracer("hyperinfer.ingress")
        ) as ingress:
            response = await chat(ingress.url, world.api_key, TRACEPARENT)
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]

            async def ledger_written() -> list[ReadableSpan]:
                for _ in range(200):
                    found = list(exporter.get_finished_spans())
                    if any(s.name == "usage.recorded ledger write" for s in found):
                        return found
                    await asyncio.sleep(0.05)
                pytest.fail(f"no ledger-write span; spans: {[s.name for s in found]}")

            found = await ledger_written()
            stream = aioredis.Redis.from_url(redis_url)
            try:
                (entry,) = await stream.xrange(names.USAGE_STREAM)
            finally:
                await stream.aclose()
    finally:
        await telemetry.shutdown()

    server = one(found, "POST /v1/chat/completions")
    quota = one(found, "quota reserve")
    upstream = one(found, "chat fake-model")
    producer = one(found, "usage.recorded publish")
    ledger = one(found, "usage.recorded ledger write")
    assert server.kind == SpanKind.SERVER
    assert server.context.trace_id == CALLER_TRACE  # the caller's trace, continued
    assert server.parent is not None
    assert server.parent.span_id == CALLER_SPAN
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["hyperinfer.request_id"] == request_id
    for child in (quota, upstream, producer):
        assert child.context.trace_id == CALLER_TRACE
        assert child.parent is not None
        assert child.parent.span_id == server.context.span_id
    assert upstream.kind == SpanKind.CLIENT
    assert upstream.attributes["gen_ai.request.model"] == "fake-model"
    assert upstream.attributes["hyperinfer.backend.id"] == "primary"
    assert producer.kind == SpanKind.PRODUCER
    # the event carries the PRODUCER span's context; the ledger write continues it
    flags = int(producer.context.trace_flags)
    traceparent = f"00-{CALLER_TRACE:032x}-{producer.context.span_id:016x}-{flags:02x}"
    assert entry[1][b"traceparent"].decode() == traceparent
    assert ledger.context.trace_id == CALLER_TRACE
    assert ledger.parent is not None
    assert ledger.parent.span_id == producer.context.span_id
    assert ledger.attributes["hyperinfer.request_id"] == request_id
    assert ledger.end_time is not None
    assert producer.end_time is not None
    assert server.start_time is not None
    assert server.start_time <= upstream.start_time <= ledger.start_time  # type: ignore[operator]


async def test_tracing_off_makes_no_span_and_passes_the_callers_traceparent_on(
    redis_url: str,
    nats_url: str,
    fake: FakeUpstream,
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exporter, provider = spans
    world = await seed(redis_url, fake)
    tracer = provider.get_tracer("hyperinfer.ingress")
    with IngressThread(ingress_settings(redis_url, nats_url, "off"), tracer=tracer) as ingress:
        response = await chat(ingress.url, world.api_key, TRACEPARENT)
        assert response.status_code == 200
        stream = aioredis.Redis.from_url(redis_url)
        try:
            for _ in range(100):
                entries = await stream.xrange(names.USAGE_STREAM)
                if entries:
                    break
                await asyncio.sleep(0.05)
        finally:
            await stream.aclose()
    assert exporter.get_finished_spans() == ()
    (entry,) = entries
    assert entry[1][b"traceparent"].decode() == TRACEPARENT
