"""The quota service in-process against real NATS, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, QuotaConfig, TeamConfig
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded
from hyperinfer.quota.app import create_app
from hyperinfer.quota.settings import QuotaSettings
from hyperinfer.runtime import Service


def snapshot(
    quotas: list[QuotaConfig],
    keys: dict[str, str] | None = None,
    policies: dict[str, str] | None = None,
    version: int = 1,
) -> ConfigSnapshot:
    keys = keys if keys is not None else {"k1": "t1"}
    policies = policies or {}
    team_ids = set(keys.values()) | set(policies)
    return ConfigSnapshot(
        version=version,
        generated_at=utc_now(),
        teams={
            t: TeamConfig(id=t, name=t, failure_policy=policies.get(t, "closed"))  # type: ignore[arg-type]
            for t in team_ids
        },
        keys={f"h-{k}": KeyConfig(id=k, team_id=t) for k, t in keys.items()},
        quotas=quotas,
    )


def usage(request_id: str, cost: int, *, team: str = "t1", key: str = "k1", **kw: Any) -> bytes:
    """The stream field of one ``usage.recorded`` envelope."""
    now = kw.pop("started_at", utc_now())
    data = UsageRecorded(
        request_id=request_id,
        team_id=team,
        key_id=key,
        alias="m",
        model="m",
        backend_id="b",
        provider="echo",
        cost_micros=cost,
        total_tokens=kw.pop("tokens", 10),
        started_at=now,
        finished_at=now + timedelta(milliseconds=5),
        **kw,
    )
    env = Envelope[UsageRecorded](type=EVENT_RECORDED, source="test", data=data)
    return orjson.dumps(env.model_dump(mode="json"))


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.05)


@dataclass
class Running:
    service: Service
    redis: aioredis.Redis
    settings: QuotaSettings

    async def emit(self, *payloads: bytes) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: payload})
        await pipe.execute()

    async def configure(self, snap: ConfigSnapshot) -> None:
        assert await store_snapshot(self.redis, snap)


def quota_settings(redis_url: str, nats_url: str, postgres_dsn: str, **own: Any) -> QuotaSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "nats_url": nats_url,
        "postgres_dsn": postgres_dsn,
        "http_port": 0,
        "consumer_name": "quota-test",
        "block_ms": 50,
        "epoch_check_interval_s": 0.1,
        "sweep_interval_s": 0.2,
        "alert_flush_interval_s": 0.2,
        "startup_timeout_s": 5,
        "shutdown_grace_s": 5,
    }
    return QuotaSettings(**{**base, **own})


@pytest.fixture
def start_quota(
    redis_url: str, nats_url: str, postgres_dsn: str
) -> Callable[..., Awaitable[Running]]:
    """Start the service in-process (no HTTP); stopped at teardown by ``quota``."""
    started: list[Running] = []

    async def start(snap: ConfigSnapshot | None = None, **own: Any) -> Running:
        settings = quota_settings(redis_url, nats_url, postgres_dsn, **own)
        client = aioredis.Redis.from_url(redis_url)
        if snap is not None:
            await store_snapshot(client, snap)
        service = create_app(settings)
        await service.startup()
        run = Running(service, client, settings)
        started.append(run)
        return run

    start.started = started  # type: ignore[attr-defined]
    return start


@pytest.fixture
async def quota(
    start_quota: Callable[..., Awaitable[Running]],
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    yield start_quota
    for run in start_quota.started:  # type: ignore[attr-defined]
        await run.service.shutdown()
        await run.redis.aclose()
