"""The usage stream as one consumer of group ``telemetry`` sees it (Redis Streams).

Reading (new entries, this consumer's own pending ones, idle ones of dead consumers),
acknowledging together with dead-lettering, keeping held entries from looking idle,
lag figures for metrics, and the safe trim (only entries every group has acknowledged).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.dlq import v1 as dlq_v1
from hyperinfer.telemetry.intake import ENVELOPE_FIELD, Rejected, StreamEntry
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

_MAX_DLQ_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class Claimed:
    """Entries taken over from idle consumers, with how often each was delivered."""

    entries: list[StreamEntry]
    deliveries: dict[bytes, int]
    next_cursor: bytes
    trimmed: int = 0  # pending entries whose content was trimmed away (usage lost)


@dataclass(frozen=True)
class GroupStats:
    """Where the group stands: for gauges and ``/health/detailed``."""

    length: int
    lag: int | None
    pending: int
    oldest_pending_age_s: float
    undelivered_age_s: float
    consumers: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_length": self.length,
            "lag": self.lag,
            "pending": self.pending,
            "oldest_pending_age_s": round(self.oldest_pending_age_s, 3),
            "undelivered_age_s": round(self.undelivered_age_s, 3),
            "consumers": self.consumers,
        }


def is_missing_group(exc: ResponseError) -> bool:
    """The stream or the group is gone (a Redis restart without persistence, a flush)."""
    return str(exc).startswith("NOGROUP")


def id_millis(entry_id: bytes | str) -> int:
    """The producer time (ms) encoded in a stream id ``<ms>-<seq>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class UsageStream:
    """One consumer's handle on ``hyperinfer:usage`` and its dead-letter stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        consumer: str,
        *,
        stream: str = names.USAGE_STREAM,
        group: str = names.USAGE_CONSUMER_GROUP,
        dlq_stream: str = names.USAGE_DLQ_STREAM,
        dlq_max_len: int = 100_000,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.stream = stream
        self.group = group
        self.dlq_stream = dlq_stream
        self._dlq_max_len = dlq_max_len

    async def ensure_group(self) -> None:
        """Create the group at the start of the stream (nothing already there is skipped)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, start: str, count: int, block_ms: int | None) -> list[StreamEntry]:
        """``start`` ``>``: new entries; ``0``: this consumer's own pending entries."""
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    async def claim_idle(self, min_idle_ms: int, cursor: bytes, count: int) -> Claimed:
        """XAUTOCLAIM idle entries of other (dead) consumers, plus their delivery counts."""
        reply: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_ms, start_id=cursor, count=count
        )
        entries = [e for e in reply[1] if e and e[0]]
        trimmed = len(reply[2]) if len(reply) > 2 else 0
        return Claimed(entries, await self.deliveries(entries), reply[0], trimmed)

    async def deliveries(self, entries: Sequence[StreamEntry]) -> dict[bytes, int]:
        """How often each of ``entries`` (held by this consumer) was delivered."""
        if not entries:
            return {}
        rows: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) * 2,
            consumername=self.consumer,
        )
        return {r["message_id"]: int(r["times_delivered"]) for r in rows}

    async def touch(self, ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries this consumer still works on (no new delivery)."""
        if ids:
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, 0, list(ids), justid=True
            )

    async def settle(self, ack_ids: Sequence[bytes], rejected: Sequence[Rejected]) -> None:
        """Dead-letter ``rejected``, then acknowledge ``ack_ids``, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in rejected:
                pipe.xadd(
                    self.dlq_stream,
                    dead_letter_fields(item, self.stream),
                    maxlen=self._dlq_max_len,
                    approximate=True,
                )
            if ack_ids:
                pipe.xack(self.stream, self.group, *ack_ids)
            await pipe.execute()

    async def dead_letters(self, count: int, after: str | None) -> list[StreamEntry]:
        """Dead-letter entries, oldest first, after the id ``after`` (exclusive)."""
        start = f"({after}" if after else "-"
        reply: Any = await self.redis.xrange(self.dlq_stream, min=start, count=count)
        return list(reply)

    async def replay(self, dlq_id: str) -> bytes | None:
        """Put one dead letter back on the usage stream as it was, and drop it from the DLQ.

        It goes through validation again (and is dead-lettered again if still refused);
        a request already recorded is not counted twice. None when there is no such entry.
        """
        found: Any = await self.redis.xrange(self.dlq_stream, min=dlq_id, max=dlq_id)
        if not found:
            return None
        body = orjson.loads(found[0][1][ENVELOPE_FIELD])["data"]
        fields: dict[FieldT, EncodableT] = {ENVELOPE_FIELD: body["original_payload"].encode()}
        for name, value in body.get("original_headers", {}).items():
            fields[name] = value
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream, fields)
            pipe.xdel(self.dlq_stream, dlq_id)
            new_id, _ = await pipe.execute()
        return bytes(new_id)

    async def stats(self) -> GroupStats:
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError as exc:
            if "no such key" not in str(exc):
                raise
            return GroupStats(0, None, 0, 0.0, 0.0, 0)  # nothing produced yet
        mine = next((g for g in groups if _text(g["name"]) == self.group), None)
        length = int(await self.redis.xlen(self.stream))
        if mine is None:
            return GroupStats(length, None, 0, 0.0, 0.0, 0)
        now_ms = time.time() * 1000
        pending = int(mine["pending"])
        oldest = 0.0
        if pending:
            summary = await self.redis.xpending(self.stream, self.group)
            if summary.get("min"):
                oldest = max(0.0, (now_ms - id_millis(summary["min"])) / 1000)
        lag = mine.get("lag")
        return GroupStats(
            length,
            None if lag is None else int(lag),
            pending,
            oldest,
            await self._undelivered_age(mine["last-delivered-id"], now_ms),
            int(mine["consumers"]),
        )

    async def _undelivered_age(self, last_delivered: bytes | str, now_ms: float) -> float:
        """Age of the oldest entry not yet delivered to the group (0 when caught up)."""
        after: Any = await self.redis.xrange(self.stream, min=f"({_text(last_delivered)}", count=1)
        return max(0.0, (now_ms - id_millis(after[0][0])) / 1000) if after else 0.0

    async def trim_acknowledged(self) -> int:
        """Drop entries that every consumer group has read and acknowledged.

        One script: a group's progress read and the trim happen with nothing in between.
        """
        try:
            return int(await self.redis.eval(_TRIM_ACKNOWLEDGED, 1, self.stream))
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise

    async def drop_stale_consumers(self, idle_s: float) -> list[str]:
        """Forget consumers (dead replicas) idle for ``idle_s`` with nothing pending.

        Checked and deleted in one script: a consumer that takes entries between a check
        and a delete would have them removed from the pending list, unclaimable.
        """
        try:
            dropped = await self.redis.eval(
                _DROP_STALE, 1, self.stream, self.group, int(idle_s * 1000), self.consumer
            )
        except ResponseError as exc:
            if "no such key" in str(exc).lower() or is_missing_group(exc):  # nothing yet
                return []
            raise
        return [_text(name) for name in dropped]


