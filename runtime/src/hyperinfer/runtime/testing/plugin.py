"""pytest fixtures for real infrastructure. Enabled by the root ``conftest.py``.

- ``redis_server`` / ``nats_server``: private processes for the whole session.
- ``redis_url`` / ``nats_url``: the same servers, emptied before each test.
- ``postgres_dsn``: a fresh database per session on the shared PostgreSQL
  (``HYPERINFER_TEST_POSTGRES_ADMIN_DSN``), migrated, tables truncated per test.
- ``private_postgres``: a cluster of our own that a test may stop and start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
from hyperinfer.runtime.migrate import apply_migrations
from hyperinfer.runtime.testing.servers import NatsServer, PostgresServer, RedisServer

ADMIN_DSN = os.environ.get(
    "HYPERINFER_TEST_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.script_flush()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    if not nats_server.running:
        nats_server.start()
    asyncio.run(_empty_jetstream(nats_server.url))
    return nats_server.url


async def _empty_jetstream(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            if stream.config.name:
                await js.delete_stream(stream.config.name)
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    name = f"hi_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_migrate(dsn))
    yield dsn
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_dsn(postgres_database: str) -> str:
    asyncio.run(_truncate_all(postgres_database))
    return postgres_database


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()


async def _truncate_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations' AND tablename NOT LIKE 'usage_events_p%'"
        )
        if tables:
            await conn.execute(
                "TRUNCATE " + ", ".join(r["t"] for r in tables) + " RESTART IDENTITY CASCADE"
            )
        await conn.execute("SELECT setval('config_version_seq', 1, false)")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dir: that is private to its owner (0700), and as root the
    # server runs as the postgres user, which could not reach it.
    workdir = Path(tempfile.mkdtemp(prefix="hyperinfer-pg-"))
    server = PostgresServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
