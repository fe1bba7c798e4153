"""Composition root of the ingress service: the only place that wires things.

The FastAPI app (``runtime.build_http_app``: health, metrics, request ids) serves
everything but the hot routes; ``api.HotRoutes`` wraps it and serves those as plain
ASGI. Both share one ``DataPlane`` (the same engine as the thick client).

Observability: the quota limiter's numbers are on ``/metrics``
(``runtime.limiter_metrics.LimiterCollector``); its policy switches are published on
NATS (``switches.SwitchPublisher``, an optional connection); spans are made when
tracing is on (``tracing``: auto = an OTLP endpoint is set) or a tracer is given.
"""

from __future__ import annotations

import os

from hyperinfer.client.cache import ResponseCache, cache_key, requested_ttl
from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.client.dataplane import DataPlane, DataPlaneOptions, hot_path_redis_pool
from hyperinfer.client.providers import ProviderRegistry
from hyperinfer.client.quota import QuotaLimiter
from hyperinfer.client.resilience import RetryPolicy
from hyperinfer.client.resp import RespClient
from hyperinfer.client.routing_table import RoutingTableAgent
from hyperinfer.client.usage import UsageRecorder
from hyperinfer.ingress.api import HotRoutes
from hyperinfer.ingress.metrics import IngressMetrics
from hyperinfer.ingress.openapi import install_openapi
from hyperinfer.ingress.settings import IngressSettings
from hyperinfer.ingress.switches import SwitchPublisher
from hyperinfer.runtime import (
    DependencyCheck,
    Health,
    Infra,
    NatsConnection,
    Service,
    build_http_app,
)
from hyperinfer.runtime.health import expose_version
from hyperinfer.runtime.limiter_metrics import LimiterCollector
from opentelemetry import trace
from prometheus_client import CollectorRegistry

NO_FASTAPI_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


class ConfigNotLoaded(Exception):
    pass


def create_app(settings: IngressSettings, tracer: trace.Tracer | None = None) -> Service:
    """The ingress; a ``tracer`` (tests) is used unless ``settings.tracing`` is ``off``."""
    registry = CollectorRegistry()
    health = Health("ingress")
    infra = Infra.for_service("ingress", settings, redis=True)
    infra.register(health)
    watch_redis = infra.require_redis().client
    quota_redis = hot_path_redis_pool(
        settings.redis_url,
        timeout_s=settings.quota_redis_timeout_s,
        max_connections=settings.redis_max_connections,
    )
    wire = RespClient(settings.redis_url, timeout_s=settings.quota_redis_timeout_s)
    node_id = f"ingress-{settings.node_name}-{os.getpid()}"
    limiter = QuotaLimiter(
        quota_redis,
        node_id=node_id,
        require_budgets_loaded=settings.require_budgets_loaded,
        wire=wire,
    )
    registry.register(LimiterCollector(limiter.metrics))
    switches = (
        SwitchPublisher(NatsConnection(settings.nats_url, f"hyperinfer-ingress-{node_id}"))
        if settings.publish_policy_switches
        else None
    )
    if switches is not None:
        limiter.metrics.on_switch(switches.on_switch)
    tracer = _tracer(settings, tracer)
    config, routing = ConfigAgent(watch_redis), RoutingTableAgent(watch_redis)
    key = settings.credentials_key
    cache = ResponseCache(quota_redis)
    plane = DataPlane(
        config=config,
        routing=routing,
        limiter=limiter,
        providers=ProviderRegistry(),
        recorder=UsageRecorder(
            wire,
            limiter,
            source="ingress",
            max_queue=settings.usage_queue,
            linger_s=settings.usage_linger_ms / 1000,
            stream_maxlen=settings.usage_stream_maxlen,
        ),
        cipher=CredentialsCipher(key.get_secret_value()) if key is not None else None,
        cache=cache,
        cache_key=cache_key,
        options=DataPlaneOptions(
            origin="ingress",
            default_max_tokens=settings.default_max_tokens,
            retry=RetryPolicy(
                retries_per_backend=settings.retries_per_backend, budget_s=settings.retry_budget_s
            ),
            breaker_failures=settings.breaker_failures,
            breaker_open_s=settings.breaker_open_s,
        ),
        tracer=tracer,
    )
    metrics = IngressMetrics(registry)
    plane.observers.append(metrics.observe)
    _health(health, registry, plane, limiter, cache)
    if switches is not None:
        health.add_detail("policy_switch_events", switches.status)
    # FastAPI's own OpenTelemetry layer wraps every request before any middleware, the
    # hot routes included (an ``exclude`` still costs ~8% of a request's CPU): it is off.
    # The runtime's middleware traces the other routes; the hot routes trace themselves.
    app = build_http_app(health, registry, telemetry=NO_FASTAPI_TELEMETRY)
    install_openapi(app)
    hot = HotRoutes(
        app.build_middleware_stack(),
        plane,
        metrics,
        max_body_bytes=settings.max_body_bytes,
        cache_ttl=requested_ttl,
        tracer=tracer,
    )
    app.middleware_stack = hot  # the hot routes in front; the rest goes through FastAPI

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        if switches is not None:
            switches.start()  # connects in the background; never gates readiness
        await plane.start(settings.config_wait_s)

    async def shutdown() -> None:
        await plane.stop()  # flushes pending usage events
        if switches is not None:
            await switches.stop()
        await wire.aclose()
        await quota_redis.aclose()
        await infra.close()

    return Service("ingress", app, settings, startup, shutdown)


def _tracer(settings: IngressSettings, given: trace.Tracer | None) -> trace.Tracer | None:
    """None (no span at all) unless tracing is on: ``on``, or ``auto`` with an OTLP endpoint."""
    if settings.tracing == "off":
        return None
    if given is not None:
        return given
    if settings.tracing == "on" or settings.otlp_endpoint:
        return trace.get_tracer("hyperinfer.ingress")
    return None


def _health(
    health: Health,
    registry: CollectorRegistry,
    plane: DataPlane,
    limiter: QuotaLimiter,
    cache: ResponseCache,
) -> None:
    expose_version(health, registry, "config", plane.config)
    if plane.routing is not None:
        expose_version(health, registry, "routing", plane.routing)

    async def config_loaded() -> None:
        if not plane.config.loaded:
            raise ConfigNotLoaded("no config snapshot loaded yet")

    health.add_check(DependencyCheck("config", config_loaded))
    health.add_detail("dataplane", plane.status)
    health.add_detail(
        "quota",
        lambda: {
            "node": limiter.node_id,
            "redis_up": limiter.redis_up,
            "live_replicas": limiter.replicas,
        },
    )
    health.add_detail("cache", cache.stats)
