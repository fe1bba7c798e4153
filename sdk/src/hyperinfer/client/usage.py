"""Usage events and quota settles, off the latency path, in one pipelined round trip.

The request path hands a ``UsageDraft`` to ``UsageRecorder.record`` (a non-blocking
queue put). A background task takes whatever has queued (up to ``max_batch``),
finishes each draft (counts tokens the upstream did not report, prices them), and
sends every settle and every ``XADD hyperinfer:usage`` of the batch in ONE pipeline.
So a request never waits for its usage, and under load many requests share a round
trip.

Nothing is lost silently: a full queue, or a batch Redis refused after retries, is
counted (``dropped``, ``failed``) and logged. Each event is an ``Envelope[UsageRecorded]``
in the stream field ``envelope`` (plus ``traceparent`` when known), idempotent by
``request_id`` for its consumers; the stream is capped with ``MAXLEN ~``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from hyperinfer.client.governance import cost_micros
from hyperinfer.client.quota import QuotaLimiter, Reservation
from hyperinfer.client.tokens import cl100k, count_input_tokens, count_prompt_tokens, count_texts
from hyperinfer.contracts import Envelope, names
from hyperinfer.contracts.config.v1 import ModelPrice
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED, UsageRecorded

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


def usage_event(draft: UsageDraft, prompt: int, completion: int, estimated: bool) -> UsageRecorded:
    return UsageRecorded(
        request_id=draft.request_id,
        team_id=draft.team_id,
        key_id=draft.key_id,
        user_id=draft.user_id,
        alias=draft.alias,
        model=draft.model,
        backend_id=draft.backend_id,
        provider=draft.provider,
        api=draft.api,
        stream=draft.stream,
        status=draft.status,
        http_status=draft.http_status,
        error_type=draft.error_type,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        tokens_estimated=estimated,
        cost_micros=cost_micros(draft.price, prompt, completion),
        price_version=draft.price_version,
        reserved_tokens=draft.reserved_tokens,
        reserved_cost_micros=draft.reserved_cost_micros,
        latency_ms=round(max(0.0, draft.latency_ms), 3),
        ttft_ms=round(draft.ttft_ms, 3) if draft.ttft_ms is not None else None,
        attempts=max(1, draft.attempts),
        fallback_used=draft.fallback_used,
        cache_hit=draft.cache_hit,
        origin=draft.origin,
        started_at=datetime.fromtimestamp(draft.started_at, UTC),
        finished_at=datetime.fromtimestamp(draft.finished_at or time.time(), UTC),
    )


@dataclass
class UsageStats:
    recorded: int = 0
    emitted: int = 0
    failed: int = 0
    dropped: int = 0
    batches: int = 0
    last_error: str | None = None


class UsageRecorder:
    """The bounded queue and the background flusher of one node."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limiter: QuotaLimiter | None,
        *,
        source: str,
        max_queue: int = 20_000,
        max_batch: int = 256,
        stream_maxlen: int = 1_000_000,
        attempts: int = 3,
    ) -> None:
        self._redis = redis
        self._limiter = limiter
        self._source = source
        self._queue: asyncio.Queue[UsageDraft] = asyncio.Queue(max_queue)
        self._max_batch = max_batch
        self._maxlen = stream_maxlen
        self._attempts = attempts
        self._task: asyncio.Task[None] | None = None
        self.stats = UsageStats()

    def record(self, draft: UsageDraft) -> None:
        """Queue ``draft`` (never blocks; a full queue is counted and logged)."""
        try:
            self._queue.put_nowait(draft)
        except asyncio.QueueFull:
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._queue.empty():
            log.error("usage recorder stopped with %d event(s) unsent", self._queue.qsize())

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, object]:
        return {"queued": self.queued, **vars(self.stats)}

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._flush(batch)
            except Exception as exc:  # keep flushing whatever one batch met
                self._failed(batch, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _flush(self, batch: list[UsageDraft]) -> None:
        if any(d.prompt_tokens is None or d.completion_tokens is None for d in batch):
            await asyncio.to_thread(cl100k)  # load the ranks once, off the event loop
        finished = []
        for draft in batch:
            prompt, completion, estimated = draft.finish()
            event = usage_event(draft, prompt, completion, estimated)
            finished.append((draft, event, self._fields(event, draft.traceparent)))
        delay = 0.05
        for attempt in range(1, self._attempts + 1):
            pipe = self._redis.pipeline(transaction=False)  # a failed execute empties it
            for draft, event, fields in finished:
                if draft.reservation is not None and self._limiter is not None:
                    self._limiter.settle_into(
                        pipe, draft.reservation, event.total_tokens, event.cost_micros
                    )
                pipe.xadd(names.USAGE_STREAM, fields, maxlen=self._maxlen, approximate=True)
            try:
                await pipe.execute()
            except Exception as exc:
                if attempt == self._attempts:
                    self._failed(batch, exc)
                    return
                await asyncio.sleep(delay)
                delay *= 4
            else:
                self.stats.emitted += len(batch)
                self.stats.batches += 1
                return

    def _fields(self, event: UsageRecorded, traceparent: str | None) -> dict[Any, Any]:
        envelope = Envelope[UsageRecorded](
            type=EVENT_RECORDED,
            source=self._source,
            tenant=event.team_id,
            traceparent=traceparent,
            data=event,
        )
        fields: dict[Any, Any] = {names.USAGE_STREAM_FIELD: envelope.model_dump_json()}
        if traceparent:
            fields["traceparent"] = traceparent
        return fields

    def _failed(self, batch: list[UsageDraft], exc: BaseException) -> None:
        self.stats.failed += len(batch)
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error(
            "usage batch of %d lost after retries (%s); first request %s",
            len(batch),
            self.stats.last_error,
            batch[0].request_id,
        )
