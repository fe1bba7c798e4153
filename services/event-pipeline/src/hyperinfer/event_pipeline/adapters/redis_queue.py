"""The Redis Streams backend: the same contract as JetStream, built from Redis 7.0 parts.

- one stream per priority (``hyperinfer:jobs:<priority>``), one consumer group; an
  entry has fields ``envelope`` (the message), ``subject``, ``msg_id``, ``attempt``,
  ``enqueued_ms``. A raw ``XADD <stream> * envelope <json>`` is a valid job too.
- acked and terminated entries are ``XACK``+``XDEL``-ed, so ``XLEN`` is the work held
  (work-queue retention); the hard cap and the dedupe window are one Lua script
  (``SET NX PX`` on ``hyperinfer:jobs:dedupe:<msg_id>``) — ``discard: new``.
- ``nak(delay)`` moves the entry to a per-priority sorted set of delayed retries,
  due at now+delay; each fetch first promotes due entries back (one pipeline).
- the sweeper claims entries idle longer than ``ack_wait`` (a crashed or stuck
  worker): below max attempts they are re-enqueued with ``attempt+1``, at max they go
  to the callback (the DLQ) — the equivalent of JetStream's max-deliveries advisory.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from hyperinfer.client.lifecycle import stop_task
from hyperinfer.contracts import Priority, names
from hyperinfer.event_pipeline.errors import QueueFull, QueueUnavailable
from hyperinfer.event_pipeline.ports import (
    Delivery,
    ExhaustedCallback,
    QueueState,
    StoredDeadLetter,
)
from hyperinfer.runtime.logs import get_logger
from redis.exceptions import RedisError, ResponseError

log = get_logger(__name__)
DEDUPE_PREFIX = "hyperinfer:jobs:dedupe:"
_DLQ_MAXLEN = 1_000_000

_PUBLISH = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[1]) then
  return -1
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('XADD', KEYS[1], '*', 'envelope', ARGV[4], 'subject', ARGV[3], 'msg_id', ARGV[5],
  'attempt', '1', 'enqueued_ms', ARGV[6])
return 1
"""

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local e = cjson.decode(member)
  redis.call('XADD', KEYS[1], '*', 'envelope', e.envelope, 'subject', e.subject,
    'msg_id', e.msg_id, 'attempt', tostring(e.attempt), 'enqueued_ms', tostring(e.enqueued_ms))
  redis.call('ZREM', KEYS[2], member)
