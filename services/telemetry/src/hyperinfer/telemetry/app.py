"""Composition root of the telemetry service: the only place that wires things.

Background work of one replica: the ledger consumer, the lag gauges, maintenance
(partitions ahead, retention, stream trim, stale consumers) and the per-minute rollup
publisher. The HTTP side serves the spend API next to health and ``/metrics``.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.runtime import DependencyCheck, Health, Infra, Service, build_http_app, get_logger
from hyperinfer.runtime.bus import Bus
from hyperinfer.telemetry import api
from hyperinfer.telemetry.adapters.postgres_ledger import PostgresLedgerStore
from hyperinfer.telemetry.adapters.postgres_maintenance import (
    PostgresMaintenance,
    RetentionPolicy,
)
from hyperinfer.telemetry.adapters.postgres_spend import PostgresSpendStore
from hyperinfer.telemetry.adapters.redis_stream import UsageStream
from hyperinfer.telemetry.domain import RollupHorizons
from hyperinfer.telemetry.ledger import Ledger, LedgerPolicy
from hyperinfer.telemetry.metrics import LedgerMetrics, UsageMetrics
from hyperinfer.telemetry.periodic import Periodic
from hyperinfer.telemetry.publisher import RollupPublisher
from hyperinfer.telemetry.settings import TelemetrySettings
from opentelemetry import trace
from prometheus_client import CollectorRegistry

log = get_logger(__name__)


def consumer_name(settings: TelemetrySettings) -> str:
    """This replica's name in the consumer group: node, host and pid unless set."""
    if settings.consumer_name:
        return settings.consumer_name
    return f"{settings.node_name}-{socket.gethostname()}-{os.getpid()}"


def ledger_policy(settings: TelemetrySettings) -> LedgerPolicy:
    return LedgerPolicy(
        batch_max_events=settings.batch_max_events,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        idle_block_ms=settings.idle_block_ms,
        reclaim_min_idle_ms=settings.reclaim_min_idle_ms,
        reclaim_interval_s=settings.reclaim_interval_s,
        max_deliveries=settings.max_deliveries,
        retry_backoff_max_s=settings.retry_backoff_max_s,
        max_clock_skew_s=settings.max_clock_skew_s,
        raw_retention_days=settings.raw_retention_days,
        event_spans_per_batch=settings.event_spans_per_batch,
    )


def retention_policy(settings: TelemetrySettings) -> RetentionPolicy:
    return RetentionPolicy(
        raw_days=settings.raw_retention_days,
        minute_rollup_days=settings.minute_rollup_retention_days,
        hour_rollup_days=settings.hour_rollup_retention_days,
        months_ahead=settings.partitions_ahead_months,
    )


def create_app(settings: TelemetrySettings, tracer: trace.Tracer | None = None) -> Service:
    registry = CollectorRegistry()
    health = Health("telemetry")
    infra = Infra.for_service("telemetry", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    pg, redis = infra.require_postgres(), infra.require_redis()
    app = build_http_app(health, registry)

    stream = UsageStream(redis.client, consumer_name(settings), dlq_max_len=settings.dlq_max_len)
    ledger_metrics = LedgerMetrics(registry)
    ledger = Ledger(
        stream,
        PostgresLedgerStore(pg),
        ledger_policy(settings),
        ledger_metrics,
        UsageMetrics(registry),
        tracer or trace.get_tracer("hyperinfer.telemetry.ledger"),
    )
    health.add_check(DependencyCheck("ledger", ledger.check))
    health.add_detail("ledger", ledger.status)

    config = ConfigAgent(redis.client)
    health.add_detail("config", config.status)
    api.mount(
        app,
        admin_key=settings.admin_key.get_secret_value(),
        config=config,
        team_admin_scope=settings.team_admin_scope,
        store=PostgresSpendStore(pg),
        dlq=stream,
        export_max_rows=settings.export_max_rows,
        horizons=RollupHorizons(
            settings.minute_rollup_retention_days, settings.hour_rollup_retention_days
        ),
    )

    async def watch_lag() -> None:
        stats = await stream.stats()
        ledger_metrics.set_stats(stats)
        lag_view.update(stats.as_dict())

    lag_view: dict[str, object] = {}
    health.add_detail("stream", lambda: lag_view)

    maintenance = PostgresMaintenance(pg, retention_policy(settings))

    async def maintain() -> None:
        report = await maintenance.run(datetime.now(UTC))
        if report.created or report.dropped:
            log.info(
                "ledger partitions maintained",
                extra={"partitions_created": report.created, "partitions_dropped": report.dropped},
            )
        if settings.trim_stream:
            await stream.trim_acknowledged()
        await stream.drop_stale_consumers(settings.stale_consumer_idle_s)

    jobs = [
        Periodic("lag-monitor", settings.lag_poll_interval_s, watch_lag),
        Periodic("maintenance", settings.maintenance_interval_s, maintain),
    ]
    publisher = RollupPublisher(
        pg, Bus(infra.require_nats(), source="telemetry"), settle_s=settings.rollup_settle_s
    )

    async def publish() -> None:
        await publisher.publish_closed(datetime.now(UTC))

    if settings.publish_rollups:
        jobs.append(Periodic("rollup-publisher", settings.rollup_publish_interval_s, publish))

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await config.start(wait_s=1.0)  # team admins resolve against it
        for job in jobs:
            job.start()
        ledger.start()

    async def shutdown() -> None:
        await ledger.stop(settings.shutdown_grace_s / 2)
        for job in jobs:
            await job.stop()
        await config.stop()
        await infra.close()

    return Service("telemetry", app, settings, startup, shutdown)
