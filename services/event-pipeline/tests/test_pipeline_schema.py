"""The schema belongs to the config service: the pipeline never migrates, it checks.

On a database without the migrations it needs, the service starts, accepts jobs and
says in ``/health/ready`` which migrations are missing; its worker waits. Once the
migrations are applied (by the config service; here by the same function it uses), the
worker starts and the waiting job is processed."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hyperinfer.contracts import Envelope, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.app import create_app
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.event_pipeline.testing import until
from hyperinfer.runtime.migrate import apply_migrations

KEY = "test-internal-key"
ADMIN_DSN = os.environ.get(
    "HYPERINFER_TEST_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    name = f"hi_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_worker_waits_for_the_config_services_migrations(
    nats_url: str, redis_url: str, empty_database: str
) -> None:
    settings = EventPipelineSettings(
        backend="redis",
        nats_url=nats_url,
        redis_url=redis_url,
        postgres_dsn=empty_database,
        internal_key=KEY,
        data_plane_enabled=False,
    )
    service = create_app(settings)
    await service.startup()
    transport = httpx.ASGITransport(app=service.app)
    http = httpx.AsyncClient(
        transport=transport, base_url="http://pipeline", headers={"x-internal-key": KEY}
    )
    conn = await asyncpg.connect(empty_database)
    try:
        ready = await http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["schema"]
        assert "0001, 0040" in ready.json()["checks"]["schema"]
        assert "config service" in ready.json()["checks"]["schema"]
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0  # nothing was migrated by the pipeline

        record = jobs_v1.AuditRecord(
            actor="a", action="x", target_type="t", target_id="1", at=utc_now()
        )
        env = Envelope[Any](type=jobs_v1.TYPE_AUDIT_RECORD, source="test", data=record)
        accepted = await http.post(
            "/internal/events", content=orjson.dumps(env.model_dump(mode="json"))
        )
        assert accepted.status_code == 202  # publishing needs no schema

        await apply_migrations(conn)
        await until(lambda: _status(http), 10, "ready once migrated")

        async def audited() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM audit_log WHERE target_id = '1'"))

        await until(audited, 15, "the waiting job processed")
    finally:
        await conn.close()
        await http.aclose()
        await service.shutdown()


async def _status(http: httpx.AsyncClient) -> bool:
    return (await http.get("/health/ready")).status_code == 200
