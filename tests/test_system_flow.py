"""The whole system, one tenant: real config, ingress, quota and telemetry processes on
real NATS, Redis and PostgreSQL, the demo seed run against the config service, and the
official ``openai`` SDK as the client.

1. ``python -m hyperinfer.config.seed`` creates the demo tenant; a price for the echo
   model is set through the admin API;
2. the demo key chats and streams on ``demo-echo`` through the ingress (openai SDK);
3. telemetry's ledger holds exactly those requests with the answers' tokens and the cost
   the price gives; its spend API answers the same numbers for team ``demo``;
4. the quota service's period spend for the team equals the ledger's sum;
5. a budget set to that spend through the admin API makes the next request a 429
   ``insufficient_quota`` through the ingress (the openai SDK's ``RateLimitError``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from hyperinfer.config.testing import TEST_ADMIN_KEY

from tests.system_support import (
    ServiceProcess,
    admin_headers,
    config_process,
    start_all,
    stop_all,
    system_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PRICE = {"input_per_mtok_micros": 2_000_000, "output_per_mtok_micros": 5_000_000}


@dataclass
class System:
    config_url: str
    ingress: ServiceProcess
    telemetry: ServiceProcess
    demo: dict[str, Any]


@pytest.fixture
def system(nats_url: str, redis_url: str, postgres_dsn: str, tmp_path: Path) -> Iterator[System]:
    env = system_env(nats_url, redis_url, postgres_dsn)
    with config_process(nats_url, redis_url, postgres_dsn, tmp_path) as config:
        demo_file = tmp_path / "demo.json"
        seed = subprocess.run(
            [sys.executable, "-m", "hyperinfer.config.seed", "--config-url", config.url,
             "--admin-key", TEST_ADMIN_KEY, "--out", str(demo_file)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert seed.returncode == 0, seed.stderr
        assert "demo tenant ready" in seed.stdout
        services = [
            ServiceProcess("ingress", env, tmp_path),
            ServiceProcess("quota", env, tmp_path, settings={"BLOCK_MS": "100"}),
            ServiceProcess("telemetry", env, tmp_path, settings={"IDLE_BLOCK_MS": "100"}),
        ]
        start_all(services)
        try:
            yield System(config.url, services[0], services[2], json.loads(demo_file.read_text()))
        finally:
            codes = stop_all(services)
            assert codes == [0, 0, 0], [s.log_tail() for s in services]


def cost(prompt: int, completion: int) -> int:
    total = prompt * PRICE["input_per_mtok_micros"] + completion * PRICE["output_per_mtok_micros"]
    return -(-total // 1_000_000)


async def chat_and_stream(client: openai.AsyncOpenAI) -> dict[str, tuple[int, int]]:
    """A chat and a stream on demo-echo: request id → (prompt, completion) tokens answered."""
    raw = await client.chat.completions.with_raw_response.create(
        model="demo-echo", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello from the sdk"
    assert answer.usage is not None
    seen = {
        raw.headers["x-request-id"]: (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    }

    raw_stream = await client.chat.completions.with_raw_response.create(
        model="demo-echo",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in raw_stream.parse():
        for choice in chunk.choices:
            text += choice.delta.content or ""
        usage = chunk.usage or usage
    assert text == "echo: stream this please"
    assert usage is not None
    seen[raw_stream.headers["x-request-id"]] = (usage.prompt_tokens, usage.completion_tokens)
    return seen


async def wait_for(what: str, probe: Any, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.1)


async def test_demo_tenant_through_ingress_ledger_spend_and_budget(
    system: System, postgres_dsn: str
) -> None:
    async with httpx.AsyncClient(base_url=system.config_url, headers=admin_headers()) as cfg:
        r = await cfg.put("/v1/admin/prices/echo", json=PRICE)
        assert r.status_code in (200, 201), r.text
    demo = system.demo
    assert demo["team_id"] == "demo"
    client = openai.AsyncOpenAI(
        base_url=f"{system.ingress.url}/v1", api_key=demo["api_key"], max_retries=0
    )
    pg = await asyncpg.connect(postgres_dsn)
    try:
        answered = await chat_and_stream(client)

        # 3. the ledger: exactly these requests, the answers' tokens, the price's cost
        async def ledger() -> list[asyncpg.Record]:
            rows = await pg.fetch(
                "SELECT request_id, prompt_tokens, completion_tokens, cost_micros, stream,"
                " origin, key_id FROM usage_events WHERE team_id = 'demo'"
            )
            return rows if len(rows) == len(answered) else []

        rows = {r["request_id"]: r for r in await wait_for("ledger rows", ledger)}
        assert set(rows) == set(answered)
        for request_id, (prompt, completion) in answered.items():
            row = rows[request_id]
            assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
            assert row["cost_micros"] == cost(prompt, completion)
            assert (row["origin"], row["key_id"]) == ("ingress", demo["key_id"])
        assert sorted(r["stream"] for r in rows.values()) == [False, True]
        spent = sum(r["cost_micros"] for r in rows.values())
        assert spent > 0

        # ... and the spend API says the same for team demo
        async with httpx.AsyncClient(base_url=system.telemetry.url, headers=admin_headers()) as t:
            r = await t.get("/v1/usage", params={"team_id": "demo", "group_by": "team"})
        assert r.status_code == 200, r.text
        totals = r.json()["totals"]
        assert totals["requests"] == 2
        assert totals["cost_micros"] == spent
        assert totals["prompt_tokens"] == sum(p for p, _ in answered.values())
        assert totals["completion_tokens"] == sum(c for _, c in answered.values())

        # 4. the quota service's period spend equals the ledger's sum
        async def quota_spend() -> int:
            value = await pg.fetchval(
                "SELECT coalesce(sum(spent_micros), 0) FROM quota_spend"
                " WHERE scope = 'team' AND subject_id = 'demo' AND period = 'monthly'"
            )
            return int(value) if value == spent else 0

        assert await wait_for("quota period spend", quota_spend) == spent

        # 5. a budget of exactly what was spent: the next request is refused for it
        async with httpx.AsyncClient(base_url=system.config_url, headers=admin_headers()) as cfg:
            r = await cfg.patch("/v1/admin/teams/demo", json={"budget_micros": spent})
            assert r.status_code == 200, r.text
        refusal = await wait_for("insufficient_quota", lambda: _refused(client))
        assert refusal.status_code == 429
        assert refusal.body["code"] == "insufficient_quota"
        assert int(refusal.response.headers["retry-after"]) > 0
        for _ in range(2):  # and it stays refused
            assert await _refused(client) is not None
    finally:
        await pg.close()
        await client.close()


async def _refused(client: openai.AsyncOpenAI) -> openai.RateLimitError | None:
    """The 429 the next request gets, or None while the budget is being loaded (503).

    It asks for one completion token: its reservation fits the budget on its own, so the
    refusal is about what was spent (``insufficient_quota``), not its size.
    """
    try:
        await client.chat.completions.create(
            model="demo-echo", messages=[{"role": "user", "content": "one more"}], max_tokens=1
        )
    except openai.RateLimitError as exc:
        return exc
    except openai.APIStatusError as exc:  # 503 quota_reloading while the quota service loads
        if exc.status_code != 503:
            raise
    return None
