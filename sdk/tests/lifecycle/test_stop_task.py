"""stop_task ends tasks whose cancellation a library swallows, against a real Redis."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task


async def _blocking_reader(redis: aioredis.Redis) -> None:
    """The shape of every consumer loop: a blocking read, errors logged and retried."""
    while True:
        try:
            await redis.xread({"hyperinfer:test:none": "$"}, block=20)
        except Exception:
            raise_if_cancelled()
            await asyncio.sleep(0.01)


async def test_stop_task_always_stops_a_blocking_redis_loop(redis_url: str) -> None:
    rng = random.Random(3)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(150):  # a plain cancel + await hung about 1 in 50 of these
            task = asyncio.create_task(_blocking_reader(redis))
            await asyncio.sleep(rng.uniform(0, 0.03))
            assert await stop_task(task, timeout_s=3)
            assert task.done()
    finally:
        await redis.aclose()


async def test_a_cancel_disguised_as_an_error_still_ends_the_loop() -> None:
    iterations = 0

    async def disguising_loop() -> None:
        nonlocal iterations
        while True:
            iterations += 1
            try:
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    raise ConnectionError("what a library does with a cancel") from None
            except ConnectionError:
                raise_if_cancelled()

    task = asyncio.create_task(disguising_loop())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled()
    assert iterations == 1


async def test_stop_task_gives_up_at_its_deadline() -> None:
    give_up = asyncio.Event()

    async def stubborn() -> None:
        while not give_up.is_set():
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_task(task, timeout_s=0.2) is False
    assert not task.done()
    give_up.set()
    assert await stop_task(task, timeout_s=1)


async def test_stop_task_of_nothing_or_a_finished_task() -> None:
    assert await stop_task(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    assert await stop_task(done)
