"""Plaintext API keys and upstream credentials appear nowhere after creation.

The config service runs as a real process (its JSON logs captured at DEBUG); the test
scans every PostgreSQL table, every Redis key, the log, the snapshot and every API
response after the one that created the secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from hyperinfer.config.testing import ConfigServiceProcess

UPSTREAM_SECRET = "sk-upstream-do-not-leak-7c1f0e"


@pytest.fixture
def config_process(
    postgres_dsn: str, redis_url: str, nats_url: str, tmp_path: Path
) -> Iterator[ConfigServiceProcess]:
    proc = ConfigServiceProcess(
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        nats_url=nats_url,
        workdir=tmp_path,
        extra_env={"HYPERINFER_LOG_LEVEL": "DEBUG"},
    )
    with proc:
        yield proc


async def all_rows_as_text(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        dumps = []
        for table in tables:
            rows = await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM "{table[0]}" t')
            dumps += [r["j"] for r in rows]
        return "\n".join(dumps)
    finally:
        await conn.close()


def everything_in_redis(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        out = []
        for key in client.scan_iter():
            kind = client.type(key)
            if kind == b"hash":
                out.append(repr(client.hgetall(key)))
            elif kind == b"string":
                out.append(repr(client.get(key)))
            else:
                out.append(f"{key!r}: {kind!r}")
        return "\n".join(out)
    finally:
        client.close()


async def test_no_plaintext_secret_survives_creation(
    config_process: ConfigServiceProcess, postgres_dsn: str, redis_url: str
) -> None:
    later_responses: list[str] = []
    async with httpx.AsyncClient(
        base_url=config_process.url, headers=config_process.admin_headers
    ) as api:

        async def call(method: str, path: str, **kw: object) -> httpx.Response:
            r = await api.request(method, path, **kw)  # type: ignore[arg-type]
            later_responses.append(f"{r.headers}\n{r.text}")
            return r

        await call("POST", "/v1/admin/teams", json={"id": "acme", "name": "acme"})
        backend = {
            "id": "openai-main",
            "name": "openai",
            "kind": "openai",
            "base_url": "https://api.openai.example/v1",
            "credentials": {"api_key": UPSTREAM_SECRET},
        }
        created_backend = await api.post("/v1/admin/backends", json=backend)
        assert created_backend.status_code == 201
        created = await api.post("/v1/admin/keys", json={"team_id": "acme", "name": "app"})
        first_key = created.json()["key"]
        rotated = await api.post(f"/v1/admin/keys/{created.json()['id']}/rotate")
        second_key = rotated.json()["key"]
        member = await api.post("/v1/admin/keys", json={"team_id": "acme", "name": "member"})
        member_key = member.json()["key"]
        secrets = [UPSTREAM_SECRET, first_key, second_key, member_key]
        # everything an operator may do afterwards, including mistakes carrying secrets
        await call(
            "PATCH",
            "/v1/admin/backends/openai-main",
            json={"kind": "x", "credentials": {"api_key": UPSTREAM_SECRET}},
        )
        await call("PATCH", "/v1/admin/backends/openai-main", json={"weight": 2})
        await call("POST", "/v1/admin/backends", json={**backend, "id": "bad id!"})
        await call("POST", "/v1/admin/keys/lookup", json={"key": second_key})
        await call("GET", "/v1/admin/whoami", headers={"authorization": f"Bearer {member_key}"})
        await call("GET", "/v1/admin/keys", headers={"authorization": f"Bearer {first_key}"})
        for path in (
            "/v1/admin/keys",
            f"/v1/admin/keys/{created.json()['id']}",
            "/v1/admin/backends",
            "/v1/admin/backends/openai-main",
            "/v1/admin/audit?limit=500",
            "/v1/config/sync",
            "/v1/config/version",
            "/health/detailed",
        ):
            r = await call("GET", path)
            assert r.status_code == 200, path
        snapshot = (await api.get("/v1/config/sync")).text

    config_process.stop()  # flush and close the log
    places = {
        "postgres": await all_rows_as_text(postgres_dsn),
        "redis": everything_in_redis(redis_url),
        "logs": config_process.log_path.read_text(),
        "snapshot": snapshot,
        "later API responses": "\n".join(later_responses),
    }
    assert "openai-main" in places["postgres"]  # the scans do see the data
    assert "openai-main" in places["redis"]
    assert "hic1." in places["snapshot"]
    assert "listening" in places["logs"]
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a plaintext secret is in {where}"
        assert config_process.admin_key not in text, f"the admin key is in {where}"
        assert config_process.credentials_key not in text, f"the master key is in {where}"
