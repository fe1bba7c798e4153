"""Thick-client overhead (helper of ``bench/dataplane.py``).

In one process, at concurrency 1, against the benchmark's fake upstream, alternating in
blocks of 100 so drift hits both sides alike:

- **bare**: the provider adapter alone (``OpenAICompatibleProvider.chat``);
- **bare + reserve**: the quota reserve script (the client's own limiter, one EVALSHA on
  the hot-path connection) then the same provider call: the floor of any client that
  reserves quota in Redis before calling, with nothing else;
- **client**: ``HyperInferClient.chat_raw`` (auth + route + quota EVALSHA + the same
  provider call + settle/usage queued off the path);
- **client typed**: ``HyperInferClient.chat`` (the same, plus the pydantic response model).

Overhead = p50(client) - p50(bare); of which the floor is p50(bare + reserve) - p50(bare).
Measured on the default asyncio loop and on uvloop (the caller's choice).
"""

from __future__ import annotations

import asyncio
import statistics
import time
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
    }
    calls = {
        "bare": lambda: provider.chat(upstream, dict(request)),
        "bare_plus_reserve": bare_plus_reserve,
        "client": lambda: client.chat_raw(dict(request)),
        "client_typed": lambda: client.chat(dict(request)),
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
