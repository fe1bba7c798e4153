"""Acceptance (issue 6): the spend API's numbers equal the sums of the raw rows, and another
team's usage is not visible — a real telemetry process, keys from a config snapshot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.keys import hash_api_key
from hyperinfer.contracts import names
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, TeamConfig
from hyperinfer.runtime.testing.servers import free_port
from hyperinfer.telemetry.testing import (
    TelemetryProcess,
    entry_fields,
    eventually,
    make_usage,
    produce,
)

ADMIN = "e2e-master-admin-key"
SALT = "e2e-salt"
TEAM_A_ADMIN = "hi-e2e-team-a-admin"
TEAMS = ("team-a", "team-b", "team-c")

pytestmark = pytest.mark.slow  # a real service process (a few seconds to start)


@pytest.fixture
def telemetry(
    redis_url: str, nats_url: str, postgres_dsn: str, tmp_path: Path
) -> Iterator[TelemetryProcess]:
    env = {
        "HYPERINFER_ENVIRONMENT": "test",
        "HYPERINFER_REDIS_URL": redis_url,
        "HYPERINFER_NATS_URL": nats_url,
        "HYPERINFER_POSTGRES_DSN": postgres_dsn,
        "HYPERINFER_ADMIN_KEY": ADMIN,
    }
    proc = TelemetryProcess(free_port(), env, tmp_path / "telemetry.log")
    yield proc
    proc.stop()


async def seed(redis: aioredis.Redis, now: datetime) -> None:
    snapshot = ConfigSnapshot(
        version=3,
        generated_at=now,
        key_hash_salt=SALT,
        teams={t: TeamConfig(id=t, name=t) for t in TEAMS},
        keys={
            hash_api_key(TEAM_A_ADMIN, SALT): KeyConfig(
                id="ka-admin", team_id="team-a", user_id="u-a", scopes=["admin"], admin_scope="team"
            )
        },
    )
    await store_snapshot(redis, snapshot)
    rng = random.Random(11)
    events = [
        make_usage(
            f"spend-{i}",
            at=now - timedelta(minutes=rng.randrange(0, 36 * 60)),
            team_id=rng.choice(TEAMS),
            key_id=f"k{rng.randrange(4)}",
            model=rng.choice(["m1", "m2", "m3"]),
            prompt_tokens=rng.randrange(1, 900),
            completion_tokens=rng.randrange(0, 900),
            cost_micros=rng.randrange(0, 90_000),
        )
        for i in range(1500)
    ]
    await produce(redis, [entry_fields(e) for e in events])


async def raw_totals(pg: asyncpg.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    rows = await pg.fetch(
        "SELECT team_id, count(*) requests, sum(prompt_tokens) prompt_tokens,"
        " sum(completion_tokens) completion_tokens, sum(cost_micros) cost_micros"
        " FROM usage_events WHERE started_at >= $1 AND started_at < $2 GROUP BY team_id",
        start,
        end,
    )
    return {r["team_id"]: dict(r) for r in rows}


async def test_spend_api_equals_raw_rows_and_hides_other_teams(
    telemetry: TelemetryProcess, redis_url: str, postgres_dsn: str
) -> None:
    now = datetime.now(UTC)
    redis = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.connect(postgres_dsn)
    try:
        await seed(redis, now)
        await asyncio.to_thread(telemetry.ready)

        async def recorded() -> bool:
            return int(await pg.fetchval("SELECT count(*) FROM usage_events")) == 1500

        await eventually(recorded, timeout_s=30, what="1500 events recorded")
        start = (now - timedelta(hours=30, minutes=17)).replace(second=0, microsecond=0)
        end = (now - timedelta(minutes=41)).replace(second=0, microsecond=0)
        raw = await raw_totals(pg, start, end)
        period = {"start": start.isoformat(), "end": end.isoformat(), "group_by": "team"}
        async with httpx.AsyncClient(base_url=telemetry.url, timeout=10) as http:
            admin = await http.get("/v1/usage", params=period, headers=_bearer(ADMIN))
            assert admin.status_code == 200
            got = {r["team_id"]: r for r in admin.json()["items"]}
            assert set(got) == set(raw) == set(TEAMS)
            for team, expected in raw.items():
                for column in ("requests", "prompt_tokens", "completion_tokens", "cost_micros"):
                    assert got[team][column] == expected[column], (team, column)

            team_a = await http.get("/v1/usage", params=period, headers=_bearer(TEAM_A_ADMIN))
            assert [r["team_id"] for r in team_a.json()["items"]] == ["team-a"]
            assert team_a.json()["totals"]["cost_micros"] == raw["team-a"]["cost_micros"]
            top = await http.get(
                "/v1/usage/top", params={"by": "team"}, headers=_bearer(TEAM_A_ADMIN)
            )
            assert [r["team_id"] for r in top.json()["items"]] == ["team-a"]
            other = await http.get(
                "/v1/usage", params={**period, "team_id": "team-b"}, headers=_bearer(TEAM_A_ADMIN)
            )
            assert other.status_code == 403
            assert other.headers["content-type"] == "application/problem+json"
            nobody = await http.get("/v1/usage", params=period)
            assert nobody.status_code == 401
        assert await redis.xlen(names.USAGE_DLQ_STREAM) == 0
    finally:
        await pg.close()
        await redis.aclose()


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
