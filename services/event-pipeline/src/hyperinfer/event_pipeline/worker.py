"""The worker pool: slot-limited, CRITICAL strictly first, the rest shared by weight.

One loop fills free slots: it pulls CRITICAL first (as many as there are free
slots), then offers what is left to HIGH/NORMAL/LOW by the ``SlotScheduler``; it
never fetches more messages than free slots, and it fetches them in batches. Each
message runs as a task:

- not an envelope, unknown type or major, invalid payload, no handler, expired →
  dead-lettered with the reason, then terminated (never dropped);
- the handler and the ``processed_events`` claim commit in one transaction; a
  redelivered event that was already processed is acked without running again;
- ``PermanentJobError`` or the last attempt → dead-lettered, then terminated;
  any other error → ``nak`` with full-jitter backoff (at least its Retry-After);
- a job that runs long tells the queue it is alive (in-progress acks).

``stop(grace)`` stops fetching, lets running jobs finish within the grace, and naks
the rest so another worker gets them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_tasks
from hyperinfer.contracts import ContractError, Envelope, Priority, decode_envelope
from hyperinfer.event_pipeline.dlq import DeadLetterer
from hyperinfer.event_pipeline.domain import SHARED, Backoff, SlotScheduler
from hyperinfer.event_pipeline.errors import PermanentJobError, TransientJobError
from hyperinfer.event_pipeline.metrics import PipelineMetrics
from hyperinfer.event_pipeline.ports import Delivery, JobQueue
from hyperinfer.runtime.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides the envelope. ``conn``: the transaction, if ``once``;
    ``prepared``: what the registration's ``prepare`` step returned, if it has one."""

    attempt: int
    priority: Priority
    subject: str
    conn: Any = None
    prepared: Any = None


JobHandler = Callable[[Envelope[Any], JobContext], Awaitable[None]]
JobPreparer = Callable[[Envelope[Any], JobContext], Awaitable[Any]]


@dataclass(frozen=True)
class Registration:
    """A handler for one event type; ``once`` records the event in ``processed_events``.

    ``prepare`` is the slow, external part of a job (an upstream chat, an outbound
    webhook): it runs before the transaction opens, so a long call never holds a
    PostgreSQL connection; an event already recorded is not prepared again. The
    handler then writes its effect and the event id in one transaction.
    """

    handler: JobHandler
    once: bool = True
    prepare: JobPreparer | None = None


class Ledger(Protocol):
    def once(self, consumer: str, event_id: str) -> AbstractAsyncContextManager[Any]: ...

    async def seen(self, consumer: str, event_id: str) -> bool: ...


class NoLedger:
    """For handlers without side effects in PostgreSQL (and the no-op benchmark)."""

    @contextlib.asynccontextmanager
    async def once(self, consumer: str, event_id: str) -> AsyncIterator[Any]:
        yield True

    async def seen(self, consumer: str, event_id: str) -> bool:
        return False


@dataclass(frozen=True)
class WorkerConfig:
    slots: int
    max_attempts: int
    consumer: str = "event-pipeline"
    progress_interval_s: float = 10.0
    idle_poll_max_s: float = 0.05


