"""Per-minute rollups on NATS (``hyperinfer.usage.v1.rollup``) for the router and quota.

Every tick, one replica (the one that locks the cursor row) publishes the minute rows of
every minute closed since the last publication (a minute closes ``settle_s`` after its
end, so late stragglers are in) and moves the cursor. A replica that was down catches
up at most ``max_catch_up`` minutes. Events that arrive after their minute was published
are in PostgreSQL's rollups (the exact record) but not re-published: the NATS feed is a
live summary, not the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hyperinfer.contracts import names
from hyperinfer.contracts.usage.v1 import EVENT_ROLLUP, UsageRollup
from hyperinfer.runtime import PostgresPool
from hyperinfer.runtime.bus import Bus
from hyperinfer.telemetry.domain import floor_to, latency_summary

_CLAIM = """
INSERT INTO usage_rollup_cursor (id, published_through) VALUES (true, $1)
ON CONFLICT (id) DO NOTHING
"""
_LOCK = "SELECT published_through FROM usage_rollup_cursor WHERE id FOR UPDATE SKIP LOCKED"
_ROWS = """
SELECT bucket_start, team_id, key_id, model, backend_id, requests, errors, prompt_tokens,
       completion_tokens, cost_micros, latency_hist
FROM usage_rollups
WHERE window_kind = 'minute' AND bucket_start >= $1 AND bucket_start < $2
ORDER BY bucket_start, team_id, key_id, model, backend_id
"""
_MOVE = "UPDATE usage_rollup_cursor SET published_through = $1 WHERE id"


def rollup_message(row: Any) -> UsageRollup:
    return UsageRollup(
        window_start=row["bucket_start"],
        window="minute",
        team_id=row["team_id"],
        key_id=row["key_id"],
        model=row["model"],
        backend_id=row["backend_id"],
        requests=row["requests"],
        errors=row["errors"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_micros=row["cost_micros"],
        **latency_summary(row["latency_hist"]),
    )


class RollupPublisher:
    def __init__(
        self,
        pg: PostgresPool,
        bus: Bus,
        *,
        settle_s: float,
        max_catch_up: timedelta = timedelta(hours=1),
    ) -> None:
        self._pg = pg
        self._bus = bus
        self._settle = timedelta(seconds=settle_s)
        self._max_catch_up = max_catch_up
        self.published = 0

    async def publish_closed(self, now: datetime) -> int:
        """Publish the minutes closed since the cursor; the number of messages sent."""
        closed_until = floor_to(now - self._settle, "minute")
        async with self._pg.pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLAIM, closed_until - timedelta(minutes=1))
            cursor = await conn.fetchval(_LOCK)
            if cursor is None or cursor >= closed_until:
                return 0  # another replica is publishing, or nothing closed yet
            since = max(cursor, closed_until - self._max_catch_up)
            rows = await conn.fetch(_ROWS, since, closed_until)
            for row in rows:
                await self._bus.publish(
                    names.USAGE_ROLLUP, EVENT_ROLLUP, rollup_message(row), tenant=row["team_id"]
                )
            await conn.execute(_MOVE, closed_until)
        self.published += len(rows)
        return len(rows)
