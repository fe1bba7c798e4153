"""Acceptance of issue 8: fake engines over real HTTP → gpu-collector → router → data plane.

Three ``FakeUpstream`` servers (the client library's protocol-faithful fake: OpenAI chat,
a capacity model, vLLM-style ``/metrics``), the real collector and router services
in-process on real NATS and Redis, and the data plane's own choice: ``RoutingTableAgent``
(the table pushed through Redis) and the client library's ``GovernanceIndex`` route plan,
whose first attempt (a weighted random pick among healthy candidates) gets a real chat
request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.governance import GovernanceIndex
from hyperinfer.client.keys import hash_api_key
from hyperinfer.client.routing_table import RoutingTableAgent
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    AliasTarget,
    BackendConfig,
    ConfigSnapshot,
    KeyConfig,
    TeamConfig,
)
from hyperinfer.contracts.routing.v1 import RoutingTablePublished
from hyperinfer.gpu_collector.app import create_app as create_collector
from hyperinfer.gpu_collector.settings import GpuCollectorSettings
from hyperinfer.router.app import create_app as create_router
from hyperinfer.router.settings import RouterSettings
from hyperinfer.runtime import Service

pytestmark = [pytest.mark.bus, pytest.mark.e2e]
BACKENDS = ("a", "b", "c")
ACCEPTANCE_S = 2.0  # the bound for "less traffic" and "ejected"


API_KEY = "hi-router-e2e-0123456789abcdef0123456789abcdef"
SALT = "router-e2e"


class DataPlane:
    """The data plane's pick: its route plan for the current (config, table) pair."""

    def __init__(
        self, snapshot: ConfigSnapshot, agent: RoutingTableAgent, rng: random.Random
    ) -> None:
        self._snapshot = snapshot
        self._agent = agent
        self._rng = rng
        self._index: GovernanceIndex | None = None

    def pick(self, alias: str) -> str:
        table = self._agent.table
        if self._index is None or self._index.table_version != table.version:
            self._index = GovernanceIndex.build(self._snapshot, table)
        plan = self._index.plan(self._index.authenticate(API_KEY), alias)
        assert plan.source == "router", "the data plane is not using the router's table"
        return plan.attempts(self._rng.random())[0].backend.id


@dataclass
class Mesh:
    fakes: dict[str, FakeUpstream]
    collector: Service
    router: Service
    agent: RoutingTableAgent
    http: httpx.AsyncClient
    dataplane: DataPlane
    redis: aioredis.Redis

    def weights(self) -> dict[str, float]:
        return {c.backend_id: c.weight for c in self.agent.table.aliases.get("chat", [])}

    async def until(self, check: Callable[[dict[str, float]], bool], timeout_s: float) -> float:
        """Seconds until the data plane's table satisfies ``check``."""
        started = time.monotonic()
        while not check(self.weights()):
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"table still {self.weights()} after {timeout_s}s")
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def send(self, count: int) -> Counter[str]:
        """``count`` chat requests, each to the backend the data plane picks; all must succeed."""
        sent: Counter[str] = Counter()
        for _ in range(count):
            backend = self.dataplane.pick("chat")
            reply = await self.http.post(
                self.fakes[backend].url + "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert reply.status_code == 200, (backend, reply.text)
            sent[backend] += 1
        return sent

    def picks(self, count: int) -> Counter[str]:
        return Counter(self.dataplane.pick("chat") for _ in range(count))


def weights_of(table: RoutingTablePublished) -> dict[str, float]:
    return {c.backend_id: c.weight for c in table.aliases["chat"]}


def config(fakes: dict[str, FakeUpstream], static: dict[str, float]) -> ConfigSnapshot:
    backends = {
        b: BackendConfig(
            id=b,
            name=b,
            kind="openai_compatible",
            base_url=fake.url + "/v1",
            models=["m"],
            tags=["engine:vllm"],
            weight=static[b],
        )
        for b, fake in fakes.items()
    }
    chat = AliasConfig(name="chat", targets=[AliasTarget(backend_id=b, model="m") for b in fakes])
    return ConfigSnapshot(
        version=1,
        generated_at=utc_now(),
        key_hash_salt=SALT,
        teams={"t": TeamConfig(id="t", name="t")},
        keys={hash_api_key(API_KEY, SALT): KeyConfig(id="k", team_id="t")},
        backends=backends,
        aliases=[chat],
    )


async def start_mesh(nats_url: str, redis_url: str, static: dict[str, float]) -> Mesh:
    fakes = {b: await FakeUpstream(models=["m"], record=False).start() for b in BACKENDS}
    for fake in fakes.values():
        fake.set_capacity(4)
        fake.configure(latency_s=0.01)
    redis = aioredis.Redis.from_url(redis_url)
    snapshot = config(fakes, static)
    await store_snapshot(redis, snapshot)
    shared: dict[str, Any] = {"nats_url": nats_url, "redis_url": redis_url, "http_port": 0}
    collector = create_collector(
        GpuCollectorSettings(
            **shared, scrape_interval_s=0.2, scrape_timeout_s=0.5, poll_interval_s=1.0
        )
    )
    router = create_router(
        RouterSettings(
            **shared,
            recompute_interval_s=0.1,
            publish_max_interval_s=1.0,
            backend_stale_after_s=1.5,
            recover_after=2,
        )
    )
    await collector.startup()
    await router.startup()
    agent = RoutingTableAgent(redis, check_interval_s=1.0)
    await agent.start(wait_s=5)
    return Mesh(
        fakes,
        collector,
        router,
        agent,
        httpx.AsyncClient(timeout=10),
        DataPlane(snapshot, agent, random.Random(8)),
        redis,
    )


@pytest.fixture
async def mesh(nats_url: str, redis_url: str) -> AsyncIterator[Mesh]:
    m = await start_mesh(nats_url, redis_url, {b: 1.0 for b in BACKENDS})
    yield m
    await stop_mesh(m)


async def stop_mesh(m: Mesh) -> None:
    await m.http.aclose()
    await m.agent.stop()
    await m.redis.aclose()
    await m.router.shutdown()
    await m.collector.shutdown()
    for fake in m.fakes.values():
        await fake.stop()


async def everyone_routed(m: Mesh) -> None:
    """Every backend scraped healthy (not merely unmonitored) and in the table with weight."""
    transport = httpx.ASGITransport(app=m.collector.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as http:
        deadline = time.monotonic() + 10
        while True:
            engines = (await http.get("/health/detailed")).json()["engines"]
            if sorted(b for b, e in engines.items() if e["healthy"]) == sorted(BACKENDS):
                break
            assert time.monotonic() < deadline, f"not every backend scraped healthy: {engines}"
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the router has the same reports: a recompute or two
    await m.until(lambda w: len(w) == 3 and all(v > 0.2 for v in w.values()), timeout_s=10)


async def test_a_backend_whose_queue_rises_gets_less_traffic_within_2s(mesh: Mesh) -> None:
    await everyone_routed(mesh)
    before = await mesh.send(60)
    assert all(before[b] > 5 for b in BACKENDS), before

    # someone else's load lands on b: one slot, slow answers, a line of waiting requests
    b = mesh.fakes["b"]
    b.set_capacity(1)
    b.configure(latency_s=3.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "busy"}]}
    load = [
        asyncio.create_task(mesh.http.post(b.url + "/v1/chat/completions", json=body))
        for _ in range(8)
    ]
    try:
        while b.state.capacity.waiting < 5:
            await asyncio.sleep(0.01)
        elapsed = await mesh.until(lambda w: w["b"] < 0.1, timeout_s=5.0)
        after = mesh.picks(600)
    finally:
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
    print(f"queue rose on b: its weight fell below 0.1 after {elapsed:.2f}s; picks {after}")
    assert elapsed < ACCEPTANCE_S, f"weight of b fell only after {elapsed:.2f}s"
    assert after["b"] / 600 < 0.1 < before["b"] / 60
    assert after["a"] > 200
    assert after["c"] > 200


