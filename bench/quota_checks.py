"""Quota checks per second and their latency: the exact GCRA script vs a fixed window.

One process, one Redis (a private ``redis-server`` unless ``--redis-url``), measured
side by side in one run at concurrency 1 and 64 (asyncio tasks sharing one pooled
client, as an ingress replica does):

- ``fixed-window``   ``INCR`` + ``EXPIRE`` pipelined (one round trip): the cheap,
  inexact counter most gateways use (a burst of 2N across a window edge, per-replica
  limits when kept locally, no tokens, no budget);
- ``gcra-rpm``       the reserve script with one RPM limit (no reservation record);
- ``gcra-full``      the reserve script as the data plane runs it: key and team RPM,
  key and team TPM, key and team budget (a reservation record for settle).

Limits are set far above what the run can reach, so every check is admitted (the
cost of a denial is lower: it writes nothing). Prints a markdown table; record it in
``bench/RESULTS.md``::

    uv run python bench/quota_checks.py [--seconds 5] [--rounds 2] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from hyperinfer.client.quota import QuotaIndex, QuotaLimiter, hot_path_redis
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, QuotaConfig, TeamConfig
from hyperinfer.runtime.testing.servers import RedisServer

BIG = 10**12
Check = Callable[[int], Awaitable[object]]


def snapshot(full: bool) -> ConfigSnapshot:
    key = {"rpm": BIG // 10**4}
    team: dict[str, int] = {}
    if full:
        key |= {"tpm": BIG // 10**4, "budget_micros": BIG}
        team = {"rpm": BIG // 10**4, "tpm": BIG // 10**4, "budget_micros": BIG}
    quotas = [QuotaConfig(scope="key", subject_id="k", team_id="t", **key)]  # type: ignore[arg-type]
    if team:
        quotas.append(QuotaConfig(scope="team", subject_id="t", team_id="t", **team))  # type: ignore[arg-type]
    return ConfigSnapshot(
        version=1,
        generated_at=utc_now(),
        teams={"t": TeamConfig(id="t", name="t")},
        keys={"h": KeyConfig(id="k", team_id="t")},
        quotas=quotas,
    )


def gcra(limiter: QuotaLimiter, full: bool) -> Check:
    limits = QuotaIndex.from_snapshot(snapshot(full)).limits("t", "k")
    run = itertools.count().__next__
    prefix = f"{time.time_ns()}-"

    async def check(_: int) -> object:
        return await limiter.reserve(
            request_id=prefix + str(run()),
            team_id="t",
            key_id="k",
            tokens=300,
            cost_micros=1500,
            limits=limits,
        )

    return check


def fixed_window(redis: aioredis.Redis) -> Check:
    async def check(_: int) -> object:
        window = int(time.time()) // 60
        pipe = redis.pipeline(transaction=False)
        key = f"fw:{{t:t}}:k:{window}"
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
        return count <= BIG

    return check


async def measure(
    redis: aioredis.Redis, check: Check, concurrency: int, seconds: float
) -> dict[str, float]:
    """Rate, p50/p99 and the Redis server CPU per check of one cell."""
    await redis.config_resetstat()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await check(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    stats = await redis.info("commandstats")
    server_us = sum(
        float(v["usec"])
        for k, v in stats.items()
        if k in ("cmdstat_incr", "cmdstat_expire", "cmdstat_evalsha")
    )
    return {
        "rate": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "server_us": server_us / max(1, len(latencies)),
    }


async def run(url: str, seconds: float, rounds: int) -> None:
    redis = hot_path_redis(url, timeout_s=5, max_connections=128)
    limiter = QuotaLimiter(redis, node_id="bench", require_budgets_loaded=False)
    await redis.flushall()
    await redis.config_resetstat()
    checks = {
        "fixed-window": fixed_window(redis),
        "gcra-rpm": gcra(limiter, full=False),
        "gcra-full": gcra(limiter, full=True),
    }
    for check in checks.values():  # warm up: connections, script load
        await measure(redis, check, 64, 0.5)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for concurrency in (1, 64):
            for name, check in checks.items():
                results.setdefault((name, concurrency), []).append(
                    await measure(redis, check, concurrency, seconds)
                )
    await redis.aclose()
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"{seconds}s per cell, best of {rounds} rounds (by rate), interleaved\n")
    print(
        "| check | concurrency | checks/s | p50 ms | p99 ms | vs fixed window | Redis CPU/check |"
    )
    print("|---|---|---|---|---|---|---|")
    for concurrency in (1, 64):
        base = max(r["rate"] for r in results[("fixed-window", concurrency)])
        for name in checks:
            best = max(results[(name, concurrency)], key=lambda r: r["rate"])
            print(
                f"| {name} | {concurrency} | {best['rate']:,.0f} | {best['p50_ms']:.3f} "
                f"| {best['p99_ms']:.3f} | {best['rate'] / base:.2f}x "
                f"| {best['server_us']:.1f} us |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(run(args.redis_url, args.seconds, args.rounds))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            asyncio.run(run(server.url, args.seconds, args.rounds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
