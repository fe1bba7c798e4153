"""Config reaches every node: the real config service process, real Redis/NATS/PostgreSQL,
and several ``ConfigAgent``s, each on its own Redis connection (as separate replicas are).

Extend it: ``config_service`` starts the service as a process (see
``hyperinfer.config.testing.ConfigServiceProcess``) and ``AdminApi`` drives it; an
ingress-replica test can start its replicas against the same ``redis_url`` and assert
on HTTP answers instead of on ``agent.snapshot``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.keys import hash_api_key
from hyperinfer.config.testing import TEST_KEY_HASH_SALT, ConfigServiceProcess
from hyperinfer.runtime.testing.proxy import TcpProxy
from hyperinfer.runtime.testing.servers import RedisServer

pytestmark = [pytest.mark.e2e]
REPLICAS = 4


@pytest.fixture
def config_service(
    postgres_dsn: str, redis_url: str, nats_url: str, tmp_path: Path
) -> Iterator[ConfigServiceProcess]:
    proc = ConfigServiceProcess(
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        nats_url=nats_url,
        workdir=tmp_path,
        extra_env={"HYPERINFER_CONFIG_REPUBLISH_INTERVAL_S": "0.5"},
    )
    with proc:
        yield proc


class AdminApi:
    """The admin API of a running config service; every call must succeed."""

    def __init__(self, service: ConfigServiceProcess) -> None:
        self.http = httpx.AsyncClient(base_url=service.url, headers=service.admin_headers)

    async def ok(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        r = await self.http.request(method, f"/v1/admin{path}", **kwargs)  # type: ignore[arg-type]
        assert r.status_code < 300, r.text
        return r

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def admin(config_service: ConfigServiceProcess) -> AsyncIterator[AdminApi]:
    api = AdminApi(config_service)
    await api.ok("POST", "/teams", json={"id": "acme", "name": "acme"})
    yield api
    await api.close()


@pytest.fixture
async def agents(redis_url: str) -> AsyncIterator[list[ConfigAgent]]:
    """REPLICAS agents, each with its own Redis client; no periodic repair (push only)."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(REPLICAS)]
    made = [ConfigAgent(c, check_interval_s=60) for c in clients]
    for agent in made:
        await agent.start(wait_s=5)
    await until(lambda: all(a.connected and a.version > 0 for a in made), 5)
    yield made
    for agent, client in zip(made, clients, strict=True):
        await agent.stop()
        await client.aclose()


async def until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``predicate`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def holds_key(plaintext: str) -> Callable[[ConfigAgent], bool]:
    hashed = hash_api_key(plaintext, TEST_KEY_HASH_SALT)
    return lambda agent: hashed in agent.snapshot.keys


async def test_key_created_then_revoked_reaches_every_replica_within_a_second(
    admin: AdminApi, agents: list[ConfigAgent]
) -> None:
    started = time.monotonic()
    created = await admin.ok("POST", "/keys", json={"team_id": "acme", "name": "k"})
    key = created.json()["key"]
    known = holds_key(key)
    await until(lambda: all(known(a) for a in agents), 1.0)
    assert time.monotonic() - started < 1.0

    started = time.monotonic()
    await admin.ok("POST", f"/keys/{created.json()['id']}/revoke")
    await until(lambda: not any(known(a) for a in agents), 1.0)
    assert time.monotonic() - started < 1.0


async def test_replica_cut_off_during_three_changes_catches_up_within_two_seconds(
    admin: AdminApi, agents: list[ConfigAgent], redis_url: str
) -> None:
    proxy = TcpProxy(urlsplit(redis_url).port or 6379)
    await proxy.start()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=2)
    cut_off = ConfigAgent(client, check_interval_s=60)  # no periodic repair: reconnect must do it
    try:
        await cut_off.start(wait_s=5)
        before = cut_off.version
        assert before > 0
        await proxy.cut()
        await until(lambda: not cut_off.connected, 5)
        keys = []
        for name in ("one", "two", "three"):
            r = await admin.ok("POST", "/keys", json={"team_id": "acme", "name": name})
            keys.append(r.json()["key"])
        latest = int(r.headers["x-config-version"])
        await until(lambda: all(a.version == latest for a in agents), 1.0)  # the others have it
        assert cut_off.version == before
        await proxy.restore()
        elapsed = await until(lambda: cut_off.version == latest, 2.0)
        assert elapsed < 2.0
        assert all(holds_key(k)(cut_off) for k in keys)
    finally:
        await cut_off.stop()
        await client.aclose()
        await proxy.close()


async def test_redis_restarted_empty_is_refilled_and_replicas_recover(
    admin: AdminApi, agents: list[ConfigAgent], redis_server: RedisServer
) -> None:
    created = await admin.ok("POST", "/keys", json={"team_id": "acme", "name": "survivor"})
    key = created.json()["key"]
    version = int(created.headers["x-config-version"])
    await until(lambda: all(a.version == version for a in agents), 1.0)
    redis_server.stop()  # no persistence: it comes back empty
    redis_server.start()
    # the config service's periodic check (0.5 s here) republishes; agents reconnect and refetch
    await until(lambda: all(a.connected for a in agents), 10)
    r = await admin.ok("POST", "/keys", json={"team_id": "acme", "name": "after"})
    after = r.json()["key"]
    newest = int(r.headers["x-config-version"])
    await until(lambda: all(a.version == newest for a in agents), 5)
    assert all(holds_key(key)(a) and holds_key(after)(a) for a in agents)


async def test_snapshot_changes_are_announced_on_nats(admin: AdminApi, nats_url: str) -> None:
    import nats
    from hyperinfer.contracts import decode_envelope, names

    nc = await nats.connect(nats_url)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg.data)

    try:
        await nc.subscribe(names.CONFIG_CHANGED, cb=on_msg)
        await nc.flush()
        r = await admin.ok("PATCH", "/teams/acme", json={"budget_micros": 1_000_000})
        env = decode_envelope(await asyncio.wait_for(got.get(), 5))
        assert env.source == "config"
        assert env.data.version == int(r.headers["x-config-version"])
    finally:
        await nc.close()
