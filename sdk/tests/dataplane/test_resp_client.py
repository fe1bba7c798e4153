"""The hot path's Redis client against a real Redis: pipelining, errors, scripts,
timeouts and reconnects (the quota limiter's failure policy relies on the last two)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hyperinfer.client.resp import RespClient, Script
from hyperinfer.runtime.testing.servers import RedisServer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@pytest.fixture
async def wire(redis_url: str) -> AsyncIterator[RespClient]:
    client = RespClient(redis_url, timeout_s=2.0)
    yield client
    await client.aclose()


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    wire: RespClient,
) -> None:
    async def roundtrip(i: int) -> bytes:
        await wire.execute(b"SET", f"k{i}", f"v{i}")
        reply: bytes = await wire.execute(b"GET", f"k{i}")
        return reply

    replies = await asyncio.gather(*(roundtrip(i) for i in range(500)))
    assert replies == [f"v{i}".encode() for i in range(500)]
    assert wire.connects == 1  # one connection, pipelined


async def test_error_replies_are_redis_py_exceptions(wire: RespClient) -> None:
    await wire.execute(b"SET", b"n", b"not a number")
    with pytest.raises(ResponseError, match="not an integer"):
        await wire.execute(b"INCR", b"n")
    assert await wire.execute(b"PING") == b"PONG"  # the connection is still in step
    ok, failed, value = await wire.execute_many(
        [(b"SET", b"m", 1), (b"INCR", b"n"), (b"GET", b"m")]
    )
    assert ok == b"OK"
    assert value == b"1"
    assert isinstance(failed, ResponseError)
    assert await wire.execute_many([]) == []


async def test_script_runs_by_sha_and_is_sent_whole_after_a_flush(
    wire: RespClient, redis_url: str
) -> None:
    script = Script("return {KEYS[1], ARGV[1], 7}")
    assert await wire.evalsha(script, [b"key"], [42]) == [b"key", b"42", 7]
    await wire.execute(b"SCRIPT", b"FLUSH")
    with pytest.raises(NoScriptError):
        await wire.execute(*script.evalsha([b"key"], [1]))
    assert await wire.evalsha(script, [b"key"], [43]) == [b"key", b"43", 7]  # EVAL reloads
    plain = aioredis.Redis.from_url(redis_url)
    try:
        assert await plain.script_exists(script.sha.decode()) == [True]
    finally:
        await plain.aclose()


async def test_a_late_reply_times_out_and_the_next_command_reconnects(
    redis_url: str,
) -> None:
    wire = RespClient(redis_url, timeout_s=0.3)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await wire.execute(b"PING") == b"PONG"
        await admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(wire.execute(b"PING") for _ in range(5)), return_exceptions=True
        )
        waited = asyncio.get_running_loop().time() - started
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert waited < 0.9  # bounded by the timeout, not by the pause
        await asyncio.sleep(0.8)  # the pause ends
        assert await wire.execute(b"PING") == b"PONG"
        assert wire.connects == 2
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await wire.aclose()


async def test_redis_killed_fails_pending_commands_then_recovers_after_restart(
    redis_server: RedisServer, redis_url: str
) -> None:
    wire = RespClient(redis_url, timeout_s=1.0, connect_timeout_s=0.3)
    try:
        assert await wire.execute(b"SET", b"before", 1) == b"OK"
        blocked = asyncio.ensure_future(wire.execute(b"BLPOP", b"nothing", 0))
        await asyncio.sleep(0.05)
        redis_server.kill()
        with pytest.raises(RedisConnectionError):
            await blocked
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await wire.execute(b"PING")  # down: a clear error, quickly
        redis_server.start()
        assert await wire.execute(b"PING") == b"PONG"  # no restart of the client needed
    finally:
        await wire.aclose()
        if not redis_server.running:
            redis_server.start()


async def test_database_from_the_url_is_selected(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    wire = RespClient(url)
    plain = aioredis.Redis.from_url(url)
    try:
        await wire.execute(b"SET", b"in-db-3", b"yes")
        assert await plain.get("in-db-3") == b"yes"
    finally:
        await plain.flushdb()
        await plain.aclose()
        await wire.aclose()


async def test_closed_client_refuses_commands(wire: RespClient) -> None:
    await wire.execute(b"PING")
    await wire.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await wire.execute(b"PING")
