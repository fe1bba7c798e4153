"""The JetStream sweep for exhausted jobs, on the real server (the harness's JetStream).

A job whose last delivery was never acked stays in its work-queue stream, skipped by
the consumer; the max-deliveries advisory naming it is core NATS and is lost when no
pipeline process listens. The sweep finds such jobs from the consumer's state: it
dead-letters them once, and never a job that is in flight or waiting for a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline import handlers
from hyperinfer.event_pipeline.adapters.jetstream_queue import (
    ADVISORY,
    JetStreamQueue,
    given_up_through,
)
from hyperinfer.event_pipeline.errors import TransientJobError
from hyperinfer.event_pipeline.ports import Delivery
from hyperinfer.event_pipeline.testing import Harness, envelope, until
from hyperinfer.event_pipeline.worker import JobContext, Registration
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import load_stream_configs

pytestmark = [pytest.mark.bus, pytest.mark.parametrize("harness", ["jetstream"], indirect=True)]

AUDIT = jobs_v1.TYPE_AUDIT_RECORD
CONSUMER = "event-pipeline"  # the harness's durable, max_deliver 4
MAX_DELIVER = 4
NORMAL = Priority.NORMAL
STREAM = names.jobs_stream(NORMAL)


def audit(target: str) -> Envelope[Any]:
    record = jobs_v1.AuditRecord(
        actor="tester", action="job", target_type="t", target_id=target, at=utc_now()
    )
    return envelope(AUDIT, record, NORMAL)


@pytest.fixture
async def replica(nats_url: str) -> AsyncIterator[NatsConnection]:
    """A second pipeline process's NATS connection."""
    nats = NatsConnection(nats_url, "test-pipeline-replica")
    await nats.connect(5)
    yield nats
    await nats.close()


def replica_queue(nats: NatsConnection, sweep_batch: int = 200) -> JetStreamQueue:
    return JetStreamQueue(
        nats.client,
        load_stream_configs("event-pipeline"),
        consumer=CONSUMER,
        ack_wait_s=1.0,
        max_attempts=MAX_DELIVER,
        sweep_batch=sweep_batch,
    )


async def test_job_exhausted_while_nobody_heard_the_advisory_is_dead_lettered_once(
    harness: Harness,
) -> None:
    env = audit("unheard")
    await harness.publish(env)
    assert await _exhaust_unheard(harness, jobs=1) == MAX_DELIVER
    await asyncio.sleep(0.5)
    assert await harness.queue.fetch(NORMAL, 1) == []  # stuck: never delivered again
    assert await _depth(harness) == 1
    assert await harness.dlq.depth() == 0

    worker = harness.worker({})
    await worker.start()  # a pipeline process starts: it sweeps at once, then every 0.2 s
    await until(lambda: _count_dead(harness, 1), 10, "swept to the DLQ")
    await until(lambda: _depth_is(harness, 0), 5, "gone from the work queue")
    await asyncio.sleep(1.0)  # more sweeps run
    [data] = await harness.dead()
    assert (data["reason"], data["attempts"]) == ("max_deliveries", MAX_DELIVER)
    assert data["original_id"] == env.id
    assert data["original_subject"] == names.job_subject(NORMAL, AUDIT)
    assert await _queue(harness).sweep(NORMAL, worker._on_exhausted) == 0


