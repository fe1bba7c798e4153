"""The usage stream as consumer group ``quota`` reads it (Redis Streams).

Entries that cannot be read as a ``usage.recorded`` envelope are acknowledged and
counted here; telemetry's group dead-letters the same entries, so the usage DLQ
holds each once.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from hyperinfer.contracts import names
from redis.exceptions import ResponseError

Entry = tuple[bytes, dict[bytes, bytes]]


class UsageFeed:
    """One consumer of group ``quota`` on ``hyperinfer:usage``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        consumer: str,
        *,
        stream: str = names.USAGE_STREAM,
        group: str = names.QUOTA_USAGE_CONSUMER_GROUP,
    ) -> None:
        self._redis = redis
        self.consumer = consumer
        self.stream = stream
        self.group = group
        self._claim_cursor = b"0-0"

    async def ensure_group(self) -> None:
        """Create the group at the stream's start (events already there are counted)."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int, *, own_pending: bool = False) -> list[Entry]:
        """New entries (or, with ``own_pending``, those delivered to us and never acked)."""
        try:
            reply: Any = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: "0" if own_pending else ">"},
                count=count,
                block=None if own_pending else block_ms,
            )
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            await self.ensure_group()  # Redis lost the stream (restart, flush)
            return []
        return [e for e in reply[0][1] if e[1]] if reply else []

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another (dead) consumer took and left unacknowledged."""
        try:
            reply: Any = await self._redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_ms,
                start_id=self._claim_cursor,
                count=count,
            )
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            return []
        self._claim_cursor = reply[0]
        return [e for e in reply[1] if e and e[1]]

    async def ack(self, ids: list[bytes]) -> None:
        if ids:
            await self._redis.xack(self.stream, self.group, *ids)
