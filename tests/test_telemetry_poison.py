"""Acceptance (issue 6): a poison event goes to the dead-letter stream with its reason, and
the events around it are recorded — through a real telemetry process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.contracts import names
from hyperinfer.runtime.testing.servers import free_port
from hyperinfer.telemetry.testing import (
    TelemetryProcess,
    entry_fields,
    envelope_json,
    eventually,
    make_usage,
    produce,
)

pytestmark = pytest.mark.slow  # a real service process (a few seconds to start)


@pytest.fixture
def telemetry(
    redis_url: str, nats_url: str, postgres_dsn: str, tmp_path: Path
) -> Iterator[TelemetryProcess]:
    env = {
        "HYPERINFER_ENVIRONMENT": "test",
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_POSTGRES_DSN": postgres_dsn,
    }
    proc = TelemetryProcess(free_port(), env, tmp_path / "telemetry.log")
    yield proc
    assert proc.stop() == 0  # a poison event never crashes the service


async def test_poison_events_are_dead_lettered_with_reasons_and_the_rest_flows(
    telemetry: TelemetryProcess, redis_url: str, postgres_dsn: str
) -> None:
    await asyncio.to_thread(telemetry.ready)
    good = [entry_fields(make_usage(f"ok-{i}", cost_micros=10)) for i in range(300)]
    future_major = orjson.loads(envelope_json(make_usage("v2")))
    future_major["schema_version"] = 2
    poison: list[dict[str | bytes, bytes]] = [
        {names.USAGE_STREAM_FIELD: b"\xff\xfe not json"},
        {names.USAGE_STREAM_FIELD: orjson.dumps(future_major)},
        {names.USAGE_STREAM_FIELD: envelope_json(make_usage("neg"), type="usage.other")},
        {names.USAGE_STREAM_FIELD: orjson.dumps({"type": "usage.recorded", "data": {"x": 1}})},
    ]
    entries = good[:100] + poison[:2] + good[100:200] + poison[2:] + good[200:]
    redis = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.connect(postgres_dsn)
    try:
        await produce(redis, entries)

        async def all_handled() -> bool:
            return (
                await redis.xlen(names.USAGE_DLQ_STREAM) == 4
                and int(await pg.fetchval("SELECT count(*) FROM usage_events")) == 300
            )

        await eventually(all_handled, what="300 recorded and 4 dead-lettered")
        dead = await redis.xrange(names.USAGE_DLQ_STREAM)
        reasons = [fields[b"reason"].decode() for _, fields in dead]
        assert reasons == [
            "invalid_payload",
            "unsupported_schema_version",
            "unknown_type",
            "invalid_payload",
        ]
        details = [orjson.loads(f[b"envelope"])["data"]["detail"] for _, f in dead]
        assert details[0].startswith("not JSON")
        assert "schema_version 2" in details[1]
        assert await pg.fetchval("SELECT sum(cost_micros) FROM usage_events") == 3000
        assert (
            telemetry.metric(
                "hyperinfer_ledger_dead_lettered_total", reason="unsupported_schema_version"
            )
            == 1
        )
        ready = await asyncio.to_thread(httpx.get, telemetry.url + "/health/ready", timeout=5)
        assert ready.status_code == 200
    finally:
        await pg.close()
        await redis.aclose()
