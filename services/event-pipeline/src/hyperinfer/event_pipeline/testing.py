"""Test support for the pipeline (used by this service's tests and the root e2e tests).

``Harness`` bundles one real backend (JetStream or Redis Streams) with the DLQ, the
ledger and metrics, and builds worker pools over it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from hyperinfer.contracts import Envelope, Priority, names
from hyperinfer.event_pipeline.adapters.postgres_ledger import PostgresLedger
from hyperinfer.event_pipeline.dlq import DeadLetterer, DlqService
from hyperinfer.event_pipeline.domain import AdmissionPolicy, Backoff, SlotScheduler
from hyperinfer.event_pipeline.metrics import PipelineMetrics
from hyperinfer.event_pipeline.ports import DeadLetterStore, JobQueue
from hyperinfer.event_pipeline.publisher import EventPublisher, StateCache
from hyperinfer.event_pipeline.worker import Registration, WorkerConfig, WorkerPool
from hyperinfer.runtime.connections import NatsConnection
from pydantic import BaseModel


@dataclass
class Harness:
    backend: str
    queue: JobQueue
    dlq_store: DeadLetterStore
    dlq: DlqService
    dead_letters: DeadLetterer
    metrics: PipelineMetrics
    ledger: PostgresLedger
    pool: asyncpg.Pool
    nats: NatsConnection
    redis: aioredis.Redis
    workers: list[WorkerPool] = field(default_factory=list)

    def worker(
        self,
        handlers: Mapping[str, Registration],
        *,
        slots: int = 4,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        ageing_s: float = 2.0,
        weights: tuple[int, int, int] = (4, 2, 1),
    ) -> WorkerPool:
        w = dict(zip((Priority.HIGH, Priority.NORMAL, Priority.LOW), weights, strict=True))
        pool = WorkerPool(
            self.queue,
            handlers,
            config=WorkerConfig(
                slots=slots,
                max_attempts=max_attempts,
                progress_interval_s=0.5,
                idle_poll_max_s=0.02,
            ),
            scheduler=SlotScheduler(w, ageing_s),
            backoff=backoff or Backoff(0.05, 1.0, random.Random(1)),
            ledger=self.ledger,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
        )
        self.workers.append(pool)
        return pool

    def publisher(self, low: float = 50, normal: float = 75, high: float = 90) -> EventPublisher:
        return EventPublisher(
            self.queue,
            AdmissionPolicy.from_percent(low, normal, high, 2),
            StateCache(self.queue, 0.0),
            self.metrics,
        )

    async def publish(self, env: Envelope[Any]) -> bool:
        raw = orjson.dumps(env.model_dump(mode="json"))
        return await self.queue.publish(
            names.job_subject(env.priority, env.type), raw, env.id, env.priority
        )

    async def publish_raw(self, subject: str, data: bytes, priority: Priority, msg_id: str) -> None:
        if self.backend == "jetstream":
            await self.nats.jetstream.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        else:
            await self.redis.xadd(
                names.jobs_redis_stream(priority), {"envelope": data, "subject": subject}
            )

    async def dead(self) -> list[dict[str, Any]]:
        return [v.entry["data"] for v in await self.dlq.list(1000)]


def envelope(
    type_: str, data: BaseModel, priority: Priority = Priority.NORMAL, **kw: Any
) -> Envelope[Any]:
    return Envelope[Any](type=type_, source="test", priority=priority, data=data, **kw)


async def until(predicate: Callable[[], Any], timeout_s: float, what: str = "condition") -> float:
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        await asyncio.sleep(0.02)
