"""A pipeline harness over a real backend, parametrized: every behavioural test runs on
JetStream and on Redis Streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from hyperinfer.contracts import Priority, names
from hyperinfer.event_pipeline.adapters.jetstream_queue import JetStreamDeadLetters, JetStreamQueue
from hyperinfer.event_pipeline.adapters.postgres_ledger import PostgresLedger
from hyperinfer.event_pipeline.adapters.redis_queue import RedisDeadLetters, RedisQueue
from hyperinfer.event_pipeline.dlq import DeadLetterer, DlqService
from hyperinfer.event_pipeline.metrics import PipelineMetrics
from hyperinfer.event_pipeline.ports import DeadLetterStore, JobQueue
from hyperinfer.event_pipeline.testing import Harness
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs
from prometheus_client import CollectorRegistry

BACKENDS = [pytest.param("jetstream", marks=pytest.mark.bus), "redis"]


@pytest.fixture
def capacity() -> int:
    """Hard cap of every priority queue; a test module overrides it to test backpressure."""
    return 10_000


@pytest.fixture(params=BACKENDS)
async def harness(
    request: pytest.FixtureRequest, nats_url: str, redis_url: str, postgres_dsn: str, capacity: int
) -> AsyncIterator[Harness]:
    backend: str = request.param
    cap = capacity
    nats = NatsConnection(nats_url, "test-pipeline")
    await nats.connect(5)
    configs = load_stream_configs("event-pipeline")
    await ensure_streams(nats.jetstream, [c for c in configs if c.name == names.DLQ_STREAM])
    rds = aioredis.Redis.from_url(redis_url)
    queue: JobQueue
    store: DeadLetterStore
    if backend == "jetstream":
        queue = JetStreamQueue(
            nats.client,
            configs,
            consumer="event-pipeline",
            ack_wait_s=1.0,
            max_attempts=4,
            capacity=cap,
            sweep_interval_s=0.2,  # every JetStream test runs beside a busy exhausted sweep
        )
        store = JetStreamDeadLetters(nats.client)
    else:
        queue = RedisQueue(
            rds,
            dict.fromkeys(Priority, cap),
            group="event-pipeline",
            ack_wait_s=1.0,
            max_attempts=4,
            dedupe_window_s=120,
            sweep_interval_s=0.5,
        )
        store = RedisDeadLetters(rds, 86400, 120)
    await queue.setup()
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=8)
    metrics = PipelineMetrics(CollectorRegistry())

    async def core_publish(subject: str, data: bytes) -> None:
        await nats.client.publish(subject, data)

    h = Harness(
        backend,
        queue,
        store,
        DlqService(
            [store], queue, replay_rate_per_s=100, replay_max=100, core_publish=core_publish
        ),
        DeadLetterer(store),
        metrics,
        PostgresLedger(pool),
        pool,
        nats,
        rds,
    )
    yield h
    for w in h.workers:
        await w.stop(2)
    await queue.close()
    await pool.close()
    await rds.aclose()
    await nats.close()
