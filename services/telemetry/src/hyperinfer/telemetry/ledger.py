"""The ledger consumer: usage stream → PostgreSQL, exactly once per request id.

One loop per replica, in consumer group ``telemetry`` under a name of its own:

1. Take a batch: first this consumer's own pending entries (a restart under the same
   name), then, every ``reclaim_interval_s``, entries idle for ``reclaim_min_idle_ms``
   in other consumers' lists (a replica that died mid-batch: XAUTOCLAIM), otherwise
   new entries (XREADGROUP COUNT/BLOCK, lingering up to ``batch_max_wait_ms`` to fill).
2. Sort it out (``intake``): refusals with a reason, duplicates, unique events.
3. Commit the unique events in one transaction (``LedgerStore.write``). If PostgreSQL
   is unavailable, keep the batch, mark the ledger not ready, back off and retry — the
   entries stay unacknowledged and are kept from looking idle, so nothing is lost or
   claimed away. If the store refuses the data itself, split the batch until the bad
   event is alone, and dead-letter it.
4. Dead-letter the refusals and acknowledge every entry of the batch, in one round trip.

A crash anywhere before 4 leaves the entries pending, so another replica reclaims them;
a batch committed but not acknowledged is written again as a no-op (request ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.runtime import get_logger
from hyperinfer.runtime.tracing import extract_from
from hyperinfer.telemetry.adapters.redis_stream import UsageStream, is_missing_group
from hyperinfer.telemetry.errors import StoreRejected, StoreUnavailable
from hyperinfer.telemetry.intake import (
    Intake,
    IntakeRules,
    LedgerEvent,
    Rejected,
    StreamEntry,
    sort_batch,
)
from hyperinfer.telemetry.metrics import LedgerMetrics, UsageMetrics
from opentelemetry import trace
from redis.exceptions import RedisError, ResponseError

log = get_logger(__name__)
T = TypeVar("T")
MAX_LINKS = 128  # the SDK's default span link limit


class LedgerStore(Protocol):
    async def write(self, events: Sequence[LedgerEvent]) -> set[str]:
        """Commit ``events`` (unique by request id); return the ids that were new."""
        ...


@dataclass(frozen=True)
class LedgerPolicy:
    """The consumer's knobs (from ``TelemetrySettings``)."""

    batch_max_events: int = 1000
    batch_max_wait_ms: int = 100
    idle_block_ms: int = 1000
    reclaim_min_idle_ms: int = 30_000
    reclaim_interval_s: float = 5.0
    max_deliveries: int = 5
    retry_backoff_max_s: float = 5.0
    max_clock_skew_s: float = 86_400.0
    raw_retention_days: int = 90
    event_spans_per_batch: int = 64


@dataclass
class Batch:
    entries: list[StreamEntry]
    deliveries: dict[bytes, int]
    origin: str  # new, own_pending, reclaimed
    intake: Intake | None = None


