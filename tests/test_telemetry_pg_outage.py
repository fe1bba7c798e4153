"""Acceptance (issue 6): PostgreSQL down for 30 s during load → nothing lost; readiness says
so while it lasts; the backlog drains after it returns (a real telemetry process)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.contracts import names
from hyperinfer.runtime.migrate import apply_migrations
from hyperinfer.runtime.testing.servers import PostgresServer, free_port
from hyperinfer.telemetry.testing import (
    TelemetryProcess,
    entry_fields,
    eventually,
    make_usage,
    produce,
)

pytestmark = pytest.mark.slow
OUTAGE_S = 30.0
RATE = 200  # events per second, for the whole test


@pytest.fixture
async def ledger_db(private_postgres: PostgresServer) -> AsyncIterator[str]:
    if not private_postgres.running:
        private_postgres.start()
    name = f"outage_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(private_postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = private_postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn)
    await conn.close()
    yield dsn
    if not private_postgres.running:
        private_postgres.start()
    admin = await asyncpg.connect(private_postgres.dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
def telemetry(
    redis_url: str, nats_url: str, ledger_db: str, tmp_path: Path
) -> Iterator[TelemetryProcess]:
    env = {
        "HYPERINFER_ENVIRONMENT": "test",
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_POSTGRES_DSN": ledger_db,
        "HYPERINFER_TELEMETRY_RETRY_BACKOFF_MAX_S": "1",
    }
    proc = TelemetryProcess(free_port(), env, tmp_path / "telemetry.log")
    yield proc
    proc.stop()


class Producer:
    """XADDs ``RATE`` distinct usage events per second until stopped."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.sent = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * RATE) - self.sent
            if due > 0:
                batch = [entry_fields(make_usage(f"o-{self.sent + i}")) for i in range(due)]
                await produce(self.redis, batch)
                self.sent += due
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


async def recorded(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage_events"))
    finally:
        await conn.close()


async def readiness(proc: TelemetryProcess) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(proc.url + "/health/ready", timeout=5)


async def test_postgres_down_for_30s_loses_nothing_and_the_backlog_drains(
    telemetry: TelemetryProcess,
    private_postgres: PostgresServer,
    ledger_db: str,
    redis_url: str,
) -> None:
    await asyncio.to_thread(telemetry.ready)
    redis = aioredis.Redis.from_url(redis_url)
    producer = Producer(redis)
    load = asyncio.create_task(producer.run())
    try:
        await eventually(lambda: _at_least(recorded(ledger_db), 200), what="recording under load")

        await asyncio.to_thread(private_postgres.stop)
        down_at = time.monotonic()
        sent_at_outage = producer.sent
        await eventually(lambda: _status(readiness(telemetry), 503), timeout_s=20, what="not ready")
        # the pool probe fails at once; the ledger check once its next write has failed
        await eventually(
            lambda: _failing(readiness(telemetry), {"postgres", "ledger"}),
            timeout_s=20,
            what="postgres and ledger both failing",
        )
        pending_before = await _pending(redis)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert telemetry.proc.poll() is None  # still running, still holding what it read
        assert producer.sent - sent_at_outage >= RATE * (OUTAGE_S - 2)
        assert await _pending(redis) + await _lag(redis) > pending_before  # backlog grew
        assert await redis.xlen(names.USAGE_DLQ_STREAM) == 0

        await asyncio.to_thread(private_postgres.start)
        await asyncio.sleep(2)  # load goes on while it recovers
    finally:
        producer.stop()
        await load
    try:
        total = producer.sent
        await eventually(
            lambda: _at_least(recorded(ledger_db), total), timeout_s=60, what="backlog drained"
        )
        assert await recorded(ledger_db) == total
        await eventually(lambda: _drained(redis), timeout_s=10, what="all acknowledged")
        assert await redis.xlen(names.USAGE_DLQ_STREAM) == 0
        await eventually(lambda: _status(readiness(telemetry), 200), what="ready again")
        assert telemetry.metric("hyperinfer_ledger_write_failures_total") > 0
    finally:
        await redis.aclose()


async def _pending(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP))["pending"])


async def _lag(redis: aioredis.Redis) -> int:
    groups = await redis.xinfo_groups(names.USAGE_STREAM)
    return sum(int(g["lag"] or 0) for g in groups if g["name"] == b"telemetry")


async def _drained(redis: aioredis.Redis) -> bool:
    return await _pending(redis) == 0 and await _lag(redis) == 0


async def _at_least(value: object, n: int) -> bool:
    return int(await value) >= n  # type: ignore[misc]


async def _status(response: object, status: int) -> bool:
    try:
        return (await response).status_code == status  # type: ignore[misc]
    except httpx.HTTPError:
        return False


async def _failing(response: object, dependencies: set[str]) -> bool:
    try:
        body = (await response).json()  # type: ignore[misc]
    except httpx.HTTPError:
        return False
    return dependencies <= set(body.get("failing", []))
