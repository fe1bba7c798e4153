"""The spend API in-process over real PostgreSQL and a real config snapshot in Redis.

Usage is written through the real ledger; every number the API gives is compared with
the same sum over the raw rows.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hyperinfer.client.config_agent import ConfigAgent, store_snapshot
from hyperinfer.client.keys import hash_api_key
from hyperinfer.contracts import names
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, TeamConfig
from hyperinfer.runtime import Health, PostgresPool, RedisConnection, build_http_app
from hyperinfer.telemetry import api
from hyperinfer.telemetry.adapters.postgres_spend import PostgresSpendStore
from hyperinfer.telemetry.adapters.redis_stream import UsageStream, dead_letter_fields
from hyperinfer.telemetry.intake import Rejected
from hyperinfer.telemetry.testing import entry_fields, eventually, make_usage, produce
from prometheus_client import CollectorRegistry

ADMIN = "test-master-admin-key"
SALT = "salt-1"
TEAM = {"scopes": ["admin"], "admin_scope": "team"}
KEYS = {
    "hi-team-a-admin": KeyConfig(id="ka-admin", team_id="team-a", user_id="u1", **TEAM),
    "hi-team-a-user": KeyConfig(id="ka-user", team_id="team-a", user_id="u2", scopes=["chat"]),
    "hi-team-b-admin": KeyConfig(id="kb-admin", team_id="team-b", user_id="u3", **TEAM),
    "hi-team-a-revoked": KeyConfig(
        id="ka-old", team_id="team-a", user_id="u1", active=False, **TEAM
    ),
    "hi-team-a-expired": KeyConfig(
        id="ka-exp",
        team_id="team-a",
        user_id="u1",
        expires_at=datetime(2020, 1, 1, tzinfo=UTC),
        **TEAM,
    ),
    "hi-team-a-no-user": KeyConfig(id="ka-svc", team_id="team-a", scopes=["admin"]),
    # a member's admin-scoped key: the config service grants it nothing (admin_scope None)
    "hi-team-a-member": KeyConfig(id="ka-mem", team_id="team-a", user_id="u4", scopes=["admin"]),
    # a platform admin's key (its user has role admin): every team, though it lives in team-a
    "hi-platform": KeyConfig(
        id="ka-root", team_id="team-a", user_id="u5", scopes=["admin"], admin_scope="platform"
    ),
    # platform rights without the admin scope itself are refused as well
    "hi-platform-chat": KeyConfig(
        id="ka-rootchat", team_id="team-a", user_id="u5", scopes=["chat"], admin_scope="platform"
    ),
}
BASE = datetime(2031, 3, 30, 22, 0, tzinfo=UTC)  # spans a day and a month boundary below


def snapshot() -> ConfigSnapshot:
    return ConfigSnapshot(
        version=1,
        generated_at=datetime.now(UTC),
        key_hash_salt=SALT,
        teams={t: TeamConfig(id=t, name=t) for t in ("team-a", "team-b")},
        keys={hash_api_key(k, SALT): v for k, v in KEYS.items()},
    )


@pytest.fixture
async def seeded(make_ledger: Any, redis: RedisConnection) -> list[dict[str, Any]]:
    """~600 events over 3 days for two teams, several keys, models and backends."""
    rng = random.Random(7)
    events = []
    for i in range(600):
        team = rng.choice(["team-a", "team-b"])
        events.append(
            make_usage(
                f"req-{i}",
                at=BASE + timedelta(minutes=rng.randrange(0, 3 * 24 * 60), seconds=rng.random()),
                team_id=team,
                key_id=f"{team}-key{rng.randrange(3)}",
                model=rng.choice(["m-large", "m-small"]),
                backend_id=rng.choice(["b1", "b2"]),
                prompt_tokens=rng.randrange(1, 500),
                completion_tokens=rng.randrange(0, 300),
                cost_micros=rng.randrange(0, 10_000),
                latency_ms=rng.uniform(5, 5000),
                status=rng.choice(["ok"] * 9 + ["error"]),
            )
        )
    await make_ledger(raw_retention_days=0, max_clock_skew_s=10 * 365 * 86400)
    await produce(redis.client, [entry_fields(e) for e in events])

    async def all_acked() -> bool:
        info = await redis.client.xinfo_groups(names.USAGE_STREAM)
        return all(int(g["pending"]) == 0 and not g["lag"] for g in info)

    await eventually(all_acked, what="seed recorded")
    return [e.model_dump() for e in events]


@pytest.fixture
async def bare_client(pg: PostgresPool, redis: RedisConnection) -> AsyncIterator[httpx.AsyncClient]:
    """The API over an empty ledger."""
    await store_snapshot(redis.client, snapshot())
    agent = ConfigAgent(redis.client)
    assert await agent.start(wait_s=5)
    app = build_http_app(Health("telemetry"), CollectorRegistry())
    api.mount(
        app,
        admin_key=ADMIN,
        config=agent,
        team_admin_scope="admin",
        store=PostgresSpendStore(pg),
        dlq=UsageStream(redis.client, "api"),
        export_max_rows=50,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://telemetry") as http:
        yield http
    await agent.stop()


@pytest.fixture
async def client(bare_client: httpx.AsyncClient, seeded: list[dict[str, Any]]) -> httpx.AsyncClient:
    """The API over the seeded ledger."""
    return bare_client


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def raw_sums(events: list[dict[str, Any]], start: datetime, end: datetime, **where: str) -> dict:
    chosen = [
        e
        for e in events
        if start <= e["started_at"] < end and all(e[k] == v for k, v in where.items())
    ]
    return {
        "requests": len(chosen),
        "errors": sum(e["status"] == "error" for e in chosen),
        "prompt_tokens": sum(e["prompt_tokens"] for e in chosen),
        "completion_tokens": sum(e["completion_tokens"] for e in chosen),
        "cost_micros": sum(e["cost_micros"] for e in chosen),
    }


def numbers(row: dict[str, Any]) -> dict[str, int]:
    return {
        k: row[k]
        for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros")
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (BASE, BASE + timedelta(days=3)),  # everything
        (BASE + timedelta(minutes=7), BASE + timedelta(days=2, hours=5, minutes=13)),
        (BASE + timedelta(hours=25, minutes=59), BASE + timedelta(hours=26, minutes=1)),
        (BASE + timedelta(days=1), BASE + timedelta(days=2)),  # one whole day
    ],
)
async def test_totals_per_team_equal_the_raw_rows_for_any_period(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]], start: datetime, end: datetime
) -> None:
    params = {"start": start.isoformat(), "end": end.isoformat(), "group_by": "team"}
    body = (await client.get("/v1/usage", params=params, headers=auth(ADMIN))).json()
    by_team = {row["team_id"]: numbers(row) for row in body["items"]}
    for team in ("team-a", "team-b"):
        expected = raw_sums(seeded, start, end, team_id=team)
        assert by_team.get(team, dict.fromkeys(expected, 0)) == expected
    assert numbers(body["totals"]) == raw_sums(seeded, start, end)


async def test_time_groups_equal_the_raw_rows_of_each_bucket(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE + timedelta(minutes=30), BASE + timedelta(days=2, minutes=30)
    for unit, step in (("day", timedelta(days=1)), ("hour", timedelta(hours=1))):
        params = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "group_by": f"{unit},model",
            "limit": 1000,
        }
        body = (await client.get("/v1/usage", params=params, headers=auth(ADMIN))).json()
        assert body["next_cursor"] is None
        for row in body["items"]:
            bucket = datetime.fromisoformat(row[unit])
            lo, hi = max(bucket, start), min(bucket + step, end)
            assert numbers(row) == raw_sums(seeded, lo, hi, model=row["model"]), (unit, row)
        assert sum(r["requests"] for r in body["items"]) == raw_sums(seeded, start, end)["requests"]


async def test_month_groups_split_at_the_month_boundary(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE, BASE + timedelta(days=3)
    params = {"start": start.isoformat(), "end": end.isoformat(), "group_by": "month"}
    body = (await client.get("/v1/usage", params=params, headers=auth(ADMIN))).json()
    april = datetime(2031, 4, 1, tzinfo=UTC)
    assert [datetime.fromisoformat(r["month"]) for r in body["items"]] == [
        datetime(2031, 3, 1, tzinfo=UTC),
        april,
    ]
    assert numbers(body["items"][0]) == raw_sums(seeded, start, april)
    assert numbers(body["items"][1]) == raw_sums(seeded, april, end)


async def test_a_team_admin_sees_only_their_own_team(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE, BASE + timedelta(days=3)
    period = {"start": start.isoformat(), "end": end.isoformat()}
    team_a = auth("hi-team-a-admin")

    body = await client.get("/v1/usage", params={**period, "group_by": "team"}, headers=team_a)
    assert [r["team_id"] for r in body.json()["items"]] == ["team-a"]
    assert numbers(body.json()["totals"]) == raw_sums(seeded, start, end, team_id="team-a")

    keys = await client.get("/v1/usage", params={**period, "group_by": "key"}, headers=team_a)
    assert {r["key_id"] for r in keys.json()["items"]} <= {f"team-a-key{i}" for i in range(3)}

    top = await client.get("/v1/usage/top", params={**period, "by": "team"}, headers=team_a)
    assert [r["team_id"] for r in top.json()["items"]] == ["team-a"]

    export = await client.get(
        "/v1/usage/export", params={**period, "group_by": "key"}, headers=team_a
    )
    assert "team-b" not in export.text

    for path in ("/v1/usage", "/v1/usage/top", "/v1/usage/export"):
        refused = await client.get(path, params={**period, "team_id": "team-b"}, headers=team_a)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "forbidden"


async def test_a_platform_admins_key_sees_every_team(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE, BASE + timedelta(days=3)
    period = {"start": start.isoformat(), "end": end.isoformat()}
    root = auth("hi-platform")

    body = await client.get("/v1/usage", params={**period, "group_by": "team"}, headers=root)
    assert body.status_code == 200, body.text
    by_team = {r["team_id"]: numbers(r) for r in body.json()["items"]}
    assert by_team == {t: raw_sums(seeded, start, end, team_id=t) for t in ("team-a", "team-b")}
    other = await client.get("/v1/usage", params={**period, "team_id": "team-b"}, headers=root)
    assert numbers(other.json()["totals"]) == raw_sums(seeded, start, end, team_id="team-b")
    top = await client.get("/v1/usage/top", params={**period, "by": "team"}, headers=root)
    assert {r["team_id"] for r in top.json()["items"]} == {"team-a", "team-b"}
    letters = await client.get("/v1/usage/dead-letters", headers=root)
    assert letters.status_code == 200


@pytest.mark.parametrize(
    "key",
    [
        "",
        "wrong",
        "hi-team-a-user",
        "hi-team-a-revoked",
        "hi-team-a-expired",
        "hi-team-a-no-user",
        "hi-team-a-member",
        "hi-platform-chat",
    ],
)
async def test_keys_that_are_not_admin_keys_are_refused(
    bare_client: httpx.AsyncClient, key: str
) -> None:
    response = await bare_client.get("/v1/usage", headers=auth(key) if key else {})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["status"] == 401


async def test_top_consumers_are_ordered_by_the_metric(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE, BASE + timedelta(days=3)
    params = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "by": "key",
        "metric": "cost",
        "limit": 3,
    }
    body = (await client.get("/v1/usage/top", params=params, headers=auth(ADMIN))).json()
    per_key: dict[str, int] = {}
    for e in seeded:
        per_key[e["key_id"]] = per_key.get(e["key_id"], 0) + e["cost_micros"]
    expected = sorted(per_key.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(r["key_id"], r["cost_micros"]) for r in body["items"]] == expected


async def test_pages_cover_every_group_once(client: httpx.AsyncClient) -> None:
    end = BASE + timedelta(days=3)
    params: dict[str, Any] = {"start": BASE.isoformat(), "end": end.isoformat()}
    params |= {"group_by": "key,model,backend", "limit": 5}
    seen: list[tuple[str, str, str]] = []
    everything = await client.get(
        "/v1/usage", params={**params, "limit": 1000}, headers=auth(ADMIN)
    )
    while True:
        page = (await client.get("/v1/usage", params=params, headers=auth(ADMIN))).json()
        seen += [(r["key_id"], r["model"], r["backend_id"]) for r in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    expected = [(r["key_id"], r["model"], r["backend_id"]) for r in everything.json()["items"]]
    assert seen == expected
    assert len(set(seen)) == len(seen) > 5


async def test_csv_export_has_a_header_and_every_group(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    start, end = BASE, BASE + timedelta(days=3)
    params = {"start": start.isoformat(), "end": end.isoformat(), "group_by": "team,model"}
    response = await client.get("/v1/usage/export", params=params, headers=auth(ADMIN))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 4
    assert sum(int(r["cost_micros"]) for r in rows) == raw_sums(seeded, start, end)["cost_micros"]
    too_big = {**params, "group_by": "minute"}  # > export_max_rows (50) groups
    refused = await client.get("/v1/usage/export", params=too_big, headers=auth(ADMIN))
    assert refused.status_code == 400
    assert refused.json()["title"] == "export too large"


# A parameter the schema refuses (limit=0, a start that is no date) is the runtime's 422
# invalid-field, as in every admin API (it was 400 before the translation moved to the
# runtime); a well-formed query the ledger cannot answer is telemetry's own 400.
@pytest.mark.parametrize(
    ("params", "status", "code", "detail"),
    [
        (
            {"start": "2031-01-02T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
            400,
            "invalid-query",
            "before end",
        ),
        ({"group_by": "team,planet"}, 400, "invalid-query", "cannot group by planet"),
        ({"group_by": "team,team"}, 400, "invalid-query", "twice"),
        ({"limit": "0"}, 422, "invalid-field", "query.limit"),
        ({"start": "yesterday"}, 422, "invalid-field", "query.start"),
        ({"cursor": "!!!"}, 400, "invalid-query", "cursor"),
    ],
)
async def test_bad_queries_get_problem_details(
    bare_client: httpx.AsyncClient, params: dict[str, str], status: int, code: str, detail: str
) -> None:
    response = await bare_client.get("/v1/usage", params=params, headers=auth(ADMIN))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:hyperinfer:problem:{code}"
    assert detail in body["detail"]
    assert body["instance"] == "/v1/usage"


async def test_a_period_needing_pruned_minute_rollups_is_refused(
    bare_client: httpx.AsyncClient,
) -> None:
    start = (datetime.now(UTC) - timedelta(days=30)).replace(minute=5, second=0, microsecond=0)
    params = {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}
    response = await bare_client.get("/v1/usage", params=params, headers=auth(ADMIN))
    assert response.status_code == 400
    assert "minute rollups are kept 14 days" in response.json()["detail"]
    hour = start.replace(minute=0)
    whole = {"start": hour.isoformat(), "end": (hour + timedelta(hours=5)).isoformat()}
    assert (
        await bare_client.get("/v1/usage", params=whole, headers=auth(ADMIN))
    ).status_code == 200


async def test_dead_letters_are_listed_and_replayed_by_the_master_key_only(
    bare_client: httpx.AsyncClient, pg: PostgresPool, redis: RedisConnection, make_ledger: Any
) -> None:
    await make_ledger()
    # dead-lettered during an earlier incident, valid now (e.g. its consumer was fixed)
    valid = entry_fields(make_usage("from-the-dlq", at=datetime.now(UTC), cost_micros=7))
    incident = Rejected(b"1-1", "rejected_by_store", "disk full", _as_bytes(valid), 1)
    first = await redis.client.xadd(names.USAGE_DLQ_STREAM, dead_letter_fields(incident, "x"))
    bad = Rejected(b"1-2", "invalid_payload", "not JSON", {b"envelope": b"{nope"}, 1)
    second = await redis.client.xadd(names.USAGE_DLQ_STREAM, dead_letter_fields(bad, "x"))

    page = await bare_client.get("/v1/usage/dead-letters", params={"limit": 1}, headers=auth(ADMIN))
    assert page.status_code == 200
    assert [i["reason"] for i in page.json()["items"]] == ["rejected_by_store"]
    after = page.json()["next_after"]
    rest = await bare_client.get(
        "/v1/usage/dead-letters", params={"after": after}, headers=auth(ADMIN)
    )
    assert [i["id"] for i in rest.json()["items"]] == [second.decode()]
    assert rest.json()["next_after"] is None
    team = await bare_client.get("/v1/usage/dead-letters", headers=auth("hi-team-a-admin"))
    assert team.status_code == 403

    ids = [first.decode(), second.decode(), "99-9"]
    replay = await bare_client.post(
        "/v1/usage/dead-letters/replay", json={"ids": ids}, headers=auth(ADMIN)
    )
    assert replay.status_code == 200
    assert [r["id"] for r in replay.json()["replayed"]] == ids[:2]
    assert replay.json()["missing"] == ["99-9"]

    async def recorded_and_refused_again() -> bool:
        async with pg.pool.acquire() as conn:
            n = await conn.fetchval("SELECT count(*) FROM usage_events WHERE cost_micros = 7")
        reasons = [f[b"reason"] for _, f in await redis.client.xrange(names.USAGE_DLQ_STREAM)]
        return n == 1 and reasons == [b"invalid_payload"]

    await eventually(recorded_and_refused_again, what="valid one recorded, bad one back in DLQ")
    bogus = await bare_client.post(
        "/v1/usage/dead-letters/replay", json={"ids": ["drop table"]}, headers=auth(ADMIN)
    )
    assert bogus.status_code == 400


def _as_bytes(fields: dict[str | bytes, bytes]) -> dict[bytes, bytes]:
    return {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
