"""Helpers for the quota tests: snapshots with quotas, limiters on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hyperinfer.client.quota import QuotaIndex, QuotaLimiter, hot_path_redis
from hyperinfer.client.resp import RespClient
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, QuotaConfig, TeamConfig


def make_snapshot(
    quotas: list[QuotaConfig],
    *,
    keys: dict[str, str] | None = None,
    policies: dict[str, str] | None = None,
    version: int = 1,
) -> ConfigSnapshot:
    """``keys``: key id -> team id; ``policies``: team id -> closed/open."""
    keys = keys or {"k1": "t1"}
    team_ids = set(keys.values()) | set(policies or {})
    teams = {
        t: TeamConfig(id=t, name=f"team {t}", failure_policy=(policies or {}).get(t, "closed"))  # type: ignore[arg-type]
        for t in team_ids
    }
    key_configs = {f"hash-{k}": KeyConfig(id=k, team_id=t) for k, t in keys.items()}
    return ConfigSnapshot(
        version=version, generated_at=utc_now(), teams=teams, keys=key_configs, quotas=quotas
    )


def key_quota(key_id: str = "k1", team_id: str = "t1", **limits: Any) -> QuotaConfig:
    return QuotaConfig(scope="key", subject_id=key_id, team_id=team_id, **limits)


def team_quota(team_id: str = "t1", **limits: Any) -> QuotaConfig:
    return QuotaConfig(scope="team", subject_id=team_id, team_id=team_id, **limits)


def index_of(*quotas: QuotaConfig, **kwargs: Any) -> QuotaIndex:
    return QuotaIndex.from_snapshot(make_snapshot(list(quotas), **kwargs))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = hot_path_redis(redis_url)
    yield redis
    await redis.aclose()


TRANSPORTS = ("redis-py", "resp")
"""What carries the reserve script: redis-py (the quota service) or the data plane's
``RespClient``; every limiter test runs with both (same decisions, same failure policy)."""


@pytest.fixture(params=TRANSPORTS)
async def wire(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RespClient | None]:
    if request.param == "redis-py":
        yield None
        return
    resp = RespClient(redis_url)
    yield resp
    await resp.aclose()


@pytest.fixture
async def make_limiter(
    client: aioredis.Redis, wire: RespClient | None
) -> AsyncIterator[Callable[..., QuotaLimiter]]:
    made: list[QuotaLimiter] = []

    def make(**kwargs: Any) -> QuotaLimiter:
        kwargs.setdefault("node_id", f"node-{len(made)}")
        kwargs.setdefault("require_budgets_loaded", False)
        kwargs.setdefault("wire", wire)
        limiter = QuotaLimiter(client, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.stop()
