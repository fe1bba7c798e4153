"""publish_job / JobPublisher against the real pipeline service (in-process ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hyperinfer.client.errors import RateLimited
from hyperinfer.client.jobs import JobPublisher, JobRejected, PipelineUnavailable, QueueFull
from hyperinfer.contracts import Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.settings import EventPipelineSettings

pytestmark = pytest.mark.bus
KEY = "jobs-test-key"


@pytest.fixture
async def publisher(
    nats_url: str, redis_url: str, postgres_dsn: str
) -> AsyncIterator[JobPublisher]:
    settings = EventPipelineSettings(
        nats_url=nats_url,
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        internal_key=KEY,
        queue_capacity=4,
        capacity_cache_s=0,
        worker_enabled=False,
        apply_migrations=False,
    )
    service = create_app(settings)
    await service.startup()
    jobs = JobPublisher("http://pipeline", KEY, transport=httpx.ASGITransport(app=service.app))
    yield jobs
    await jobs.aclose()
    await service.shutdown()


def record(n: int) -> jobs_v1.AuditRecord:
    return jobs_v1.AuditRecord(
        actor="lib", action="a", target_type="t", target_id=str(n), at=utc_now()
    )


async def test_publish_then_queue_full_with_retry_after(publisher: JobPublisher) -> None:
    receipt = await publisher.publish(jobs_v1.TYPE_AUDIT_RECORD, record(0), priority=Priority.LOW)
    assert receipt.subject == names.job_subject(Priority.LOW, jobs_v1.TYPE_AUDIT_RECORD)
    assert receipt.duplicate is False
    again = await publisher.publish(
        jobs_v1.TYPE_AUDIT_RECORD, record(0), priority=Priority.LOW, event_id=receipt.id
    )
    assert again.duplicate is True
    await publisher.publish(jobs_v1.TYPE_AUDIT_RECORD, record(1), priority=Priority.LOW)
    with pytest.raises(QueueFull) as refused:  # LOW stops at 50% of 4
        await publisher.publish(jobs_v1.TYPE_AUDIT_RECORD, record(2), priority=Priority.LOW)
    assert isinstance(refused.value, RateLimited)
    assert refused.value.retry_after_s >= 1
    assert refused.value.headers()["retry-after"] == str(refused.value.retry_after_s)
    critical = await publisher.publish(
        jobs_v1.TYPE_AUDIT_RECORD, record(3), priority=Priority.CRITICAL
    )
    assert critical.priority is Priority.CRITICAL


async def test_invalid_job_and_wrong_key_are_rejected(publisher: JobPublisher) -> None:
    with pytest.raises(JobRejected, match="422"):
        await publisher.publish(jobs_v1.TYPE_AUDIT_RECORD, {"actor": "only"})
    with pytest.raises(JobRejected, match="422"):
        await publisher.publish("usage.rollup", {"x": 1})
    wrong = JobPublisher("http://pipeline", "nope", transport=publisher._http._transport)
    with pytest.raises(JobRejected, match="401"):
        await wrong.publish(jobs_v1.TYPE_AUDIT_RECORD, record(9))


async def test_unreachable_pipeline_is_one_clear_error() -> None:
    from hyperinfer.runtime.testing.servers import free_port

    async with JobPublisher(f"http://127.0.0.1:{free_port()}", KEY) as jobs:
        with pytest.raises(PipelineUnavailable, match="cannot reach"):
            await jobs.publish(jobs_v1.TYPE_AUDIT_RECORD, record(1))
