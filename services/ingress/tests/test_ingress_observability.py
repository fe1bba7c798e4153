"""The ingress's quota numbers on /metrics, and its policy switches on NATS.

Redis is killed under a running ingress: the fail-closed team's requests get 503, the
switch is published as ``quota.v1.QuotaPolicySwitched`` (through NATS, since Redis is
the thing that is gone) and counted; when Redis returns the switch back is published
too. NATS itself is optional: an ingress that cannot reach it serves all the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import nats
import orjson
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.contracts import names
from hyperinfer.runtime.testing.servers import RedisServer, free_port

from .conftest import IngressFactory, world_for

HELLO = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


def chat(url: str, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(url + "/v1/chat/completions", json=HELLO, headers=headers, timeout=10)


def metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{prefix!r} not in /metrics")


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout_s}s"
        time.sleep(0.05)


async def test_quota_numbers_and_policy_switches_reach_prometheus_and_nats(
    fake: FakeUpstream,
    start_ingress: IngressFactory,
    redis_server: RedisServer,
    nats_url: str,
) -> None:
    world = world_for(fake)  # the team fails closed
    ingress = await asyncio.to_thread(start_ingress, world, nats_url=nats_url)
    bus = await nats.connect(nats_url)
    switches = await bus.subscribe(names.QUOTA_POLICY_SWITCHED)
    try:

        def detail() -> dict[str, Any]:
            return dict(httpx.get(ingress.url + "/health/detailed").json())

        wait_for(
            lambda: detail()["policy_switch_events"]["nats"] == "connected", 10, "NATS reached"
        )
        assert (await asyncio.to_thread(chat, ingress.url, world.api_key)).status_code == 200
        redis_server.kill()
        try:
            refused = await asyncio.to_thread(chat, ingress.url, world.api_key)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "quota_unavailable"
            down = orjson.loads((await switches.next_msg(timeout=5)).data)
            assert down["type"] == "quota.policy_switched"
            assert down["data"]["mode"] == "fail_closed"
            assert down["data"]["team_id"] == "team-a"
            text = httpx.get(ingress.url + "/metrics").text
            assert metric(text, "hyperinfer_quota_policy_switches_total", 'mode="fail_closed"') == 1
            assert metric(text, "hyperinfer_quota_policy_mode", 'mode="failure_policy"') == 1
            assert metric(text, "hyperinfer_quota_checks_total", 'outcome="allowed"') == 1
            assert metric(text, "hyperinfer_quota_checks_total", 'outcome="unavailable"') >= 1
            assert metric(text, "hyperinfer_quota_denials_total", 'reason="redis_unavailable"') >= 1
            assert metric(text, "hyperinfer_quota_check_redis_seconds_count") == 1
        finally:
            redis_server.start()
        back = [orjson.loads((await switches.next_msg(timeout=10)).data)["data"] for _ in (1, 2)]
        assert sorted((b["team_id"] or "", b["mode"]) for b in back) == [
            ("", "redis"),
            ("team-a", "redis"),
        ]
        assert detail()["policy_switch_events"]["published"] == 3
    finally:
        await bus.close()


def test_an_ingress_without_nats_serves_all_the_same(
    fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    world = world_for(fake)
    ingress = start_ingress(world, nats_url=f"nats://127.0.0.1:{free_port()}")
    assert httpx.get(ingress.url + "/health/ready").status_code == 200
    assert chat(ingress.url, world.api_key).status_code == 200
    events = httpx.get(ingress.url + "/health/detailed").json()["policy_switch_events"]
    assert events["nats"] == "unavailable"
    assert events["published"] == 0
