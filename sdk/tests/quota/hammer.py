"""One load process of the accuracy tests: ``clients`` concurrent callers on one key.

Run as ``python hammer.py '<json config>'``; connects, prints ``ready``, reads the
shared wall-clock window ``{"start_at": .., "end_at": ..}`` from stdin, hammers through
it, prints ``{"admitted": [[server_us, tokens], ...], "last_us": ...}``
(``last_us``: server time of this process's last decision).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from hyperinfer.client.quota import QuotaExceeded, QuotaIndex, QuotaLimiter, hot_path_redis
from hyperinfer.client.resp import RespClient
from hyperinfer.contracts.config.v1 import ConfigSnapshot


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    redis = hot_path_redis(cfg["url"], timeout_s=5, max_connections=cfg["clients"])
    index = QuotaIndex.from_snapshot(ConfigSnapshot.model_validate(cfg["snapshot"]))
    limits = index.limits(cfg["team"], cfg["key"])
    wire = RespClient(cfg["url"], timeout_s=5) if cfg.get("transport") == "resp" else None
    limiter = QuotaLimiter(
        redis, node_id=f"hammer-{os.getpid()}", require_budgets_loaded=False, wire=wire
    )
    await redis.ping()
    if wire is not None:
        await wire.execute(b"PING")
    admitted: list[tuple[int, int]] = []
    denied = last_us = 0
    pid = os.getpid()

    async def client(i: int) -> None:
        nonlocal denied, last_us
        rng = random.Random(cfg["seed"] * 1000 + i)
        n = 0
        while time.time() < cfg["end_at"]:
            tokens = rng.choice(cfg["sizes"])
            n += 1
            try:
                res = await limiter.reserve(
                    request_id=f"{pid}-{i}-{n}",
                    team_id=cfg["team"],
                    key_id=cfg["key"],
                    tokens=tokens,
                    cost_micros=0,
                    limits=limits,
                )
            except QuotaExceeded as exc:
                denied += 1
                last_us = max(last_us, exc.reply[3])
            else:
                admitted.append((res.now_us, tokens))
                last_us = max(last_us, res.now_us)

    print("ready", flush=True)
    cfg.update(json.loads(await asyncio.to_thread(sys.stdin.readline)))
    await asyncio.sleep(max(0.0, cfg["start_at"] - time.time()))
    await asyncio.gather(*(client(i) for i in range(cfg["clients"])))
    await redis.aclose()
    if wire is not None:
        await wire.aclose()
    return {"admitted": admitted, "denied": denied, "last_us": last_us}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
