"""Fixtures of the config service's tests: the service in-process on real PG/Redis/NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.config.testing import TEST_ADMIN_KEY as ADMIN_KEY
from hyperinfer.config.testing import TEST_CREDENTIALS_KEY as CREDENTIALS_KEY
from hyperinfer.config.testing import TEST_KEY_HASH_SALT as SALT
from hyperinfer.runtime import Service

ClientFor = Callable[..., httpx.AsyncClient]


@pytest.fixture
def settings(postgres_dsn: str, redis_url: str, nats_url: str) -> ConfigSettings:
    return ConfigSettings(
        environment="test",
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        nats_url=nats_url,
        admin_key=ADMIN_KEY,
        credentials_key=CREDENTIALS_KEY,
        key_hash_salt=SALT,
        max_body_bytes=64 * 1024,
        startup_timeout_s=10,
    )


@pytest.fixture
async def service(settings: ConfigSettings) -> AsyncIterator[Service]:
    svc = create_app(settings)
    await svc.startup()
    yield svc
    await svc.shutdown()


def client_for(service: Service, key: str | None = ADMIN_KEY) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=service.app)
    return httpx.AsyncClient(transport=transport, base_url="http://config", headers=headers)


@pytest.fixture
def make_client(service: Service) -> ClientFor:
    """``make_client(key)``: a client of the in-process service sending ``key`` (or none)."""
    return lambda key=ADMIN_KEY: client_for(service, key)


@pytest.fixture
async def admin(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(service) as client:
        yield client


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
