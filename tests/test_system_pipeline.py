"""Async inference through the event pipeline, end to end with real processes.

The config service (real process) holds a team, an echo backend, an alias and a key;
the event pipeline (real process, JetStream queues) runs ``inference.requested`` jobs
through its in-process data plane as the job's key — named by id, never by plaintext:

- a job → a result row in ``inference_jobs``, an ``inference.completed`` event whose
  processor calls the requester's webhook (signed), and one ``usage.recorded`` event on
  ``hyperinfer:usage`` with ``origin: pipeline`` and the answer's exact tokens;
- after the key is revoked through the admin API, its next job is a final answer:
  stored as an error on the first attempt, completed (webhook told), never retried,
  not dead-lettered, no usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request, Response
from hyperinfer.config.testing import ConfigServiceProcess
from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from hyperinfer.runtime.testing.servers import free_port

from tests.system_support import (
    INTERNAL_KEY,
    ServiceProcess,
    admin_headers,
    config_process,
    system_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SECRET = "system-webhook-secret"


@dataclass
class Hooks:
    """A real webhook endpoint: every verified body, by job id."""

    url: str = ""
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while job_id not in self.bodies:
                self.arrived.clear()
                await self.arrived.wait()
        return self.bodies[job_id]


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    got = Hooks()
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        stamp = int(request.headers[TIMESTAMP_HEADER])
        if not verify(SECRET.encode(), stamp, body, request.headers[SIGNATURE_HEADER]):
            return Response(status_code=401)
        event = orjson.loads(body)
        got.bodies[event["data"]["job_id"]] = event
        got.arrived.set()
        return Response(status_code=204)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    got.url = f"http://127.0.0.1:{port}/hook"
    yield got
    server.should_exit = True
    await task


@dataclass
class System:
    config: ConfigServiceProcess
    pipeline: ServiceProcess
    key_id: str


@pytest.fixture
def system(nats_url: str, redis_url: str, postgres_dsn: str, tmp_path: Path) -> Iterator[System]:
    env = system_env(nats_url, redis_url, postgres_dsn)
    with config_process(nats_url, redis_url, postgres_dsn, tmp_path) as config:
        admin = httpx.Client(base_url=f"{config.url}/v1/admin", headers=admin_headers())
        for path, body in [
            ("/teams", {"id": "acme", "name": "acme"}),
            ("/backends", {"id": "echo", "name": "echo", "kind": "echo", "models": ["echo"]}),
            ("/aliases", {"name": "chat", "targets": [{"backend_id": "echo", "model": "echo"}]}),
            ("/keys", {"team_id": "acme", "name": "batch", "scopes": ["chat"]}),
        ]:
            r = admin.post(path, json=body)
            assert r.status_code == 201, r.text
        admin.close()
        settings = {
            "WEBHOOK_SECRET": SECRET,
            "RETRY_BASE_S": "0.05",
            "RETRY_CAP_S": "0.2",
            "MAX_ATTEMPTS": "3",
        }
        with ServiceProcess("event-pipeline", env, tmp_path, settings=settings) as pipeline:
            yield System(config, pipeline, r.json()["id"])


async def submit(system: System, job_id: str, hooks: Hooks) -> None:
    data = jobs_v1.InferenceRequested(
        job_id=job_id,
        api_key_id=system.key_id,
        team_id="acme",
        request={"model": "chat", "messages": [{"role": "user", "content": f"run {job_id}"}]},
        webhook_url=hooks.url,
    )
    env = Envelope[Any](type=jobs_v1.TYPE_INFERENCE_REQUESTED, source="system-test", data=data)
    async with httpx.AsyncClient(base_url=system.pipeline.url) as http:
        r = await http.post(
            "/internal/events",
            content=orjson.dumps(env.model_dump(mode="json")),
            headers={"x-internal-key": INTERNAL_KEY},
        )
    assert r.status_code == 202, r.text


async def usage_events(redis_url: str) -> list[dict[str, Any]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange(names.USAGE_STREAM)
    finally:
        await client.aclose()
    return [orjson.loads(fields[b"envelope"])["data"] for _, fields in entries]


async def test_inference_job_through_the_pipeline_and_a_revoked_keys_job(
    system: System, hooks: Hooks, postgres_dsn: str, redis_url: str
) -> None:
    await submit(system, "job-ok", hooks)
    completed = await hooks.wait_for("job-ok")
    assert completed["type"] == jobs_v1.TYPE_INFERENCE_COMPLETED
    assert completed["data"]["status"] == "ok"
    answer = completed["data"]["response"]
    assert answer["choices"][0]["message"]["content"] == "echo: run job-ok"

    pg = await asyncpg.connect(postgres_dsn)
    try:
        row = await pg.fetchrow("SELECT * FROM inference_jobs WHERE job_id = 'job-ok'")
        assert (row["status"], row["api_key_id"], row["attempts"]) == ("ok", system.key_id, 1)
        assert orjson.loads(row["response"]) == answer

        async def one_usage_event() -> list[dict[str, Any]]:
            for _ in range(100):
                events = await usage_events(redis_url)
                if events:
                    return events
                await asyncio.sleep(0.05)
            return []

        [event] = await one_usage_event()
        assert event["origin"] == "pipeline"
        assert (event["key_id"], event["team_id"], event["alias"]) == (
            system.key_id,
            "acme",
            "chat",
        )
        assert event["status"] == "ok"
        assert event["prompt_tokens"] == answer["usage"]["prompt_tokens"]
        assert event["completion_tokens"] == answer["usage"]["completion_tokens"]

        async with httpx.AsyncClient(base_url=system.config.url, headers=admin_headers()) as cfg:
            revoked = await cfg.post(f"/v1/admin/keys/{system.key_id}/revoke")
            assert revoked.status_code == 200, revoked.text
        await submit(system, "job-revoked", hooks)
        refused = await hooks.wait_for("job-revoked")
        assert refused["data"]["status"] == "error"
        assert "revoked" in refused["data"]["error"]
        row = await pg.fetchrow("SELECT * FROM inference_jobs WHERE job_id = 'job-revoked'")
        assert (row["status"], row["attempts"], row["response"]) == ("error", 1, None)
    finally:
        await pg.close()

    async with httpx.AsyncClient(
        base_url=system.pipeline.url, headers={"x-internal-key": INTERNAL_KEY}
    ) as http:
        counts = (await http.get("/internal/events/metrics")).json()["counts"]
        dlq = (await http.get("/internal/dlq")).json()
    assert counts.get("processed_retry", 0) == 0, counts
    assert counts.get("processed_dead_lettered", 0) == 0, counts
    assert dlq["items"] == []
    assert len(await usage_events(redis_url)) == 1  # the refused job reached no upstream