_TRIM_ACKNOWLEDGED = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local keep_ms, keep_seq = nil, nil
for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    local id
    if info['pending'] > 0 then
        id = redis.call('XPENDING', KEYS[1], info['name'])[2]
    else
        id = info['last-delivered-id']
    end
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    if info['pending'] == 0 then seq = seq + 1 end
    if keep_ms == nil or ms < keep_ms or (ms == keep_ms and seq < keep_seq) then
        keep_ms, keep_seq = ms, seq
    end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', keep_ms, keep_seq))
"""

_DROP_STALE = """
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local dropped = {}
for _, c in ipairs(consumers) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        table.insert(dropped, info['name'])
    end
end
return dropped
"""


def dead_letter_fields(item: Rejected, stream: str) -> dict[FieldT, EncodableT]:
    """A DLQ stream entry: a ``dlq.dead_lettered`` envelope plus the reason, readable as is."""
    payload = item.fields.get(ENVELOPE_FIELD, b"")
    headers = {_text(k): _text(v) for k, v in item.fields.items() if k != ENVELOPE_FIELD}
    entry = dlq_v1.DeadLettered(
        original_subject=stream,
        original_id=_text(item.entry_id),
        original_payload=payload[:_MAX_DLQ_PAYLOAD].decode("utf-8", "replace"),
        original_headers=headers,
        reason=item.reason,
        detail=item.detail[:2000],
        attempts=item.attempts,
        source="telemetry",
        failed_at=utc_now(),
    )
    env = Envelope[dlq_v1.DeadLettered](
        type=dlq_v1.EVENT_DEAD_LETTERED, source="telemetry", data=entry
    )
    return {
        ENVELOPE_FIELD: orjson.dumps(env.model_dump(mode="json")),
        "reason": item.reason.encode(),
        "original_id": _text(item.entry_id).encode(),
    }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
