"""Acceptance (issue 5): Redis killed and restarted during load, with a real quota service.

Two data-plane nodes (``QuotaLimiter``s in this process) reserve, settle and emit
usage in one pipeline, as the ingress does, for a fail-closed team with a budget and
a fail-open team with an RPM limit. Redis dies: the closed team gets 503s, the open
team is admitted locally at RPM / 2 replicas, the quota service keeps running (live,
not ready). Redis comes back empty: both nodes switch back by themselves, the
service notices the lost epoch and reloads the budget from PostgreSQL, and at the
end Redis's spent equals PostgreSQL's total with no hold left over.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.errors import QuotaUnavailable
from hyperinfer.client.quota import (
    QuotaExceeded,
    QuotaIndex,
    QuotaLimiter,
    budget_key,
    hot_path_redis,
    period_id,
)
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, QuotaConfig, TeamConfig
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded
from hyperinfer.runtime.testing.servers import RedisServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
RPM_OPEN = 1200
BUDGET = 10**9
SNAP = ConfigSnapshot(
    version=1,
    generated_at=utc_now(),
    teams={
        "closed": TeamConfig(id="closed", name="closed", failure_policy="closed"),
        "open": TeamConfig(id="open", name="open", failure_policy="open"),
    },
    keys={"h1": KeyConfig(id="kc", team_id="closed"), "h2": KeyConfig(id="ko", team_id="open")},
    quotas=[
        QuotaConfig(scope="team", subject_id="closed", team_id="closed", budget_micros=BUDGET),
        QuotaConfig(scope="key", subject_id="ko", team_id="open", rpm=RPM_OPEN),
    ],
)


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def quota_service(
    redis_url: str, nats_url: str, postgres_dsn: str, tmp_path: Path
) -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(redis_url)
    await store_snapshot(client, SNAP)
    await client.aclose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERINFER_")}
    env.update(
        HYPERINFER_ENVIRONMENT="test",
        HYPERINFER_REDIS_URL=redis_url,
        HYPERINFER_NATS_URL=nats_url,
        HYPERINFER_POSTGRES_DSN=postgres_dsn,
        HYPERINFER_QUOTA_HTTP_PORT=str(port),
        HYPERINFER_QUOTA_BLOCK_MS="100",
        HYPERINFER_QUOTA_EPOCH_CHECK_INTERVAL_S="0.2",
    )
    log = (tmp_path / "quota.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperinfer.quota"], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                assert proc.poll() is None, (tmp_path / "quota.log").read_text()[-3000:]
                try:
                    return (await http.get(f"{base}/health/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(ready, 30, "quota service ready")
        yield base
    finally:
        proc.terminate()
        try:
            assert proc.wait(20) == 0, (tmp_path / "quota.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def usage_entry(request_id: str, team: str, key: str, cost: int) -> bytes:
    now = utc_now()
    data = UsageRecorded(
        request_id=request_id,
        team_id=team,
        key_id=key,
        alias="m",
        model="m",
        backend_id="b",
        provider="echo",
        cost_micros=cost,
        total_tokens=3,
        reserved_cost_micros=cost,
        started_at=now,
        finished_at=now + timedelta(milliseconds=1),
    )
    env = Envelope[UsageRecorded](type=EVENT_RECORDED, source="e2e", data=data)
    return orjson.dumps(env.model_dump(mode="json"))


async def pg_spent(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT spent_micros FROM quota_spend WHERE scope = 'team' AND subject_id = 'closed'"
            " AND period = 'monthly' ORDER BY period_start DESC LIMIT 1"
        )
    finally:
        await conn.close()
    return int(value or 0)


async def test_redis_restart_under_load_keeps_policies_and_reconciles(
    quota_service: str, redis_server: RedisServer, redis_url: str, postgres_dsn: str
) -> None:
    index = QuotaIndex.from_snapshot(SNAP)
    clients = [hot_path_redis(redis_url), hot_path_redis(redis_url)]
    nodes = [
        QuotaLimiter(c, node_id=f"dp{i}", heartbeat_s=0.2, retry_interval_s=0.2)
        for i, c in enumerate(clients)
    ]
    for node in nodes:
        await node.start()
    await until(lambda: _true(nodes[0].replicas == 3), 5, "3 live nodes (2 + the service)")

    phase = "before"
    outcomes: Counter[tuple[str, str, str]] = Counter()
    errors: list[BaseException] = []
    stop = asyncio.Event()
    seq = iter(range(10**9))

    def within(began: str) -> str:
        """A request counts for a phase if it started and ended in it (kill and start
        block the loop, so a request can straddle them)."""
        return began if began == phase else "straddling"

    async def closed_team(node: QuotaLimiter, client: aioredis.Redis) -> None:
        began = phase
        rid = f"c{next(seq)}"
        try:
            res = await node.reserve(
                request_id=rid,
                team_id="closed",
                key_id="kc",
                tokens=3,
                cost_micros=7,
                limits=index.limits("closed", "kc"),
            )
        except QuotaUnavailable:
            outcomes[(within(began), "closed", "unavailable")] += 1
            return
        outcomes[(within(began), "closed", res.mode)] += 1
        pipe = client.pipeline(transaction=False)
        node.settle_into(pipe, res, 3, 5)
        pipe.xadd(
            names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: usage_entry(rid, "closed", "kc", 5)}
        )
        try:
            await pipe.execute()
        except Exception:  # Redis died between the reserve and the settle: nothing to do
            outcomes[(within(began), "closed", "settle_lost")] += 1

    async def open_team(node: QuotaLimiter) -> None:
        began = phase
        try:
            res = await node.reserve(
                request_id=f"o{next(seq)}",
                team_id="open",
                key_id="ko",
                tokens=1,
                cost_micros=0,
                limits=index.limits("open", "ko"),
            )
        except QuotaExceeded:
            outcomes[(within(began), "open", "limited")] += 1
            return
        outcomes[(within(began), "open", res.mode)] += 1

    async def worker(i: int) -> None:
        node, client = nodes[i % 2], clients[i % 2]
        while not stop.is_set():
            try:
                if i % 3:
                    await closed_team(node, client)
                else:
                    await open_team(nodes[0])
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0.002)

    workers = [asyncio.create_task(worker(i)) for i in range(12)]
    async with httpx.AsyncClient() as http:
        try:
            await asyncio.sleep(1.5)
            redis_server.kill()
            phase = "down"
            await asyncio.sleep(2.0)
            live = await http.get(f"{quota_service}/health")
            ready = await http.get(f"{quota_service}/health/ready")
            assert live.status_code == 200
            assert ready.status_code == 503
            assert "redis" in ready.json()["failing"]
            phase = "restarting"
            redis_server.start()
            await until(lambda: _true(all(n.redis_up for n in nodes)), 10, "nodes back on Redis")
            phase = "after"
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        metrics = (await http.get(f"{quota_service}/metrics")).text

    assert errors == []
    down = {(t, m) for (p, t, m) in outcomes if p == "down"}
    assert down <= {("closed", "unavailable"), ("open", "fail_open_local"), ("open", "limited")}
    assert ("closed", "unavailable") in down
    # local admissions whenever they started (a request in flight at the kill counts too)
    local = sum(c for (_, _, m), c in outcomes.items() if m == "fail_open_local")
    # 3 live replicas (2 nodes + the service): a burst of RPM / 3, then RPM / 3 per minute
    assert RPM_OPEN // 3 <= local <= RPM_OPEN // 3 + (RPM_OPEN // 3) * 3 // 60 + 1
    assert outcomes[("after", "closed", "redis")] > 0
    assert outcomes[("after", "open", "redis")] > 0
    assert 'hyperinfer_quota_reconciles_total{why="redis_lost"}' in metrics
    assert 'hyperinfer_quota_usage_events_total{result="new"}' in metrics
    assert 'hyperinfer_quota_policy_mode{mode="redis"} 1.0' in metrics
    assert "hyperinfer_config_version_applied 1.0" in metrics

    redis = aioredis.Redis.from_url(redis_url)
    try:
        key = budget_key("closed", "team", "closed", period_id("monthly", time.time_ns() // 1000))

        async def reconciled() -> bool:
            spent, held = await redis.hmget(key, "spent", "held")
            return (
                held in (None, b"0")
                and spent is not None
                and int(spent) == await pg_spent(postgres_dsn)
            )

        await until(reconciled, 15, "Redis spent == PostgreSQL spent, nothing held")
        assert await pg_spent(postgres_dsn) >= 5 * outcomes[("after", "closed", "redis")]
    finally:
        await redis.aclose()
        for node in nodes:
            await node.stop()
        for c in clients:
            await c.aclose()


def _true(value: bool) -> Awaitable[bool]:
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
