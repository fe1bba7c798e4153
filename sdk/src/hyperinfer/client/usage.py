"""Usage events and quota settles, off the latency path, batched into one write.

The request path hands a ``UsageDraft`` to ``UsageRecorder.record`` (a non-blocking
queue put). A background task waits up to ``linger_s`` (1 ms; longer makes larger
bursts on Redis) for more, finishes each draft (counts tokens the upstream did not
report, prices them), and sends every settle (``EVALSHA``) and every
``XADD hyperinfer:usage`` of the batch as ONE pipelined write on the hot-path
connection (``hyperinfer.client.resp``). So a
request never waits for its usage, and under load hundreds of requests share one
round trip (and one ``send``: a syscall costs tens of µs on a busy machine).

Nothing is lost silently: a full queue, or events Redis refused after ``attempts``
tries, are counted (``dropped``, ``failed``) and logged. Each event is an
``Envelope[UsageRecorded]`` in the stream field ``envelope`` (plus ``traceparent`` when
the request was traced), idempotent by ``request_id`` for its consumers (a retried
batch may add an event twice; the ledger and the quota service count it once).

The stream is not capped by default: telemetry trims it itself, past every consumer
group's position, so a long PostgreSQL outage cannot lose usage that was never
recorded. ``stream_maxlen`` (``XADD MAXLEN ~``) is there for deployments that want a
hard bound on Redis memory and accept that risk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from hyperinfer.client.governance import cost_micros
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.client.quota import QuotaLimiter, Reservation
from hyperinfer.client.resp import RespClient
from hyperinfer.client.tokens import cl100k, count_input_tokens, count_prompt_tokens, count_texts
from hyperinfer.contracts import names
from hyperinfer.contracts.config.v1 import ModelPrice
from hyperinfer.contracts.envelope import new_event_id
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded
from opentelemetry import trace
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger(__name__)

Api = Literal["chat", "embeddings", "messages"]
Status = Literal["ok", "error", "cancelled"]
Origin = Literal["ingress", "client", "pipeline"]


@dataclass(slots=True)
class UsageDraft:
    """What the request path knows when it is done; the recorder finishes the rest."""

    request_id: str
    team_id: str
    key_id: str
    user_id: str | None
    alias: str
    api: Api
    stream: bool
    origin: Origin
    started_at: float
    """Epoch seconds."""
    model: str = ""
    backend_id: str = ""
    provider: str = ""
    status: Status = "ok"
    http_status: int = 200
    error_type: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    """None: not reported by the upstream; counted from the texts below."""
    prompt: Any = None
    """The request's ``messages`` (chat) or ``input`` (embeddings), to count if needed."""
    completion_texts: list[str] = field(default_factory=list)
    price: ModelPrice | None = None
    price_version: str = "0"
    reservation: Reservation | None = None
    reserved_tokens: int = 0
    reserved_cost_micros: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 1
    fallback_used: bool = False
    cache_hit: bool = False
    finished_at: float = 0.0
    traceparent: str | None = None
    span: Any = None
    """The event's PRODUCER span when tracing is on (``spans.PlaneSpans.usage``); the
    recorder ends it once the event is in Redis."""

    def finish(self) -> tuple[int, int, bool]:
        """(prompt, completion, estimated) tokens: the upstream's, or counted."""
        estimated = False
        prompt, completion = self.prompt_tokens, self.completion_tokens
        if prompt is None:
            estimated = True
            prompt = (
                count_input_tokens(self.prompt)
                if self.api == "embeddings"
                else count_prompt_tokens(self.prompt)
            )
        if completion is None:
            estimated = True
            completion = count_texts(self.completion_texts)
        return prompt, completion, estimated


