"""Fixtures of the data-plane tests: real Redis, fake upstreams, a seeded snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client import DataPlaneOptions, HyperInferClient
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.resilience import RetryPolicy
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import names

FAST_RETRY = RetryPolicy(retries_per_backend=1, base_s=0.01, max_backoff_s=0.05, budget_s=2.0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


@pytest.fixture
async def fallback() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        server.configure(answer="from the fallback")
        yield server


ClientFactory = Callable[..., Awaitable[HyperInferClient]]


@pytest.fixture
async def make_client(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[ClientFactory]:
    made: list[HyperInferClient] = []

    async def make(world: Scenario, **kwargs: Any) -> HyperInferClient:
        await store_snapshot(redis, world.snapshot)
        kwargs.setdefault(
            "options",
            DataPlaneOptions(origin="client", retry=FAST_RETRY, breaker_open_s=0.5),
        )
        client = HyperInferClient(redis_url, kwargs.pop("api_key", world.api_key), **kwargs)
        made.append(client)
        return await client.start()

    yield make
    for client in made:
        await client.aclose()


async def usage_events(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """Every usage envelope's ``data`` in the stream, oldest first."""
    entries = await redis.xrange(names.USAGE_STREAM)
    return [orjson.loads(fields[b"envelope"])["data"] for _, fields in entries]
