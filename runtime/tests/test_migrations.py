"""Migrations: applied up from empty, re-applied as a no-op, edits and failures refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from hyperinfer.runtime.migrate import (
    MigrationError,
    apply_migrations,
    default_migrations_dir,
    load_migrations,
)
from hyperinfer.runtime.testing.servers import PostgresServer


@pytest.fixture
async def empty_db(private_postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    if not private_postgres.running:
        private_postgres.start()
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(private_postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(private_postgres.dsn.rsplit("/", 1)[0] + f"/{name}")
    yield conn
    await conn.close()
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_up_from_empty_then_reapplied_as_a_no_op(empty_db: asyncpg.Connection) -> None:
    expected = [m.name for m in load_migrations(default_migrations_dir())]
    assert expected, "no migrations found"
    assert await apply_migrations(empty_db) == expected
    tables = {r["tablename"] for r in await empty_db.fetch("SELECT tablename FROM pg_tables")}
    for table in ("teams", "users", "api_keys", "model_aliases", "quotas", "schema_migrations"):
        assert table in tables
    assert await apply_migrations(empty_db) == []
    assert await empty_db.fetchval("SELECT count(*) FROM schema_migrations") == len(expected)


async def test_an_edited_applied_migration_is_refused(
    empty_db: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE IF NOT EXISTS t1 (id int);")
    assert await apply_migrations(empty_db, tmp_path) == ["0001_first"]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE IF NOT EXISTS t1 (id bigint);")
    with pytest.raises(MigrationError, match="0001_first changed after it was applied"):
        await apply_migrations(empty_db, tmp_path)


async def test_a_failing_migration_rolls_back_and_names_its_file(
    empty_db: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t1 (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE t2 (id int); SELECT nonsense;")
    with pytest.raises(MigrationError, match="migration 0002_bad failed"):
        await apply_migrations(empty_db, tmp_path)
    tables = {r["tablename"] for r in await empty_db.fetch("SELECT tablename FROM pg_tables")}
    assert "t1" in tables
    assert "t2" not in tables  # the failed file left nothing behind
    assert await empty_db.fetchval("SELECT count(*) FROM schema_migrations") == 1


def test_a_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"not NNNN_name\.sql"):
        load_migrations(tmp_path)
