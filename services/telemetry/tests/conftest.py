"""Telemetry test fixtures: real Redis and PostgreSQL, an in-process ledger, spans in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hyperinfer.runtime import PostgresPool, RedisConnection
from hyperinfer.telemetry.adapters.postgres_ledger import PostgresLedgerStore
from hyperinfer.telemetry.adapters.redis_stream import UsageStream
from hyperinfer.telemetry.ledger import Ledger, LedgerPolicy, LedgerStore
from hyperinfer.telemetry.metrics import LedgerMetrics, UsageMetrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[PostgresPool]:
    pool = PostgresPool(postgres_dsn, max_size=4)
    await pool.connect(5)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisConnection]:
    conn = RedisConnection(redis_url)
    await conn.connect(5)
    yield conn
    await conn.close()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


class LedgerRig:
    """An in-process ledger and what a test inspects around it."""

    def __init__(self, ledger: Ledger, stream: UsageStream, registry: CollectorRegistry) -> None:
        self.ledger = ledger
        self.stream = stream
        self.registry = registry

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


MakeLedger = Callable[..., Awaitable[LedgerRig]]


@pytest.fixture
async def make_ledger(
    pg: PostgresPool, redis: RedisConnection, spans: InMemorySpanExporter
) -> AsyncIterator[MakeLedger]:
    """``await make_ledger(name, store=None, **policy)``: a started ledger consumer."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    rigs: list[LedgerRig] = []

    async def make(
        name: str = "c1", store: LedgerStore | None = None, start: bool = True, **policy: Any
    ) -> LedgerRig:
        registry = CollectorRegistry()
        stream = UsageStream(redis.client, name)
        await stream.ensure_group()
        defaults: dict[str, Any] = {"batch_max_wait_ms": 20, "idle_block_ms": 50}
        ledger = Ledger(
            stream,
            store or PostgresLedgerStore(pg),
            LedgerPolicy(**{**defaults, **policy}),
            LedgerMetrics(registry),
            UsageMetrics(registry),
            provider.get_tracer("test"),
        )
        rig = LedgerRig(ledger, stream, registry)
        rigs.append(rig)
        if start:
            ledger.start()
        return rig

    yield make
    for rig in rigs:
        await rig.ledger.stop(5)
    provider.shutdown()
