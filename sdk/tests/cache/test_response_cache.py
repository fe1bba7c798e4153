"""The response cache against a real Redis: keys, TTL, invalidation, stats, and the
in-memory fallback while Redis is unreachable (cut by a TCP proxy) or hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hyperinfer.client.cache import (
    MemoryStore,
    ResponseCache,
    cache_key,
    cacheable,
    canonical_request,
    key_pattern,
    requested_ttl,
)
from hyperinfer.client.errors import InvalidRequest
from hyperinfer.runtime.testing.proxy import TcpProxy
from redis.asyncio import Redis

REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0}]}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def proxied_redis(redis_url: str) -> AsyncIterator[tuple[TcpProxy, Redis]]:
    proxy = TcpProxy(_port(redis_url))
    await proxy.start()
    client = Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=0.5)
    yield proxy, client
    await client.aclose()
    await proxy.close()


# --- keys ------------------------------------------------------------------------------
def test_key_ignores_field_order_and_fields_that_do_not_change_the_answer() -> None:
    reordered = {"temperature": 0, "messages": REQUEST["messages"], "model": "gpt-4o"}
    noisy = {**REQUEST, "stream": False, "user": "u-1", "metadata": {"trace": "x"}}
    assert cache_key("team-a", REQUEST) == cache_key("team-a", reordered)
    assert cache_key("team-a", REQUEST) == cache_key("team-a", noisy)
    assert canonical_request(REQUEST) == canonical_request(reordered)


def test_key_differs_by_team_model_and_content() -> None:
    base = cache_key("team-a", REQUEST)
    assert cache_key("team-b", REQUEST) != base
    assert cache_key("team-a", {**REQUEST, "model": "gpt-4o-mini"}) != base
    assert cache_key("team-a", {**REQUEST, "temperature": 0.5}) != base
    other = {**REQUEST, "messages": [{"role": "user", "content": "hi!"}]}
    assert cache_key("team-a", other) != base
    assert base.startswith("hyperinfer:cache:{t:team-a}:gpt-4o:")


def test_key_parts_cannot_smuggle_globs_or_separators() -> None:
    key = cache_key("a:*", {**REQUEST, "model": "m[1]?:x"})
    assert key.startswith("hyperinfer:cache:{t:a%3A%2A}:m%5B1%5D%3F%3Ax:")
    assert key_pattern("a:*") == "hyperinfer:cache:{t:a%3A%2A}:*"
    assert key_pattern() == "hyperinfer:cache:*"
    assert key_pattern(model="gpt-4o") == "hyperinfer:cache:*:gpt-4o:*"


def test_only_non_streaming_chat_is_cacheable() -> None:
    assert cacheable(REQUEST)
    assert not cacheable({**REQUEST, "stream": True})
    assert not cacheable({"model": "x", "input": "embed me"})


@pytest.mark.parametrize(
    ("header", "ttl"), [(None, None), ("off", None), ("0", None), ("30", 30.0)]
)
def test_requested_ttl(header: str | None, ttl: float | None) -> None:
    assert requested_ttl(header) == ttl


@pytest.mark.parametrize("header", ["soon", "-5", "1e12", "nan"])
def test_requested_ttl_rejects_garbage(header: str) -> None:
    with pytest.raises(InvalidRequest, match="x-hyperinfer-cache"):
        requested_ttl(header)


# --- Redis -----------------------------------------------------------------------------
async def test_miss_then_hit_from_redis_with_stats(redis: Redis) -> None:
    cache = ResponseCache(redis)
    key = cache_key("team-a", REQUEST)
    assert await cache.get(key) is None
    await cache.set(key, ANSWER, 60)
    assert await cache.get(key) == ANSWER
    assert await redis.exists(key) == 1
    assert 59_000 < await redis.pttl(key) <= 60_000
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["writes"]) == (1, 1, 1)
    assert stats["backend"] == "redis"
    assert stats["hit_ratio"] == 0.5


async def test_two_nodes_share_answers_through_redis(redis_url: str) -> None:
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        key = cache_key("team-a", REQUEST)
        await ResponseCache(one).set(key, ANSWER, 60)
        assert await ResponseCache(two).get(key) == ANSWER
    finally:
        await one.aclose()
        await two.aclose()


async def test_entries_expire_after_their_ttl(redis: Redis) -> None:
    cache = ResponseCache(redis)
    key = cache_key("team-a", REQUEST)
    await cache.set(key, ANSWER, 0.2)
    assert await cache.get(key) == ANSWER
    await asyncio.sleep(0.4)
    assert await cache.get(key) is None


async def test_oversized_answers_are_not_stored(redis: Redis) -> None:
    cache = ResponseCache(redis, max_value_bytes=100)
    key = cache_key("team-a", REQUEST)
    await cache.set(key, {"content": "x" * 200}, 60)
    assert await cache.get(key) is None
    assert cache.stats()["skipped_too_large"] == 1


async def test_pattern_invalidation_by_team_and_model(redis: Redis) -> None:
    cache = ResponseCache(redis)
    keys = {
        ("a", "gpt-4o"): cache_key("a", REQUEST),
        ("a", "mini"): cache_key("a", {**REQUEST, "model": "mini"}),
        ("b", "gpt-4o"): cache_key("b", REQUEST),
    }
    for key in keys.values():
        await cache.set(key, ANSWER, 60)
    assert await cache.invalidate(key_pattern("a", "gpt-4o")) == 1
    assert await cache.get(keys["a", "gpt-4o"]) is None
    assert await cache.get(keys["a", "mini"]) == ANSWER
    assert await cache.invalidate(key_pattern("a")) == 1
    assert await cache.get(keys["b", "gpt-4o"]) == ANSWER
    assert await cache.invalidate(key_pattern()) == 1
    assert await redis.keys("hyperinfer:cache:*") == []
    assert cache.stats()["invalidated"] == 3


async def test_invalidation_leaves_other_redis_keys_alone(redis: Redis) -> None:
    await redis.set("hyperinfer:config", "x")
    cache = ResponseCache(redis)
    await cache.set(cache_key("a", REQUEST), ANSWER, 60)
    await cache.invalidate(key_pattern())
    assert await redis.get("hyperinfer:config") == b"x"


# --- fallback --------------------------------------------------------------------------
async def test_falls_back_to_memory_while_redis_is_cut_and_returns_when_back(
    proxied_redis: tuple[TcpProxy, Redis],
) -> None:
    proxy, client = proxied_redis
    cache = ResponseCache(client, retry_interval_s=0.3)
    in_redis = cache_key("a", REQUEST)
    await cache.set(in_redis, ANSWER, 60)

    await proxy.cut()
    during = cache_key("a", {**REQUEST, "temperature": 1})
    assert await cache.get(in_redis) is None  # a miss, never an error
    await cache.set(during, {"during": True}, 60)
    assert await cache.get(during) == {"during": True}
    stats = cache.stats()
    assert stats["backend"] == "memory"
    assert stats["fallbacks"] == 1
    assert stats["memory_entries"] == 1
    assert stats["redis_errors"] >= 1

    await proxy.restore()
    await asyncio.sleep(0.35)
    assert await cache.get(in_redis) == ANSWER
    assert cache.stats()["backend"] == "redis"
    assert cache.stats()["recoveries"] == 1
    assert cache.stats()["memory_entries"] == 0  # dropped: may have missed invalidations
    assert await cache.get(during) is None


async def test_stays_on_memory_until_the_retry_interval_passes(
    proxied_redis: tuple[TcpProxy, Redis],
) -> None:
    proxy, client = proxied_redis
    cache = ResponseCache(client, retry_interval_s=30)
    await proxy.cut()
    key = cache_key("a", REQUEST)
    await cache.set(key, ANSWER, 60)
    await proxy.restore()
    assert await cache.get(key) == ANSWER  # still memory: no Redis call for 30 s
    assert cache.stats()["redis_errors"] == 1


async def test_invalidation_during_an_outage_is_applied_when_redis_returns(
    proxied_redis: tuple[TcpProxy, Redis], redis: Redis
) -> None:
    proxy, client = proxied_redis
    cache = ResponseCache(client, retry_interval_s=0.2)
    key = cache_key("a", REQUEST)
    await cache.set(key, ANSWER, 60)
    await proxy.cut()
    await cache.invalidate(key_pattern("a"))
    assert await redis.exists(key) == 1  # Redis itself was out of reach
    await proxy.restore()
    await asyncio.sleep(0.25)
    assert await cache.get(key) is None
    assert await redis.exists(key) == 0


async def test_a_hanging_redis_times_out_into_the_fallback() -> None:
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()  # reads nothing, answers nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    client = Redis(host="127.0.0.1", port=server.sockets[0].getsockname()[1])
    try:
        cache = ResponseCache(client, redis_timeout_s=0.1)
        key = cache_key("a", REQUEST)
        started = asyncio.get_running_loop().time()
        assert await cache.get(key) is None
        assert asyncio.get_running_loop().time() - started < 2
        await cache.set(key, ANSWER, 60)
        assert await cache.get(key) == ANSWER
        assert cache.stats()["backend"] == "memory"
    finally:
        await client.aclose()
        release.set()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_without_redis_the_cache_is_process_local() -> None:
    cache = ResponseCache(None)
    key = cache_key("a", REQUEST)
    await cache.set(key, ANSWER, 60)
    assert await cache.get(key) == ANSWER
    assert cache.stats()["backend"] == "memory"
    assert cache.stats()["redis_configured"] is False


async def test_returned_answers_are_copies() -> None:
    cache = ResponseCache(None)
    key = cache_key("a", REQUEST)
    await cache.set(key, ANSWER, 60)
    first = await cache.get(key)
    assert first is not None
    first["choices"].clear()
    assert await cache.get(key) == ANSWER


# --- memory store ----------------------------------------------------------------------
def test_memory_store_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=2)
    store.set("k1", b"1", 60)
    store.set("k2", b"2", 60)
    assert store.get("k1") == b"1"  # k1 now most recent
    store.set("k3", b"3", 60)
    assert store.get("k2") is None
    assert (store.get("k1"), store.get("k3")) == (b"1", b"3")


async def test_memory_store_expires_entries() -> None:
    store = MemoryStore()
    store.set("k", b"v", 0.05)
    await asyncio.sleep(0.1)
    assert store.get("k") is None
    assert len(store) == 0
