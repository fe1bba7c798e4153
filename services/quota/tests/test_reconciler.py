"""Redis against PostgreSQL: reload after Redis lost its data, sweep overdue reservations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hyperinfer.client.errors import QuotaUnavailable
from hyperinfer.client.quota import (
    QuotaExceeded,
    QuotaIndex,
    QuotaLimiter,
    budget_key,
    hot_path_redis,
    period_id,
    ready_key,
    reservation_key,
    to_us,
)
from hyperinfer.contracts import names, utc_now
from hyperinfer.contracts.config.v1 import QuotaConfig
from hyperinfer.runtime.testing.servers import RedisServer

from .conftest import Running, snapshot, until, usage

Start = Callable[..., Awaitable[Running]]
SNAP = snapshot(
    [
        QuotaConfig(scope="key", subject_id="k1", team_id="t1", budget_micros=1_000),
        QuotaConfig(scope="key", subject_id="k2", team_id="t2", budget_micros=1_000),
    ],
    keys={"k1": "t1", "k2": "t2"},
    policies={"t1": "closed", "t2": "open"},
)


def monthly(team: str, key: str) -> str:
    return budget_key(team, "key", key, period_id("monthly", to_us(utc_now())))


async def test_budgets_reload_after_redis_loses_its_data(
    quota: Start, redis_server: RedisServer, redis_url: str
) -> None:
    run = await quota(SNAP)
    await run.emit(usage("a", 900), usage("b", 900, team="t2", key="k2"))

    async def posted() -> bool:
        return await run.redis.hget(monthly("t1", "k1"), "spent") == b"900"

    await until(posted)
    await run.service.shutdown()  # no quota service while Redis comes back empty
    await run.redis.aclose()
    quota.started.remove(run)  # type: ignore[attr-defined]
    redis_server.kill()
    redis_server.start()

    client = hot_path_redis(redis_url)
    limiter = QuotaLimiter(client, node_id="dp")
    index = QuotaIndex.from_snapshot(SNAP)
    try:
        with pytest.raises(QuotaUnavailable):  # fail-closed: spend unknown until reloaded
            await limiter.reserve(
                request_id="c",
                team_id="t1",
                key_id="k1",
                tokens=0,
                cost_micros=200,
                limits=index.limits("t1", "k1"),
            )
        open_res = await limiter.reserve(  # fail-open: goes on without the budget
            request_id="d",
            team_id="t2",
            key_id="k2",
            tokens=0,
            cost_micros=50,
            limits=index.limits("t2", "k2"),
        )
        assert open_res.mode == "redis"

        again = await quota(SNAP)  # Redis has no epoch: the service reloads everything
        assert await again.redis.hget(monthly("t1", "k1"), "spent") == b"900"
        assert await again.redis.hget(monthly("t2", "k2"), "spent") == b"900"
        assert await again.redis.exists(ready_key("t1"), ready_key("t2")) == 2
        with pytest.raises(QuotaExceeded) as caught:  # 900 + 200 > 1000: enforced again
            await limiter.reserve(
                request_id="c",
                team_id="t1",
                key_id="k1",
                tokens=0,
                cost_micros=200,
                limits=index.limits("t1", "k1"),
            )
        assert caught.value.reason == "budget"
        ok = await limiter.reserve(
            request_id="e",
            team_id="t1",
            key_id="k1",
            tokens=0,
            cost_micros=100,
            limits=index.limits("t1", "k1"),
        )
        assert ok.budget_remaining_micros == 0
    finally:
        await limiter.stop()
        await client.aclose()


async def test_epoch_loss_while_running_is_noticed(quota: Start) -> None:
    run = await quota(SNAP)
    await run.emit(usage("a", 700))

    async def posted() -> bool:
        return await run.redis.hget(monthly("t1", "k1"), "spent") == b"700"

    await until(posted)
    await run.redis.flushall()  # what a restart without persistence leaves

    async def reloaded() -> bool:
        return await run.redis.hget(monthly("t1", "k1"), "spent") == b"700"

    await until(reloaded, 5)
    assert await run.redis.get(names.QUOTA_EPOCH_KEY) is not None
    assert await run.redis.exists(ready_key("t1"))


async def test_config_change_loads_a_new_budget_from_the_periods_spend(quota: Start) -> None:
    run = await quota(snapshot([]))
    await run.emit(usage("a", 300), usage("b", 300))
    await asyncio.sleep(0.5)
    assert await run.redis.exists(monthly("t1", "k1")) == 0
    await run.configure(
        snapshot(
            [QuotaConfig(scope="key", subject_id="k1", team_id="t1", budget_micros=1_000)],
            version=2,
        )
    )

    async def loaded() -> bool:
        return await run.redis.hget(monthly("t1", "k1"), "spent") == b"600"

    await until(loaded, 5)


async def test_overdue_reservations_release_their_holds(quota: Start, redis_url: str) -> None:
    run = await quota(SNAP, sweep_interval_s=0.1)
    client = hot_path_redis(redis_url)
    limiter = QuotaLimiter(client, node_id="crashy", reservation_ttl_s=0.3)
    limits = QuotaIndex.from_snapshot(SNAP).limits("t1", "k1")
    try:
        res = await limiter.reserve(
            request_id="lost",
            team_id="t1",
            key_id="k1",
            tokens=0,
            cost_micros=800,
            limits=limits,
        )
        key = monthly("t1", "k1")
        assert await client.hget(key, "held") == b"800"

        async def released() -> bool:
            return await client.hget(key, "held") == b"0"

        await until(released, 5)  # the node "crashed": never settled
        assert await client.hget(reservation_key("t1", "lost"), "st") == b"x"
        await limiter.settle(res, 0, 300)  # a late settle charges what was used
        assert await client.hget(key, "held") == b"300"
        await run.emit(usage("lost", 300))

        async def posted() -> bool:
            return (await client.hmget(key, "spent", "held")) == [b"300", b"0"]

        await until(posted)
    finally:
        await client.aclose()
