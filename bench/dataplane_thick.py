"""Thick-client overhead (helper of ``bench/dataplane.py``).

In one process, at concurrency 1, against the benchmark's fake upstream, alternating in
blocks of 100 so drift hits both sides alike:

- **bare**: the provider adapter alone (``OpenAICompatibleProvider.chat``);
- **bare + reserve**: the quota reserve script (the client's own limiter, one EVALSHA on
  the hot-path connection) then the same provider call: the floor of any client that
  reserves quota in Redis before calling, with nothing else;
- **client**: ``HyperInferClient.chat_raw`` (auth + route + quota EVALSHA + the same
  provider call + settle/usage queued off the path);
- **client typed**: ``HyperInferClient.chat`` (the same, plus the pydantic response model);
- **client, reserve skipped**: ``chat_raw`` with the limiter's reserve answered in process
  (a fixed, non-settleable reservation): what the client costs besides the round trip.

Overhead = p50(client) - p50(bare); of which the floor is p50(bare + reserve) - p50(bare);
the client's own share is p50(client, reserve skipped) - p50(bare).
Measured on the default asyncio loop and on uvloop (the caller's choice).

Run alone (a private Redis and fake upstream; this process on core 0)::

    scripts/bench dataplane_thick [--requests 2000] [--redis-core 1]

``--redis-core 0`` puts Redis on the client's core (a cheap round trip: 7 µs for a PING
here, against 70 to 85 µs across cores), to show what the round trip's cost does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hyperinfer.client.providers.base import PoolLimits, Upstream
from hyperinfer.client.providers.openai import OpenAICompatibleProvider
from hyperinfer.client.thick_client import HyperInferClient

BLOCK = 100


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _timed(call: Any, n: int, sink: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        await call()
        sink.append(time.perf_counter() - started)


async def _measure(redis_url: str, api_key: str, alias: str, requests: int) -> dict[str, Any]:
    request = {"model": alias, "messages": [{"role": "user", "content": "hello thick client"}]}
    client = HyperInferClient(redis_url, api_key, require_budgets_loaded=False)
    await client.start()
    provider = OpenAICompatibleProvider(PoolLimits())
    backend = client.dataplane.config.snapshot.backends["fake"]
    upstream = Upstream(backend=backend, model=backend.models[0], timeout_s=30)
    plane = client.dataplane
    caller = plane.authenticate(api_key)
    limits = plane.index.limits(caller)
    counter = iter(range(10**9))
    fixed = dataclasses.replace(
        await plane.limiter.reserve(
            request_id="thick-fixed",
            team_id=caller.team_id,
            key_id=caller.key_id,
            tokens=1,
            cost_micros=1,
            limits=limits,
        ),
        mode="fail_open_local",  # not settleable: nothing goes back to Redis for it
    )

    async def answered_in_process(**_: Any) -> Any:
        return fixed

    async def client_reserve_skipped() -> Any:
        plane.limiter.reserve = answered_in_process  # type: ignore[method-assign]
        try:
            return await client.chat_raw(dict(request))
        finally:
            del plane.limiter.reserve

    async def bare_plus_reserve() -> Any:
        await plane.limiter.reserve(
            request_id=f"floor-{next(counter)}",
            team_id=caller.team_id,
            key_id=caller.key_id,
            tokens=1024,
            cost_micros=1,
            limits=limits,
        )
        return await provider.chat(upstream, dict(request))

    samples: dict[str, list[float]] = {
        "bare": [],
        "bare_plus_reserve": [],
        "client": [],
        "client_typed": [],
        "client_reserve_skipped": [],
    }
    calls = {
        "bare": lambda: provider.chat(upstream, dict(request)),
        "bare_plus_reserve": bare_plus_reserve,
        "client": lambda: client.chat_raw(dict(request)),
        "client_typed": lambda: client.chat(dict(request)),
        "client_reserve_skipped": client_reserve_skipped,
    }
    try:
        for call in calls.values():  # warm up pools, scripts, caches
            await _timed(call, 50, [])
        for _ in range(max(1, requests // BLOCK)):
            for name, call in calls.items():
                await _timed(call, BLOCK, samples[name])
    finally:
        await provider.aclose()
        await client.aclose()
    p50 = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    return {
        "requests_each": len(samples["bare"]),
        "p50_us": {k: round(v, 1) for k, v in p50.items()},
        "p99_us": {k: round(_pct(v, 0.99) * 1e6, 1) for k, v in samples.items()},
        "overhead_p50_us": round(p50["client"] - p50["bare"], 1),
        "floor_p50_us": round(p50["bare_plus_reserve"] - p50["bare"], 1),
        "overhead_typed_p50_us": round(p50["client_typed"] - p50["bare"], 1),
        "own_p50_us": round(p50["client_reserve_skipped"] - p50["bare"], 1),
    }


def measure_thick_client(redis_url: str, api_key: str, alias: str, requests: int) -> dict[str, Any]:
    results = {"asyncio": asyncio.run(_measure(redis_url, api_key, alias, requests))}
    try:
        import uvloop
    except ImportError:
        return results
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results["uvloop"] = runner.run(_measure(redis_url, api_key, alias, requests))
    return results


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dataplane_procs import Proc, pin, pinned
    from dataplane_seed import ALIAS, API_KEY, UPSTREAM_MODEL, seed
    from hyperinfer.runtime.testing.servers import RedisServer, free_port

    parser = argparse.ArgumentParser(description="thick-client overhead, alone")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis-core", default="1", help="core for Redis (the client: 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hi-thick-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        assert redis.proc is not None
        pin(redis.proc.pid, args.redis_core)
        port = free_port()
        argv = [sys.executable, "-m", "hyperinfer.client.testing.fake_upstream"]
        argv += ["--port", str(port), "--no-record", "--model", UPSTREAM_MODEL]
        fake = Proc("fake-upstream", pinned("1", argv), Path(tmp) / "fake.log").start()
        try:
            fake.wait_http(f"http://127.0.0.1:{port}/v1/models")
            seed(redis.url, f"http://127.0.0.1:{port}")
            pin(0, "0")
            result = measure_thick_client(redis.url, API_KEY, ALIAS, args.requests)
            print(json.dumps({"redis_core": args.redis_core, **result}, indent=2))
        finally:
            fake.stop()
            redis.stop()


if __name__ == "__main__":
    main()
