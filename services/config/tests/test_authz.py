"""A team admin sees and changes only its own team (keys, aliases, quotas, users, audit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

ClientFor = Callable[..., httpx.AsyncClient]
PROBLEM = "application/problem+json"


@dataclass
class Team:
    id: str
    admin_token: str
    key_id: str
    alias_id: str
    key_quota_id: str
    team_quota_id: str
    member_id: str


async def ok(r: httpx.Response, status: int = 201) -> dict[str, str]:
    assert r.status_code == status, r.text
    return dict(r.json())


async def build_team(admin: httpx.AsyncClient, team_id: str) -> Team:
    await ok(await admin.post("/v1/admin/teams", json={"id": team_id, "name": team_id}))
    ta = await ok(
        await admin.post(
            "/v1/admin/users",
            json={"email": f"admin@{team_id}.test", "role": "team_admin", "team_id": team_id},
        )
    )
    member = await ok(
        await admin.post("/v1/admin/users", json={"email": f"m@{team_id}.test", "team_id": team_id})
    )
    token = await ok(
        await admin.post(
            "/v1/admin/keys",
            json={"team_id": team_id, "user_id": ta["id"], "scopes": ["admin"], "name": "admin"},
        )
    )
    key = await ok(await admin.post("/v1/admin/keys", json={"team_id": team_id, "name": "app"}))
    targets = [{"backend_id": "echo", "model": "echo"}]
    alias = await ok(
        await admin.post(
            "/v1/admin/aliases", json={"name": "chat", "team_id": team_id, "targets": targets}
        )
    )
    key_quota = await ok(
        await admin.post(
            "/v1/admin/quotas", json={"scope": "key", "subject_id": key["id"], "rpm": 5}
        )
    )
    team_quota = await ok(
        await admin.post(
            "/v1/admin/quotas", json={"scope": "team", "subject_id": team_id, "rpm": 50}
        )
    )
    return Team(
        team_id,
        token["key"],
        key["id"],
        alias["id"],
        key_quota["id"],
        team_quota["id"],
        member["id"],
    )


@dataclass
class World:
    a: Team
    b: Team
    global_alias_id: str
    as_a: httpx.AsyncClient


@pytest.fixture
async def world(admin: httpx.AsyncClient, make_client: ClientFor) -> AsyncIterator[World]:
    await ok(
        await admin.post(
            "/v1/admin/backends",
            json={"id": "echo", "name": "echo", "kind": "echo", "models": ["echo"]},
        )
    )
    glob = await ok(
        await admin.post(
            "/v1/admin/aliases",
            json={"name": "shared", "targets": [{"backend_id": "echo", "model": "echo"}]},
        )
    )
    a = await build_team(admin, "team-a")
    b = await build_team(admin, "team-b")
    async with make_client(a.admin_token) as as_a:
        yield World(a, b, glob["id"], as_a)


async def test_whoami_names_the_team(world: World) -> None:
    r = await world.as_a.get("/v1/admin/whoami")
    assert r.json()["team_id"] == "team-a"
    assert r.json()["role"] == "team_admin"


# --- keys ----------------------------------------------------------------------------
async def test_keys_of_another_team_are_invisible(world: World) -> None:
    listed = (await world.as_a.get("/v1/admin/keys")).json()
    assert {k["team_id"] for k in listed["items"]} == {"team-a"}
    assert listed["total"] == 2
    assert (await world.as_a.get("/v1/admin/keys", params={"team_id": "team-b"})).status_code == 403
    assert (await world.as_a.get(f"/v1/admin/keys/{world.b.key_id}")).status_code == 404
    assert (await world.as_a.get(f"/v1/admin/keys/{world.a.key_id}")).status_code == 200


async def test_keys_of_another_team_cannot_be_changed(
    world: World, admin: httpx.AsyncClient
) -> None:
    b_key = f"/v1/admin/keys/{world.b.key_id}"
    refused = [
        await world.as_a.patch(b_key, json={"name": "mine now"}),
        await world.as_a.post(f"{b_key}/revoke"),
        await world.as_a.post(f"{b_key}/rotate"),
    ]
    assert [r.status_code for r in refused] == [404, 404, 404]
    assert all(r.headers["content-type"] == PROBLEM for r in refused)
    created = await world.as_a.post("/v1/admin/keys", json={"team_id": "team-b"})
    assert created.status_code == 403
    after = (await admin.get(b_key)).json()
    assert (after["name"], after["active"], after["version"]) == ("app", True, 1)
    assert (await admin.get("/v1/admin/keys", params={"team_id": "team-b"})).json()["total"] == 2


async def test_team_admin_manages_its_own_keys(world: World) -> None:
    created = await world.as_a.post("/v1/admin/keys", json={"team_id": "team-a", "name": "new"})
    assert created.status_code == 201
    revoked = await world.as_a.post(f"/v1/admin/keys/{created.json()['id']}/revoke")
    assert revoked.json()["active"] is False


async def test_another_teams_plaintext_key_cannot_be_looked_up(
    world: World, admin: httpx.AsyncClient
) -> None:
    b_plain = (await admin.post(f"/v1/admin/keys/{world.b.key_id}/rotate")).json()["key"]
    assert (
        await world.as_a.post("/v1/admin/keys/lookup", json={"key": b_plain})
    ).status_code == 404


# --- aliases -------------------------------------------------------------------------
async def test_aliases_of_another_team_are_invisible_and_unchangeable(
    world: World, admin: httpx.AsyncClient
) -> None:
    listed = (await world.as_a.get("/v1/admin/aliases")).json()
    assert {(x["name"], x["team_id"]) for x in listed["items"]} == {
        ("chat", "team-a"),
        ("shared", None),
    }
    b_alias = f"/v1/admin/aliases/{world.b.alias_id}"
    assert (await world.as_a.get(b_alias)).status_code == 404
    targets = [{"backend_id": "echo", "model": "echo"}]
    assert (await world.as_a.patch(b_alias, json={"targets": targets})).status_code == 404
    assert (await world.as_a.delete(b_alias)).status_code == 404
    create = {"name": "x", "team_id": "team-b", "targets": targets}
    assert (await world.as_a.post("/v1/admin/aliases", json=create)).status_code == 403
    assert (await admin.get(b_alias)).json()["version"] == 1


async def test_global_aliases_are_readable_not_writable(world: World) -> None:
    glob = f"/v1/admin/aliases/{world.global_alias_id}"
    assert (await world.as_a.get(glob)).status_code == 200
    assert (await world.as_a.delete(glob)).status_code == 403
    targets = [{"backend_id": "echo", "model": "echo"}]
    assert (
        await world.as_a.post("/v1/admin/aliases", json={"name": "g2", "targets": targets})
    ).status_code == 403
    own = await world.as_a.post(
        "/v1/admin/aliases", json={"name": "g2", "team_id": "team-a", "targets": targets}
    )
    assert own.status_code == 201


# --- quotas --------------------------------------------------------------------------
async def test_quotas_of_another_team_are_invisible_and_unchangeable(
    world: World, admin: httpx.AsyncClient
) -> None:
    listed = (await world.as_a.get("/v1/admin/quotas")).json()
    assert {q["team_id"] for q in listed["items"]} == {"team-a"}
    for quota_id in (world.b.key_quota_id, world.b.team_quota_id):
        path = f"/v1/admin/quotas/{quota_id}"
        assert (await world.as_a.get(path)).status_code == 404
        assert (await world.as_a.patch(path, json={"rpm": 100000})).status_code == 404
        assert (await world.as_a.delete(path)).status_code == 404
        assert (await admin.get(path)).json()["version"] == 1
    steal = {"scope": "key", "subject_id": world.b.key_id, "rpm": 1}
    assert (await world.as_a.post("/v1/admin/quotas", json=steal)).status_code == 422


async def test_team_admin_sets_key_quotas_but_not_its_team_quota(world: World) -> None:
    own_key = f"/v1/admin/quotas/{world.a.key_quota_id}"
    assert (await world.as_a.patch(own_key, json={"rpm": 7})).status_code == 200
    own_team = f"/v1/admin/quotas/{world.a.team_quota_id}"
    assert (await world.as_a.get(own_team)).status_code == 200
    assert (await world.as_a.patch(own_team, json={"rpm": 10**6})).status_code == 403
    assert (
        await world.as_a.patch("/v1/admin/teams/team-a", json={"budget_micros": 1})
    ).status_code == 403


# --- users, teams, global objects, audit, snapshot ------------------------------------
async def test_users_of_another_team(world: World) -> None:
    assert (await world.as_a.get(f"/v1/admin/users/{world.b.member_id}")).status_code == 404
    listed = (await world.as_a.get("/v1/admin/users")).json()
    assert {u["team_id"] for u in listed["items"]} == {"team-a"}
    grant = {"email": "boss@a.test", "role": "admin", "team_id": "team-a"}
    assert (await world.as_a.post("/v1/admin/users", json=grant)).status_code == 403
    promote = await world.as_a.patch(f"/v1/admin/users/{world.a.member_id}", json={"role": "admin"})
    assert promote.status_code == 403


async def test_teams_and_global_objects(world: World) -> None:
    teams = (await world.as_a.get("/v1/admin/teams")).json()
    assert [t["id"] for t in teams["items"]] == ["team-a"]
    assert (await world.as_a.get("/v1/admin/teams/team-b")).status_code == 404
    assert (await world.as_a.post("/v1/admin/teams", json={"name": "new"})).status_code == 403
    assert (await world.as_a.get("/v1/admin/backends")).json()["total"] == 1
    backend = {"name": "mine", "kind": "echo"}
    assert (await world.as_a.post("/v1/admin/backends", json=backend)).status_code == 403
    price = {"input_per_mtok_micros": 0, "output_per_mtok_micros": 0}
    assert (await world.as_a.put("/v1/admin/prices/echo", json=price)).status_code == 403


async def test_audit_log_shows_only_own_team(world: World) -> None:
    entries = (await world.as_a.get("/v1/admin/audit", params={"limit": 500})).json()["items"]
    assert entries
    assert {e["team_id"] for e in entries} == {"team-a"}
    assert (
        await world.as_a.get("/v1/admin/audit", params={"team_id": "team-b"})
    ).status_code == 403


async def test_full_snapshot_is_not_for_team_admins(world: World) -> None:
    assert (await world.as_a.get("/v1/config/sync")).status_code == 403


async def test_keys_without_admin_rights(
    world: World, admin: httpx.AsyncClient, make_client: ClientFor
) -> None:
    plain = (await admin.post(f"/v1/admin/keys/{world.a.key_id}/rotate")).json()["key"]
    async with make_client(plain) as app_key:
        assert (await app_key.get("/v1/admin/keys")).status_code == 403
    admin_key_id = (await world.as_a.get("/v1/admin/keys", params={"name": "admin"})).json()[
        "items"
    ][0]["id"]
    await admin.post(f"/v1/admin/keys/{admin_key_id}/revoke")
    assert (await world.as_a.get("/v1/admin/keys")).status_code == 401