class WorkerPool:
    """Pulls jobs from a ``JobQueue`` and runs their registered handlers."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Registration],
        *,
        config: WorkerConfig,
        scheduler: SlotScheduler,
        backoff: Backoff,
        ledger: Ledger,
        dead_letters: DeadLetterer,
        metrics: PipelineMetrics,
    ) -> None:
        self._queue = queue
        self._handlers = dict(handlers)
        self._config = config
        self._scheduler = scheduler
        self._backoff = backoff
        self._ledger = ledger
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._running: dict[asyncio.Task[None], tuple[Delivery, float]] = {}
        self._slot_freed = asyncio.Event()
        self._refill_at = max(1, config.slots // 4)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        await self._queue.watch_exhausted(self._on_exhausted)
        self._tasks = [
            asyncio.create_task(self._fill_forever(), name="worker-fill"),
            asyncio.create_task(self._keep_alive(), name="worker-progress"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Stop fetching; finish running jobs within ``grace_s``; nak what is left."""
        self._stopping = True
        await stop_tasks(list(self._tasks), grace_s)
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_s)
        leftover = list(self._running.items())
        await stop_tasks([t for t, _ in leftover], grace_s)
        for _, (delivery, _) in leftover:
            with contextlib.suppress(Exception):
                await delivery.nak(0)
        if leftover:
            log.warning("drain: jobs handed back", extra={"count": len(leftover)})

    # --- filling slots -------------------------------------------------------------------
    async def _fill_forever(self) -> None:
        idle = 0.001
        while not self._stopping:
            free = self._config.slots - len(self._running)
            if free < min(self._refill_at, self._config.slots):
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                started = await self._fill(free)
            except Exception as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                log.warning("fetch failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                started = 0
                idle = self._config.idle_poll_max_s
            if started:
                idle = 0.001
                continue
            await self._idle(idle)
            idle = min(idle * 2, self._config.idle_poll_max_s)

    async def _idle(self, seconds: float) -> None:
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), seconds)

    async def _fill(self, free: int) -> int:
        started = self._start_all(await self._queue.fetch(Priority.CRITICAL, free))
        free -= started
        candidates = set(SHARED)
        while free > 0 and candidates and not self._stopping:
            plan = self._scheduler.plan(free, candidates)
            got = await asyncio.gather(*(self._queue.fetch(p, n) for p, n in plan.items()))
            for (priority, asked), deliveries in zip(plan.items(), got, strict=True):
                self._scheduler.served(priority, len(deliveries))
                if len(deliveries) < asked:
                    candidates.discard(priority)
                n = self._start_all(deliveries)
                free -= n
                started += n
        return started

    def _start_all(self, deliveries: list[Delivery]) -> int:
        now = time.time()
        for delivery in deliveries:
            task = asyncio.create_task(self._process(delivery))
            self._running[task] = (delivery, now)
            task.add_done_callback(self._finished)
        self._metrics.in_flight.set(len(self._running))
        return len(deliveries)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._metrics.in_flight.set(len(self._running))
        self._slot_freed.set()

    async def _keep_alive(self) -> None:
        interval = self._config.progress_interval_s
        while True:
            await asyncio.sleep(interval)
            due = time.time() - interval
            for delivery, started in list(self._running.values()):
                if started <= due:
                    with contextlib.suppress(Exception):
                        await delivery.in_progress()

    # --- one job -------------------------------------------------------------------------
    async def _process(self, delivery: Delivery) -> None:
        started = time.time()
        self._metrics.queue_wait_seconds.labels(delivery.priority.value).observe(
            max(0.0, started - delivery.enqueued_at)
        )
        try:
            env = decode_envelope(delivery.data)
        except ContractError as exc:
            await self._dead(delivery, "?", exc.reason, str(exc), type(exc).__name__)
            return
        registration = self._handlers.get(env.type)
        if registration is None:
            await self._dead(delivery, env.type, "no_handler", f"no handler for {env.type}", None)
            return
        if env.expires_at is not None and env.expires_at < datetime.now(UTC):
            await self._dead(delivery, env.type, "expired", f"expired at {env.expires_at}", None)
            return
        try:
            await self._run(delivery, env, registration)
        finally:
            self._metrics.handler_seconds.labels(env.type).observe(time.time() - started)

    async def _run(self, delivery: Delivery, env: Envelope[Any], reg: Registration) -> None:
        try:
            duplicate = await self._invoke(delivery, env, reg)
        except PermanentJobError as exc:
            await self._dead(delivery, env.type, "permanent", str(exc), type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(delivery, env, exc)
        else:
            await delivery.ack()
            self._outcome(env.type, "duplicate" if duplicate else "ok")

    async def _invoke(self, delivery: Delivery, env: Envelope[Any], reg: Registration) -> bool:
        """Run the handler; True when the event had been processed before."""
        context = JobContext(delivery.attempt, delivery.priority, delivery.subject)
        if reg.prepare is not None:
            if reg.once and await self._ledger.seen(self._config.consumer, env.id):
                return True
            context = replace(context, prepared=await reg.prepare(env, context))
        if not reg.once:
            await reg.handler(env, context)
            return False
        async with self._ledger.once(self._config.consumer, env.id) as conn:
            if conn is None:
                return True
            await reg.handler(env, replace(context, conn=conn))
        return False

    async def _failed(self, delivery: Delivery, env: Envelope[Any], exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        if delivery.attempt >= self._config.max_attempts:
            await self._dead(delivery, env.type, "max_attempts", detail, type(exc).__name__)
            return
        retry_after = exc.retry_after_s if isinstance(exc, TransientJobError) else None
        delay = self._backoff.delay(delivery.attempt, retry_after)
        log.info(
            "job failed; retrying",
            extra={
                "type": env.type,
                "attempt": delivery.attempt,
                "delay_s": round(delay, 3),
                "error": detail[:300],
            },
        )
        await delivery.nak(delay)
        self._outcome(env.type, "retry")

    async def _dead(
        self, delivery: Delivery, type_: str, reason: str, detail: str, error_class: str | None
    ) -> None:
        try:
            await self._dead_letters.record(
                subject=delivery.subject,
                data=delivery.data,
                headers=delivery.headers,
                reason=reason,
                detail=detail,
                attempts=delivery.attempt,
                error_class=error_class,
            )
        except Exception as exc:  # the DLQ is down: keep the message, try again later
            log.error("dead-letter failed; keeping the job", extra={"error": str(exc)})
            await delivery.nak(self._backoff.cap_s)
            return
        await delivery.term()
        self._outcome(type_, "dead_lettered")

    async def _on_exhausted(
        self,
        priority: Priority,
        subject: str,
        data: bytes,
        headers: Mapping[str, str],
        deliveries: int,
    ) -> None:
        entry = await self._dead_letters.record(
            subject=subject,
            data=data,
            headers=headers,
            reason="max_deliveries",
            detail="delivery attempts exhausted without an ack (worker crashed or timed out)",
            attempts=deliveries,
        )
        if entry is not None:  # None: another replica dead-lettered it already
            self._outcome("?", "dead_lettered")

    def _outcome(self, type_: str, outcome: str) -> None:
        self._metrics.processed.labels(type_, outcome).inc()
        self._metrics.count(f"processed_{outcome}")
