"""The thick client and the ingress are one data plane: same usage events, same quotas.

A real ingress (uvicorn in a thread) and a HyperInferClient share one Redis and one
fake upstream; what one spends, the other sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client import HyperInferClient, RateLimited
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import names
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.ingress.testing import IngressThread
from hyperinfer.runtime.testing.servers import free_port

HELLO: Any = [{"role": "user", "content": "hello there"}]
# differ by nature: ids, clocks, and who sent it
VARYING = {"request_id", "latency_ms", "ttft_ms", "started_at", "finished_at", "origin"}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream().running_in_thread() as server:
        yield server


@pytest.fixture
def rpm() -> int:
    return 3


@pytest.fixture
async def world(fake: FakeUpstream, redis_url: str, rpm: int) -> AsyncIterator[Scenario]:
    scenario = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "fake-model")]},
        rpm=rpm,
    )
    client = aioredis.Redis.from_url(redis_url)
    await store_snapshot(client, scenario.snapshot)
    await client.aclose()
    return scenario


@pytest.fixture
def ingress(world: Scenario, redis_url: str) -> Iterator[IngressThread]:
    settings = IngressSettings(redis_url=redis_url, http_port=free_port(), environment="test")
    with IngressThread(settings) as running:
        yield running


@pytest.fixture
async def thick(world: Scenario, redis_url: str) -> AsyncIterator[HyperInferClient]:
    async with HyperInferClient(redis_url, world.api_key) as client:
        yield client


async def events(redis_url: str, count: int) -> list[dict[str, Any]]:
    client = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    try:
        while True:
            entries = await client.xrange(names.USAGE_STREAM)
            if len(entries) >= count or time.monotonic() > deadline:
                return [orjson.loads(f[b"envelope"])["data"] for _, f in entries]
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in VARYING}


@pytest.mark.parametrize("rpm", [100])
async def test_identical_usage_events(
    ingress: IngressThread, thick: HyperInferClient, world: Scenario, redis_url: str
) -> None:
    async with openai.AsyncOpenAI(
        base_url=ingress.url + "/v1", api_key=world.api_key, max_retries=0
    ) as sdk:
        via_ingress = await sdk.chat.completions.create(model="small", messages=HELLO)
        streamed = await sdk.chat.completions.create(model="small", messages=HELLO, stream=True)
        ingress_text = "".join([c.choices[0].delta.content or "" async for c in streamed])
    via_client = await thick.chat({"model": "small", "messages": HELLO})
    client_text = "".join(
        [
            c.choices[0].delta.content or ""
            async for c in thick.chat_stream({"model": "small", "messages": HELLO})
        ]
    )
    assert via_ingress.choices[0].message.content == via_client.choices[0].message.content
    assert ingress_text == client_text
    await thick.flush()
    recorded = await events(redis_url, 4)
    by_origin: dict[tuple[str, bool], dict[str, Any]] = {
        (e["origin"], e["stream"]): e for e in recorded
    }
    assert set(by_origin) == {
        ("ingress", False),
        ("ingress", True),
        ("client", False),
        ("client", True),
    }
    for stream in (False, True):
        assert comparable(by_origin[("ingress", stream)]) == comparable(
            by_origin[("client", stream)]
        )
    assert by_origin[("client", False)]["total_tokens"] == 5
    assert len({e["request_id"] for e in recorded}) == 4


async def test_quota_reached_through_one_is_enforced_on_the_other(
    ingress: IngressThread, thick: HyperInferClient, world: Scenario
) -> None:
    async with openai.AsyncOpenAI(
        base_url=ingress.url + "/v1", api_key=world.api_key, max_retries=0
    ) as sdk:
        await thick.chat({"model": "small", "messages": HELLO})
        await sdk.chat.completions.create(model="small", messages=HELLO)
        await thick.chat({"model": "small", "messages": HELLO})  # rpm=3 used up
        with pytest.raises(openai.RateLimitError) as at_ingress:
            await sdk.chat.completions.create(model="small", messages=HELLO)
        with pytest.raises(RateLimited) as at_client:
            await thick.chat({"model": "small", "messages": HELLO})
    waits = (
        int(at_ingress.value.response.headers["retry-after-ms"]),
        at_client.value.retry_after_ms,
    )
    assert all(0 < w <= 20_000 for w in waits)  # one slot frees every 20 s at rpm=3
