"""Issue 7 acceptance, written once, run on JetStream and on Redis Streams (``harness``)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import orjson
import pytest
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline import handlers
from hyperinfer.event_pipeline.domain import Backoff
from hyperinfer.event_pipeline.errors import (
    DlqEntryNotFound,
    PermanentJobError,
    TransientJobError,
)
from hyperinfer.event_pipeline.testing import Harness, envelope, until
from hyperinfer.event_pipeline.worker import JobContext, Registration

AUDIT = jobs_v1.TYPE_AUDIT_RECORD


def audit(target: str) -> jobs_v1.AuditRecord:
    return jobs_v1.AuditRecord(
        actor="tester", action="job", target_type="t", target_id=target, at=utc_now()
    )


class Recorder:
    """A handler that records (priority, target, start, end) and takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.runs: list[tuple[Priority, str, float, float]] = []

    async def __call__(self, env: Envelope[Any], ctx: JobContext) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.runs.append((env.priority, env.data.target_id, started, time.monotonic()))


async def test_critical_finishes_before_any_new_low_starts(harness: Harness) -> None:
    counts = {Priority.CRITICAL: 6, Priority.HIGH: 14, Priority.NORMAL: 14, Priority.LOW: 14}
    for priority, n in counts.items():  # all four queues hold work before the worker starts
        for i in range(n):
            await harness.publish(envelope(AUDIT, audit(f"{priority.value}-{i}"), priority))
    rec = Recorder(0.02)
    await harness.worker({AUDIT: Registration(rec, once=False)}, slots=2).start()
    await until(lambda: len(rec.runs) == sum(counts.values()), 30, "every job ran")

    critical_end = max(end for p, _, _, end in rec.runs if p is Priority.CRITICAL)
    low_start = min(start for p, _, start, _ in rec.runs if p is Priority.LOW)
    assert critical_end <= low_start
    by_start = sorted(rec.runs, key=lambda r: r[2])
    assert {r[0] for r in by_start[:6]} == {Priority.CRITICAL}
    shared = [r[0] for r in by_start[6:20]]  # the first 14 shared slots go 4:2:1
    assert shared.count(Priority.HIGH) > shared.count(Priority.NORMAL) > shared.count(Priority.LOW)
    assert shared.count(Priority.LOW) >= 1


async def test_low_progresses_under_sustained_high_load_by_ageing(harness: Harness) -> None:
    for i in range(300):
        await harness.publish(envelope(AUDIT, audit(f"h{i}"), Priority.HIGH))
    for i in range(4):
        await harness.publish(envelope(AUDIT, audit(f"l{i}"), Priority.LOW))
    rec = Recorder(0.01)
    # by weight alone LOW would get 1 slot in 1001: only ageing lets it through
    worker = harness.worker(
        {AUDIT: Registration(rec, once=False)}, slots=2, weights=(1000, 1, 1), ageing_s=0.2
    )
    await worker.start()
    await until(lambda: sum(1 for r in rec.runs if r[0] is Priority.LOW) == 4, 20, "LOW ran")
    high_left = (await harness.queue.states())[Priority.HIGH].depth
    assert high_left > 0, "LOW only ran after HIGH drained"
    await worker.stop(1)


async def test_retry_schedule_then_dlq_then_replay_once(harness: Harness) -> None:
    calls: list[float] = []
    fail = True

    async def flaky(env: Envelope[Any], ctx: JobContext) -> None:
        calls.append(time.monotonic())
        if fail:
            raise TransientJobError("upstream busy")
        await handlers.record_audit(env, ctx)

    seed, base, cap = 7, 0.1, 1.0
    worker = harness.worker(
        {AUDIT: Registration(flaky)},
        max_attempts=4,
        backoff=Backoff(base, cap, random.Random(seed)),
    )
    await worker.start()
    env = envelope(AUDIT, audit("retry-me"), Priority.HIGH)
    await harness.publish(env)
    await until(lambda: len(calls) == 4, 20, "4 attempts")
    await until(lambda: _count_dead(harness, 1), 10, "dead letter stored")

    expected = Backoff(base, cap, random.Random(seed))
    for attempt, (before, after) in enumerate(itertools.pairwise(calls), start=1):
        want = expected.delay(attempt)
        assert want - 0.02 <= after - before <= want + 0.3, (attempt, after - before, want)

    [entry] = await harness.dlq.list(10)
    data = entry.entry["data"]
    assert data["reason"] == "max_attempts"
    assert data["attempts"] == 4
    assert data["error_class"] == "TransientJobError"
    assert data["original_subject"] == names.job_subject(Priority.HIGH, AUDIT)
    assert "upstream busy" in data["detail"]

    fail = False
    await harness.dlq.replay(entry.id)
    await until(lambda: _audit_rows(harness, "retry-me", 1), 10, "replayed job ran")
    await asyncio.sleep(0.5)
    assert await _audit_rows(harness, "retry-me", 1)
    assert len(calls) == 5
    assert await harness.dlq.depth() == 0
    with pytest.raises(DlqEntryNotFound):
        await harness.dlq.replay(entry.id)


