"""The service runtime shared by every HyperInfer service.

Settings, JSON logs, health and readiness, Prometheus metrics, OpenTelemetry, the
connections to NATS/Redis/PostgreSQL, migrations, JetStream definitions, and the
process runner with graceful SIGTERM drain. Services compose these in ``create_app``.
"""

from hyperinfer.runtime.connections import NatsConnection, PostgresPool, RedisConnection
from hyperinfer.runtime.health import DependencyCheck, Health
from hyperinfer.runtime.http import build_http_app
from hyperinfer.runtime.infra import Infra
from hyperinfer.runtime.logs import configure_logging, get_logger
from hyperinfer.runtime.server import Service, run_service
from hyperinfer.runtime.settings import ServiceSettings, load_settings

__all__ = [
    "DependencyCheck",
    "Health",
    "Infra",
    "NatsConnection",
    "PostgresPool",
    "RedisConnection",
    "Service",
    "ServiceSettings",
    "build_http_app",
    "configure_logging",
    "get_logger",
    "load_settings",
    "run_service",
]
