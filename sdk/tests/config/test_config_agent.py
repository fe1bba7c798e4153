"""ConfigAgent and the versioned-document mechanism, against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG, ConfigAgent, empty_snapshot, store_snapshot
from hyperinfer.client.routing_table import RoutingTableAgent, store_routing_table
from hyperinfer.contracts import names, utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, TeamConfig
from hyperinfer.contracts.routing.v1 import RouteCandidate, RoutingTablePublished
from hyperinfer.runtime.testing.proxy import TcpProxy


def snapshot(version: int) -> ConfigSnapshot:
    team = TeamConfig(id="t1", name=f"team at v{version}")
    return ConfigSnapshot(version=version, generated_at=utc_now(), teams={"t1": team})


async def until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``predicate`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def writer(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def agents(redis_url: str) -> AsyncIterator[list[ConfigAgent]]:
    made: list[tuple[ConfigAgent, aioredis.Redis]] = []
    for _ in range(3):
        client = aioredis.Redis.from_url(redis_url)
        made.append((ConfigAgent(client, check_interval_s=30), client))
    yield [agent for agent, _ in made]
    for agent, client in made:
        await agent.stop()
        await client.aclose()


async def test_store_is_monotonic(writer: aioredis.Redis) -> None:
    assert await store_snapshot(writer, snapshot(3)) is True
    assert await store_snapshot(writer, snapshot(2)) is False
    assert await store_snapshot(writer, snapshot(3)) is False
    stored = ConfigSnapshot.model_validate_json(await writer.hget(CONFIG.key, "document"))
    assert stored.version == 3
    assert int(await writer.hget(CONFIG.key, "version")) == 3


async def test_agent_loads_stored_snapshot_on_start(
    writer: aioredis.Redis, agents: list[ConfigAgent]
) -> None:
    await store_snapshot(writer, snapshot(7))
    assert await agents[0].start(wait_s=2) is True
    assert agents[0].version == 7
    assert agents[0].snapshot.teams["t1"].name == "team at v7"


async def test_agent_without_stored_config_holds_version_zero(agents: list[ConfigAgent]) -> None:
    assert await agents[0].start(wait_s=0.3) is False
    assert agents[0].version == 0
    assert agents[0].snapshot.keys == {}


async def test_push_reaches_every_agent_quickly(
    writer: aioredis.Redis, agents: list[ConfigAgent]
) -> None:
    for agent in agents:
        await agent.start()
    await until(lambda: all(a.connected for a in agents), 2)
    seen: list[int] = []
    agents[0].on_change(lambda s: seen.append(s.version))
    await store_snapshot(writer, snapshot(1), kinds=["team"])
    elapsed = await until(lambda: all(a.version == 1 for a in agents), 1)
    assert elapsed < 1
    assert seen == [1]


async def test_disconnected_agent_catches_up_after_reconnect(
    redis_url: str, writer: aioredis.Redis
) -> None:
    proxy = TcpProxy(urlsplit(redis_url).port or 6379)
    await proxy.start()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=2)
    agent = ConfigAgent(client, check_interval_s=30)  # no periodic repair: reconnect must do it
    try:
        await store_snapshot(writer, snapshot(1))
        await agent.start(wait_s=2)
        assert agent.version == 1
        await proxy.cut()
        await until(lambda: not agent.connected, 2)
        for version in (2, 3, 4):  # three changes while the node cannot hear them
            await store_snapshot(writer, snapshot(version))
        await asyncio.sleep(0.3)
        assert agent.version == 1
        await proxy.restore()
        elapsed = await until(lambda: agent.version == 4, 2)
        assert elapsed < 2
        assert agent.snapshot.teams["t1"].name == "team at v4"
    finally:
        await agent.stop()
        await client.aclose()
        await proxy.close()


async def test_missed_notice_is_repaired_by_periodic_check(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    agent = ConfigAgent(client, check_interval_s=0.2)
    try:
        await agent.start()
        await until(lambda: agent.connected, 2)
        doc = snapshot(5)  # written without a notice, as if the PUBLISH was lost
        await client.hset(CONFIG.key, mapping={"version": 5, "document": doc.model_dump_json()})
        await until(lambda: agent.version == 5, 2)
    finally:
        await agent.stop()
        await client.aclose()


async def test_invalid_stored_document_keeps_last_good_version(
    writer: aioredis.Redis, agents: list[ConfigAgent]
) -> None:
    agent = agents[0]
    await store_snapshot(writer, snapshot(1))
    await agent.start(wait_s=2)
    await writer.hset(CONFIG.key, mapping={"version": 2, "document": b'{"version": "x"}'})
    await writer.publish(names.CONFIG_UPDATES_CHANNEL, b'{"data": {"version": 2}}')
    await until(lambda: agent.last_error is not None, 2)
    assert agent.version == 1
    assert agent.connected
    await store_snapshot(writer, snapshot(3))
    await until(lambda: agent.version == 3, 2)


async def test_garbage_notice_triggers_a_check_not_a_crash(
    writer: aioredis.Redis, agents: list[ConfigAgent]
) -> None:
    agent = agents[0]
    await agent.start()
    await until(lambda: agent.connected, 2)
    await writer.publish(names.CONFIG_UPDATES_CHANNEL, b"\xff not json")
    await store_snapshot(writer, snapshot(2))
    await until(lambda: agent.version == 2, 2)
    assert agent.connected


async def test_routing_table_agent_follows_the_router(writer: aioredis.Redis) -> None:
    agent = RoutingTableAgent(writer, check_interval_s=30)
    try:
        await agent.start()
        assert agent.table.version == 0
        await until(lambda: agent.connected, 2)
        table = RoutingTablePublished(
            version=4,
            generated_at=utc_now(),
            aliases={"chat": [RouteCandidate(backend_id="b1", model="m", weight=1.0)]},
        )
        assert await store_routing_table(writer, table) is True
        await until(lambda: agent.version == 4, 1)
        assert agent.table.aliases["chat"][0].backend_id == "b1"
    finally:
        await agent.stop()


def test_empty_snapshot_is_version_zero() -> None:
    assert empty_snapshot().version == 0


async def test_stop_always_returns_whatever_the_watcher_is_doing(
    redis_url: str, writer: aioredis.Redis
) -> None:
    """redis-py may turn a cancellation mid-read into a connection error; stop() must
    still end the watcher (it once hung here about 1 in 40 cycles)."""
    import random

    rng = random.Random(7)
    await store_snapshot(writer, snapshot(1))
    for _ in range(120):
        client = aioredis.Redis.from_url(redis_url)
        agent = ConfigAgent(client, check_interval_s=0.05)
        await agent.start()
        await asyncio.sleep(rng.uniform(0, 0.03))
        await asyncio.wait_for(agent.stop(), 2)
        await client.aclose()