async def test_job_with_attempts_left_is_never_swept(harness: Harness) -> None:
    release = asyncio.Event()
    attempts: list[int] = []

    async def slow_then_flaky(env: Envelope[Any], ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await release.wait()  # in flight
            raise TransientJobError("upstream busy", retry_after_s=2.0)
        await handlers.record_audit(env, ctx)

    worker = harness.worker({AUDIT: Registration(slow_then_flaky)})
    await worker.start()  # the sweep runs every 0.2 s throughout
    await harness.publish(audit("retried"))
    await until(lambda: attempts == [1], 5, "first attempt running")
    await asyncio.sleep(0.5)  # sweeps run; well inside ack_wait (1 s), so never redelivered
    assert await _queue(harness).sweep(NORMAL, worker._on_exhausted) == 0
    release.set()
    await asyncio.sleep(1.0)  # nak'ed, its redelivery 2 s away
    assert await _queue(harness).sweep(NORMAL, worker._on_exhausted) == 0
    assert attempts == [1]
    await until(lambda: _audit_rows(harness, "retried"), 10, "second attempt ran")
    assert attempts == [1, 2]
    assert await harness.dlq.depth() == 0
    await until(lambda: _depth_is(harness, 0), 5, "acked")


async def test_exhausted_job_below_the_ack_floor_is_swept_beside_a_pending_retry(
    harness: Harness,
) -> None:
    for target in ("done", "crashy", "waiting"):
        await harness.publish(audit(target))
    got = {_target(d): d for d in await harness.queue.fetch(NORMAL, 3)}
    await got["waiting"].nak(30)  # waiting for its retry for the whole test
    deliveries = 1
    while deliveries < MAX_DELIVER or await _ack_pending(harness) > 2:
        await got["done"].in_progress()  # still running
        deliveries += len(await harness.queue.fetch(NORMAL, 1))  # "crashy" dies every time
        await asyncio.sleep(0.3)
    await got["done"].ack()  # the ack floor moves past "crashy"; "waiting" stays pending
    await asyncio.sleep(0.2)
    info = await harness.nats.jetstream.consumer_info(STREAM, CONSUMER)
    assert info.num_ack_pending == 1
    assert given_up_through(info) == 2  # "crashy"'s sequence

    worker = harness.worker({})
    assert await _queue(harness).sweep(NORMAL, worker._on_exhausted) == 1
    [data] = await harness.dead()
    assert orjson.loads(data["original_payload"])["data"]["target_id"] == "crashy"
    assert await _depth(harness) == 1  # "waiting" is still there, untouched


async def test_advisory_and_sweeps_racing_on_one_job_dead_letter_it_once(
    harness: Harness, replica: NatsConnection, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.publish(audit("raced"))
    await _exhaust_unheard(harness, jobs=1)
    seq = (await harness.nats.jetstream.get_msg(STREAM, 1, subject=">", next=True)).seq
    worker = harness.worker({})
    calls: list[str] = []

    async def slow_dead_letter(
        priority: Priority, subject: str, data: bytes, headers: Mapping[str, str], n: int
    ) -> None:
        calls.append(subject)
        await asyncio.sleep(1.0)  # holds the job: every path that looks now finds it
        await worker._on_exhausted(priority, subject, data, headers, n)

    other = replica_queue(replica)
    try:
        await harness.queue.watch_exhausted(slow_dead_letter)  # sweeps at once
        await other.watch_exhausted(slow_dead_letter)  # a second process, sweeping too
        advisory = {"stream": STREAM, "consumer": CONSUMER, "stream_seq": seq, "deliveries": 4}
        subject = ADVISORY.format(stream=STREAM, consumer=CONSUMER)
        await harness.nats.client.publish(subject, orjson.dumps(advisory))  # heard late
        await until(lambda: _count_dead(harness, 1), 10, "dead-lettered")
        await asyncio.sleep(2.0)  # every path has finished
    finally:
        await other.close()
    assert len(calls) == 2  # both processes moved it; each met its own advisory
    assert await harness.dlq.depth() == 1  # the DLQ dropped the second copy by its id
    assert worker._metrics.counts.get("processed_dead_lettered") == 1  # counted once
    assert [r.getMessage() for r in caplog.records].count("job dead-lettered") == 1
    assert await _depth(harness) == 0
    failures = {"exhausted sweep failed", "max-deliveries advisory not handled"}
    assert not [r.getMessage() for r in caplog.records if r.getMessage() in failures]


async def test_one_sweep_moves_at_most_one_batch(harness: Harness, replica: NatsConnection) -> None:
    for i in range(3):
        await harness.publish(audit(f"crashy-{i}"))
    await _exhaust_unheard(harness, jobs=3)
    worker = harness.worker({})
    small = replica_queue(replica, sweep_batch=2)
    moved = [await small.sweep(NORMAL, worker._on_exhausted) for _ in range(3)]
    assert moved == [2, 1, 0]
    assert await harness.dlq.depth() == 3
    assert await _depth(harness) == 0


async def _exhaust_unheard(h: Harness, jobs: int) -> int:
    """Deliver the queued jobs until the server gives up on them, acking nothing (a
    worker that dies mid-job), while nobody listens for the advisory; the deliveries."""
    deliveries = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deliveries += len(await h.queue.fetch(NORMAL, jobs))
        if deliveries >= jobs * MAX_DELIVER and await _ack_pending(h) == 0:
            return deliveries
        await asyncio.sleep(0.1)
    raise AssertionError(f"the server did not give up on the jobs ({deliveries} deliveries)")


def _queue(h: Harness) -> JetStreamQueue:
    assert isinstance(h.queue, JetStreamQueue)
    return h.queue


def _target(delivery: Delivery) -> str:
    return str(orjson.loads(delivery.data)["data"]["target_id"])


async def _ack_pending(h: Harness) -> int:
    info = await h.nats.jetstream.consumer_info(STREAM, CONSUMER)
    return int(info.num_ack_pending or 0)


async def _depth(h: Harness) -> int:
    return (await h.queue.states())[NORMAL].depth


async def _depth_is(h: Harness, n: int) -> bool:
    return await _depth(h) == n


async def _count_dead(h: Harness, n: int) -> bool:
    return await h.dlq.depth() >= n


async def _audit_rows(h: Harness, target: str) -> bool:
    count = await h.pool.fetchval("SELECT count(*) FROM audit_log WHERE target_id = $1", target)
    return int(count) == 1
