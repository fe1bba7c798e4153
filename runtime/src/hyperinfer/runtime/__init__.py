"""The service runtime shared by every HyperInfer service.

Settings, JSON logs, health and readiness, Prometheus metrics, OpenTelemetry, the
connections to NATS/Redis/PostgreSQL, migrations, JetStream definitions, problem+json
error translation, and the process runner with graceful SIGTERM drain. Services compose
these in ``create_app``.
"""

from hyperinfer.runtime.connections import NatsConnection, PostgresPool, RedisConnection
from hyperinfer.runtime.health import DependencyCheck, Health
from hyperinfer.runtime.http import build_http_app
from hyperinfer.runtime.infra import Infra
from hyperinfer.runtime.logs import configure_logging, get_logger
from hyperinfer.runtime.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemError,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from hyperinfer.runtime.server import Service, run_service
from hyperinfer.runtime.settings import ServiceSettings, load_settings

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "DependencyCheck",
    "Health",
    "Infra",
    "NatsConnection",
    "PostgresPool",
    "Problem",
    "ProblemError",
    "RedisConnection",
    "Service",
    "ServiceSettings",
    "build_http_app",
    "configure_logging",
    "get_logger",
    "install_problem_handlers",
    "load_settings",
    "problem_response",
    "problem_responses",
    "run_service",
]
