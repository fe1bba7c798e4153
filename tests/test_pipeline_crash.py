"""A worker process SIGKILLed mid-job with 5,000 jobs in flight: every job is processed,
none twice in effect. Real service processes (``python -m hyperinfer.event_pipeline``)
on each backend; the effect is an ``audit_log`` row committed with ``processed_events``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.adapters.jetstream_queue import JetStreamQueue
from hyperinfer.event_pipeline.adapters.redis_queue import RedisQueue
from hyperinfer.event_pipeline.ports import JobQueue
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import load_stream_configs
from hyperinfer.runtime.testing.servers import free_port, wait_for_port

pytestmark = pytest.mark.slow
JOBS = 5000


class Worker:
    """One event-pipeline service process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hyperinfer.event_pipeline"],
                env={**env, "HYPERINFER_EVENT_PIPELINE_HTTP_PORT": str(self.port)},
                stdout=out,
                stderr=out,
            )
        try:
            wait_for_port(self.port, 30)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(log.read_text()[-3000:]) from None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def service_env(backend: str, nats_url: str, redis_url: str, dsn: str) -> dict[str, str]:
    return {
        **os.environ,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_POSTGRES_DSN": dsn,
        "HYPERINFER_LOG_LEVEL": "WARNING",
        "HYPERINFER_EVENT_PIPELINE_BACKEND": backend,
        "HYPERINFER_EVENT_PIPELINE_APPLY_MIGRATIONS": "false",
        "HYPERINFER_EVENT_PIPELINE_WORKER_SLOTS": "64",
        "HYPERINFER_EVENT_PIPELINE_ACK_WAIT_S": "3",
        "HYPERINFER_EVENT_PIPELINE_SWEEP_INTERVAL_S": "0.5",
        "HYPERINFER_EVENT_PIPELINE_MAX_ATTEMPTS": "10",
        "HYPERINFER_EVENT_PIPELINE_RETRY_BASE_S": "0.05",
        "HYPERINFER_EVENT_PIPELINE_RETRY_CAP_S": "0.5",
    }


async def enqueue(queue: JobQueue, count: int) -> None:
    batch: list[Any] = []
    for n in range(count):
        data = jobs_v1.AuditRecord(
            actor="crash", action="job", target_type="n", target_id=str(n), at=utc_now()
        )
        env = Envelope[Any](type=jobs_v1.TYPE_AUDIT_RECORD, source="test", data=data)
        raw = orjson.dumps(env.model_dump(mode="json"))
        subject = names.job_subject(Priority.NORMAL, env.type)
        batch.append(queue.publish(subject, raw, env.id, Priority.NORMAL))
        if len(batch) == 50:
            await asyncio.gather(*batch)
            batch.clear()
    await asyncio.gather(*batch)


@pytest.mark.parametrize("backend", [pytest.param("jetstream", marks=pytest.mark.bus), "redis"])
async def test_sigkill_mid_job_loses_nothing_and_repeats_nothing(
    backend: str,
    nats_url: str,
    redis_url: str,
    postgres_dsn: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    env = service_env(backend, nats_url, redis_url, postgres_dsn)
    first = Worker(env, tmp_path / "worker-1.log")
    workers.append(first)
    nats = NatsConnection(nats_url, "crash-test")
    await nats.connect(5)
    rds = aioredis.Redis.from_url(redis_url)
    queue: JobQueue
    if backend == "jetstream":
        queue = JetStreamQueue(
            nats.client,
            load_stream_configs("event-pipeline"),
            consumer="event-pipeline",
            ack_wait_s=3,
            max_attempts=10,
        )
    else:
        queue = RedisQueue(
            rds,
            dict.fromkeys(Priority, 100_000),
            group="event-pipeline",
            ack_wait_s=3,
            max_attempts=10,
            dedupe_window_s=120,
        )
    pg = await asyncpg.connect(postgres_dsn)
    try:
        await _wait_ready(queue)
        await enqueue(queue, JOBS)
        await _until(lambda: _rows(pg), lambda n: n >= 300, 60)  # mid-run, jobs in flight
        first.kill()
        done_at_kill = await _rows(pg)
        assert done_at_kill < JOBS, "the worker finished before it could be killed"
        second = Worker(env, tmp_path / "worker-2.log")
        workers.append(second)
        await _until(lambda: _rows(pg), lambda n: n >= JOBS, 90)
        await asyncio.sleep(1.0)  # anything redelivered late must not add a row
        distinct = await pg.fetchval(
            "SELECT count(DISTINCT target_id) FROM audit_log WHERE actor = 'crash'"
        )
        assert await _rows(pg) == JOBS
        assert distinct == JOBS
        assert await pg.fetchval("SELECT count(*) FROM processed_events") == JOBS
        assert second.terminate() == 0  # graceful drain on SIGTERM
    finally:
        await pg.close()
        await queue.close()
        await rds.aclose()
        await nats.close()


async def _wait_ready(queue: JobQueue) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            await queue.states()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _rows(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'crash'"))


async def _until(get: Any, ok: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await get()
        if ok(value):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last value {value}")
