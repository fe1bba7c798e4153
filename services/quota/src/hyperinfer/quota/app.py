"""Composition root of the quota service: the only place that wires things.

One replica: the usage consumer (spend rollups -> Redis spend, hold releases,
alerts), the reconciler (epoch watch, periodic load, reservation sweep), the alert
outbox drain, and the NATS request/reply API with its own ``QuotaLimiter``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta

from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.quota import PolicySwitch, QuotaLimiter, hot_path_redis
from hyperinfer.contracts import names, utc_now
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.quota import bus as quota_bus
from hyperinfer.quota.adapters.postgres_spend import PostgresSpendStore
from hyperinfer.quota.adapters.redis_state import RedisQuotaState
from hyperinfer.quota.adapters.redis_usage import UsageFeed
from hyperinfer.quota.alerts import AlertPublisher
from hyperinfer.quota.config_view import QuotaConfigView
from hyperinfer.quota.metrics import ServiceMetrics
from hyperinfer.quota.periodic import Periodic
from hyperinfer.quota.reconciler import Reconciler
from hyperinfer.quota.settings import QuotaSettings
from hyperinfer.quota.settlement import Settlement, SettlementPolicy
from hyperinfer.runtime import Health, Infra, Service, build_http_app, get_logger
from hyperinfer.runtime.bus import Bus
from hyperinfer.runtime.health import expose_version
from hyperinfer.runtime.limiter_metrics import LimiterCollector
from prometheus_client import CollectorRegistry

log = get_logger(__name__)


def node_id(settings: QuotaSettings) -> str:
    """This replica's name: consumer in the usage group, node in the live set."""
    if settings.consumer_name:
        return settings.consumer_name
    return f"quota-{settings.node_name}-{socket.gethostname()}-{os.getpid()}"


def create_app(settings: QuotaSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("quota")
    infra = Infra.for_service("quota", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(health, registry)
    redis, nats = infra.require_redis().client, infra.require_nats()
    metrics = ServiceMetrics(registry)
    me = node_id(settings)

    config = ConfigAgent(redis)
    expose_version(health, registry, "config", config)
    view = QuotaConfigView(config.snapshot)
    config.on_change(view.apply)

    limiter_redis = hot_path_redis(settings.redis_url)
    limiter = QuotaLimiter(
        limiter_redis,
        node_id=me,
        reservation_ttl_s=settings.reservation_ttl_s,
        post_deadline_s=settings.post_deadline_s,
    )
    registry.register(LimiterCollector(limiter.metrics))

    bus = Bus(nats, source="quota")
    store = PostgresSpendStore(infra.require_postgres())
    state = RedisQuotaState(redis, latency=metrics.redis_seconds)
    alerts = AlertPublisher(
        store,
        bus,
        metrics,
        jetstream=(lambda: nats.jetstream) if settings.publish_alert_jobs else None,
        max_age_s=settings.alert_max_age_s,
    )
    settlement = Settlement(
        UsageFeed(redis, me),
        store,
        state,
        view.current,
        alerts,
        metrics,
        SettlementPolicy(
            batch_size=settings.batch_size,
            block_ms=settings.block_ms,
            claim_idle_ms=int(settings.claim_idle_s * 1000),
            thresholds=tuple(settings.alert_thresholds),
        ),
    )
    reconciler = Reconciler(state, store, view.current, metrics)
    health.add_detail("settlement", settlement.status)
    health.add_detail("quota_state", lambda: {"epoch": reconciler.epoch, "mode": _mode(limiter)})

    background: set[asyncio.Task[object]] = set()

    def spawn(coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        background.add(task)
        task.add_done_callback(background.discard)

    def on_switch(switch: PolicySwitch) -> None:
        event = quota_v1.QuotaPolicySwitched(
            node=switch.node, team_id=switch.team_id, mode=switch.mode, reason=switch.reason
        )
        spawn(bus.publish(names.QUOTA_POLICY_SWITCHED, quota_v1.EVENT_POLICY_SWITCHED, event))

    limiter.metrics.on_switch(on_switch)
    view.on_change(lambda _index: spawn(reconciler.reconcile("config")))

    async def forget_processed() -> None:
        cutoff = utc_now() - timedelta(days=settings.processed_retention_days)
        await store.forget_processed(cutoff)

    jobs = [
        Periodic("epoch-watch", settings.epoch_check_interval_s, reconciler.watch_epoch),
        Periodic("reconcile", settings.reconcile_interval_s, lambda: reconciler.reconcile("timer")),
        Periodic("sweep", settings.sweep_interval_s, reconciler.sweep),
        Periodic("alerts", settings.alert_flush_interval_s, alerts.flush),
        Periodic("forget-processed", 3600.0, forget_processed),
    ]

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await config.start(wait_s=2.0)
        await settlement.feed.ensure_group()
        await reconciler.watch_epoch()
        await limiter.start()
        await quota_bus.subscribe(bus, view.current, limiter, concurrency=settings.nats_concurrency)
        settlement.start()
        for job in jobs:
            job.start()

    async def shutdown() -> None:
        await bus.close(settings.shutdown_grace_s / 2)
        await settlement.stop()
        for job in jobs:
            await job.stop()
        if background:
            await asyncio.wait(set(background), timeout=2)
        await limiter.stop()
        await config.stop()
        await limiter_redis.aclose()
        await infra.close()

    return Service("quota", app, settings, startup, shutdown)


def _mode(limiter: QuotaLimiter) -> str:
    return "redis" if limiter.redis_up else "failure_policy"
