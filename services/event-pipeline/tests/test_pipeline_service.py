"""The whole service (create_app) over real NATS, Redis and PostgreSQL: internal API,
problem+json, admission over HTTP, DLQ operations, and the shipped processors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from hyperinfer.contracts import Envelope, Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.adapters.chat import FakeChatRunner
from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.handlers import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.event_pipeline.testing import until
from hyperinfer.runtime.bus import Bus
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.server import Service
from hyperinfer.runtime.testing.servers import free_port

KEY = "test-internal-key"
AUDIT = jobs_v1.TYPE_AUDIT_RECORD
SECRET = "test-webhook-secret"


@dataclass
class Receiver:
    """A real HTTP endpoint for webhooks; ``statuses`` is consumed one per request."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        status = rec.statuses.pop(0) if rec.statuses else 200
        if status < 300:
            rec.received.append((await request.body(), dict(request.headers)))
        return Response(status_code=status)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, 10, "receiver up")
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    server.should_exit = True
    await task


@dataclass
class Running:
    service: Service
    http: httpx.AsyncClient
    chat: FakeChatRunner
    pg: asyncpg.Pool
    nats_url: str


Starter = Callable[..., Awaitable[Running]]


@pytest.fixture(params=[pytest.param("jetstream", marks=pytest.mark.bus), "redis"])
async def start(
    request: pytest.FixtureRequest,
    nats_url: str,
    redis_url: str,
    postgres_dsn: str,
    receiver: Receiver,
) -> AsyncIterator[Starter]:
    """Start the service (``create_app``) on the parametrized backend with overrides."""
    started: list[Running] = []

    async def starter(chat: FakeChatRunner | None = None, **overrides: Any) -> Running:
        values: dict[str, Any] = {
            "backend": request.param,
            "nats_url": nats_url,
            "redis_url": redis_url,
            "postgres_dsn": postgres_dsn,
            "internal_key": KEY,
            "webhook_secret": SECRET,
            "queue_capacity": 10,
            "retry_base_s": 0.05,
            "retry_cap_s": 0.2,
            "max_attempts": 3,
            "ack_wait_s": 2,
            "quota_alert_webhooks": [receiver.url],
            "quota_alert_subjects": ["test.alerts"],
            "dlq_replay_rate_per_s": 2,
            **overrides,
        }
        chat = chat or FakeChatRunner()
        service = create_app(EventPipelineSettings(**values), chat=chat)
        await service.startup()
        transport = httpx.ASGITransport(app=service.app)
        http = httpx.AsyncClient(
            transport=transport, base_url="http://pipeline", headers={"x-internal-key": KEY}
        )
        pg = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
        started.append(Running(service, http, chat, pg, nats_url))
        return started[-1]

    yield starter
    for run in started:
        await run.http.aclose()
        await run.pg.close()
        await run.service.shutdown()


@pytest.fixture
async def running(start: Starter) -> Running:
    return await start()


def job(type_: str, data: Any, priority: Priority = Priority.NORMAL) -> bytes:
    env = Envelope[Any](type=type_, source="test", priority=priority, data=data)
    return orjson.dumps(env.model_dump(mode="json"))


def audit(target: str) -> jobs_v1.AuditRecord:
    return jobs_v1.AuditRecord(
        actor="a", action="x", target_type="t", target_id=target, at=utc_now()
    )