async def test_a_dead_backend_is_ejected_within_2s_gets_nothing_and_returns_after_recovery(
    mesh: Mesh,
) -> None:
    await everyone_routed(mesh)
    c = mesh.fakes["c"]
    port = c.port
    await c.stop()
    elapsed = await mesh.until(lambda w: w["c"] == 0, timeout_s=5.0)
    print(f"c stopped: ejected after {elapsed:.2f}s")
    assert elapsed < ACCEPTANCE_S, f"c was ejected only after {elapsed:.2f}s"
    ejected = next(x for x in mesh.agent.table.aliases["chat"] if x.backend_id == "c")
    assert ejected.healthy is False
    assert ejected.reason is not None
    assert "unhealthy" in ejected.reason

    during = await mesh.send(90)  # every request must succeed: none may go to c
    assert during["c"] == 0
    assert during["a"] > 20
    assert during["b"] > 20

    revived = FakeUpstream(port=port, models=["m"])
    mesh.fakes["c"] = await revived.start()
    revived.set_capacity(4)
    revived.configure(latency_s=0.01)
    await mesh.until(lambda w: w["c"] > 0, timeout_s=10.0)
    after = await mesh.send(150)
    print(f"while c was dead: {dict(during)}; after it came back: {dict(after)}")
    assert after["c"] > 0
    assert len(revived.requests) == after["c"]  # they really reached the revived backend


async def test_collector_stopped_falls_back_to_static_weights_never_one_backend(
    nats_url: str, redis_url: str
) -> None:
    m = await start_mesh(nats_url, redis_url, {"a": 2.0, "b": 1.0, "c": 1.0})
    try:
        await m.until(lambda w: len(w) == 3, timeout_s=10)
        # skew the live state: a and b queue up, so scores send nearly everything to c
        body = {"model": "m", "messages": [{"role": "user", "content": "busy"}]}
        for name in ("a", "b"):
            m.fakes[name].set_capacity(1)
            m.fakes[name].configure(latency_s=3.0)
        load = [
            asyncio.create_task(m.http.post(m.fakes[n].url + "/v1/chat/completions", json=body))
            for n in ("a", "b")
            for _ in range(10)
        ]
        try:
            await m.until(lambda w: w["c"] > 0.75, timeout_s=5.0)
            await m.collector.shutdown()  # the collector stops: state goes stale
            await m.until(
                lambda w: w == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25}), timeout_s=10
            )
        finally:
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
        table = m.agent.table
        picks = m.picks(2000)
    finally:
        m.collector = create_collector(GpuCollectorSettings(nats_url=nats_url, redis_url=redis_url))
        await stop_mesh(m)
    print(f"collector stopped: table {weights_of(table)}, 2000 picks {dict(picks)}")
    assert table.static_fallback is True
    assert table.fallback_aliases == ["chat"]
    assert all(c.reason == "static: state stale" for c in table.aliases["chat"])
    assert max(picks.values()) < 2000 * 0.6
    assert 0.45 < picks["a"] / 2000 < 0.55