class Ledger:
    """Consumes ``hyperinfer:usage`` into the ledger store; see the module docstring."""

    def __init__(
        self,
        stream: UsageStream,
        store: LedgerStore,
        policy: LedgerPolicy,
        metrics: LedgerMetrics,
        usage_metrics: UsageMetrics,
        tracer: trace.Tracer,
    ) -> None:
        self._stream = stream
        self._store = store
        self._policy = policy
        self._metrics = metrics
        self._usage_metrics = usage_metrics
        self._tracer = tracer
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Task[Batch] | None = None
        self._own_cursor: str | None = "0"
        self._claim_cursor = b"0-0"
        self._next_reclaim = 0.0
        self.failing: str | None = None
        self.failing_since: float | None = None
        self.recorded = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.last_commit_at: float | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="ledger")

    async def stop(self, timeout_s: float) -> None:
        """Finish the batch in hand (bounded), then stop; unfinished entries stay pending."""
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            await stop_task(self._task)
        self._task = None

    async def run(self) -> None:
        """Until stopped: take a batch and settle it, reading the next one meanwhile."""
        await self._ensure_group()
        backoff = _Backoff(self._policy.retry_backoff_max_s)
        while not self._stopping.is_set():
            try:
                batch = await self._take()
                self._recover()
                if batch.entries:
                    await self._settle_and_prefetch(batch)
                backoff.reset()
            except (RedisError, OSError) as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                if isinstance(exc, ResponseError) and is_missing_group(exc):
                    await self._recreate_group()
                    continue
                self._fail(f"redis: {type(exc).__name__}: {exc}")
                await self._sleep(backoff.next())
            except Exception:  # a bug must not stop the ledger: the batch is re-read
                raise_if_cancelled()  # a cancel a library turned into an error
                log.exception("ledger batch failed unexpectedly; its entries will be retried")
                self._own_cursor = "0"
                await self._sleep(backoff.next())
        await self._finish_prefetch()

    async def _ensure_group(self) -> None:
        backoff = _Backoff(self._policy.retry_backoff_max_s)
        while not self._stopping.is_set():  # Redis may still be starting
            try:
                await self._stream.ensure_group()
                return
            except (RedisError, OSError) as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                self._fail(f"redis: {type(exc).__name__}: {exc}")
                await self._sleep(backoff.next())

    async def _take(self) -> Batch:
        """The prefetched batch if there is one, else a fresh read (decoded either way)."""
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            return await task
        return await self._prepared()

    async def _prepared(self) -> Batch:
        batch = await self._next_batch()
        if batch.entries:  # decoding is CPU: done here, it overlaps the previous write
            batch.intake = sort_batch(batch.entries, batch.deliveries, self._rules())
        return batch

    async def _settle_and_prefetch(self, batch: Batch) -> None:
        if not self._stopping.is_set():
            self._prefetch = asyncio.create_task(self._prepared(), name="ledger-prefetch")
        await self.settle(batch)

    async def _finish_prefetch(self) -> None:
        """On stop: settle a batch already read (bounded by ``stop``), else stop reading."""
        task, self._prefetch = self._prefetch, None
        if task is None:
            return
        # entries a cancelled read may have taken stay pending: reclaimed, not lost
        if not await stop_task(task) or task.cancelled():
            return
        try:
            batch = task.result()
            if batch.entries:
                await self.settle(batch)
        except Exception as exc:  # stopping anyway: what it held stays pending
            log.warning("read-ahead batch not settled at stop: %s", f"{type(exc).__name__}: {exc}")

    def _held_ids(self) -> list[bytes]:
        """Entries read ahead and not settled yet: the heartbeat keeps them too."""
        task = self._prefetch
        if task is None or not task.done() or task.cancelled() or task.exception():
            return []
        return [entry_id for entry_id, _ in task.result().entries]

    async def check(self) -> None:
        """Readiness: raises while batches cannot be committed or the loop is gone."""
        if self._task is not None and self._task.done():
            raise RuntimeError("ledger consumer stopped")
        if self.failing is not None:
            since = time.time() - (self.failing_since or time.time())
            raise RuntimeError(f"failing for {since:.0f}s: {self.failing}"[:200])

    def status(self) -> dict[str, Any]:
        return {
            "consumer": self._stream.consumer,
            "running": self._task is not None and not self._task.done(),
            "failing": self.failing,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "last_commit_at": self.last_commit_at,
        }

    # --- taking a batch ----------------------------------------------------------------
    async def _next_batch(self) -> Batch:
        if self._own_cursor is not None:  # this consumer's own pending list, oldest first
            entries = await self._stream.read(self._own_cursor, self._policy.batch_max_events, None)
            if entries:
                self._own_cursor = entries[-1][0].decode()
                return Batch(entries, await self._stream.deliveries(entries), "own_pending")
            self._own_cursor = None
        if time.monotonic() >= self._next_reclaim:
            claimed = await self._reclaim()
            if claimed is not None:
                return claimed
        return Batch(await self._read_new(), {}, "new")

    async def _reclaim(self) -> Batch | None:
        claimed = await self._stream.claim_idle(
            self._policy.reclaim_min_idle_ms, self._claim_cursor, self._policy.batch_max_events
        )
        self._claim_cursor = claimed.next_cursor
        if claimed.trimmed:
            self._metrics.trimmed.inc(claimed.trimmed)
            log.error(
                "pending usage entries were trimmed from the stream before being recorded",
                extra={"count": claimed.trimmed},
            )
        if claimed.next_cursor in (b"0-0", "0-0"):
            self._next_reclaim = time.monotonic() + self._policy.reclaim_interval_s
        if not claimed.entries:
            return None
        self._metrics.reclaimed.inc(len(claimed.entries))
        log.info("reclaimed idle entries", extra={"count": len(claimed.entries)})
        return Batch(claimed.entries, claimed.deliveries, "reclaimed")

    async def _read_new(self) -> list[StreamEntry]:
        """Block until something arrives, then linger until the batch is full or due."""
        limit = self._policy.batch_max_events
        entries = await self._stream.read(">", limit, self._wait_ms())
        deadline = time.monotonic() + self._policy.batch_max_wait_ms / 1000
        while entries and len(entries) < limit and not self._stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms < 1:
                break
            more = await self._stream.read(">", limit - len(entries), left_ms)
            if not more:
                break
            entries.extend(more)
        return entries

    def _wait_ms(self) -> int:
        """Block no longer than the next reclaim is due (and never 0, which blocks for ever)."""
        until_reclaim = int((self._next_reclaim - time.monotonic()) * 1000)
        return max(1, min(self._policy.idle_block_ms, until_reclaim))

    # --- settling a batch --------------------------------------------------------------
    async def settle(self, batch: Batch) -> None:
        """Write, dead-letter and acknowledge one batch; returns once all of it is done."""
        intake = batch.intake or sort_batch(batch.entries, batch.deliveries, self._rules())
        ids = intake.ack_ids
        span = self._batch_span(intake, batch.origin)
        with trace.use_span(span, end_on_exit=True):
            started = time.time_ns()
            fresh, refused = await self._write_all(intake.events, ids)
            finished = time.time_ns()
            span.set_attribute("hyperinfer.ledger.recorded", len(fresh))
            self._event_spans(intake.events, started, finished)
            rejected = [*intake.rejected, *refused]
            await self._retry_redis(lambda: self._stream.settle(ids, rejected))
        self._account(intake, fresh, rejected, (finished - started) / 1e9)

    def _rules(self) -> IntakeRules:
        days = self._policy.raw_retention_days
        return IntakeRules(
            now=datetime.now(UTC),
            max_skew=timedelta(seconds=self._policy.max_clock_skew_s),
            retention=timedelta(days=days) if days > 0 else None,
            max_deliveries=self._policy.max_deliveries,
        )

    async def _write_all(
        self, events: list[LedgerEvent], held: Sequence[bytes]
    ) -> tuple[list[LedgerEvent], list[Rejected]]:
        """Commit ``events``; return the new ones and those the store refused."""
        if not events:
            return [], []
        try:
            new_ids = await self._write_retrying(events, held)
        except StoreRejected as exc:
            if len(events) == 1:
                reason = Rejected(events[0].entry_id, "rejected_by_store", str(exc)[:500])
                return [], [reason]
            mid = len(events) // 2
            first = await self._write_all(events[:mid], held)
            second = await self._write_all(events[mid:], held)
            return first[0] + second[0], first[1] + second[1]
        return [e for e in events if e.usage.request_id in new_ids], []

    async def _write_retrying(self, events: list[LedgerEvent], held: Sequence[bytes]) -> set[str]:
        backoff = _Backoff(self._policy.retry_backoff_max_s)
        heartbeat = _Heartbeat(
            self._stream,
            lambda: [*held, *self._held_ids()],
            self._policy.reclaim_min_idle_ms / 3000,
        )
        while True:
            try:
                new_ids = await self._store.write(events)
            except StoreUnavailable as exc:
                self._metrics.write_failures.inc()
                self._fail(f"postgres: {exc}")
                await heartbeat.beat()
                await self._sleep(min(backoff.next(), heartbeat.every_s), force=True)
                continue
            self._recover()
            return new_ids

    async def _retry_redis(self, op: Callable[[], Awaitable[T]]) -> T:
        """Redis steps after a commit: retried until done (a crash here only re-delivers)."""
        backoff = _Backoff(self._policy.retry_backoff_max_s)
        while True:
            try:
                result = await op()
            except (RedisError, OSError) as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                self._fail(f"redis: {type(exc).__name__}: {exc}")
                await self._sleep(backoff.next(), force=True)
                continue
            self._recover()
            return result

    def _account(
        self, intake: Intake, fresh: list[LedgerEvent], rejected: list[Rejected], took_s: float
    ) -> None:
        duplicates = len(intake.ack_ids) - len(fresh) - len(rejected)
        self.recorded += len(fresh)
        self.duplicates += duplicates
        self.dead_lettered += len(rejected)
        self.last_commit_at = time.time()
        m = self._metrics
        m.events.labels("recorded").inc(len(fresh))
        m.events.labels("duplicate").inc(duplicates)
        m.events.labels("dead_lettered").inc(len(rejected))
        for item in rejected:
            m.dead_lettered.labels(item.reason).inc()
            if item.reason == "trimmed":
                m.trimmed.inc()
            log.warning(
                "usage entry dead-lettered",
                extra={
                    "entry_id": item.entry_id.decode(),
                    "reason": item.reason,
                    "detail": item.detail[:300],
                },
            )
        m.batches.inc()
        m.batch_size.observe(len(intake.ack_ids))
        m.batch_seconds.observe(took_s)
        for event in fresh:
            self._usage_metrics.observe(event.usage)

    # --- traces ------------------------------------------------------------------------
    def _batch_span(self, intake: Intake, origin: str) -> trace.Span:
        """One span per batch, linked to the trace of each event (as many as links allow)."""
        links = []
        for event in intake.events:
            context = _span_context(event.traceparent)
            if context is not None:
                links.append(trace.Link(context))
                if len(links) >= MAX_LINKS:
                    break
        return self._tracer.start_span(
            "usage ledger write",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.name": "process",
                "messaging.destination.name": self._stream.stream,
                "messaging.consumer.group.name": self._stream.group,
                "messaging.batch.message_count": len(intake.ack_ids),
                "hyperinfer.ledger.origin": origin,
            },
        )

    def _event_spans(self, events: list[LedgerEvent], start_ns: int, end_ns: int) -> None:
        """The ledger write as a child span in each sampled request's own trace."""
        budget = self._policy.event_spans_per_batch
        for event in events:
            if budget <= 0:
                return
            tp = event.traceparent
            if not tp or not _sampled(tp):
                continue
            budget -= 1
            span = self._tracer.start_span(
                "usage.recorded ledger write",
                context=extract_from({"traceparent": tp}),
                kind=trace.SpanKind.CONSUMER,
                start_time=start_ns,
                attributes={
                    "messaging.system": "redis",
                    "messaging.destination.name": self._stream.stream,
                    "messaging.message.id": event.entry_id.decode(),
                    "hyperinfer.request_id": event.usage.request_id,
                },
            )
            span.end(end_time=end_ns)

    # --- state -------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self.failing is None:
            self.failing_since = time.time()
            log.error("ledger cannot make progress; retrying", extra={"error": why[:500]})
        self.failing = why[:500]
        self._metrics.write_failing.set(1)

    def _recover(self) -> None:
        if self.failing is not None:
            log.info(
                "ledger recovered",
                extra={"after_s": round(time.time() - (self.failing_since or 0), 1)},
            )
            self.failing = None
            self.failing_since = None
            self._metrics.write_failing.set(0)

    async def _recreate_group(self) -> None:
        log.warning("consumer group missing; recreating it")
        self._own_cursor = "0"
        with contextlib.suppress(RedisError, OSError):
            await self._stream.ensure_group()

    async def _sleep(self, seconds: float, *, force: bool = False) -> None:
        """Sleep, or return early on stop (unless ``force``: a held batch is not dropped)."""
        if force:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _sampled(traceparent: str) -> bool:
    """The sampled bit of a W3C ``traceparent``'s flags (other bits, e.g. random, vary)."""
    try:
        return bool(int(traceparent[-2:], 16) & 0x01)
    except ValueError:
        return False


def _span_context(traceparent: str | None) -> trace.SpanContext | None:
    if not traceparent:
        return None
    context = trace.get_current_span(extract_from({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


class _Backoff:
    def __init__(self, cap_s: float, first_s: float = 0.05) -> None:
        self._cap = cap_s
        self._first = first_s
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self._first


class _Heartbeat:
    """Keeps held entries from looking idle, so no other replica claims them meanwhile."""

    def __init__(
        self, stream: UsageStream, ids: Callable[[], Sequence[bytes]], every_s: float
    ) -> None:
        self._stream = stream
        self._ids = ids
        self.every_s = every_s
        self._last = time.monotonic()

    async def beat(self) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._stream.touch(self._ids())
            self._last = time.monotonic()