async def test_requires_the_internal_key(running: Running) -> None:
    for headers in ({"x-internal-key": ""}, {"x-internal-key": "wrong"}):
        r = await running.http.post("/internal/events", content=b"{}", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "unauthorized"


async def test_invalid_events_are_refused_with_problem_json(running: Running) -> None:
    cases = [
        (b"nope", "invalid_payload"),
        (b'{"type": "x.y", "source": "s", "data": {}}', "unknown_type"),
        (job("usage.rollup", {"a": 1}), "invalid_payload"),
        (job(jobs_v1.TYPE_AUDIT_RECORD, {"actor": "a"}), "invalid_payload"),
    ]
    for body, reason in cases:
        r = await running.http.post("/internal/events", content=body)
        assert r.status_code == 422, body
        assert r.json()["reason"] == reason
    depth = (await running.http.get("/internal/events/metrics")).json()["queues"]
    assert sum(q["depth"] for q in depth.values()) == 0


async def test_problems_have_a_type_and_instance_and_bad_requests_are_400_or_422(
    running: Running,
) -> None:
    refused = await running.http.post("/internal/events", content=b"nope")
    assert refused.json()["type"] == "urn:hyperinfer:problem:invalid-event"
    assert refused.json()["instance"] == "/internal/events"
    # the replay body: not JSON is 400, a field out of range 422 (a malformed body was 422
    # before the translation moved to the runtime)
    not_json = await running.http.post(
        "/internal/dlq/replay", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["type"] == "urn:hyperinfer:problem:bad-request"
    out_of_range = await running.http.post("/internal/dlq/replay", json={"limit": 0})
    assert out_of_range.status_code == 422
    assert out_of_range.headers["content-type"] == "application/problem+json"
    assert out_of_range.json()["detail"].startswith("body.limit")
    unknown = await running.http.get("/internal/nothing-here")
    assert (unknown.status_code, unknown.headers["content-type"]) == (
        404,
        "application/problem+json",
    )


async def test_publish_and_429_retry_after_for_low(start: Starter) -> None:
    api = await start(worker_enabled=False, capacity_cache_s=0)  # nothing drains the queues
    for n in range(5):
        r = await api.http.post("/internal/events", content=job(AUDIT, audit(f"{n}"), Priority.LOW))
        assert r.status_code == 202
        assert r.json()["subject"] == names.job_subject(Priority.LOW, AUDIT)
    refused = await api.http.post("/internal/events", content=job(AUDIT, audit("x"), Priority.LOW))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    accepted = await api.http.post(
        "/internal/events", content=job(AUDIT, audit("c"), Priority.CRITICAL)
    )
    assert accepted.status_code == 202
    again = await api.http.post(
        "/internal/events", content=job(AUDIT, audit("c"), Priority.CRITICAL)
    )
    assert again.status_code == 202
    metrics = (await api.http.get("/internal/events/metrics")).json()
    assert metrics["queues"]["low"]["depth"] == 5
    assert metrics["queues"]["critical"]["depth"] == 2
    assert metrics["counts"]["rejected_admission"] == 1
    prometheus = (await api.http.get("/metrics")).text
    assert 'hyperinfer_pipeline_rejected_total{priority="low",reason="admission"} 1.0' in prometheus
    assert 'hyperinfer_pipeline_queue_depth{priority="low"} 5.0' in prometheus


async def test_dlq_list_inspect_replay_purge_over_http(
    running: Running, receiver: Receiver
) -> None:
    receiver.statuses = [400]  # the endpoint refuses once: permanent
    hook = jobs_v1.WebhookDeliver(url=receiver.url, payload={"n": 1})
    r = await running.http.post("/internal/events", content=job(jobs_v1.TYPE_WEBHOOK_DELIVER, hook))
    assert r.status_code == 202
    items = await _dlq_items(running, 1)
    [item] = items
    assert item["reason"] == "permanent"
    assert "400" in item["detail"]
    detail = (await running.http.get(f"/internal/dlq/{item['id']}")).json()
    assert detail["entry"]["data"]["original_subject"].endswith("webhook.deliver")
    replay = await running.http.post(f"/internal/dlq/{item['id']}/replay")
    assert replay.status_code == 200
    await until(lambda: len(receiver.received) == 1, 10, "replayed webhook delivered")
    body, headers = receiver.received[0]
    assert verify(
        SECRET.encode(),
        int(headers[TIMESTAMP_HEADER.lower()]),
        body,
        headers[SIGNATURE_HEADER.lower()],
    )
    missing = await running.http.get(f"/internal/dlq/{item['id']}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    # core-bus dead letters (runtime.bus.Bus) are listed too, and purge empties everything
    await _bus_dead_letter(running.nats_url)
    items = await _dlq_items(running, 1)
    assert items[0]["source"] == "tester"
    purged = await running.http.post("/internal/dlq/purge")
    assert purged.json()["purged"] == 1
    assert (await running.http.get("/internal/dlq")).json()["items"] == []


async def test_replay_is_rate_limited(start: Starter) -> None:
    api = await start(worker_enabled=False, dlq_replay_rate_per_s=1)
    for _n in range(3):
        await _bus_dead_letter(api.nats_url, subject="hyperinfer.jobs.v1.low.audit.record")
    items = await _dlq_items(api, 3)
    first = await api.http.post(f"/internal/dlq/{items[0]['id']}/replay")
    assert first.status_code == 200
    second = await api.http.post(f"/internal/dlq/{items[1]['id']}/replay")
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1


async def test_inference_job_runs_stores_completes_and_calls_back(
    running: Running, receiver: Receiver
) -> None:
    data = jobs_v1.InferenceRequested(
        job_id="job-1",
        api_key_id="k1",
        team_id="t1",
        request={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        webhook_url=receiver.url,
    )
    r = await running.http.post(
        "/internal/events", content=job(jobs_v1.TYPE_INFERENCE_REQUESTED, data)
    )
    assert r.status_code == 202
    await until(lambda: len(receiver.received) == 1, 15, "completion webhook")
    row = await running.pg.fetchrow(
        "SELECT status, response FROM inference_jobs WHERE job_id = 'job-1'"
    )
    assert row["status"] == "ok"
    assert orjson.loads(row["response"])["choices"][0]["message"]["content"] == "echo: hi"
    body = orjson.loads(receiver.received[0][0])
    assert body["type"] == jobs_v1.TYPE_INFERENCE_COMPLETED
    assert body["data"]["job_id"] == "job-1"
    assert body["data"]["status"] == "ok"
    assert len(running.chat.calls) == 1


async def test_webhook_retries_transient_statuses(running: Running, receiver: Receiver) -> None:
    receiver.statuses = [503, 429]
    hook = jobs_v1.WebhookDeliver(url=receiver.url, payload={"n": 2})
    await running.http.post("/internal/events", content=job(jobs_v1.TYPE_WEBHOOK_DELIVER, hook))
    await until(lambda: len(receiver.received) == 1, 10, "delivered on the third attempt")
    assert (await running.http.get("/internal/dlq")).json()["items"] == []


async def test_audit_and_quota_alert_fan_out(running: Running, receiver: Receiver) -> None:
    nc = NatsConnection(running.nats_url, "alerts")
    await nc.connect(5)
    alerts: list[bytes] = []

    async def on_alert(msg: Any) -> None:
        alerts.append(msg.data)

    await nc.client.subscribe("test.alerts", cb=on_alert)
    alert = jobs_v1.QuotaAlert(team_id="t1", kind="exhausted", spent_micros=10, limit_micros=10)
    await running.http.post("/internal/events", content=job(jobs_v1.TYPE_QUOTA_ALERT, alert))
    await running.http.post("/internal/events", content=job(AUDIT, audit("audited")))
    await until(lambda: len(receiver.received) == 1 and len(alerts) == 1, 10, "alert fanned out")
    await until(lambda: _audit_count(running, "audited"), 10, "audit row")
    assert orjson.loads(receiver.received[0][0])["data"]["kind"] == "exhausted"
    await nc.close()


async def _audit_count(run: Running, target: str) -> bool:
    return bool(
        await run.pg.fetchval("SELECT count(*) FROM audit_log WHERE target_id = $1", target)
    )


async def _dlq_items(run: Running, n: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len((await run.http.get("/internal/dlq")).json()["items"]) >= n

    await until(enough, 10, f"{n} dead letters listed")
    items: list[dict[str, Any]] = (await run.http.get("/internal/dlq")).json()["items"]
    return items


async def _bus_dead_letter(nats_url: str, subject: str = names.QUOTA_CHECK) -> None:
    conn = NatsConnection(nats_url, "tester")
    await conn.connect(5)
    bus = Bus(conn, source="tester")
    got: list[bytes] = []

    async def handler(env: Envelope[Any]) -> None:
        got.append(b"")

    await bus.subscribe(subject, handler)
    await conn.client.publish(subject, b"garbage")
    await conn.client.flush()
    await asyncio.sleep(0.2)
    await bus.close()
    await conn.close()


class GatedChat(FakeChatRunner):
    """A chat that answers only when the test opens the gate: a long upstream call."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def run_chat(
        self, request: dict[str, Any], *, team_id: str, api_key_id: str
    ) -> dict[str, Any]:
        answer = await super().run_chat(request, team_id=team_id, api_key_id=api_key_id)
        await self.gate.wait()
        return answer


async def test_a_long_chat_holds_no_database_transaction(start: Starter) -> None:
    chat = GatedChat()
    run = await start(chat=chat)
    request = jobs_v1.InferenceRequested(
        job_id="long", api_key_id="k", team_id="t", request={"model": "m", "messages": []}
    )
    r = await run.http.post("/internal/events", content=job("inference.requested", request))
    assert r.status_code == 202
    await until(lambda: len(chat.calls) == 1, 10, "the chat started")

    in_transaction = await run.pg.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    assert in_transaction == 0  # the upstream call runs before the transaction opens
    for n in range(3):  # other jobs keep flowing meanwhile
        await run.http.post("/internal/events", content=job("audit.record", audit(f"t{n}")))

    async def audited() -> bool:
        return await run.pg.fetchval("SELECT count(*) FROM audit_log") == 3

    await until(audited, 10, "audit rows while the chat waits")
    chat.gate.set()

    async def stored() -> bool:
        status = await run.pg.fetchval("SELECT status FROM inference_jobs WHERE job_id = 'long'")
        return status == "ok"

    await until(stored, 10, "the chat's result")
