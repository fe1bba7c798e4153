"""The admin API in-process (real PostgreSQL, Redis, NATS): objects, versions, pages, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import httpx
import nats
import orjson
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import CONFIG
from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.client.keys import hash_api_key
from hyperinfer.config.app import create_app
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.config.testing import TEST_ADMIN_KEY as ADMIN_KEY
from hyperinfer.config.testing import TEST_CREDENTIALS_KEY as CREDENTIALS_KEY
from hyperinfer.config.testing import TEST_KEY_HASH_SALT as SALT
from hyperinfer.contracts import decode_envelope, names
from hyperinfer.contracts.config.v1 import ConfigChanged, ConfigSnapshot
from hyperinfer.runtime import Service

PROBLEM = "application/problem+json"


async def stored_snapshot(redis: aioredis.Redis) -> ConfigSnapshot:
    return ConfigSnapshot.model_validate_json(await redis.hget(CONFIG.key, "document"))


async def audit_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit_log"))
    finally:
        await conn.close()


async def make_team(admin: httpx.AsyncClient, team_id: str, **extra: object) -> dict[str, object]:
    r = await admin.post("/v1/admin/teams", json={"id": team_id, "name": team_id, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_echo(admin: httpx.AsyncClient, backend_id: str = "echo") -> None:
    body = {"id": backend_id, "name": backend_id, "kind": "echo", "models": ["echo"]}
    r = await admin.post("/v1/admin/backends", json=body)
    assert r.status_code == 201, r.text


# --- objects and versions ------------------------------------------------------------
async def test_team_lifecycle_with_etags(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    r = await admin.post("/v1/admin/teams", json={"id": "acme", "name": "Acme", "budget_micros": 5})
    assert r.status_code == 201
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == "/v1/admin/teams/acme"
    assert r.headers["x-config-published"] == "true"
    created_at = int(r.headers["x-config-version"])
    snap = await stored_snapshot(redis_client)
    assert snap.version == created_at
    assert snap.teams["acme"].budget_micros == 5

    r = await admin.patch(
        "/v1/admin/teams/acme", json={"name": "Acme Inc"}, headers={"if-match": '"1"'}
    )
    assert r.status_code == 200
    assert r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    assert int(r.headers["x-config-version"]) > created_at

    r = await admin.get("/v1/admin/teams/acme")
    assert (r.json()["name"], r.headers["etag"]) == ("Acme Inc", '"2"')


async def test_stale_if_match_is_412_and_writes_nothing(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis, postgres_dsn: str
) -> None:
    await make_team(admin, "acme")
    await admin.patch("/v1/admin/teams/acme", json={"name": "v2"})
    before_audit = await audit_count(postgres_dsn)
    before_version = (await stored_snapshot(redis_client)).version

    r = await admin.patch(
        "/v1/admin/teams/acme", json={"name": "stale"}, headers={"if-match": '"1"'}
    )
    assert r.status_code == 412
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["current_version"] == 2
    r = await admin.delete("/v1/admin/teams/acme", headers={"if-match": 'W/"1"'})
    assert r.status_code == 412

    assert (await admin.get("/v1/admin/teams/acme")).json()["name"] == "v2"
    assert await audit_count(postgres_dsn) == before_audit
    r = await admin.get("/v1/config/version")
    assert r.json()["version"] == before_version


async def test_every_change_is_audited_with_its_config_version(
    admin: httpx.AsyncClient, postgres_dsn: str
) -> None:
    await make_team(admin, "acme")
    r2 = await admin.patch("/v1/admin/teams/acme", json={"budget_micros": 7})
    version = int(r2.headers["x-config-version"])
    page = (await admin.get("/v1/admin/audit", params={"target_id": "acme"})).json()
    assert [e["action"] for e in page["items"]] == ["team.update", "team.create"]
    update = page["items"][0]
    assert update["config_version"] == version
    assert (update["before"]["budget_micros"], update["after"]["budget_micros"]) == (None, 7)
    assert update["actor"] == "admin"
    assert update["team_id"] == "acme"


async def test_pages_and_filters(admin: httpx.AsyncClient) -> None:
    for i in range(5):
        await make_team(admin, f"team-{i}")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get("/v1/admin/teams", params=params)).json()
        assert page["total"] == 5
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"team-{i}" for i in range(5)]
    page = (await admin.get("/v1/admin/teams", params={"name": "team-3"})).json()
    assert [t["id"] for t in page["items"]] == ["team-3"]
    assert page["total"] == 1
    r = await admin.get("/v1/admin/teams", params={"cursor": "%%%"})
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM


async def test_key_plaintext_is_returned_once(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await make_team(admin, "acme")
    r = await admin.post(
        "/v1/admin/keys", json={"team_id": "acme", "name": "ci", "scopes": ["chat"]}
    )
    assert r.status_code == 201
    created = r.json()
    plaintext = created["key"]
    assert plaintext.startswith("hi-")
    assert created["key_hint"] == f"{plaintext[:6]}…{plaintext[-4:]}"
    snap = await stored_snapshot(redis_client)
    entry = snap.keys[hash_api_key(plaintext, SALT)]
    assert (entry.id, entry.team_id, entry.scopes) == (created["id"], "acme", ["chat"])

    again = (await admin.get(f"/v1/admin/keys/{created['id']}")).text
    listed = (await admin.get("/v1/admin/keys")).text
    assert plaintext not in again
    assert plaintext not in listed
    assert "key_hash" not in again

    found = await admin.post("/v1/admin/keys/lookup", json={"key": plaintext})
    assert found.json()["id"] == created["id"]
    missing = await admin.post("/v1/admin/keys/lookup", json={"key": "hi-not-a-key"})
    assert missing.status_code == 404


async def test_rotate_and_revoke(admin: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await make_team(admin, "acme")
    created = (await admin.post("/v1/admin/keys", json={"team_id": "acme"})).json()
    rotated = await admin.post(
        f"/v1/admin/keys/{created['id']}/rotate", headers={"if-match": '"1"'}
    )
    assert rotated.status_code == 200
    new_key = rotated.json()["key"]
    assert new_key != created["key"]
    snap = await stored_snapshot(redis_client)
    assert hash_api_key(created["key"], SALT) not in snap.keys
    assert snap.keys[hash_api_key(new_key, SALT)].id == created["id"]

    revoked = await admin.post(f"/v1/admin/keys/{created['id']}/revoke")
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked_at"] is not None
    assert (await stored_snapshot(redis_client)).keys == {}
    again = await admin.post(f"/v1/admin/keys/{created['id']}/revoke")
    assert again.status_code == 200
    assert "x-config-version" not in again.headers
    resumed = await admin.patch(f"/v1/admin/keys/{created['id']}", json={"active": True})
    assert resumed.status_code == 409
    rotated = await admin.post(f"/v1/admin/keys/{created['id']}/rotate")
    assert rotated.status_code == 409


async def test_suspended_key_leaves_the_snapshot(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await make_team(admin, "acme")
    created = (await admin.post("/v1/admin/keys", json={"team_id": "acme"})).json()
    await admin.patch(f"/v1/admin/keys/{created['id']}", json={"active": False})
    assert (await stored_snapshot(redis_client)).keys == {}
    await admin.patch(f"/v1/admin/keys/{created['id']}", json={"active": True})
    assert len((await stored_snapshot(redis_client)).keys) == 1


async def test_aliases_team_and_global(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await make_team(admin, "acme")
    await make_echo(admin)
    await make_echo(admin, "echo-2")
    targets = [{"backend_id": "echo", "model": "echo"}, {"backend_id": "echo-2", "model": "echo"}]
    glob = await admin.post("/v1/admin/aliases", json={"name": "chat", "targets": targets[:1]})
    team = await admin.post(
        "/v1/admin/aliases", json={"name": "chat", "team_id": "acme", "targets": targets}
    )
    assert (glob.status_code, team.status_code) == (201, 201)
    dup = await admin.post(
        "/v1/admin/aliases", json={"name": "chat", "team_id": "acme", "targets": targets}
    )
    assert dup.status_code == 409
    snap = await stored_snapshot(redis_client)
    assert [(a.name, a.team_id, len(a.targets)) for a in snap.aliases] == [
        ("chat", None, 1),
        ("chat", "acme", 2),
    ]
    globals_only = (await admin.get("/v1/admin/aliases", params={"scope": "global"})).json()
    assert [a["team_id"] for a in globals_only["items"]] == [None]

    bad = await admin.post(
        "/v1/admin/aliases", json={"name": "x", "targets": [{"backend_id": "nope", "model": "m"}]}
    )
    assert bad.status_code == 422
    unserved = await admin.post(
        "/v1/admin/aliases", json={"name": "x", "targets": [{"backend_id": "echo", "model": "gpt"}]}
    )
    assert unserved.status_code == 422
    in_use = await admin.delete("/v1/admin/backends/echo-2")
    assert in_use.status_code == 409


async def test_quotas(admin: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await make_team(admin, "acme", budget_micros=1_000_000)
    key = (await admin.post("/v1/admin/keys", json={"team_id": "acme"})).json()
    body = {
        "scope": "key",
        "subject_id": key["id"],
        "rpm": 60,
        "tpm": 1000,
        "budget_period": "daily",
    }
    created = await admin.post("/v1/admin/quotas", json=body)
    assert created.status_code == 201
    assert created.json()["team_id"] == "acme"
    too_soft = await admin.patch(
        f"/v1/admin/quotas/{created.json()['id']}",
        json={"budget_micros": 10, "soft_limit_micros": 11},
    )
    assert too_soft.status_code == 422
    ok = await admin.patch(
        f"/v1/admin/quotas/{created.json()['id']}",
        json={"budget_micros": 10, "soft_limit_micros": 8, "grace_micros": 1},
    )
    assert ok.status_code == 200
    unknown = await admin.post("/v1/admin/quotas", json={"scope": "key", "subject_id": "key_nope"})
    assert unknown.status_code == 422
    snap = await stored_snapshot(redis_client)
    by_scope = {q.scope: q for q in snap.quotas}
    assert by_scope["key"].rpm == 60
    assert by_scope["key"].budget_micros == 10
    assert by_scope["key"].budget_period == "daily"
    assert by_scope["team"].budget_micros == 1_000_000


async def test_backend_credentials_are_write_only(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    body = {
        "id": "openai-main",
        "name": "OpenAI",
        "kind": "openai",
        "base_url": "https://api.openai.example/v1",
        "models": ["gpt-4o-mini"],
        "credentials": {"api_key": "sk-upstream-0123456789"},
    }
    r = await admin.post("/v1/admin/backends", json=body)
    assert r.status_code == 201
    assert r.json()["has_credentials"] is True
    assert "sk-upstream" not in r.text
    snap = await stored_snapshot(redis_client)
    sealed = snap.backends["openai-main"].credentials_ciphertext
    assert sealed is not None
    opened = CredentialsCipher(CREDENTIALS_KEY).decrypt("openai-main", sealed)
    assert opened == {"api_key": "sk-upstream-0123456789"}

    cleared = await admin.patch("/v1/admin/backends/openai-main", json={"credentials": None})
    assert cleared.json()["has_credentials"] is False
    assert (await stored_snapshot(redis_client)).backends[
        "openai-main"
    ].credentials_ciphertext is None
    needs_url = await admin.post(
        "/v1/admin/backends", json={"name": "x", "kind": "openai_compatible"}
    )
    assert needs_url.status_code == 422


async def test_prices_bump_the_price_version(
    admin: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    body = {"input_per_mtok_micros": 150_000, "output_per_mtok_micros": 600_000}
    r = await admin.put("/v1/admin/prices/gpt-4o-mini", json=body)
    assert r.status_code == 200
    first = await stored_snapshot(redis_client)
    assert first.prices["gpt-4o-mini"].input_per_mtok_micros == 150_000
    assert first.price_version == r.headers["x-config-version"]
    await make_team(admin, "acme")  # not a price change: price_version stays
    assert (await stored_snapshot(redis_client)).price_version == first.price_version
    stale = await admin.put("/v1/admin/prices/gpt-4o-mini", json=body, headers={"if-match": '"9"'})
    assert stale.status_code == 412
    r = await admin.put("/v1/admin/prices/meta/llama-3", json=body)
    assert r.status_code == 200
    assert (await admin.get("/v1/admin/prices/meta/llama-3")).json()["model"] == "meta/llama-3"
    assert (await stored_snapshot(redis_client)).price_version == r.headers["x-config-version"]


async def test_routing_rules(admin: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    body = {"name": "default", "strategy": "score", "weights": {"gpu_utilization": 0.5}}
    r = await admin.post("/v1/admin/routing-rules", json=body)
    assert r.status_code == 201
    bad = await admin.post(
        "/v1/admin/routing-rules", json={**body, "name": "x", "weights": {"a": -1}}
    )
    assert bad.status_code == 422
    snap = await stored_snapshot(redis_client)
    assert snap.routing_rules[0].strategy == "score"
    assert snap.routing_rules[0].weights == {"gpu_utilization": 0.5}


# --- the snapshot and its announcements ----------------------------------------------
async def test_config_sync_with_etag(
    make_client: Callable[..., httpx.AsyncClient],
    admin: httpx.AsyncClient,
    settings: ConfigSettings,
) -> None:
    await make_team(admin, "acme")
    r = await admin.get("/v1/config/sync")
    assert r.status_code == 200
    etag = r.headers["etag"]
    assert etag == f'"{r.json()["version"]}"'
    assert (await admin.get("/v1/config/sync", headers={"if-none-match": etag})).status_code == 304
    await make_team(admin, "other")
    assert (await admin.get("/v1/config/sync", headers={"if-none-match": etag})).status_code == 200
    internal = settings.internal_key.get_secret_value()
    async with make_client(None) as anon:
        assert (await anon.get("/v1/config/sync")).status_code == 401
        r = await anon.get("/v1/config/sync", headers={"x-internal-key": internal})
        assert r.status_code == 200
        assert (
            await anon.get("/v1/config/sync", headers={"x-internal-key": "wrong"})
        ).status_code == 401


async def test_change_is_announced_on_nats(admin: httpx.AsyncClient, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg.data)

    try:
        await nc.subscribe(names.CONFIG_CHANGED, cb=on_msg)
        await nc.flush()
        r = await admin.post("/v1/admin/teams", json={"id": "acme", "name": "acme"})
        env = decode_envelope(await asyncio.wait_for(got.get(), 5))
        assert env.type == "config.changed"
        assert isinstance(env.data, ConfigChanged)
        assert env.data.version == int(r.headers["x-config-version"])
        assert env.data.kinds == ["team"]
    finally:
        await nc.close()


async def test_start_up_republishes_what_redis_lost(
    service: Service,
    settings: ConfigSettings,
    admin: httpx.AsyncClient,
    redis_client: aioredis.Redis,
) -> None:
    await make_team(admin, "acme")
    version = (await stored_snapshot(redis_client)).version
    await redis_client.flushall()
    second = create_app(settings)  # another replica starting (or this one restarting)
    await second.startup()
    try:
        snap = await stored_snapshot(redis_client)
        assert (snap.version, list(snap.teams)) == (version, ["acme"])
    finally:
        await second.shutdown()


async def test_periodic_check_repairs_a_flushed_redis(
    settings: ConfigSettings, redis_client: aioredis.Redis
) -> None:
    svc = create_app(settings.model_copy(update={"republish_interval_s": 0.2}))
    await svc.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=svc.app),
            base_url="http://config",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            await make_team(client, "acme")
        version = (await stored_snapshot(redis_client)).version
        await redis_client.flushall()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await redis_client.hget(CONFIG.key, "version") is not None:
                break
        assert (await stored_snapshot(redis_client)).version == version
    finally:
        await svc.shutdown()


async def test_redis_ahead_of_postgres_moves_the_sequence_on(
    settings: ConfigSettings, redis_client: aioredis.Redis, postgres_dsn: str
) -> None:
    from hyperinfer.client.config_agent import store_snapshot
    from hyperinfer.contracts import utc_now

    # a snapshot at version 500 from a database that has since been reset
    await store_snapshot(redis_client, ConfigSnapshot(version=500, generated_at=utc_now()))
    svc = create_app(settings)
    await svc.startup()
    try:
        snap = await stored_snapshot(redis_client)
        assert snap.version > 500
        conn = await asyncpg.connect(postgres_dsn)
        try:
            action = await conn.fetchval("SELECT action FROM audit_log ORDER BY id DESC LIMIT 1")
        finally:
            await conn.close()
        assert action == "config.resync"
    finally:
        await svc.shutdown()


# --- errors --------------------------------------------------------------------------
async def test_errors_are_problem_json(
    make_client: Callable[..., httpx.AsyncClient], admin: httpx.AsyncClient
) -> None:
    cases = [
        await admin.post(
            "/v1/admin/teams", content=b"{nope", headers={"content-type": "application/json"}
        ),
        await admin.post("/v1/admin/teams", json={"name": ""}),
        await admin.post("/v1/admin/teams", json={"name": "x", "unknown": 1}),
        await admin.post(
            "/v1/admin/teams", content=b"x" * 70_000, headers={"content-type": "application/json"}
        ),
        await admin.get("/v1/admin/teams/nope"),
        await admin.get("/v1/admin/nothing-here"),
        await admin.put("/v1/admin/teams"),
        await admin.patch("/v1/admin/teams/nope", json={}, headers={"if-match": "garbage"}),
    ]
    assert [r.status_code for r in cases] == [400, 422, 422, 413, 404, 404, 405, 400]
    for r in cases:
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert body["status"] == r.status_code
        assert body["title"]
    async with make_client(None) as anon:
        r = await anon.get("/v1/admin/teams")
        assert (r.status_code, r.headers["content-type"]) == (401, PROBLEM)
    async with make_client("hi-unknown") as stranger:
        assert (await stranger.get("/v1/admin/teams")).status_code == 401


async def test_oversized_body_without_content_length_is_refused(admin: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1024

    r = await admin.post(
        "/v1/admin/teams", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert (await admin.get("/v1/admin/teams")).json()["total"] == 0


async def test_openapi_is_served(admin: httpx.AsyncClient) -> None:
    spec = (await admin.get("/openapi.json")).json()
    assert "/v1/admin/keys" in spec["paths"]
    assert "/v1/config/sync" in spec["paths"]
    assert (await admin.get("/docs")).status_code == 200


async def test_admin_key_itself_is_never_echoed(admin: httpx.AsyncClient) -> None:
    r = await admin.get("/v1/admin/whoami")
    assert r.json() == {"actor": "admin", "team_id": None, "role": "admin"}
    assert ADMIN_KEY not in r.text
    assert orjson.loads(r.content)["actor"] == "admin"


async def test_published_version_is_reported_in_health_and_metrics(
    admin: httpx.AsyncClient,
) -> None:
    r = await admin.post("/v1/admin/teams", json={"id": "acme", "name": "acme"})
    version = int(r.headers["x-config-version"])
    detailed = (await admin.get("/health/detailed")).json()
    assert detailed["config"]["version"] == version
    metrics = (await admin.get("/metrics")).text
    assert f"hyperinfer_config_version_applied {float(version)}" in metrics


async def test_booleans_are_not_amounts_or_counts(
    admin: httpx.AsyncClient, postgres_dsn: str
) -> None:
    """JSON true/false must not pass as 1/0 for money or limits (schemathesis found it)."""
    await make_team(admin, "acme")
    before = await audit_count(postgres_dsn)
    price = {"input_per_mtok_micros": False, "output_per_mtok_micros": 1}
    r = await admin.put("/v1/admin/prices/m", json=price)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    quota = {"scope": "team", "subject_id": "acme", "team_id": "acme", "rpm": True}
    r = await admin.post("/v1/admin/quotas", json=quota)
    assert r.status_code == 422, r.text
    assert await audit_count(postgres_dsn) == before
