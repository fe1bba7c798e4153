"""Usage events -> period spend in PostgreSQL and Redis, holds released, alerts once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats
import orjson
from hyperinfer.client.quota import (
    QuotaIndex,
    QuotaLimiter,
    budget_key,
    hot_path_redis,
    period_id,
    reservation_key,
    to_us,
)
from hyperinfer.contracts import Priority, names, utc_now
from hyperinfer.contracts.config.v1 import QuotaConfig
from hyperinfer.quota.alerts import JOB_SUBJECT
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs

from .conftest import Running, snapshot, until, usage

Start = Callable[..., Awaitable[Running]]


def key_budget(**kw: Any) -> QuotaConfig:
    return QuotaConfig(scope="key", subject_id="k1", team_id="t1", **kw)


def team_budget(**kw: Any) -> QuotaConfig:
    return QuotaConfig(scope="team", subject_id="t1", team_id="t1", **kw)


async def spend_rows(dsn: str) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM quota_spend")
    finally:
        await conn.close()
    return {
        (r["scope"], r["subject_id"], r["period"]): (r["spent_micros"], r["requests"], r["seq"])
        for r in rows
    }


async def test_usage_becomes_period_spend_in_postgres_and_redis(
    quota: Start, postgres_dsn: str
) -> None:
    run = await quota(
        snapshot(
            [
                key_budget(budget_micros=10_000, budget_period="daily"),
                team_budget(budget_micros=100_000),
            ]
        )
    )
    first = usage("r1", 100)
    await run.emit(first, usage("r2", 200), usage("r3", 300), first)  # r1 twice

    async def counted() -> bool:
        rows = await spend_rows(postgres_dsn)
        return rows.get(("key", "k1", "daily"), (0, 0, 0))[:2] == (600, 3)

    await until(counted)
    rows = await spend_rows(postgres_dsn)
    assert {k: v[:2] for k, v in rows.items()} == {
        (scope, subject, period): (600, 3)
        for scope, subject in (("key", "k1"), ("team", "t1"))
        for period in ("daily", "weekly", "monthly")
    }
    now = to_us(utc_now())
    daily = budget_key("t1", "key", "k1", period_id("daily", now))
    monthly = budget_key("t1", "team", "t1", period_id("monthly", now))

    async def posted() -> bool:
        return await run.redis.hget(daily, "spent") == b"600"

    await until(posted)
    assert int(await run.redis.hget(daily, "seq")) == rows[("key", "k1", "daily")][2]
    assert await run.redis.hget(monthly, "spent") == b"600"
    # the weekly team row is not a configured budget: PostgreSQL only
    assert await run.redis.keys("*budget:t:w*") == []
    pending = await run.redis.xpending(names.USAGE_STREAM, names.QUOTA_USAGE_CONSUMER_GROUP)
    assert pending["pending"] == 0


async def test_posting_moves_the_hold_into_spent_without_double_counting(
    quota: Start, redis_url: str
) -> None:
    snap = snapshot([key_budget(budget_micros=1_000)])
    await quota(snap)
    client = hot_path_redis(redis_url)
    limiter = QuotaLimiter(client, node_id="dp")
    limits = QuotaIndex.from_snapshot(snap).limits("t1", "k1")
    try:
        res = await limiter.reserve(
            request_id="r1", team_id="t1", key_id="k1", tokens=0, cost_micros=500, limits=limits
        )
        key = budget_key("t1", "key", "k1", period_id("monthly", res.now_us))
        pipe = client.pipeline(transaction=False)
        limiter.settle_into(pipe, res, 0, 400)
        pipe.xadd(names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: usage("r1", 400)})
        await pipe.execute()

        async def posted() -> bool:
            return await client.hget(key, "spent") == b"400"

        await until(posted)
        assert await client.hget(key, "held") == b"0"
        assert not await client.exists(reservation_key("t1", "r1"))
        seen = await limiter.check(request_id="x", tokens=0, cost_micros=600, limits=limits)
        assert seen.budget_remaining_micros == 0  # 400 spent + 600 = the budget, exactly
    finally:
        await client.aclose()


async def test_thresholds_and_exhaustion_are_published_once(quota: Start, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = names.jobs_stream(Priority.HIGH)
    high = [c for c in load_stream_configs("event-pipeline") if c.name == stream]
    await ensure_streams(js, high)
    events: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        events.append(orjson.loads(msg.data))

    await nc.subscribe("hyperinfer.quota.v1.*", cb=collect)
    run = await quota(
        snapshot([key_budget(soft_limit_micros=1_000, grace_micros=200, budget_period="weekly")])
    )
    costs = [500, 350, 200, 200, 100]  # 50%, 85%, 105%, 125% (cap 1200), 135%
    for i, cost in enumerate(costs):
        await run.emit(usage(f"r{i}", cost))
        await asyncio.sleep(0.15)
    await run.emit(usage("r2", 200))  # a replay crosses nothing again

    async def three() -> bool:
        return len(events) >= 3

    await until(three)
    await asyncio.sleep(0.5)
    kinds = sorted((e["type"], e["data"].get("threshold_pct")) for e in events)
    assert kinds == [
        ("quota.exhausted", None),
        ("quota.threshold_crossed", 80),
        ("quota.threshold_crossed", 100),
    ]
    exhausted = next(e for e in events if e["type"] == "quota.exhausted")
    assert exhausted["data"]["hard"] is False
    assert exhausted["data"]["limit_micros"] == 1_200
    assert exhausted["data"]["spent_micros"] == 1_250
    assert exhausted["data"]["period"] == "weekly"
    assert exhausted["tenant"] == "t1"
    sub = await js.pull_subscribe(JOB_SUBJECT, durable=None, stream=stream)
    jobs = await sub.fetch(10, timeout=2)
    assert sorted(m.headers["Nats-Msg-Id"] for m in jobs) == [f"quota-alert-{i}" for i in (1, 2, 3)]
    assert {orjson.loads(m.data)["type"] for m in jobs} == {"quota.alert"}
    await nc.close()


async def test_entries_that_are_not_usage_events_are_skipped(quota: Start) -> None:
    run = await quota(snapshot([key_budget(budget_micros=1_000)]))
    await run.redis.xadd(names.USAGE_STREAM, {"something": "else"})
    await run.redis.xadd(names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: b"{not json"})
    await run.emit(usage("ok", 5))

    async def drained() -> bool:
        info = await run.redis.xinfo_groups(names.USAGE_STREAM)
        group = next(g for g in info if g["name"] == names.QUOTA_USAGE_CONSUMER_GROUP.encode())
        return group["pending"] == 0 and group["entries-read"] == 3

    await until(drained)
    key = budget_key("t1", "key", "k1", period_id("monthly", to_us(utc_now())))

    async def posted() -> bool:
        return await run.redis.hget(key, "spent") == b"5"

    await until(posted)
