"""Effectively-once processing on PostgreSQL: the side effect and the event id commit together.

``once(consumer, event_id)`` opens a transaction and claims the event id in
``processed_events``; it yields the connection for the handler's writes, or ``None``
when the event was already processed (a redelivery: ack without repeating the effect).
A concurrent duplicate waits on the row lock and then sees the committed row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

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
