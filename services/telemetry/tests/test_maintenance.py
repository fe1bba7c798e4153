"""Partitions ahead of time, retention, the safe stream trim, lag figures, rollups on NATS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.usage.v1 import UsageRollup
from hyperinfer.runtime import NatsConnection, PostgresPool, RedisConnection
from hyperinfer.runtime.bus import Bus
from hyperinfer.telemetry.adapters.postgres_maintenance import PostgresMaintenance, RetentionPolicy
from hyperinfer.telemetry.adapters.redis_stream import UsageStream
from hyperinfer.telemetry.domain import floor_to, month_start
from hyperinfer.telemetry.publisher import RollupPublisher
from hyperinfer.telemetry.testing import entry_fields, eventually, make_usage, produce

STREAM, GROUP = names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP


async def partitions(pg: PostgresPool) -> set[str]:
    async with pg.pool.acquire() as conn:
        found = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_events'::regclass"
        )
    return {r["relname"] for r in found}


async def scalar(pg: PostgresPool, sql: str, *args: Any) -> Any:
    async with pg.pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def settled(redis: RedisConnection) -> bool:
    info = await redis.client.xinfo_groups(STREAM)
    return all(int(g["pending"]) == 0 and not g["lag"] for g in info if g["name"] == b"telemetry")


async def test_partitions_exist_ahead_and_rows_waiting_in_default_move_in(
    pg: PostgresPool, make_ledger: Any, redis: RedisConnection
) -> None:
    now = datetime(2031, 6, 15, 12, tzinfo=UTC)
    report = await PostgresMaintenance(pg, RetentionPolicy(raw_days=0, months_ahead=2)).run(now)
    assert report.ran
    for name in (
        "usage_events_p203105",
        "usage_events_p203106",
        "usage_events_p203107",
        "usage_events_p203108",
    ):
        assert name in await partitions(pg)

    # an event whose month has no partition yet waits in the default partition ...
    await make_ledger(raw_retention_days=0)
    at = datetime(2019, 3, 9, 8, 30, tzinfo=UTC)
    await produce(redis.client, [entry_fields(make_usage("old", at=at))])
    await eventually(lambda: settled(redis))
    assert await scalar(pg, "SELECT count(*) FROM usage_events_default") == 1
    # ... and moves into the month's partition when it is created
    assert await scalar(pg, "SELECT usage_ensure_month_partition($1)", at) is True
    assert await scalar(pg, "SELECT count(*) FROM usage_events_default") == 0
    assert await scalar(pg, "SELECT count(*) FROM usage_events_p201903") == 1
    assert await scalar(pg, "SELECT count(*) FROM usage_events WHERE request_id = 'old'") == 1


async def test_retention_drops_old_partitions_ids_and_fine_rollups_keeps_days(
    pg: PostgresPool,
) -> None:
    now = utc_now()
    old = month_start(now, -7)
    async with pg.pool.acquire() as conn:
        await conn.fetchval("SELECT usage_ensure_month_partition($1)", old)
        await conn.execute(
            "INSERT INTO usage_request_ids (request_id, started_at, recorded_at)"
            " VALUES ('gone', $1, $1), ('kept', $2, $2)",
            old,
            now,
        )
        for window, bucket in (
            ("minute", now - timedelta(days=20)),
            ("minute", floor_to(now, "minute")),
            ("hour", now - timedelta(days=500)),
            ("day", now - timedelta(days=900)),
        ):
            await conn.execute(
                "INSERT INTO usage_rollups (window_kind, bucket_start, team_id, key_id, model,"
                " backend_id, requests) VALUES ($1, $2, 't', 'k', 'm', 'b', 1)",
                window,
                bucket,
            )
    policy = RetentionPolicy(raw_days=90, minute_rollup_days=14, hour_rollup_days=400)
    report = await PostgresMaintenance(pg, policy).run(now)

    assert f"usage_events_p{old:%Y%m}" in report.dropped
    assert f"usage_events_p{old:%Y%m}" not in await partitions(pg)
    assert f"usage_events_p{now:%Y%m}" in await partitions(pg)
    ids = await scalar(pg, "SELECT array_agg(request_id) FROM usage_request_ids")
    assert ids == ["kept"]
    kinds = await scalar(
        pg, "SELECT array_agg(window_kind ORDER BY window_kind) FROM usage_rollups"
    )
    assert kinds == ["day", "minute"]


async def test_two_replicas_never_maintain_at_once(pg: PostgresPool) -> None:
    maintenance = PostgresMaintenance(pg, RetentionPolicy(raw_days=0))
    async with pg.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock($1)", 0x48495F55534147)
        assert (await maintenance.run(utc_now())).ran is False
    assert (await maintenance.run(utc_now())).ran is True


async def test_trim_keeps_what_any_group_still_needs(redis: RedisConnection) -> None:
    telemetry = UsageStream(redis.client, "t1")
    await telemetry.ensure_group()
    await redis.client.xgroup_create(STREAM, names.QUOTA_USAGE_CONSUMER_GROUP, id="0")
    ids = await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(10)])
    mine = await telemetry.read(">", 100, None)
    await redis.client.xack(STREAM, GROUP, *[e[0] for e in mine])
    quota = await redis.client.xreadgroup(
        names.QUOTA_USAGE_CONSUMER_GROUP, "q1", {STREAM: ">"}, count=4
    )
    quota_ids = [e[0] for e in quota[0][1]]
    await redis.client.xack(STREAM, names.QUOTA_USAGE_CONSUMER_GROUP, *quota_ids[:2])

    assert await telemetry.trim_acknowledged() == 2  # quota still holds ids[2] and ids[3]
    first = await redis.client.xrange(STREAM, count=1)
    assert first[0][0] == ids[2]

    await redis.client.xack(STREAM, names.QUOTA_USAGE_CONSUMER_GROUP, *quota_ids[2:])
    assert await telemetry.trim_acknowledged() == 2  # the rest is undelivered to quota
    assert await redis.client.xlen(STREAM) == 6


async def test_stats_report_lag_pending_and_ages(redis: RedisConnection) -> None:
    stream = UsageStream(redis.client, "watcher")
    await stream.ensure_group()
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(5)])
    await asyncio.sleep(0.05)
    await redis.client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=2)
    stats = await stream.stats()
    assert (stats.length, stats.lag, stats.pending, stats.consumers) == (5, 3, 2, 1)
    assert stats.oldest_pending_age_s >= 0.04
    assert stats.undelivered_age_s >= 0.04

    await asyncio.sleep(0.05)
    assert await stream.drop_stale_consumers(idle_s=0.01) == []  # ghost still holds entries
    await redis.client.xack(STREAM, GROUP, *[e[0] for e in await redis.client.xrange(STREAM)])
    assert await stream.drop_stale_consumers(idle_s=0.01) == ["ghost"]


async def test_closed_minutes_are_published_once_as_rollups(
    pg: PostgresPool, make_ledger: Any, redis: RedisConnection, nats_url: str
) -> None:
    now = utc_now()
    minute = floor_to(now, "minute") - timedelta(minutes=3)
    await make_ledger()
    latencies = [100.0, 200.0, 300.0, 400.0]
    events = [
        make_usage(f"r{i}", at=minute + timedelta(seconds=i), latency_ms=v, cost_micros=10)
        for i, v in enumerate(latencies)
    ]
    await produce(redis.client, [entry_fields(e) for e in events])
    await eventually(lambda: settled(redis))
    async with pg.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO usage_rollup_cursor (id, published_through) VALUES (true, $1)",
            minute - timedelta(minutes=5),
        )

    nats = NatsConnection(nats_url, "test-rollups")
    await nats.connect(5)
    got: list[Envelope[Any]] = []

    async def on_rollup(env: Envelope[Any]) -> None:
        got.append(env)

    listener = Bus(nats, source="listener")
    await listener.subscribe(names.USAGE_ROLLUP, on_rollup)
    publishers = [RollupPublisher(pg, Bus(nats, source="telemetry"), settle_s=5) for _ in "ab"]
    try:
        sent = await asyncio.gather(*(p.publish_closed(now) for p in publishers))
        assert sorted(sent) == [0, 1]  # one replica published, the other found the cursor locked
        assert await publishers[0].publish_closed(now) == 0  # nothing new closed since
        await eventually(lambda: _true(len(got) == 1), timeout_s=5, what="rollup received")
    finally:
        await listener.close()
        await nats.close()
    rollup = got[0].data
    assert isinstance(rollup, UsageRollup)
    assert (rollup.window_start, rollup.requests, rollup.cost_micros) == (minute, 4, 40)
    assert rollup.latency_ms_p50 is not None
    assert 150 <= rollup.latency_ms_p50 <= 300
    assert got[0].tenant == "team-a"


async def _true(value: bool) -> bool:
    return value
