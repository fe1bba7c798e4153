"""Trace context crosses NATS headers and Redis stream fields, on the real servers."""

from __future__ import annotations

import asyncio

import nats
import pytest
import redis.asyncio as aioredis
from hyperinfer.runtime.tracing import configure_tracing, extract_from, inject_into
from opentelemetry import trace


@pytest.fixture(autouse=True)
def tracing() -> None:
    configure_tracing("runtime-tests", None)


def child_of(carrier: dict[str, str]) -> tuple[int, int]:
    """Start a span from the carried context; return (its trace id, its parent span id)."""
    tracer = trace.get_tracer("receiver")
    with tracer.start_as_current_span("receive", context=extract_from(carrier)) as span:
        parent = span.parent  # type: ignore[attr-defined]
        return span.get_span_context().trace_id, parent.span_id if parent else 0


@pytest.mark.bus
async def test_trace_context_crosses_nats_headers(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        received: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

        async def on_message(msg: nats.aio.msg.Msg) -> None:
            received.set_result(dict(msg.headers or {}))

        await nc.subscribe("trace.test", cb=on_message)
        with trace.get_tracer("sender").start_as_current_span("send") as span:
            sent = span.get_span_context()
            await nc.publish("trace.test", b"{}", headers=inject_into({}))
        headers = await asyncio.wait_for(received, 5)
    finally:
        await nc.close()
    assert child_of(headers) == (sent.trace_id, sent.span_id)


async def test_trace_context_crosses_redis_stream_fields(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with trace.get_tracer("sender").start_as_current_span("emit") as span:
            sent = span.get_span_context()
            fields = inject_into({"envelope": "{}"})
            await client.xadd("hyperinfer:trace-test", fields)  # type: ignore[arg-type]
        [(_, stored)] = await client.xrange("hyperinfer:trace-test")
    finally:
        await client.aclose()
    assert stored["traceparent"].split("-")[1] == f"{sent.trace_id:032x}"
    assert child_of(stored) == (sent.trace_id, sent.span_id)


def test_no_current_span_means_no_traceparent() -> None:
    assert inject_into({}) == {}
    assert not trace.get_current_span(extract_from({})).get_span_context().is_valid
