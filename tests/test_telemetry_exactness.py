"""Acceptance (issue 6): 10,000 usage events with 5% duplicates, two telemetry replicas
(real processes), one killed with SIGKILL mid-batch → PostgreSQL holds exactly the 9,500
distinct events and every sum matches."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from hyperinfer.contracts import names
from hyperinfer.runtime.testing.servers import free_port
from hyperinfer.telemetry.testing import (
    TelemetryProcess,
    entry_fields,
    eventually,
    make_usage,
    produce,
)

pytestmark = pytest.mark.slow
STREAM, GROUP = names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP
DISTINCT, DUPLICATES = 9_500, 500


@pytest.fixture
def replicas(
    redis_url: str, nats_url: str, postgres_dsn: str, tmp_path: Path
) -> Iterator[list[TelemetryProcess]]:
    procs = []
    for name in ("replica-a", "replica-b"):
        env = {
            "HYPERINFER_ENVIRONMENT": "test",
            "HYPERINFER_REDIS_URL": redis_url,
            "HYPERINFER_NATS_URL": nats_url,
            "HYPERINFER_POSTGRES_DSN": postgres_dsn,
            "HYPERINFER_TELEMETRY_CONSUMER_NAME": name,
            "HYPERINFER_TELEMETRY_BATCH_MAX_EVENTS": "250",
            "HYPERINFER_TELEMETRY_RECLAIM_MIN_IDLE_MS": "1500",
            "HYPERINFER_TELEMETRY_RECLAIM_INTERVAL_S": "0.5",
        }
        procs.append(TelemetryProcess(free_port(), env, tmp_path / f"{name}.log"))
    yield procs
    for proc in procs:
        proc.stop()


def workload() -> tuple[list[dict[str | bytes, bytes]], dict[str, int]]:
    """9,500 distinct events and 500 duplicates, some adjacent, some far apart."""
    rng = random.Random(6)
    events = [
        make_usage(
            f"req-{i:05d}",
            team_id=f"team-{i % 7}",
            key_id=f"key-{i % 23}",
            model=("m-large", "m-small")[i % 2],
            backend_id=("b1", "b2", "b3")[i % 3],
            prompt_tokens=rng.randrange(1, 2000),
            completion_tokens=rng.randrange(0, 800),
            cost_micros=rng.randrange(0, 50_000),
            latency_ms=rng.uniform(1, 8000),
        )
        for i in range(DISTINCT)
    ]
    entries = [entry_fields(e) for e in events]
    for n in range(DUPLICATES):
        original = rng.randrange(DISTINCT)
        # half re-sent right after the original (same batch), half much later
        at = original + 1 if n % 2 else rng.randrange(original, DISTINCT)
        entries.insert(at, entry_fields(events[original]))
    sums = {
        "prompt": sum(e.prompt_tokens for e in events),
        "completion": sum(e.completion_tokens for e in events),
        "cost": sum(e.cost_micros for e in events),
    }
    return entries, sums


async def pending_of(redis: aioredis.Redis, consumer: str) -> int:
    return len(await redis.xpending_range(STREAM, GROUP, "-", "+", 100_000, consumer))


async def kill_mid_batch(redis: aioredis.Redis, victim: TelemetryProcess, name: str) -> int:
    """Freeze the replica; kill it only while it holds unacknowledged entries."""
    for _ in range(400):
        os.kill(victim.proc.pid, signal.SIGSTOP)
        held = await pending_of(redis, name)
        if held:
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(10)
            return held
        os.kill(victim.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
    pytest.fail("the replica never held a batch")


async def test_two_replicas_one_killed_mid_batch_record_exactly_the_distinct_events(
    replicas: list[TelemetryProcess], redis_url: str, postgres_dsn: str
) -> None:
    entries, sums = workload()
    assert len(entries) == DISTINCT + DUPLICATES
    for proc in replicas:
        await asyncio.to_thread(proc.ready)
    redis = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.connect(postgres_dsn)
    try:
        await produce(redis, entries[:4000])

        async def some_recorded() -> bool:
            return int(await pg.fetchval("SELECT count(*) FROM usage_events")) >= 1000

        await eventually(some_recorded, what="replicas recording")
        held = await kill_mid_batch(redis, replicas[0], "replica-a")
        await produce(redis, entries[4000:])

        async def drained() -> bool:
            groups = await redis.xinfo_groups(STREAM)
            group = next(g for g in groups if g["name"] == GROUP.encode())
            return int(group["pending"]) == 0 and int(group["lag"] or 0) == 0

        started = time.monotonic()
        await eventually(drained, timeout_s=90, what="every entry acknowledged")
        drain_s = time.monotonic() - started

        totals = await pg.fetchrow(
            "SELECT count(*) n, count(DISTINCT request_id) d, sum(prompt_tokens) p,"
            " sum(completion_tokens) c, sum(cost_micros) m FROM usage_events"
        )
        assert (totals["n"], totals["d"]) == (DISTINCT, DISTINCT)
        assert (totals["p"], totals["c"], totals["m"]) == (
            sums["prompt"],
            sums["completion"],
            sums["cost"],
        )
        assert await pg.fetchval("SELECT count(*) FROM usage_request_ids") == DISTINCT
        for window in ("minute", "hour", "day"):
            rollup = await pg.fetchrow(
                "SELECT sum(requests) r, sum(prompt_tokens) p, sum(completion_tokens) c,"
                " sum(cost_micros) m FROM usage_rollups WHERE window_kind = $1",
                window,
            )
            assert (rollup["r"], rollup["p"], rollup["c"], rollup["m"]) == (
                DISTINCT,
                sums["prompt"],
                sums["completion"],
                sums["cost"],
            ), window
        assert await redis.xlen(names.USAGE_DLQ_STREAM) == 0
        assert await pending_of(redis, "replica-a") == 0  # the dead replica's batch was reclaimed
        survivor = replicas[1]
        assert survivor.metric("hyperinfer_ledger_reclaimed_total") >= held
        print(f"killed holding {held} entries; drained {drain_s:.1f}s after the kill")
    finally:
        await pg.close()
        await redis.aclose()
