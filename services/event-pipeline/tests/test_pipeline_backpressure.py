"""Admission by priority with a small cap (10 per queue), on both backends."""

from __future__ import annotations

import orjson
import pytest
from hyperinfer.contracts import Priority, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.errors import QueueFull
from hyperinfer.event_pipeline.testing import Harness, envelope


@pytest.fixture
def capacity() -> int:
    return 10


def raw_job(priority: Priority, n: int) -> bytes:
    data = jobs_v1.AuditRecord(
        actor="a", action="x", target_type="t", target_id=str(n), at=utc_now()
    )
    env = envelope(jobs_v1.TYPE_AUDIT_RECORD, data, priority)
    return orjson.dumps(env.model_dump(mode="json"))


async def test_low_refused_with_retry_after_while_critical_accepted(harness: Harness) -> None:
    publisher = harness.publisher(low=50, normal=75, high=90)
    for n in range(5):  # LOW is admitted below 50% of its queue
        await publisher.submit(raw_job(Priority.LOW, n))
    with pytest.raises(QueueFull) as refused:
        await publisher.submit(raw_job(Priority.LOW, 99))
    assert refused.value.priority is Priority.LOW
    assert refused.value.retry_after_s >= 1
    for n in range(10):  # CRITICAL is admitted up to its hard cap
        await publisher.submit(raw_job(Priority.CRITICAL, n))
    with pytest.raises(QueueFull):
        await publisher.submit(raw_job(Priority.CRITICAL, 10))
    states = await harness.queue.states()
    assert (states[Priority.LOW].depth, states[Priority.CRITICAL].depth) == (5, 10)
    assert harness.metrics.counts["rejected_admission"] == 2  # LOW at 50%, CRITICAL at 100%


async def test_whole_system_load_sheds_low_before_its_own_queue_fills(harness: Harness) -> None:
    publisher = harness.publisher(low=50, normal=75, high=90)
    for n in range(10):
        await publisher.submit(raw_job(Priority.CRITICAL, n))
    for n in range(9):
        await publisher.submit(raw_job(Priority.HIGH, n))
    # 19 of 40 held: LOW's own queue is empty but the system is ~48% full
    await publisher.submit(raw_job(Priority.LOW, 0))
    with pytest.raises(QueueFull):  # now 20/40 = 50%
        await publisher.submit(raw_job(Priority.LOW, 1))
    await publisher.submit(raw_job(Priority.NORMAL, 0))  # NORMAL still below 75%


async def test_raw_publish_meets_only_the_hard_cap(harness: Harness) -> None:
    for n in range(10):
        await harness.queue.publish(
            "hyperinfer.jobs.v1.low.audit.record", raw_job(Priority.LOW, n), f"m{n}", Priority.LOW
        )
    with pytest.raises(QueueFull):
        await harness.queue.publish(
            "hyperinfer.jobs.v1.low.audit.record", raw_job(Priority.LOW, 10), "m10", Priority.LOW
        )
