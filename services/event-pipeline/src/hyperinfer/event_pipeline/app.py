"""Composition root of the event-pipeline service: the only place that wires things.

Start-up: connect NATS, Redis and PostgreSQL; create the streams; start the data plane
(config snapshot, routing table, quota limiter, usage recorder: ``origin="pipeline"``);
serve the API. The worker starts once PostgreSQL has the migrations this service needs
(``REQUIRED_MIGRATIONS``): the config service owns the schema and applies them, this
service only checks, and ``/health/ready`` names what is missing until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from hyperinfer.client import DataPlaneOptions, HyperInferClient
from hyperinfer.client.lifecycle import raise_if_cancelled, stop_tasks
from hyperinfer.contracts import Priority
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline import api, handlers
from hyperinfer.event_pipeline.adapters.chat import DataPlaneChatRunner
from hyperinfer.event_pipeline.adapters.jetstream_queue import JetStreamDeadLetters, JetStreamQueue
from hyperinfer.event_pipeline.adapters.postgres_ledger import (
    REQUIRED_MIGRATIONS,
    PostgresLedger,
    missing_migrations,
)
from hyperinfer.event_pipeline.adapters.redis_queue import RedisDeadLetters, RedisQueue
from hyperinfer.event_pipeline.adapters.webhook_http import HttpWebhookSender
from hyperinfer.event_pipeline.dlq import DeadLetterer, DlqService
from hyperinfer.event_pipeline.domain import AdmissionPolicy, Backoff, SlotScheduler
from hyperinfer.event_pipeline.metrics import PipelineMetrics
from hyperinfer.event_pipeline.ports import ChatRunner, DeadLetterStore, JobQueue, WebhookSender
from hyperinfer.event_pipeline.publisher import EventPublisher, StateCache
from hyperinfer.event_pipeline.settings import EventPipelineSettings
from hyperinfer.event_pipeline.worker import Ledger, Registration, WorkerConfig, WorkerPool
from hyperinfer.runtime import DependencyCheck, Health, Infra, Service, build_http_app
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs
from hyperinfer.runtime.logs import get_logger
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

log = get_logger(__name__)
_GAUGE_REFRESH_S = 2.0
_SCHEMA_POLL_S = 1.0


class SchemaTooOld(Exception):
    """PostgreSQL lacks migrations this service needs (the config service applies them)."""


class SchemaGate:
    """Passes once every required migration is applied; until then it says which are not."""

    def __init__(self, infra: Infra, required: tuple[int, ...] = REQUIRED_MIGRATIONS) -> None:
        self._infra = infra
        self._required = required
        self.ready = False

    async def check(self) -> None:
        if self.ready:
            return
        missing = await missing_migrations(self._infra.require_postgres().pool, self._required)
        if missing:
            names = ", ".join(f"{m:04d}" for m in missing)
            raise SchemaTooOld(
                f"PostgreSQL lacks migration(s) {names}; the config service applies them:"
                " start it (or upgrade it) against this database"
            )
        self.ready = True

    async def wait(self) -> None:
        """Return once the schema is there, checking every second and saying why not once."""
        told = False
        while True:
            try:
                await self.check()
                return
            except Exception as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                if not told:
                    log.warning("worker waits for the schema", extra={"reason": str(exc)})
                    told = True
            await asyncio.sleep(_SCHEMA_POLL_S)


@dataclass
class Pipeline:
    """Everything ``startup`` builds once the connections are up."""

    queue: JobQueue
    dead_letters: DeadLetterer
    dlq: DlqService
    publisher: EventPublisher
    worker: WorkerPool | None = None
    engine: HyperInferClient | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)


def build_queue(
    settings: EventPipelineSettings, nc: NatsClient, redis: Any, configs: list[StreamConfig]
) -> tuple[JobQueue, list[DeadLetterStore]]:
    """The queue backend chosen by ``HYPERINFER_EVENT_PIPELINE_BACKEND`` and its DLQ stores."""
    js_dlq = JetStreamDeadLetters(nc)
    if settings.backend == "jetstream":
        queue = JetStreamQueue(
            nc,
            configs,
            consumer=settings.worker_consumer,
            ack_wait_s=settings.ack_wait_s,
            max_attempts=settings.max_attempts,
            capacity=settings.queue_capacity,
            sweep_interval_s=settings.exhausted_sweep_interval_s,
        )
        return queue, [js_dlq]
    redis_queue = RedisQueue(
        redis,
        capacities(configs, settings.queue_capacity),
        group=settings.worker_consumer,
        ack_wait_s=settings.ack_wait_s,
        max_attempts=settings.max_attempts,
        dedupe_window_s=settings.dedupe_window_s,
        sweep_interval_s=settings.sweep_interval_s,
    )
    redis_dlq = RedisDeadLetters(redis, settings.dlq_max_age_s, settings.dedupe_window_s)
    return redis_queue, [redis_dlq, js_dlq]  # core-bus dead letters stay on JetStream


def capacities(configs: list[StreamConfig], override: int | None) -> dict[Priority, int]:
    by_name = {c.name: int(c.max_msgs or 0) for c in configs}
    return {p: override or by_name.get(f"HYPERINFER_JOBS_{p.name}", 100_000) for p in Priority}


def build_handlers(
    settings: EventPipelineSettings,
    publisher: EventPublisher,
    *,
    chat: ChatRunner | None,
    sender: WebhookSender,
    core_publish: handlers.CorePublish | None,
) -> dict[str, Registration]:
    emit = publisher.emit
    secret = settings.webhook_secret.get_secret_value().encode()
    return {
        jobs_v1.TYPE_AUDIT_RECORD: Registration(handlers.record_audit),
        jobs_v1.TYPE_INFERENCE_REQUESTED: Registration(
            functools.partial(handlers.run_inference, emit=emit),
            prepare=functools.partial(handlers.prepare_inference, chat=chat),
        ),
        jobs_v1.TYPE_INFERENCE_COMPLETED: Registration(
            functools.partial(handlers.complete_inference, emit=emit)
        ),
        jobs_v1.TYPE_WEBHOOK_DELIVER: Registration(
            handlers.record_delivery,
            prepare=functools.partial(handlers.deliver_webhook, sender=sender, secret=secret),
        ),
        jobs_v1.TYPE_QUOTA_ALERT: Registration(
            functools.partial(
                handlers.fan_out_quota_alert,
                webhooks=settings.quota_alert_webhooks,
                subjects=settings.quota_alert_subjects,
                emit=emit,
                core_publish=core_publish,
            )
        ),
    }


def build_worker(
    settings: EventPipelineSettings,
    queue: JobQueue,
    registrations: Mapping[str, Registration],
    *,
    ledger: Ledger,
    dead_letters: DeadLetterer,
    metrics: PipelineMetrics,
) -> WorkerPool:
    weights = {
        Priority.HIGH: settings.weight_high,
        Priority.NORMAL: settings.weight_normal,
        Priority.LOW: settings.weight_low,
    }
    return WorkerPool(
        queue,
        registrations,
        config=WorkerConfig(
            slots=settings.worker_slots,
            max_attempts=settings.max_attempts,
            consumer=settings.worker_consumer,
            progress_interval_s=settings.progress_interval_s,
            idle_poll_max_s=settings.idle_poll_max_s,
        ),
        scheduler=SlotScheduler(weights, settings.ageing_s),
        backoff=Backoff(settings.retry_base_s, settings.retry_cap_s),
        ledger=ledger,
        dead_letters=dead_letters,
        metrics=metrics,
    )


def create_app(settings: EventPipelineSettings, *, chat: ChatRunner | None = None) -> Service:
    """The service; ``chat`` replaces the data plane (tests pass a fake)."""
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    health = Health("event-pipeline")
    infra = Infra.for_service("event-pipeline", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    schema = SchemaGate(infra)
    health.add_check(DependencyCheck("schema", schema.check))
    app = build_http_app(health, registry)
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_s)
    engine = None
    if chat is None and settings.data_plane_enabled and settings.worker_enabled:
        engine = build_data_plane(settings)
        chat = DataPlaneChatRunner(engine.dataplane)
        health.add_detail("dataplane", engine.dataplane.status)
    holder: dict[str, Pipeline] = {}

    def pipeline() -> Pipeline:
        if "p" not in holder:
            raise RuntimeError("the pipeline is not started")
        return holder["p"]

    async def metrics_view() -> dict[str, Any]:
        p = pipeline()
        states = await p.queue.states()
        dlq_depth = await p.dlq.depth()
        metrics.observe_states(states, dlq_depth)
        in_flight = p.worker.in_flight if p.worker else 0
        return {"backend": p.queue.name, **metrics.snapshot(states, dlq_depth, in_flight)}

    api.mount(
        app,
        internal_key=settings.internal_key.get_secret_value(),
        publisher=lambda: pipeline().publisher,
        dlq=lambda: pipeline().dlq,
        metrics_view=metrics_view,
    )
    health.add_detail("pipeline", lambda: _detail(holder))

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        if engine is not None:
            await engine.start()
        p = holder["p"] = await _start(settings, infra, metrics, http, chat)
        p.engine = engine
        if p.worker is not None:
            p.background.append(asyncio.create_task(_start_worker(p.worker, schema)))
        p.background.append(asyncio.create_task(_refresh_gauges(metrics_view)))

    async def shutdown() -> None:
        p = holder.get("p")
        if p is not None:
            await _stop(p, settings.shutdown_grace_s * 0.8)
        elif engine is not None:
            await engine.aclose()
        await http.aclose()
        await infra.close()

    return Service("event-pipeline", app, settings, startup, shutdown)


def build_data_plane(settings: EventPipelineSettings) -> HyperInferClient:
    """The ingress's engine in process, for ``inference.requested`` jobs (origin pipeline).

    Built as the thick client builds it (config and routing agents, quota limiter, usage
    recorder on ``settings.redis_url``), but with no key of its own: jobs act for their
    key by id (``DataPlaneChatRunner``); ``engine.dataplane`` is the ``DataPlane``.
    """
    key = settings.credentials_key
    return HyperInferClient(
        settings.redis_url,
        api_key="",
        credentials_key=key.get_secret_value() if key is not None else None,
        node_id=f"event-pipeline-{settings.node_name}-{os.getpid()}",
        options=DataPlaneOptions(origin="pipeline"),
        wait_config_s=settings.config_wait_s,
        require_budgets_loaded=settings.require_budgets_loaded,
    )


async def _start_worker(worker: WorkerPool, schema: SchemaGate) -> None:
    await schema.wait()
    await worker.start()
    log.info("worker started")


async def _start(
    settings: EventPipelineSettings,
    infra: Infra,
    metrics: PipelineMetrics,
    http: httpx.AsyncClient,
    chat: ChatRunner | None,
) -> Pipeline:
    nats = infra.require_nats()
    configs = load_stream_configs("event-pipeline", settings.streams_file)
    dlq_config = [c for c in configs if c.name == "HYPERINFER_DLQ"]
    await ensure_streams(nats.jetstream, dlq_config)
    queue, stores = build_queue(settings, nats.client, infra.require_redis().client, configs)
    await queue.setup()
    publisher = EventPublisher(
        queue,
        AdmissionPolicy.from_percent(
            settings.admit_low_pct,
            settings.admit_normal_pct,
            settings.admit_high_pct,
            settings.admission_retry_after_s,
        ),
        StateCache(queue, settings.capacity_cache_s),
        metrics,
    )

    async def core_publish(subject: str, data: bytes) -> None:
        await nats.client.publish(subject, data)

    dead_letters = DeadLetterer(stores[0])
    dlq = DlqService(
        stores,
        queue,
        replay_rate_per_s=settings.dlq_replay_rate_per_s,
        replay_max=settings.dlq_replay_max,
        core_publish=core_publish,
    )
    p = Pipeline(queue, dead_letters, dlq, publisher)
    if settings.worker_enabled:
        if chat is None:
            log.warning("no data plane: inference.requested jobs will be dead-lettered")
        registrations = build_handlers(
            settings,
            publisher,
            chat=chat,
            sender=HttpWebhookSender(http),
            core_publish=core_publish,
        )
        p.worker = build_worker(
            settings,
            queue,
            registrations,
            ledger=PostgresLedger(infra.require_postgres().pool),
            dead_letters=dead_letters,
            metrics=metrics,
        )
    log.info("pipeline started", extra={"backend": queue.name, "worker": settings.worker_enabled})
    return p


async def _stop(p: Pipeline, grace_s: float) -> None:
    await stop_tasks(list(p.background), grace_s)
    if p.worker is not None:
        await p.worker.stop(grace_s)
    if p.engine is not None:
        await p.engine.aclose()  # flushes pending usage events
    with contextlib.suppress(Exception):
        await p.queue.close()


async def _refresh_gauges(view: api.MetricsView) -> None:
    while True:
        with contextlib.suppress(Exception):
            await view()
        await asyncio.sleep(_GAUGE_REFRESH_S)


def _detail(holder: dict[str, Pipeline]) -> dict[str, Any]:
    p = holder.get("p")
    if p is None:
        return {"started": False}
    return {
        "started": True,
        "backend": p.queue.name,
        "in_flight": p.worker.in_flight if p.worker else None,
    }
