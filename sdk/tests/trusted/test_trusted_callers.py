"""Acting for a key by its id (``hyperinfer.client.trusted``): the same caller, scopes,
quota and usage as the plaintext key gives, and nothing for a key that is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client import (
    AuthenticationFailed,
    DataPlaneOptions,
    HyperInferClient,
    NotReady,
    PermissionDenied,
    RateLimited,
)
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.client.trusted import TrustedCallers
from hyperinfer.contracts import names, utc_now

HELLO = {"model": "small", "messages": [{"role": "user", "content": "hello there"}]}


def world(**kwargs: object) -> Scenario:
    return Scenario.build(
        backends={"echo": ("echo", "")},
        aliases={"small": [("echo", "echo")]},
        extra_keys=[("key-b", "team-b")],
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def pipeline_plane(redis_url: str, wait_s: float = 5.0) -> HyperInferClient:
    """A data plane as the event pipeline runs it: no plaintext key, origin pipeline."""
    client = HyperInferClient(
        redis_url,
        api_key="",
        options=DataPlaneOptions(origin="pipeline"),
        wait_config_s=wait_s,
        require_budgets_loaded=False,
    )
    return await client.start()


async def usage(redis: aioredis.Redis) -> list[dict[str, object]]:
    entries = await redis.xrange(names.USAGE_STREAM)
    return [orjson.loads(fields[b"envelope"])["data"] for _, fields in entries]


async def test_a_key_id_acts_as_its_key_with_pipeline_usage(
    redis: aioredis.Redis, redis_url: str
) -> None:
    w = world()
    await store_snapshot(redis, w.snapshot)
    client = await pipeline_plane(redis_url)
    try:
        plane = client.dataplane
        caller = TrustedCallers(plane).caller(w.key_id, w.team_id)
        assert caller == plane.authenticate(w.api_key)  # exactly what the plaintext gives
        outcome = await plane.chat(caller, dict(HELLO))
        assert outcome.body["choices"][0]["message"]["content"] == "echo: hello there"
        await client.flush()
    finally:
        await client.aclose()
    [event] = await usage(redis)
    assert (event["origin"], event["key_id"], event["team_id"]) == ("pipeline", "key-a", "team-a")
    assert event["request_id"] == outcome.request_id
    assert event["prompt_tokens"] > 0
    assert event["completion_tokens"] > 0


async def test_unknown_other_teams_and_revoked_keys_are_refused(
    redis: aioredis.Redis, redis_url: str
) -> None:
    w = world()
    await store_snapshot(redis, w.snapshot)
    client = await pipeline_plane(redis_url)
    try:
        callers = TrustedCallers(client.dataplane)
        for key_id, team_id in [("nope", "team-a"), ("key-b", "team-a"), ("key-a", "team-b")]:
            with pytest.raises(AuthenticationFailed):
                callers.caller(key_id, team_id)
        assert callers.caller("key-b", "team-b").key_id == "key-b"

        revoked = w.snapshot.model_copy(
            update={
                "version": 2,
                "keys": {h: k for h, k in w.snapshot.keys.items() if k.id != "key-b"},
            }
        )
        await store_snapshot(redis, revoked)
        for _ in range(200):
            if client.dataplane.config.version == 2:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(AuthenticationFailed, match="revoked"):
            callers.caller("key-b", "team-b")
        assert callers.caller("key-a", "team-a").key_id == "key-a"
    finally:
        await client.aclose()


async def test_scopes_expiry_and_quota_apply_as_for_a_plaintext_key(
    redis: aioredis.Redis, redis_url: str
) -> None:
    w = world(scopes=["embeddings"], rpm=1)
    expired = w.snapshot.keys[next(h for h, k in w.snapshot.keys.items() if k.id == "key-b")]
    expired.expires_at = utc_now() - timedelta(seconds=1)
    await store_snapshot(redis, w.snapshot)
    client = await pipeline_plane(redis_url)
    try:
        plane, callers = client.dataplane, TrustedCallers(client.dataplane)
        with pytest.raises(PermissionDenied):
            await plane.chat(callers.caller("key-a", "team-a"), dict(HELLO))
        with pytest.raises(AuthenticationFailed, match="expired"):
            callers.caller("key-b", "team-b")
    finally:
        await client.aclose()

    limited = world(rpm=1)
    limited.snapshot.version = 2
    await store_snapshot(redis, limited.snapshot)
    client = await pipeline_plane(redis_url)
    try:
        plane, callers = client.dataplane, TrustedCallers(client.dataplane)
        await plane.chat(callers.caller("key-a", "team-a"), dict(HELLO))
        with pytest.raises(RateLimited):  # the same team quota the ingress would reserve
            await plane.chat(callers.caller("key-a", "team-a"), dict(HELLO))
    finally:
        await client.aclose()


async def test_no_snapshot_yet_is_not_ready(redis_url: str) -> None:
    client = await pipeline_plane(redis_url, wait_s=0.1)
    try:
        with pytest.raises(NotReady):
            TrustedCallers(client.dataplane).caller("key-a", "team-a")
    finally:
        await client.aclose()
