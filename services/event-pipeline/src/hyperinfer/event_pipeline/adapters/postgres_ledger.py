"""Effectively-once processing on PostgreSQL: the side effect and the event id commit together.

``once(consumer, event_id)`` opens a transaction and claims the event id in
``processed_events``; it yields the connection for the handler's writes, or ``None``
when the event was already processed (a redelivery: ack without repeating the effect).
A concurrent duplicate waits on the row lock and then sees the committed row.

The schema is the config service's (it applies ``infra/migrations``); this service only
checks that the migrations it needs are there (``missing_migrations``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

REQUIRED_MIGRATIONS = (1, 40)
"""0001: ``processed_events``, ``audit_log``; 0040: ``inference_jobs``."""

_CLAIM = (
    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)


class PostgresLedger:
    """``processed_events`` on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def once(self, consumer: str, event_id: str) -> AsyncIterator[Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(_CLAIM, consumer, event_id)
            yield conn if claimed else None

    async def seen(self, consumer: str, event_id: str) -> bool:
        row = await self._pool.fetchval(
            "SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2",
            consumer,
            event_id,
        )
        return row is not None


async def missing_migrations(pool: asyncpg.Pool, required: tuple[int, ...]) -> list[int]:
    """The required migration versions the database has not applied (all of them when
    ``schema_migrations`` does not exist yet)."""
    try:
        applied = await pool.fetchval(
            "SELECT array_agg(version) FROM schema_migrations WHERE version = ANY($1::int[])",
            list(required),
        )
    except asyncpg.UndefinedTableError:
        return list(required)
    return sorted(set(required) - set(applied or ()))