end
return #due
"""


def delayed_key(priority: Priority) -> str:
    return f"hyperinfer:jobs:delayed:{priority.value}"


class RedisDelivery:
    """One entry read from a priority stream by our consumer."""

    __slots__ = ("_fields", "_id", "_queue", "priority")

    def __init__(
        self, queue: RedisQueue, priority: Priority, entry_id: str, fields: dict[str, str]
    ) -> None:
        self._queue = queue
        self.priority = priority
        self._id = entry_id
        self._fields = fields

    @property
    def subject(self) -> str:
        return self._fields.get("subject") or names.job_subject(self.priority, "raw")

    @property
    def data(self) -> bytes:
        return self._fields.get("envelope", "").encode()

    @property
    def headers(self) -> Mapping[str, str]:
        msg_id = self._fields.get("msg_id")
        return {"Nats-Msg-Id": msg_id} if msg_id else {}

    @property
    def attempt(self) -> int:
        return int(self._fields.get("attempt") or 1)

    @property
    def enqueued_at(self) -> float:
        raw = self._fields.get("enqueued_ms") or self._id.split("-", 1)[0]
        return int(raw) / 1000

    async def ack(self) -> None:
        await self._queue.finish(self.priority, self._id)

    async def term(self) -> None:
        await self._queue.finish(self.priority, self._id)

    async def nak(self, delay_s: float) -> None:
        await self._queue.delay(self.priority, self._id, self._fields, delay_s)

    async def in_progress(self) -> None:
        await self._queue.touch(self.priority, self._id)


class _AckBatcher:
    """Joins concurrent XACK+XDEL calls into one pipeline round trip."""

    def __init__(self, client: aioredis.Redis, group: str) -> None:
        self._client = client
        self._group = group
        self._pending: list[tuple[str, str]] = []
        self._done: asyncio.Future[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def finish(self, stream: str, entry_id: str) -> None:
        self._pending.append((stream, entry_id))
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        await asyncio.shield(self._done)

    async def _flush(self) -> None:
        batch, done = self._pending, self._done
        self._pending, self._done = [], None
        assert done is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for stream, entry_id in batch:
                    pipe.xack(stream, self._group, entry_id)
                    pipe.xdel(stream, entry_id)
                await pipe.execute()
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)


class RedisQueue:
    """``JobQueue`` on Redis Streams."""

    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        capacities: Mapping[Priority, int],
        *,
        group: str,
        ack_wait_s: float,
        max_attempts: int,
        dedupe_window_s: float,
        sweep_interval_s: float = 5.0,
    ) -> None:
        self._client = client
        self._capacities = dict(capacities)
        self._group = group
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._ack_wait_ms = int(ack_wait_s * 1000)
        self._max_attempts = max_attempts
        self._window_ms = int(dedupe_window_s * 1000)
        self._sweep_interval_s = min(sweep_interval_s, max(0.05, ack_wait_s / 2))
        self._publish = client.register_script(_PUBLISH)
        self._promote = client.register_script(_PROMOTE)
        self._acks = _AckBatcher(client, group)
        self._sweeper: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        for priority in Priority:
            try:
                await self._client.xgroup_create(
                    names.jobs_redis_stream(priority), self._group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def publish(self, subject: str, data: bytes, msg_id: str, priority: Priority) -> bool:
        keys = [names.jobs_redis_stream(priority), DEDUPE_PREFIX + msg_id, delayed_key(priority)]
        args: list[bytes | str | int] = [
            self._capacities[priority],
            self._window_ms,
            subject,
            data,
            msg_id,
            _now_ms(),
        ]
        try:
            result = int(await self._publish(keys=keys, args=args))
        except RedisError as exc:
            raise QueueUnavailable(f"publish failed: {type(exc).__name__}: {exc}") from None
        if result < 0:
            raise QueueFull(priority, f"{priority.value} queue at its hard cap", 1)
        return result == 1

    async def states(self) -> dict[Priority, QueueState]:
        async with self._client.pipeline(transaction=False) as pipe:
            for priority in Priority:
                stream = names.jobs_redis_stream(priority)
                pipe.xlen(stream)
                pipe.zcard(delayed_key(priority))
                pipe.xrange(stream, count=1)
            try:
                raw = await pipe.execute()
            except RedisError as exc:
                raise QueueUnavailable(f"queue state unavailable: {exc}") from None
            out: dict[Priority, QueueState] = {}
            for i, priority in enumerate(Priority):
                depth = int(raw[3 * i]) + int(raw[3 * i + 1])
                age = _entry_age_s(raw[3 * i + 2])
                out[priority] = QueueState(priority, depth, self._capacities[priority], age)
            return out

    async def fetch(self, priority: Priority, count: int) -> list[Delivery]:
        stream = names.jobs_redis_stream(priority)
        async with self._client.pipeline(transaction=False) as pipe:
            await self._promote(
                keys=[stream, delayed_key(priority)], args=[_now_ms(), 1000], client=pipe
            )
            pipe.xreadgroup(self._group, self._consumer, {stream: ">"}, count=count)
            try:
                _, read = await pipe.execute()
            except RedisError as exc:
                raise QueueUnavailable(f"fetch failed: {exc}") from None
            entries = read[0][1] if read else []
            return [RedisDelivery(self, priority, _text(i), _fields(f)) for i, f in entries]

    async def finish(self, priority: Priority, entry_id: str) -> None:
        await self._acks.finish(names.jobs_redis_stream(priority), entry_id)

    async def delay(
        self, priority: Priority, entry_id: str, fields: Mapping[str, str], delay_s: float
    ) -> None:
        stream = names.jobs_redis_stream(priority)
        member = _member(fields, int(fields.get("attempt") or 1) + 1)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(delayed_key(priority), {member: _now_ms() + int(delay_s * 1000)})
            pipe.xack(stream, self._group, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def touch(self, priority: Priority, entry_id: str) -> None:
        stream = names.jobs_redis_stream(priority)
        await self._client.xclaim(stream, self._group, self._consumer, 0, [entry_id], justid=True)

    async def watch_exhausted(self, callback: ExhaustedCallback) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(callback))

    async def _sweep_forever(self, callback: ExhaustedCallback) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            for priority in Priority:
                try:
                    await self.sweep(priority, callback)
                except RedisError as exc:
                    log.warning("sweep failed", extra={"error": str(exc)})

    async def sweep(self, priority: Priority, callback: ExhaustedCallback) -> int:
        """Re-enqueue or dead-letter entries idle past ack_wait; returns how many moved."""
        stream = names.jobs_redis_stream(priority)
        pending = await self._client.xpending_range(
            stream, self._group, min="-", max="+", count=500, idle=self._ack_wait_ms
        )
        ids: list[int | bytes | str | memoryview] = [p["message_id"] for p in pending]
        if not ids:
            return 0
        claimed = await self._client.xclaim(
            stream, self._group, self._consumer, self._ack_wait_ms, ids
        )
        for entry_id, raw in claimed:  # type: ignore[str-unpack]
            await self._redeliver(priority, _text(entry_id), _fields(raw), callback)
        return len(claimed)

    async def _redeliver(
        self,
        priority: Priority,
        entry_id: str,
        fields: dict[str, str],
        callback: ExhaustedCallback,
    ) -> None:
        attempt = int(fields.get("attempt") or 1)
        if attempt >= self._max_attempts:
            delivery = RedisDelivery(self, priority, entry_id, fields)
            await callback(priority, delivery.subject, delivery.data, delivery.headers, attempt)
            await self.finish(priority, entry_id)
            return
        await self.delay(priority, entry_id, fields, 0)

    async def close(self) -> None:
        await stop_task(self._sweeper)
        self._sweeper = None


class RedisDeadLetters:
    """``DeadLetterStore`` on the ``hyperinfer:jobs:dlq`` stream (keys are entry ids)."""

    name = "rs"

    def __init__(self, client: aioredis.Redis, max_age_s: float, dedupe_window_s: float) -> None:
        self._client = client
        self._stream = names.JOBS_REDIS_DLQ_STREAM
        self._max_age_ms = int(max_age_s * 1000)
        self._window_ms = int(dedupe_window_s * 1000)

    async def add(self, data: bytes, msg_id: str) -> bool:
        if not await self._client.set(
            DEDUPE_PREFIX + "dlq:" + msg_id, 1, nx=True, px=self._window_ms
        ):
            return False
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._stream, {"envelope": data}, maxlen=_DLQ_MAXLEN, approximate=True)
            pipe.xtrim(self._stream, minid=str(_now_ms() - self._max_age_ms), approximate=True)
            await pipe.execute()
        return True

    async def list(self, limit: int, after: str | None) -> list[StoredDeadLetter]:
        start = f"({after}" if after else "-"
        entries = await self._client.xrange(self._stream, min=start, count=limit)
        return [_stored(entry_id, fields) for entry_id, fields in entries or []]

    async def get(self, key: str) -> StoredDeadLetter | None:
        try:
            entries = await self._client.xrange(self._stream, min=key, max=key, count=1)
        except ResponseError:
            return None
        return _stored(*entries[0]) if entries else None

    async def delete(self, key: str) -> bool:
        try:
            return bool(await self._client.xdel(self._stream, key))
        except ResponseError:
            return False

    async def purge(self) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xlen(self._stream)
            pipe.delete(self._stream)
            count, _ = await pipe.execute()
            return int(count)

    async def depth(self) -> int:
        return int(await self._client.xlen(self._stream))


def _stored(entry_id: Any, fields: Any) -> StoredDeadLetter:
    key = _text(entry_id)
    return StoredDeadLetter(
        key, _fields(fields).get("envelope", "").encode(), int(key.split("-")[0]) / 1000
    )


def _member(fields: Mapping[str, str], attempt: int) -> str:
    return orjson.dumps(
        {
            "envelope": fields.get("envelope", ""),
            "subject": fields.get("subject", ""),
            "msg_id": fields.get("msg_id", ""),
            "attempt": attempt,
            "enqueued_ms": int(fields.get("enqueued_ms") or _now_ms()),
            "nonce": uuid.uuid4().hex[:8],
        }
    ).decode()


def _fields(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry_age_s(entries: Any) -> float:
    if not entries:
        return 0.0
    entry_id, fields = entries[0]
    stamp = _fields(fields).get("enqueued_ms") or _text(entry_id).split("-")[0]
    return max(0.0, time.time() - int(stamp) / 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)
