"""Redis killed and restarted under load: each team's policy holds, the node recovers.

Two nodes heartbeat (so each knows 2 live replicas); 40 workers on node 1 hammer a
fail-closed team and a fail-open team throughout. While Redis is dead the closed
team gets ``QuotaUnavailable`` only, and the open team is admitted by node 1's local
limiter at its rate divided by 2; after Redis comes back (empty) node 1 switches
back by itself, without a restart, and admits through Redis again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import pytest
from hyperinfer.client.errors import QuotaUnavailable
from hyperinfer.client.quota import PolicySwitch, QuotaExceeded, QuotaLimiter, hot_path_redis
from hyperinfer.client.resp import RespClient
from hyperinfer.runtime.testing.servers import RedisServer

from .conftest import TRANSPORTS, index_of, key_quota

RPM = 600


async def until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_redis_loss_applies_each_teams_policy_and_recovers(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    caplog.set_level(logging.INFO, logger="hyperinfer.client.quota")
    index = index_of(
        key_quota("kc", "closed-team", rpm=RPM),
        key_quota("ko", "open-team", rpm=RPM),
        keys={"kc": "closed-team", "ko": "open-team"},
        policies={"closed-team": "closed", "open-team": "open"},
    )
    clients = [hot_path_redis(redis_url), hot_path_redis(redis_url)]
    wires = [RespClient(redis_url) if transport == "resp" else None for _ in clients]
    node1, node2 = (
        QuotaLimiter(c, node_id=f"n{i}", heartbeat_s=0.2, retry_interval_s=0.2, wire=w)
        for i, (c, w) in enumerate(zip(clients, wires, strict=True), start=1)
    )
    switches: list[PolicySwitch] = []
    node1.metrics.on_switch(switches.append)
    await node1.start()
    await node2.start()
    await until(lambda: node1.replicas == 2, 5)

    phase = "before"
    outcomes: Counter[tuple[str, str, str]] = Counter()
    errors: list[BaseException] = []
    stop = asyncio.Event()

    def within(began: str) -> str:
        """A request counts for a phase if it started and ended in it (kill and start
        block the loop, so a request can straddle them)."""
        return began if began == phase else "straddling"

    async def worker(i: int) -> None:
        team, key = ("closed-team", "kc") if i % 2 else ("open-team", "ko")
        n = 0
        while not stop.is_set():
            n += 1
            began = phase
            try:
                res = await node1.reserve(
                    request_id=f"w{i}-{n}",
                    team_id=team,
                    key_id=key,
                    tokens=1,
                    cost_micros=0,
                    limits=index.limits(team, key),
                )
                outcomes[(within(began), team, res.mode)] += 1
            except QuotaExceeded:
                outcomes[(within(began), team, "limited")] += 1
            except QuotaUnavailable:
                outcomes[(within(began), team, "unavailable")] += 1
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker(i)) for i in range(40)]
    try:
        await asyncio.sleep(0.5)
        redis_server.kill()
        phase = "down"
        await until(lambda: not node1.redis_up, 5)
        await asyncio.sleep(1.5)
        phase = "restarting"
        redis_server.start()
        await until(lambda: node1.redis_up, 10)
        phase = "after"
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await node1.stop()
        await node2.stop()
        for c in clients:
            await c.aclose()
        for w in wires:
            if w is not None:
                await w.aclose()

    assert errors == []
    by_phase = {(p, t, m): c for (p, t, m), c in outcomes.items()}
    assert by_phase.get(("before", "closed-team", "redis"), 0) > 0
    assert by_phase.get(("before", "open-team", "redis"), 0) > 0
    down = {(t, m): c for (p, t, m), c in outcomes.items() if p == "down"}
    assert {m for t, m in down if t == "closed-team"} == {"unavailable"}
    assert {m for t, m in down if t == "open-team"} <= {"fail_open_local", "limited"}
    assert down.get(("open-team", "fail_open_local"), 0) > 0
    # local admissions, whenever they started (a request in flight at the kill counts too):
    # the local share is 600 / 2 replicas, a burst of 300, then 5 per second while down
    local = sum(c for (_, _, m), c in outcomes.items() if m == "fail_open_local")
    assert RPM // 2 <= local <= RPM // 2 + 5 * 4
    assert by_phase.get(("after", "closed-team", "redis"), 0) > 0
    assert by_phase.get(("after", "open-team", "redis"), 0) > 0

    modes = sorted((s.team_id or "", s.mode) for s in switches)
    assert modes == [
        ("", "redis"),
        ("closed-team", "fail_closed"),
        ("closed-team", "redis"),
        ("open-team", "fail_open_local"),
        ("open-team", "redis"),
    ]
    assert node1.metrics.switches["fail_closed"] == 1
    assert node1.metrics.switches["fail_open_local"] == 1
    assert node1.metrics.checks["unavailable"] > 0
    assert node1.metrics.checks["local_allowed"] == local
    lines = [r.getMessage() for r in caplog.records if "node n1" in r.getMessage()]
    assert sum("quota store unreachable" in line for line in lines) == 1
    assert sum("team closed-team -> fail_closed" in line for line in lines) == 1
    assert sum("team open-team -> fail_open_local" in line for line in lines) == 1
    assert sum(": node -> redis" in line for line in lines) == 1
