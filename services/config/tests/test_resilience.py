"""Dependencies failing under the config service: clear answers, nothing half-written,
and the snapshot repaired once they are back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG
from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.config.testing import TEST_ADMIN_KEY
from hyperinfer.runtime import Service
from hyperinfer.runtime.testing.servers import PostgresServer, RedisServer
from pydantic import SecretStr

AUTH = {"authorization": f"Bearer {TEST_ADMIN_KEY}"}


def client(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://config", headers=AUTH
    )


@pytest.fixture
async def quick(settings: ConfigSettings) -> AsyncIterator[Service]:
    svc = create_app(
        settings.model_copy(update={"publish_timeout_s": 1.0, "republish_interval_s": 60})
    )
    await svc.startup()
    yield svc
    await svc.shutdown()


async def test_redis_down_commits_then_publishes_when_it_is_back(
    quick: Service, redis_server: RedisServer, redis_url: str
) -> None:
    async with client(quick) as api:
        await api.post("/v1/admin/teams", json={"id": "acme", "name": "acme"})
        redis_server.stop()
        try:
            r = await api.patch("/v1/admin/teams/acme", json={"budget_micros": 5})
            assert r.status_code == 200
            assert r.headers["x-config-published"] == "false"
            version = int(r.headers["x-config-version"])
            assert (await api.get("/v1/admin/teams/acme")).json()["budget_micros"] == 5
        finally:
            redis_server.start()
        # the failed publish woke the repair loop: it retries within a second or two
        reader = aioredis.Redis.from_url(redis_url)
        try:
            for _ in range(100):
                if await reader.hget(CONFIG.key, "version") is not None:
                    break
                await asyncio.sleep(0.1)
            assert int(await reader.hget(CONFIG.key, "version")) == version
        finally:
            await reader.aclose()


async def test_postgres_down_is_503_problem_and_recovers(
    private_postgres: PostgresServer, settings: ConfigSettings
) -> None:
    name = f"config_{uuid.uuid4().hex[:10]}"  # a database of our own on the private cluster
    admin_conn = await asyncpg.connect(private_postgres.dsn)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    await admin_conn.close()
    dsn = private_postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    svc = create_app(settings.model_copy(update={"postgres_dsn": SecretStr(dsn)}))
    await svc.startup()
    try:
        async with client(svc) as api:
            assert (await api.post("/v1/admin/teams", json={"name": "before"})).status_code == 201
            private_postgres.stop()
            try:
                for path in ("/v1/admin/teams", "/v1/admin/keys"):
                    r = await api.get(path)
                    assert r.status_code == 503, r.text
                    assert r.headers["content-type"] == "application/problem+json"
                r = await api.post("/v1/admin/teams", json={"name": "during"})
                assert r.status_code == 503
            finally:
                private_postgres.start()
            for _ in range(50):
                r = await api.get("/v1/admin/teams", params={"name": "before"})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert r.json()["total"] == 1
            assert (await api.get("/v1/admin/teams", params={"name": "during"})).json()[
                "total"
            ] == 0
    finally:
        await svc.shutdown()
