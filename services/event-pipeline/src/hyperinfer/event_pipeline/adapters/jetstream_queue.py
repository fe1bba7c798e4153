"""The JetStream backend: one work-queue stream per priority, a DLQ stream, pull consumers.

NATS 2.9-compatible only: streams from ``infra/nats/streams.json`` (work-queue
retention, file storage, ``discard: new`` at the per-priority cap, dedupe window on
``Nats-Msg-Id``), one durable pull consumer per stream with explicit acks,
``max_deliver`` = max attempts. Messages are pulled with our own ``no_wait`` batch
requests, so a fetch never blocks and never asks for more than the free slots.

Messages that hit ``max_deliver`` (a worker crashed or timed out on their last
delivery) stay in a work-queue stream, skipped. ``watch_exhausted`` moves them out
(``get_msg`` → callback → ``delete_msg``) on two paths:

- the max-deliveries advisory names their sequence. It is core NATS, so one fired
  while no pipeline process listened is lost;
- a sweep, at start and every ``sweep_interval_s``, finds them without the advisory.
  The consumer info does not list pending sequences, but (measured on NATS 2.9.10
  and 2.15.1) nothing up to ``ack_floor.stream_seq`` is pending, and with
  ``num_ack_pending == 0`` nothing up to ``delivered.stream_seq`` is. Pending covers
  in flight, nak'ed and awaiting redelivery; a delivered message that is not pending
  was acked or termed (both delete it from a work-queue stream) or exhausted, so one
  still there is exhausted. The floor only moves on an ack, so under constant load
  an exhausted message above it waits for an ack that empties the pending set.

Both paths take one message at a time per process (``_moving``); another replica
moving the same message writes the same DLQ ``Nats-Msg-Id`` (original id and
deliveries), which the DLQ stream's dedupe window drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.contracts import Priority, names
from hyperinfer.event_pipeline.errors import QueueFull, QueueUnavailable
from hyperinfer.event_pipeline.ports import (
    Delivery,
    ExhaustedCallback,
    QueueState,
    StoredDeadLetter,
)
from hyperinfer.runtime.logs import get_logger
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, StreamConfig
from nats.js.errors import APIError, NotFoundError

log = get_logger(__name__)
ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"
_PULL_TIMEOUT_S = 2.0
_DELETED_ALREADY = 10057  # STREAM.MSG.DELETE of a missing sequence (another process moved it)


class JetStreamDelivery:
    """A pulled JetStream message."""

    __slots__ = ("_msg", "priority")

    def __init__(self, msg: Msg, priority: Priority) -> None:
        self._msg = msg
        self.priority = priority

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._msg.headers or {}

    @property
    def attempt(self) -> int:
        return int(self._msg.metadata.num_delivered)

    @property
    def enqueued_at(self) -> float:
        stamp = self._msg.metadata.timestamp
        return stamp.timestamp() if stamp else time.time()

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float) -> None:
        await self._msg.nak(delay=max(0.001, delay_s))

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class _Puller:
    """``no_wait`` batch pulls on one durable consumer through one reply inbox."""

    def __init__(self, nc: NatsClient, stream: str, consumer: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox)

    async def pull(self, count: int) -> list[Msg]:
        assert self._sub is not None
        async with self._lock:
            request = orjson.dumps({"batch": count, "no_wait": True})
            await self._nc.publish(self._api, request, reply=self._inbox)
            return await self._collect(self._sub, count)

    @staticmethod
    async def _collect(sub: Subscription, count: int) -> list[Msg]:
        got: list[Msg] = []
        while len(got) < count:
            try:
                msg = await sub.next_msg(timeout=_PULL_TIMEOUT_S)
            except (TimeoutError, NatsError):
                break
            if msg.headers and msg.headers.get("Status") and not msg.data:
                break  # 404 no messages / 408 / 409: this pull is over
            got.append(msg)
        return got

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(NatsError):
                await self._sub.unsubscribe()


class JetStreamQueue:
    """``JobQueue`` on JetStream."""

    name = "jetstream"

    def __init__(
        self,
        nc: NatsClient,
        stream_configs: list[StreamConfig],
        *,
        consumer: str,
        ack_wait_s: float,
        max_attempts: int,
        capacity: int | None = None,
        sweep_interval_s: float = 30.0,
        sweep_batch: int = 200,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._consumer = consumer
        self._ack_wait_s = ack_wait_s
        self._max_attempts = max_attempts
        self._configs = _job_streams(stream_configs, capacity)
        self._sweep_interval_s = sweep_interval_s
        self._sweep_batch = sweep_batch
        self._pullers: dict[Priority, _Puller] = {}
        self._advisory_subs: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._moving: set[tuple[str, int]] = set()

    @property
    def stream_configs(self) -> dict[Priority, StreamConfig]:
        return dict(self._configs)

    async def setup(self) -> None:
        for priority, config in self._configs.items():
            await _ensure_stream(self._js, config)
            await self._ensure_consumer(priority)

    async def _ensure_consumer(self, priority: Priority) -> None:
        config = ConsumerConfig(
            durable_name=self._consumer,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait_s,
            max_deliver=self._max_attempts,
            max_ack_pending=-1,
        )
        stream = names.jobs_stream(priority)
        try:
            await self._js.add_consumer(stream, config)
        except APIError as exc:  # 2.9 refuses to change some fields of an existing durable
            log.warning("consumer kept as it is", extra={"stream": stream, "error": str(exc)})

    async def _puller(self, priority: Priority) -> _Puller:
        puller = self._pullers.get(priority)
        if puller is None:
            puller = _Puller(self._nc, names.jobs_stream(priority), self._consumer)
            await puller.start()
            self._pullers[priority] = puller
        return puller

    async def publish(self, subject: str, data: bytes, msg_id: str, priority: Priority) -> bool:
        try:
            ack = await self._js.publish(
                subject,
                data,
                timeout=5,
                stream=names.jobs_stream(priority),
                headers={"Nats-Msg-Id": msg_id},
            )
        except APIError as exc:
            if "maximum" in str(exc).lower():
                raise QueueFull(priority, f"{priority.value} queue at its hard cap", 1) from None
            raise QueueUnavailable(f"publish refused: {exc}") from None
        except (NatsError, TimeoutError) as exc:
            raise QueueUnavailable(f"publish failed: {type(exc).__name__}: {exc}") from None
        return not ack.duplicate

    async def states(self) -> dict[Priority, QueueState]:
        infos = await asyncio.gather(*(self._stream_state(p) for p in self._configs))
        return dict(zip(self._configs, infos, strict=True))

    async def _stream_state(self, priority: Priority) -> QueueState:
        info = await _stream_info(self._nc, names.jobs_stream(priority))
        state = info.get("state", {})
        depth = int(state.get("messages", 0))
        capacity = int(self._configs[priority].max_msgs or 0)
        age = _age_s(state.get("first_ts")) if depth else 0.0
        return QueueState(priority, depth, capacity, age)

    async def fetch(self, priority: Priority, count: int) -> list[Delivery]:
        puller = await self._puller(priority)
        msgs = await puller.pull(count)
        return [JetStreamDelivery(m, priority) for m in msgs]

    async def watch_exhausted(self, callback: ExhaustedCallback) -> None:
        for priority in self._configs:
            stream = names.jobs_stream(priority)
            subject = ADVISORY.format(stream=stream, consumer=self._consumer)
            handler = self._advisory_handler(priority, callback)
            self._advisory_subs.append(await self._nc.subscribe(subject, cb=handler))
        self._sweeper = asyncio.create_task(self._sweep_forever(callback), name="jetstream-sweep")

    def _advisory_handler(self, priority: Priority, callback: ExhaustedCallback) -> Any:
        async def on_advisory(msg: Msg) -> None:
            try:
                advisory = orjson.loads(msg.data)
                stream, seq = str(advisory["stream"]), int(advisory["stream_seq"])
                deliveries = int(advisory.get("deliveries", self._max_attempts))
                await self._move_exhausted(priority, stream, seq, deliveries, callback)
            except Exception:
                log.exception("max-deliveries advisory not handled", extra={"data": msg.data[:200]})

        return on_advisory

    async def _sweep_forever(self, callback: ExhaustedCallback) -> None:
        while True:
            for priority in self._configs:
                try:
                    await self.sweep(priority, callback)
                except Exception as exc:
                    raise_if_cancelled()  # a cancel a library turned into an error
                    log.warning(
                        "exhausted sweep failed",
                        extra={"priority": priority.value, "error": f"{type(exc).__name__}: {exc}"},
                    )
            await asyncio.sleep(self._sweep_interval_s)

    async def sweep(self, priority: Priority, callback: ExhaustedCallback) -> int:
        """Move up to ``sweep_batch`` messages the consumer gave up on; returns how many."""
        stream = names.jobs_stream(priority)
        info = await self._js.consumer_info(stream, self._consumer)
        through = given_up_through(info)
        deliveries = int(info.config.max_deliver or self._max_attempts)
        moved, seq = 0, 1
        for _ in range(self._sweep_batch):
            found = await self._next_seq(stream, seq, through)
            if found is None:
                break
            moved += await self._move_exhausted(priority, stream, found, deliveries, callback)
            seq = found + 1
        if moved:
            log.warning("exhausted jobs swept", extra={"stream": stream, "count": moved})
        return moved

    async def _next_seq(self, stream: str, seq: int, through: int) -> int | None:
        """The first message at ``seq`` or after it, if it is at ``through`` or before."""
        if seq > through:
            return None
        try:
            raw = await self._js.get_msg(stream, seq, subject=">", next=True)
        except NotFoundError:
            return None
        found = int(raw.seq or 0)
        return found if 0 < found <= through else None

    async def _move_exhausted(
        self,
        priority: Priority,
        stream: str,
        seq: int,
        deliveries: int,
        callback: ExhaustedCallback,
    ) -> bool:
        if (stream, seq) in self._moving:
            return False  # the advisory and the sweep met on it: the other one moves it
        self._moving.add((stream, seq))
        try:
            return await self._move(priority, stream, seq, deliveries, callback)
        finally:
            self._moving.discard((stream, seq))

    async def _move(
        self,
        priority: Priority,
        stream: str,
        seq: int,
        deliveries: int,
        callback: ExhaustedCallback,
    ) -> bool:
        try:
            raw = await self._js.get_msg(stream, seq)
        except NotFoundError:
            return False  # acked or already moved
        headers = {k: str(v) for k, v in (raw.headers or {}).items()}
        await callback(priority, str(raw.subject), raw.data or b"", headers, deliveries)
        try:
            await self._js.delete_msg(stream, seq)
        except APIError as exc:  # 2.9 and 2.15 answer 500/10057, not 404, when it is gone
            if exc.err_code != _DELETED_ALREADY:
                raise
        return True

    async def close(self) -> None:
        await stop_task(self._sweeper)
        self._sweeper = None
        for puller in self._pullers.values():
            await puller.stop()
        for sub in self._advisory_subs:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        self._pullers.clear()
        self._advisory_subs.clear()


class JetStreamDeadLetters:
    """``DeadLetterStore`` on the ``HYPERINFER_DLQ`` stream (keys are sequences)."""

    name = "js"

    def __init__(self, nc: NatsClient, source: str = "event-pipeline") -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._subject = names.dlq_subject(source)

    async def add(self, data: bytes, msg_id: str) -> bool:
        ack = await self._js.publish(
            self._subject, data, timeout=5, headers={"Nats-Msg-Id": msg_id}
        )
        return not ack.duplicate

    async def list(self, limit: int, after: str | None) -> list[StoredDeadLetter]:
        state = (await _stream_info(self._nc, names.DLQ_STREAM)).get("state", {})
        if not int(state.get("messages", 0)):
            return []
        first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
        seq = max(first, 1, int(after) + 1 if after and after.isdigit() else first)
        found: list[StoredDeadLetter] = []
        while seq <= last and len(found) < limit:
            window = range(seq, min(last, seq + limit * 2) + 1)
            got = await asyncio.gather(*(self.get(str(s)) for s in window))
            found.extend(e for e in got if e is not None)
            seq = window.stop
        return found[:limit]

    async def get(self, key: str) -> StoredDeadLetter | None:
        try:
            raw = await self._js.get_msg(names.DLQ_STREAM, int(key))
        except (APIError, ValueError):
            return None
        stored = raw.time.timestamp() if isinstance(raw.time, datetime) else time.time()
        return StoredDeadLetter(str(raw.seq), raw.data or b"", stored)

    async def delete(self, key: str) -> bool:
        try:
            return bool(await self._js.delete_msg(names.DLQ_STREAM, int(key)))
        except (APIError, ValueError):
            return False

    async def purge(self) -> int:
        count = await self.depth()
        await self._js.purge_stream(names.DLQ_STREAM)
        return count

    async def depth(self) -> int:
        info = await _stream_info(self._nc, names.DLQ_STREAM)
        return int(info.get("state", {}).get("messages", 0))


def given_up_through(info: ConsumerInfo) -> int:
    """The stream sequence up to which the consumer will deliver nothing again.

    Everything up to the ack floor is done; with nothing pending, everything delivered
    is. A message still in the stream there exhausted its deliveries.
    """
    if info.num_ack_pending == 0 and info.delivered is not None:
        return int(info.delivered.stream_seq)
    return int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0


def _job_streams(configs: list[StreamConfig], capacity: int | None) -> dict[Priority, StreamConfig]:
    by_name = {c.name: c for c in configs}
    out: dict[Priority, StreamConfig] = {}
    for priority in Priority:
        config = by_name.get(names.jobs_stream(priority))
        if config is None:
            raise ValueError(f"streams.json has no stream {names.jobs_stream(priority)}")
        out[priority] = replace(config, max_msgs=capacity) if capacity else config
    return out


async def _ensure_stream(js: Any, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def _stream_info(nc: NatsClient, stream: str) -> dict[str, Any]:
    """The raw stream info (nats-py's model drops ``first_ts``)."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    except (NatsError, TimeoutError) as exc:
        raise QueueUnavailable(f"stream info for {stream} failed: {exc}") from None
    body: dict[str, Any] = orjson.loads(reply.data)
    if "error" in body:
        raise QueueUnavailable(f"stream {stream}: {body['error'].get('description', 'error')}")
    return body


def _age_s(first_ts: str | None) -> float:
    if not first_ts or first_ts.startswith("0001"):
        return 0.0
    head, _, frac = first_ts.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00")
    return max(0.0, time.time() - stamp.timestamp())
