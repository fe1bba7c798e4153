"""The config the data-plane benchmark runs under (helper of ``bench/dataplane.py``).

One team with a quota (RPM, TPM and a budget, all far above what the benchmark sends,
so every request takes the full reserve → settle path and none is refused), one API key,
a price for the model (so usage events carry a cost), and the alias ``bench`` → the
fake upstream's ``fake-model`` as an ``openai_compatible`` backend.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.keys import hash_api_key
from hyperinfer.contracts.config.v1 import (
    AliasConfig,
    AliasTarget,
    BackendConfig,
    ConfigSnapshot,
    KeyConfig,
    ModelPrice,
    QuotaConfig,
    TeamConfig,
)
from redis.asyncio import Redis

API_KEY = "hi-bench-0123456789abcdef0123456789abcdef"
TEAM = "team-bench"
ALIAS = "bench"
UPSTREAM_MODEL = MODEL = "fake-model"
SALT = "bench-salt"


def snapshot(upstream_url: str) -> ConfigSnapshot:
    backend = BackendConfig(
        id="fake",
        name="fake-upstream",
        kind="openai_compatible",
        base_url=f"{upstream_url}/v1",
        models=[UPSTREAM_MODEL],
        timeout_s=30,
    )
    return ConfigSnapshot(
        version=1,
        generated_at=datetime.now(UTC),
        key_hash_salt=SALT,
        teams={TEAM: TeamConfig(id=TEAM, name="bench")},
        keys={hash_api_key(API_KEY, SALT): KeyConfig(id="key-bench", team_id=TEAM)},
        aliases=[AliasConfig(name=ALIAS, targets=[AliasTarget(backend_id="fake", model=MODEL)])],
        quotas=[
            QuotaConfig(
                scope="team",
                subject_id=TEAM,
                team_id=TEAM,
                rpm=100_000_000,
                tpm=10_000_000_000,
                budget_micros=10**15,
            )
        ],
        backends={"fake": backend},
        prices={MODEL: ModelPrice(input_per_mtok_micros=150_000, output_per_mtok_micros=600_000)},
    )


async def _seed(redis_url: str, upstream_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await store_snapshot(redis, snapshot(upstream_url))
    finally:
        await redis.aclose()


def seed(redis_url: str, upstream_url: str) -> None:
    asyncio.run(_seed(redis_url, upstream_url))
