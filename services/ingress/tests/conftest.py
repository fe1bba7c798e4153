"""Fixtures of the ingress tests: a real ingress in a thread, fake upstreams, real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import names
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.ingress.testing import IngressThread
from hyperinfer.runtime.testing.servers import free_port


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream().running_in_thread() as server:
        yield server


@pytest.fixture
def fallback() -> Iterator[FakeUpstream]:
    with FakeUpstream().running_in_thread() as server:
        server.configure(answer="from the fallback")
        yield server


def seed(redis_url: str, world: Scenario) -> None:
    """Store ``world``'s snapshot the way the config service does (sync, for these tests)."""
    import asyncio

    import redis.asyncio as aioredis
    from hyperinfer.client.config_agent import store_snapshot

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await store_snapshot(client, world.snapshot)
        finally:
            await client.aclose()

    asyncio.run(store())


IngressFactory = Callable[..., IngressThread]


@pytest.fixture
def start_ingress(redis_url: str) -> Iterator[IngressFactory]:
    running: list[IngressThread] = []

    def start(world: Scenario, **overrides: Any) -> IngressThread:
        seed(redis_url, world)
        settings = IngressSettings(
            redis_url=redis_url,
            http_port=free_port(),
            environment="test",
            config_wait_s=5,
            breaker_open_s=overrides.pop("breaker_open_s", 0.5),
            retry_budget_s=2,
            **overrides,
        )
        ingress = IngressThread(settings).__enter__()
        running.append(ingress)
        return ingress

    yield start
    for ingress in running:
        ingress.__exit__(None, None, None)


def usage_events(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(names.USAGE_STREAM)
    finally:
        client.close()
    return [orjson.loads(fields[b"envelope"])["data"] for _, fields in entries]


def world_for(fake: FakeUpstream, **kwargs: Any) -> Scenario:
    return Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "fake-model")]},
        **kwargs,
    )
