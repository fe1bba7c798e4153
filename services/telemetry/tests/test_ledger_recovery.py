"""The consumer when things go wrong: dead consumers, a store that fails or refuses, lost groups.

Redis is real; the store is the in-memory one (same contract as PostgreSQL's) where a
test needs to switch failures on and off precisely.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hyperinfer.contracts import names
from hyperinfer.runtime import RedisConnection
from hyperinfer.telemetry.adapters.memory_ledger import MemoryLedgerStore
from hyperinfer.telemetry.testing import entry_fields, eventually, make_usage, produce

STREAM, GROUP, DLQ = names.USAGE_STREAM, names.USAGE_CONSUMER_GROUP, names.USAGE_DLQ_STREAM


async def pending_of(redis: RedisConnection, consumer: str | None = None) -> int:
    if consumer is None:
        return int((await redis.client.xpending(STREAM, GROUP))["pending"])
    rows = await redis.client.xpending_range(STREAM, GROUP, "-", "+", 100_000, consumer)
    return len(rows)


async def ghost_reads(redis: RedisConnection, n: int, name: str = "ghost") -> list[bytes]:
    """A consumer that takes ``n`` entries and dies without acknowledging them."""
    reply = await redis.client.xreadgroup(GROUP, name, {STREAM: ">"}, count=n)
    return [entry_id for entry_id, _ in reply[0][1]]


async def setup_group(redis: RedisConnection) -> None:
    await redis.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)


async def test_entries_of_a_dead_consumer_are_reclaimed_and_recorded_once(
    make_ledger: Any, redis: RedisConnection
) -> None:
    await setup_group(redis)
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(30)])
    taken = await ghost_reads(redis, 20)
    assert len(taken) == 20
    store = MemoryLedgerStore()
    rig = await make_ledger(store=store, reclaim_min_idle_ms=300, reclaim_interval_s=0.1)

    await eventually(lambda: _has(store, 30), what="all 30 recorded")
    await eventually(lambda: _zero(pending_of(redis)), what="nothing pending")
    assert rig.metric("hyperinfer_ledger_reclaimed_total") == 20
    assert await pending_of(redis, "ghost") == 0
    assert await redis.client.xlen(DLQ) == 0


async def test_an_entry_delivered_too_often_is_dead_lettered(
    make_ledger: Any, redis: RedisConnection
) -> None:
    await setup_group(redis)
    await produce(
        redis.client, [entry_fields(make_usage("crashy")), entry_fields(make_usage("ok"))]
    )
    await ghost_reads(redis, 1)
    for _ in range(4):  # re-reading its own pending list counts as a delivery each time
        await redis.client.xreadgroup(GROUP, "ghost", {STREAM: "0"}, count=1)
    store = MemoryLedgerStore()
    await make_ledger(
        store=store, reclaim_min_idle_ms=300, reclaim_interval_s=0.1, max_deliveries=5
    )

    await eventually(lambda: _zero(pending_of(redis)), what="both settled")
    assert set(store.events) == {"ok"}
    ((_, fields),) = await redis.client.xrange(DLQ)
    assert fields[b"reason"] == b"max_deliveries"


async def test_a_restarted_consumer_finishes_its_own_pending_entries_first(
    make_ledger: Any, redis: RedisConnection
) -> None:
    await setup_group(redis)
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(5)])
    await ghost_reads(redis, 5, name="same-name")
    store = MemoryLedgerStore()
    # a long reclaim idle: only reading its own pending list can pick these up quickly
    await make_ledger("same-name", store=store, reclaim_min_idle_ms=600_000)
    await eventually(lambda: _has(store, 5), timeout_s=5, what="own pending recorded")


async def test_a_refused_event_is_isolated_and_dead_lettered_the_rest_is_recorded(
    make_ledger: Any, redis: RedisConnection
) -> None:
    store = MemoryLedgerStore()
    store.refuse = {"r17"}
    rig = await make_ledger(store=store, batch_max_wait_ms=200)
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(40)])

    await eventually(lambda: _has(store, 39), what="39 recorded")
    await eventually(lambda: _zero(pending_of(redis)), what="all acknowledged")
    assert "r17" not in store.events
    ((_, fields),) = await redis.client.xrange(DLQ)
    assert fields[b"reason"] == b"rejected_by_store"
    assert rig.metric("hyperinfer_ledger_dead_lettered_total", reason="rejected_by_store") == 1


async def test_store_outage_keeps_entries_unacknowledged_then_drains(
    make_ledger: Any, redis: RedisConnection
) -> None:
    store = MemoryLedgerStore()
    store.unavailable = True
    rig = await make_ledger(store=store, retry_backoff_max_s=0.1)
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(30)])

    await eventually(lambda: _true(store.failed_writes >= 3), what="writes failing")
    with pytest.raises(RuntimeError, match="postgres"):
        await rig.ledger.check()
    assert rig.metric("hyperinfer_ledger_write_failing") == 1
    assert await pending_of(redis) > 0  # held, not acknowledged
    assert await redis.client.xlen(DLQ) == 0

    store.unavailable = False
    await eventually(lambda: _has(store, 30), what="backlog drained")
    await eventually(lambda: _zero(pending_of(redis)), what="all acknowledged")
    await rig.ledger.check()
    assert rig.metric("hyperinfer_ledger_write_failing") == 0


async def test_held_entries_are_not_claimed_away_while_the_store_is_down(
    make_ledger: Any, redis: RedisConnection
) -> None:
    down = MemoryLedgerStore()
    down.unavailable = True
    holder = await make_ledger(
        "holder", store=down, retry_backoff_max_s=0.05, reclaim_min_idle_ms=600
    )
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(10)])
    await eventually(lambda: _true(down.failed_writes >= 1), what="holder holds a batch")

    other = await make_ledger(
        "other", store=MemoryLedgerStore(), reclaim_min_idle_ms=600, reclaim_interval_s=0.1
    )
    await asyncio.sleep(2.0)  # > 3x the idle limit: only the holder's heartbeat prevents a claim
    assert other.metric("hyperinfer_ledger_reclaimed_total") == 0
    assert await pending_of(redis, "holder") == 10

    down.unavailable = False
    await eventually(lambda: _has(down, 10), what="holder drains")
    await holder.ledger.check()


async def test_a_lost_consumer_group_is_recreated(make_ledger: Any, redis: RedisConnection) -> None:
    store = MemoryLedgerStore()
    await make_ledger(store=store)
    await produce(redis.client, [entry_fields(make_usage("before"))])
    await eventually(lambda: _has(store, 1), what="first recorded")
    await redis.client.xgroup_destroy(STREAM, GROUP)  # e.g. Redis restarted without persistence
    await produce(redis.client, [entry_fields(make_usage("after"))])
    await eventually(lambda: _has(store, 2), what="recorded after the group came back")


async def _has(store: MemoryLedgerStore, n: int) -> bool:
    return len(store.events) >= n


async def _zero(value: Any) -> bool:
    return int(await value) == 0


async def _true(value: bool) -> bool:
    return value


async def test_entries_trimmed_before_they_were_recorded_are_counted_as_lost(
    make_ledger: Any, redis: RedisConnection
) -> None:
    await setup_group(redis)
    await produce(redis.client, [entry_fields(make_usage(f"r{i}")) for i in range(6)])
    await ghost_reads(redis, 4)
    await redis.client.xtrim(STREAM, maxlen=0, approximate=False)  # a producer's MAXLEN cap
    store = MemoryLedgerStore()
    rig = await make_ledger(store=store, reclaim_min_idle_ms=300, reclaim_interval_s=0.1)

    await eventually(lambda: _zero(pending_of(redis)), what="nothing left pending")
    assert rig.metric("hyperinfer_ledger_trimmed_unrecorded_total") == 4
    assert store.events == {}  # the two never delivered were trimmed as well: nothing to read
