"""Concurrent writers: stale versions lose cleanly, and no older snapshot is ever published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG, ConfigAgent
from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.config.testing import TEST_ADMIN_KEY
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.runtime import Service


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_concurrent_updates_with_one_version_one_wins(
    admin: httpx.AsyncClient, postgres_dsn: str, redis_client: aioredis.Redis
) -> None:
    assert (
        await admin.post("/v1/admin/teams", json={"id": "acme", "name": "start"})
    ).status_code == 201
    replies = await asyncio.gather(
        *(
            admin.patch(
                "/v1/admin/teams/acme", json={"name": f"writer-{i}"}, headers={"if-match": '"1"'}
            )
            for i in range(10)
        )
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [412] * 9
    winner = next(r for r in replies if r.status_code == 200).json()["name"]
    team = (await admin.get("/v1/admin/teams/acme")).json()
    assert (team["name"], team["version"]) == (winner, 2)
    updates = await fetch(postgres_dsn, "SELECT after FROM audit_log WHERE action = 'team.update'")
    assert len(updates) == 1
    snap = ConfigSnapshot.model_validate_json(await redis_client.hget(CONFIG.key, "document"))
    assert snap.teams["acme"].name == winner


async def test_failed_change_leaves_no_trace(admin: httpx.AsyncClient, postgres_dsn: str) -> None:
    await admin.post("/v1/admin/teams", json={"id": "acme", "name": "acme"})
    before = await fetch(
        postgres_dsn, "SELECT count(*) AS n, max(config_version) AS v FROM audit_log"
    )
    dup = await admin.post("/v1/admin/teams", json={"id": "acme", "name": "other"})
    same_name = await admin.post("/v1/admin/teams", json={"id": "acme2", "name": "acme"})
    assert (dup.status_code, same_name.status_code) == (409, 409)
    after = await fetch(
        postgres_dsn, "SELECT count(*) AS n, max(config_version) AS v FROM audit_log"
    )
    assert dict(after[0]) == dict(before[0])
    teams = await fetch(postgres_dsn, "SELECT id FROM teams")
    assert [r["id"] for r in teams] == ["acme"]


@pytest.fixture
async def two_replicas(settings: ConfigSettings) -> AsyncIterator[list[Service]]:
    replicas = [create_app(settings), create_app(settings)]
    for replica in replicas:
        await replica.startup()
    yield replicas
    for replica in replicas:
        await replica.shutdown()


async def test_concurrent_writers_never_publish_an_older_snapshot(
    two_replicas: list[Service], redis_url: str
) -> None:
    watcher = aioredis.Redis.from_url(redis_url)
    agent = ConfigAgent(watcher, check_interval_s=30)
    applied: list[ConfigSnapshot] = []
    agent.on_change(applied.append)
    await agent.start()
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=replica.app),
            base_url="http://config",
            headers={"authorization": f"Bearer {TEST_ADMIN_KEY}"},
        )
        for replica in two_replicas
    ]
    try:
        replies = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/v1/admin/teams", json={"id": f"t{i:02d}", "name": f"t{i:02d}"}
                )
                for i in range(30)
            )
        )
        assert all(r.status_code == 201 for r in replies)
        committed = {r.json()["id"]: int(r.headers["x-config-version"]) for r in replies}
        assert len(set(committed.values())) == 30  # one version per change
        final = ConfigSnapshot.model_validate_json(await watcher.hget(CONFIG.key, "document"))
        assert final.version == max(committed.values())
        assert set(final.teams) == set(committed)
        for _ in range(100):
            if agent.version == final.version:
                break
            await asyncio.sleep(0.02)
        versions = [s.version for s in applied]
        assert versions == sorted(set(versions))  # strictly increasing, never back
        for snap in applied:  # a snapshot at N holds every change committed at or below N
            expected = {t for t, v in committed.items() if v <= snap.version}
            assert set(snap.teams) == expected
    finally:
        for client in clients:
            await client.aclose()
        await agent.stop()
        await watcher.aclose()