async def test_permanent_error_is_dead_lettered_at_once(harness: Harness) -> None:
    calls = 0

    async def refuse(env: Envelope[Any], ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentJobError("webhook answered 410")

    await harness.worker({AUDIT: Registration(refuse)}).start()
    await harness.publish(envelope(AUDIT, audit("gone")))
    await until(lambda: _count_dead(harness, 1), 10, "dead letter stored")
    [data] = await harness.dead()
    assert (data["reason"], data["attempts"], calls) == ("permanent", 1, 1)


async def test_redelivered_event_is_acked_without_repeating_the_effect(harness: Harness) -> None:
    await harness.worker({AUDIT: Registration(handlers.record_audit)}).start()
    env = envelope(AUDIT, audit("once"))
    raw = orjson.dumps(env.model_dump(mode="json"))
    subject = names.job_subject(env.priority, AUDIT)
    for copy in range(3):  # three deliveries of one event (dedupe window bypassed)
        await harness.queue.publish(subject, raw, f"{env.id}-{copy}", env.priority)
    await until(lambda: _processed(harness, "duplicate", 2), 10, "duplicates acked")
    assert await _audit_rows(harness, "once", 1)
    await until(lambda: _total_depth(harness, 0), 5, "queue empty")


MALFORMED = [
    (b"not json at all", "invalid_payload"),
    (b'{"hello": "world"}', "invalid_payload"),
    (b'{"type": "no.such.type", "source": "x", "data": {}}', "unknown_type"),
    (
        b'{"type": "audit.record", "schema_version": 9, "source": "x", "data": {}}',
        "unsupported_schema_version",
    ),
    (b'{"type": "audit.record", "source": "x", "data": {"actor": 1}}', "invalid_payload"),
]


async def test_malformed_events_on_every_job_subject_go_to_dlq(harness: Harness) -> None:
    rec = Recorder(0.0)
    await harness.worker({t: Registration(rec, once=False) for t in _job_types()}).start()
    sent: dict[str, str] = {}
    index = 0
    for priority in Priority:
        for job_type in _job_types():
            subject = names.job_subject(priority, job_type)
            payload, reason = MALFORMED[index % len(MALFORMED)]
            await harness.publish_raw(subject, payload, priority, f"bad-{index}")
            sent[subject] = reason
            index += 1
    await until(lambda: _count_dead(harness, len(sent)), 20, "every malformed event dead-lettered")
    got = {d["original_subject"]: d["reason"] for d in await harness.dead()}
    if harness.backend == "jetstream":
        assert got == sent
    else:  # a raw XADD without a subject field is named by its stream's priority
        assert sorted(got.values()) == sorted(sent.values())
    # the worker is still running
    await harness.publish(envelope(AUDIT, audit("after"), Priority.LOW))
    await until(lambda: any(r[1] == "after" for r in rec.runs), 10, "valid job after malformed")


async def test_job_that_exhausts_deliveries_without_ack_is_swept_to_dlq(harness: Harness) -> None:
    await harness.publish(envelope(AUDIT, audit("crashy"), Priority.NORMAL))
    worker = harness.worker({})  # its sweeper is running; nobody acks
    await harness.queue.watch_exhausted(worker._on_exhausted)
    deliveries = 0
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and not await _count_dead(harness, 1):
        got = await harness.queue.fetch(Priority.NORMAL, 1)  # a worker that dies mid-job
        deliveries += len(got)
        await asyncio.sleep(0.1)
    [data] = await harness.dead()
    assert data["reason"] == "max_deliveries"
    assert data["attempts"] == 4
    assert deliveries == 4
    await until(lambda: _total_depth(harness, 0), 5, "work queue no longer holds it")


def _job_types() -> list[str]:
    return [
        jobs_v1.TYPE_INFERENCE_REQUESTED,
        jobs_v1.TYPE_INFERENCE_COMPLETED,
        jobs_v1.TYPE_WEBHOOK_DELIVER,
        jobs_v1.TYPE_AUDIT_RECORD,
        jobs_v1.TYPE_QUOTA_ALERT,
    ]


async def _count_dead(h: Harness, n: int) -> bool:
    return await h.dlq.depth() >= n


async def _audit_rows(h: Harness, target: str, n: int) -> bool:
    count = await h.pool.fetchval("SELECT count(*) FROM audit_log WHERE target_id = $1", target)
    return int(count) == n


async def _processed(h: Harness, outcome: str, n: int) -> bool:
    return h.metrics.counts.get(f"processed_{outcome}", 0) >= n


async def _total_depth(h: Harness, n: int) -> bool:
    return sum(s.depth for s in (await h.queue.states()).values()) == n
