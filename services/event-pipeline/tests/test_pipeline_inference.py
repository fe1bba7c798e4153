"""``inference.requested`` through the real data plane (``create_app`` with no fake): the
job's key acts by id against a real config snapshot in Redis; results, usage and retry
classes. One queue backend is enough here: the queues are proven elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.errors import (
    AuthenticationFailed,
    HyperInferError,
    ModelNotFound,
    NotReady,
    PermissionDenied,
    QuotaUnavailable,
    RateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.adapters.chat import classify_client_error
from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.errors import PermanentJobError, TransientJobError
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.event_pipeline.testing import until

KEY = "test-internal-key"


@dataclass
class Running:
    http: httpx.AsyncClient
    pg: asyncpg.Pool
    redis: aioredis.Redis
    world: Scenario


@pytest.fixture
async def run(nats_url: str, redis_url: str, postgres_dsn: str) -> AsyncIterator[Running]:
    redis = aioredis.Redis.from_url(redis_url)
    world = Scenario.build(
        backends={"echo": ("echo", "")},
        aliases={"small": [("echo", "echo")]},
        extra_keys=[("key-b", "team-b")],
    )
    await store_snapshot(redis, world.snapshot)
    settings = EventPipelineSettings(
        backend="redis",
        nats_url=nats_url,
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        internal_key=KEY,
        retry_base_s=0.05,
        retry_cap_s=0.1,
        max_attempts=3,
        require_budgets_loaded=False,
    )
    service = create_app(settings)
    await service.startup()
    transport = httpx.ASGITransport(app=service.app)
    http = httpx.AsyncClient(
        transport=transport, base_url="http://pipeline", headers={"x-internal-key": KEY}
    )
    pg = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    yield Running(http, pg, redis, world)
    await http.aclose()
    await pg.close()
    await service.shutdown()
    await redis.aclose()


async def submit(run: Running, job_id: str, key_id: str, team_id: str, model: str) -> None:
    data = jobs_v1.InferenceRequested(
        job_id=job_id,
        api_key_id=key_id,
        team_id=team_id,
        request={"model": model, "messages": [{"role": "user", "content": job_id}]},
    )
    env = Envelope[Any](type=jobs_v1.TYPE_INFERENCE_REQUESTED, source="test", data=data)
    r = await run.http.post("/internal/events", content=orjson.dumps(env.model_dump(mode="json")))
    assert r.status_code == 202, r.text


async def result(run: Running, job_id: str) -> asyncpg.Record | None:
    return await run.pg.fetchrow(
        "SELECT status, response, error, attempts FROM inference_jobs WHERE job_id = $1", job_id
    )


async def test_jobs_run_as_their_key_and_refusals_are_final_answers(run: Running) -> None:
    await submit(run, "ok-1", "key-a", "team-a", "small")
    await submit(run, "wrong-team", "key-a", "team-b", "small")
    await submit(run, "no-alias", "key-b", "team-b", "nope")
    done = ("ok-1", "wrong-team", "no-alias")

    async def all_stored() -> bool:
        return all([await result(run, j) is not None for j in done])

    await until(all_stored, 15, "three results")
    ok = await result(run, "ok-1")
    assert ok is not None
    assert ok["status"] == "ok"
    assert orjson.loads(ok["response"])["choices"][0]["message"]["content"] == "echo: ok-1"
    for job_id, code in (("wrong-team", "api_key_revoked"), ("no-alias", "model_not_found")):
        row = await result(run, job_id)
        assert row is not None
        assert (row["status"], row["attempts"]) == ("error", 1), job_id  # never retried
        assert code in row["error"]

    entries = await run.redis.xrange(names.USAGE_STREAM)
    events = [orjson.loads(f[b"envelope"])["data"] for _, f in entries]
    assert [(e["origin"], e["key_id"], e["status"]) for e in events] == [
        ("pipeline", "key-a", "ok")
    ]  # refused before the upstream: no usage, as on the ingress


@pytest.mark.parametrize(
    ("error", "kind", "retry_after_s"),
    [
        (AuthenticationFailed("gone"), PermanentJobError, None),
        (PermissionDenied("no"), PermanentJobError, None),
        (ModelNotFound("no"), PermanentJobError, None),
        (UpstreamStatusError(400, "bad"), PermanentJobError, None),
        (RateLimited("slow", retry_after_ms=1500), TransientJobError, 1.5),
        (RateLimited("big", code="request_too_large"), PermanentJobError, None),
        (UpstreamStatusError(503, "down", retry_after_s=2), TransientJobError, 2),
        (UpstreamTimeout("slow"), TransientJobError, None),
        (QuotaUnavailable("redis"), TransientJobError, None),
        (NotReady("no snapshot"), TransientJobError, None),
    ],
)
def test_data_plane_errors_become_retry_classes(
    error: HyperInferError, kind: type[Exception], retry_after_s: float | None
) -> None:
    got = classify_client_error(error)
    assert type(got) is kind
    if isinstance(got, TransientJobError):
        assert got.retry_after_s == retry_after_s
