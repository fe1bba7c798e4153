"""Bus: typed envelopes over a real NATS server, request/reply, dead-lettering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.contracts.routing import v1 as routing_v1
from hyperinfer.runtime.bus import Bus, RequestFailed
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs
from pydantic import BaseModel

pytestmark = pytest.mark.bus


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    conn = NatsConnection(nats_url, "test-bus")
    await conn.connect(5)
    dlq = [c for c in load_stream_configs("event-pipeline") if c.name == names.DLQ_STREAM]
    await ensure_streams(conn.jetstream, dlq)
    bus = Bus(conn, source="tester")
    yield bus
    await bus.close()
    await conn.close()


def _reserve(tokens: int = 10) -> quota_v1.ReserveQuota:
    return quota_v1.ReserveQuota(
        request_id="r1", team_id="t1", key_id="k1", tokens=tokens, cost_micros=5
    )


async def _dlq_entries(bus: Bus, count: int) -> list[dict[str, Any]]:
    js = bus._nats.jetstream
    sub = await js.pull_subscribe(names.DLQ_PREFIX + ".>", durable=None, stream=names.DLQ_STREAM)
    msgs = await sub.fetch(count, timeout=5)
    return [orjson.loads(m.data) for m in msgs]


async def test_publish_reaches_subscriber_as_typed_envelope(bus: Bus) -> None:
    got: asyncio.Queue[Envelope[Any]] = asyncio.Queue()

    async def handler(env: Envelope[Any]) -> None:
        await got.put(env)

    await bus.subscribe(names.QUOTA_RESERVE, handler)
    sent = await bus.publish(
        names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, _reserve(42), tenant="t1"
    )
    env = await asyncio.wait_for(got.get(), 5)
    assert isinstance(env.data, quota_v1.ReserveQuota)
    assert env.data.tokens == 42
    assert (env.id, env.tenant, env.source) == (sent.id, "t1", "tester")


async def test_request_gets_typed_reply(bus: Bus) -> None:
    async def handler(env: Envelope[Any]) -> BaseModel:
        return quota_v1.QuotaDecision(allowed=env.data.tokens < 100, reason=None)

    await bus.subscribe(names.QUOTA_CHECK, handler, queue="quota", concurrency=4)
    small = await bus.request(names.QUOTA_CHECK, quota_v1.COMMAND_CHECK, _reserve(5))
    big = await bus.request(names.QUOTA_CHECK, quota_v1.COMMAND_CHECK, _reserve(500))
    assert small.type == "quota.check.reply"
    assert isinstance(small.data, quota_v1.QuotaDecision)
    assert small.data.allowed is True
    assert big.data.allowed is False


async def test_malformed_request_is_dead_lettered_and_answered(bus: Bus) -> None:
    seen: list[Envelope[Any]] = []

    async def handler(env: Envelope[Any]) -> BaseModel:
        seen.append(env)
        return routing_v1.RouteResolution(alias=env.data.alias, found=False)

    await bus.subscribe(names.ROUTER_RESOLVE, handler)
    nc = bus._nats.client
    bad = [b"not json", b'{"type": "router.resolve", "source": "x", "data": {}}']
    bad.append(
        orjson.dumps(
            {"type": "router.resolve", "schema_version": 9, "source": "x", "data": {"alias": "a"}}
        )
    )
    for raw in bad:
        reply = await nc.request(names.ROUTER_RESOLVE, raw, timeout=5)
        body = orjson.loads(reply.data)
        assert body["type"] == "error"
        assert body["data"]["reason"] in {"invalid_payload", "unsupported_schema_version"}

    entries = await _dlq_entries(bus, 3)
    reasons = sorted(e["data"]["reason"] for e in entries)
    assert reasons == ["invalid_payload", "invalid_payload", "unsupported_schema_version"]
    assert {e["data"]["original_subject"] for e in entries} == {names.ROUTER_RESOLVE}
    assert entries[0]["data"]["original_payload"] == "not json"

    # the subscription is still alive and serves a valid request
    ok = await bus.request(
        names.ROUTER_RESOLVE, routing_v1.COMMAND_RESOLVE, routing_v1.ResolveRoute(alias="chat")
    )
    assert ok.data.alias == "chat"
    assert len(seen) == 1


async def test_handler_error_becomes_error_reply_and_subscription_survives(bus: Bus) -> None:
    calls = 0

    async def handler(env: Envelope[Any]) -> BaseModel:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return quota_v1.SettleResult(settled=True)

    await bus.subscribe(names.QUOTA_SETTLE, handler)
    settle = quota_v1.SettleQuota(
        request_id="r", team_id="t", key_id="k", actual_tokens=1, actual_cost_micros=1
    )
    with pytest.raises(RequestFailed) as info:
        await bus.request(names.QUOTA_SETTLE, quota_v1.COMMAND_SETTLE, settle)
    assert info.value.reason == "handler_error"
    assert "boom" in info.value.detail
    again = await bus.request(names.QUOTA_SETTLE, quota_v1.COMMAND_SETTLE, settle)
    assert again.data.settled is True


async def test_trace_context_travels_in_headers_and_envelope(bus: Bus) -> None:
    from hyperinfer.runtime.tracing import configure_tracing
    from opentelemetry import trace

    configure_tracing("test", None)  # the process-wide provider, as every service installs it
    tracer = trace.get_tracer("test")
    got: asyncio.Queue[tuple[str | None, str]] = asyncio.Queue()

    async def handler(env: Envelope[Any]) -> None:
        ctx = trace.get_current_span().get_span_context()
        await got.put((env.traceparent, f"{ctx.trace_id:032x}"))

    await bus.subscribe(names.QUOTA_EXHAUSTED, handler)
    event = quota_v1.QuotaExhausted(
        scope="team",
        subject_id="t",
        team_id="t",
        period="monthly",
        period_start=utc_now(),
        spent_micros=1,
        limit_micros=1,
    )
    with tracer.start_as_current_span("origin") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        await bus.publish(names.QUOTA_EXHAUSTED, quota_v1.EVENT_EXHAUSTED, event)
    traceparent, seen_trace = await asyncio.wait_for(got.get(), 5)
    assert traceparent is not None
    assert trace_id in traceparent
    assert seen_trace == trace_id  # the consumer's span continues the producer's trace
