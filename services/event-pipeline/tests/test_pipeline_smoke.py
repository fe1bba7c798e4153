"""Smallest path through each backend: publish, fetch, ack; dedupe on the message id."""

from __future__ import annotations

from typing import Any

from hyperinfer.contracts import Envelope, Priority, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.testing import Harness, envelope, until
from hyperinfer.event_pipeline.worker import JobContext, Registration


def audit(n: int = 1) -> jobs_v1.AuditRecord:
    return jobs_v1.AuditRecord(
        actor="a", action="x", target_type="t", target_id=str(n), at=utc_now()
    )


async def test_publish_fetch_ack_and_dedupe(harness: Harness) -> None:
    env = envelope(jobs_v1.TYPE_AUDIT_RECORD, audit(), Priority.HIGH)
    assert await harness.publish(env) is True
    assert await harness.publish(env) is False  # same message id inside the window
    states = await harness.queue.states()
    assert states[Priority.HIGH].depth == 1
    got = await harness.queue.fetch(Priority.HIGH, 10)
    assert len(got) == 1
    assert got[0].attempt == 1
    await got[0].ack()
    await until(lambda: _depth(harness, Priority.HIGH, 0), 5, "queue drained")


async def _depth(h: Harness, p: Priority, n: int) -> bool:
    return (await h.queue.states())[p].depth == n


async def test_worker_runs_registered_handler(harness: Harness) -> None:
    seen: list[str] = []

    async def handler(env: Envelope[Any], ctx: JobContext) -> None:
        seen.append(env.data.target_id)

    worker = harness.worker({jobs_v1.TYPE_AUDIT_RECORD: Registration(handler, once=False)})
    await worker.start()
    for i in range(20):
        await harness.publish(envelope(jobs_v1.TYPE_AUDIT_RECORD, audit(i), Priority.LOW))
    await until(lambda: len(seen) == 20, 10, "20 jobs handled")
    assert sorted(seen, key=int) == [str(i) for i in range(20)]
