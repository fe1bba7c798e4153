"""Versioned, transactional, idempotent SQL migrations.

Files ``NNNN_name.sql`` in one folder are applied in order, each in its own
transaction, under an advisory lock so concurrent starters do not race. Applied
versions and checksums live in ``schema_migrations``; an edited, already-applied
file is refused rather than silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_LOCK_ID = 0x48495F4D4947  # "HI_MIG"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_migrations_dir() -> Path:
    """``infra/migrations`` of the checkout, or ``/app/infra/migrations`` in an image."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "infra" / "migrations"
        if candidate.is_dir():
            return candidate
    return Path("/app/infra/migrations")


def load_migrations(folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration versions in {folder}")
    return found


async def apply_migrations(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, folder: Path | None = None
) -> list[str]:
    """Apply what is missing; return the names applied now (empty when up to date)."""
    migrations = load_migrations(folder or default_migrations_dir())
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        done = []
        for mig in migrations:
            if mig.version in applied:
                if applied[mig.version] != mig.checksum:
                    raise MigrationError(f"migration {mig.name} changed after it was applied")
                continue
            await _apply_one(conn, mig)
            done.append(mig.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _apply_one(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, mig: Migration
) -> None:
    try:
        async with conn.transaction():
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                mig.version,
                mig.name,
                mig.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration {mig.name} failed: {exc}") from exc
