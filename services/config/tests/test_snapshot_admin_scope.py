"""The snapshot tells other services what a key may administer (``KeyConfig.admin_scope``),
decided exactly as the admin API decides it, and a role change reaches the snapshot."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG
from hyperinfer.client.keys import hash_api_key
from hyperinfer.config.testing import TEST_KEY_HASH_SALT as SALT
from hyperinfer.contracts.config.v1 import ConfigSnapshot


async def created(admin: httpx.AsyncClient, path: str, body: dict[str, object]) -> dict[str, str]:
    r = await admin.post(f"/v1/admin/{path}", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def scopes(redis: aioredis.Redis, keys: dict[str, str]) -> dict[str, str | None]:
    snap = ConfigSnapshot.model_validate_json(await redis.hget(CONFIG.key, "document"))
    return {name: snap.keys[hash_api_key(k, SALT)].admin_scope for name, k in keys.items()}


async def test_admin_scope_follows_user_roles(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await created(admin, "teams", {"id": "acme", "name": "acme"})
    boss = await created(
        admin, "users", {"email": "boss@x.example", "role": "admin", "team_id": "acme"}
    )
    lead = await created(
        admin, "users", {"email": "lead@x.example", "role": "team_admin", "team_id": "acme"}
    )
    dev = await created(
        admin, "users", {"email": "dev@x.example", "role": "member", "team_id": "acme"}
    )
    keys = {}
    for name, user, key_scopes in [
        ("platform", boss, ["admin"]),
        ("team", lead, ["admin"]),
        ("lead_chat", lead, ["chat"]),
        ("member", dev, ["admin"]),
    ]:
        body = {"team_id": "acme", "user_id": user["id"], "scopes": key_scopes, "name": name}
        keys[name] = (await created(admin, "keys", body))["key"]

    assert await scopes(redis_client, keys) == {
        "platform": "platform",
        "team": "team",
        "lead_chat": None,
        "member": None,
    }

    demoted = await admin.patch(f"/v1/admin/users/{lead['id']}", json={"role": "member"})
    assert demoted.status_code == 200, demoted.text
    assert (await scopes(redis_client, keys))["team"] is None