def usage_data(draft: UsageDraft, prompt: int, completion: int, estimated: bool) -> dict[str, Any]:
    """The ``UsageRecorded`` payload as a plain dict (its fields, in its order)."""
    return {
        "request_id": draft.request_id,
        "team_id": draft.team_id,
        "key_id": draft.key_id,
        "user_id": draft.user_id,
        "alias": draft.alias,
        "model": draft.model,
        "backend_id": draft.backend_id,
        "provider": draft.provider,
        "api": draft.api,
        "stream": draft.stream,
        "status": draft.status,
        "http_status": draft.http_status,
        "error_type": draft.error_type,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "tokens_estimated": estimated,
        "cost_micros": cost_micros(draft.price, prompt, completion),
        "price_version": draft.price_version,
        "reserved_tokens": draft.reserved_tokens,
        "reserved_cost_micros": draft.reserved_cost_micros,
        "latency_ms": round(max(0.0, draft.latency_ms), 3),
        "ttft_ms": round(max(0.0, draft.ttft_ms), 3) if draft.ttft_ms is not None else None,
        "attempts": max(1, draft.attempts),
        "fallback_used": draft.fallback_used,
        "cache_hit": draft.cache_hit,
        "origin": draft.origin,
        "started_at": datetime.fromtimestamp(draft.started_at, UTC),
        "finished_at": datetime.fromtimestamp(draft.finished_at or time.time(), UTC),
    }


def usage_event(draft: UsageDraft, prompt: int, completion: int, estimated: bool) -> UsageRecorded:
    """The validated contract model of a finished draft (tests, tools; not the hot path)."""
    return UsageRecorded.model_validate(usage_data(draft, prompt, completion, estimated))


def envelope_json(data: dict[str, Any], source: str, traceparent: str | None) -> bytes:
    """An ``Envelope[UsageRecorded]`` as JSON, written with orjson.

    Pydantic builds the same JSON in ~20 µs per event (and, with the generic
    ``Envelope[...]`` re-parametrised per call, far more); the fields are ours and
    typed, so they are written directly. A test pins this against the pydantic models.
    """
    envelope = {
        "id": new_event_id(),
        "type": EVENT_RECORDED,
        "schema_version": 1,
        "source": source,
        "time": datetime.now(UTC),
        "priority": "normal",
        "tenant": data["team_id"],
        "expires_at": None,
        "traceparent": traceparent,
        "data": data,
    }
    return orjson.dumps(envelope, option=orjson.OPT_UTC_Z)


@dataclass
class UsageStats:
    recorded: int = 0
    emitted: int = 0
    failed: int = 0
    dropped: int = 0
    batches: int = 0
    settle_failed: int = 0
    last_error: str | None = None


Command = tuple[Any, ...]


