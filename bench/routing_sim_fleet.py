"""The simulated fleet of ``bench/routing_sim.py``: N fake vLLM-style engines in one process.

Each engine is the client library's ``FakeUpstream`` (OpenAI chat over real HTTP, a
capacity model — ``slots`` requests run at once, the rest wait in a FIFO queue — and
vLLM's ``/metrics``), with a fixed service time per request. An engine may also carry
background load: requests from "other tenants" (model ``bg``) arriving at
``background_rps`` (Poisson), which occupy its slots but never pass through the router.

    python bench/routing_sim_fleet.py '{"big": {"slots": 8, "service_s": 0.2}, ...}'

prints one JSON line ``{"<name>": <port>, ...}`` once every engine listens, then serves
until stdin closes (its parent exited) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from typing import Any

import httpx
from hyperinfer.client.testing.fake_upstream import FakeUpstream

MODEL = "m"
BACKGROUND_MODEL = "bg"


async def background_load(url: str, rate: float, rng: random.Random) -> None:
    body = {"model": BACKGROUND_MODEL, "messages": [{"role": "user", "content": "other tenant"}]}
    tasks: set[asyncio.Task[Any]] = set()
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=None)
    ) as http:
        while True:
            await asyncio.sleep(rng.expovariate(rate))
            task = asyncio.create_task(other_tenant(http, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def other_tenant(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # cut at shutdown: nobody waits for it
        await http.post("/v1/chat/completions", json=body)


async def main(spec: dict[str, dict[str, Any]]) -> None:
    fakes = {}
    for name, engine in spec.items():
        fake = await FakeUpstream(models=[MODEL, BACKGROUND_MODEL], record=False).start()
        fake.set_capacity(int(engine["slots"]))
        fake.configure(latency_s=float(engine["service_s"]))
        fakes[name] = fake
    rng = random.Random(4242)
    loads = [
        asyncio.create_task(background_load(fakes[n].url, float(e["background_rps"]), rng))
        for n, e in spec.items()
        if e.get("background_rps")
    ]
    sys.stdout.write(json.dumps({n: f.port for n, f in fakes.items()}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    await stop.wait()
    for task in loads:
        task.cancel()
    for fake in fakes.values():
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