class UsageRecorder:
    """The bounded queue and the background flusher of one node."""

    def __init__(
        self,
        wire: RespClient,
        limiter: QuotaLimiter | None,
        *,
        source: str,
        max_queue: int = 20_000,
        max_batch: int = 256,
        linger_s: float = 0.001,
        stream_maxlen: int | None = None,
        attempts: int = 3,
    ) -> None:
        self._wire = wire
        self._limiter = limiter
        self._source = source
        self._queue: asyncio.Queue[UsageDraft] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._xadd: Command = (b"XADD", names.USAGE_STREAM.encode())
        if stream_maxlen is not None:
            self._xadd += (b"MAXLEN", b"~", stream_maxlen)
        self._attempts = attempts
        self._task: asyncio.Task[None] | None = None
        self.stats = UsageStats()

    def record(self, draft: UsageDraft) -> None:
        """Queue ``draft`` (never blocks; a full queue is counted and logged)."""
        try:
            self._queue.put_nowait(draft)
        except asyncio.QueueFull:
            if draft.span is not None:
                _end_span(draft.span, lost=1)
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.error(
                    "usage queue full: %d usage event(s) dropped so far (request %s)",
                    self.stats.dropped,
                    draft.request_id,
                )
            return
        self.stats.recorded += 1
        if self._task is None:
            self.start()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued draft was flushed (or failed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        await stop_task(self._task)
        self._task = None
        if not self._queue.empty():
            log.error("usage recorder stopped with %d event(s) unsent", self._queue.qsize())

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, object]:
        return {"queued": self.queued, **vars(self.stats)}

    async def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if self._linger_s > 0 and queue.qsize() < self._max_batch - 1:
                await asyncio.sleep(self._linger_s)  # let more requests join this write
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._flush(batch)
            except Exception as exc:  # keep flushing whatever one batch met
                self._failed(len(batch), exc, batch[0].request_id)
                raise_if_cancelled()
            finally:
                for _ in batch:
                    queue.task_done()

    async def _flush(self, batch: list[UsageDraft]) -> None:
        if any(d.prompt_tokens is None or d.completion_tokens is None for d in batch):
            await asyncio.to_thread(cl100k)  # load the ranks once, off the event loop
        commands: list[Command] = []
        for draft in batch:
            prompt, completion, estimated = draft.finish()
            data = usage_data(draft, prompt, completion, estimated)
            if draft.reservation is not None and self._limiter is not None:
                settle = self._limiter.settle_command(
                    draft.reservation, data["total_tokens"], data["cost_micros"]
                )
                if settle is not None:
                    commands.append(settle)
            commands.append(self._xadd_command(data, draft.traceparent))
        lost = await self._send(commands, batch[0].request_id)
        for draft in batch:
            if draft.span is not None:
                _end_span(draft.span, lost)

    def _xadd_command(self, data: dict[str, Any], traceparent: str | None) -> Command:
        envelope = envelope_json(data, self._source, traceparent)
        fields: Command = (b"*", names.USAGE_STREAM_FIELD, envelope)
        if traceparent:
            fields += (b"traceparent", traceparent)
        return self._xadd + fields

    async def _send(self, commands: list[Command], first_request: str) -> int:
        """Send, then resend what failed (``attempts`` writes in all); count what never went."""
        pending, delay = commands, 0.05
        error: BaseException | None = None
        for attempt in range(self._attempts):
            if attempt and error is not None:  # not after a bare NOSCRIPT: resend at once
                await asyncio.sleep(delay)
                delay *= 4
            try:
                replies = await self._wire.execute_many(pending)
            except (RedisError, OSError) as exc:
                error = exc
                continue
            pending, error = self._refused(pending, replies)
            if not pending:
                break
        if pending:
            self._count_lost(pending, error, first_request)
        lost = _events(pending)
        self.stats.emitted += _events(commands) - lost
        self.stats.batches += 1
        return lost

    def _refused(
        self, commands: Sequence[Command], replies: Sequence[Any]
    ) -> tuple[list[Command], BaseException | None]:
        """What to send again (``NOSCRIPT`` settles as ``EVAL``) and the error to report."""
        retry: list[Command] = []
        error: BaseException | None = None
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, NoScriptError) and self._limiter is not None:
                retry.append(self._limiter.settle_eval(command))
            elif isinstance(reply, RedisError):
                retry.append(command)
                error = reply
        return retry, error

    def _count_lost(
        self, commands: Sequence[Command], error: BaseException | None, first_request: str
    ) -> None:
        events = _events(commands)
        self.stats.settle_failed += len(commands) - events
        self._failed(events, error or RedisError("NOSCRIPT after EVAL"), first_request)

    def _failed(self, events: int, exc: BaseException, first_request: str) -> None:
        """Count and log events that never reached Redis."""
        self.stats.failed += events
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error(
            "usage batch: %d event(s) lost after retries (%s); first request %s",
            events,
            self.stats.last_error,
            first_request,
        )


def _events(commands: Sequence[Command]) -> int:
    """How many of ``commands`` are usage events (the rest are settles)."""
    return sum(1 for c in commands if c[0] == b"XADD")


def _end_span(span: Any, lost: int) -> None:
    if lost:
        span.set_status(
            trace.Status(trace.StatusCode.ERROR, "usage events of this batch were lost")
        )
    span.end()
