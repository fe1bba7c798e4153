"""Prometheus metrics of the quota service.

The limiter's own numbers (checks, denials, policy mode, Redis latency) are exported by
the runtime's ``LimiterCollector``, the same one the ingress registers.
"""

from __future__ import annotations

from hyperinfer.client.quota._metrics import ERROR_BUCKETS, LATENCY_BUCKETS_S
from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "hyperinfer_quota"


class ServiceMetrics:
    """What the service itself does: usage events, alerts, sweeps, reconciles, Redis calls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.usage_events = Counter(
            f"{PREFIX}_usage_events", "usage events read, by result", ["result"], registry=registry
        )
        self.reservation_error = Histogram(
            f"{PREFIX}_reservation_error_ratio",
            "|reserved - actual| / reserved of usage events, by what (fleet-wide)",
            ["kind"],
            buckets=ERROR_BUCKETS,
            registry=registry,
        )
        self.redis_seconds = Histogram(
            f"{PREFIX}_redis_seconds",
            "latency of the service's Redis calls",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.alerts = Counter(
            f"{PREFIX}_alerts_published", "alerts published, by kind", ["kind"], registry=registry
        )
        self.swept = Counter(
            f"{PREFIX}_reservations_swept",
            "overdue reservations released, by state found",
            ["state"],
            registry=registry,
        )
        self.released = Counter(
            f"{PREFIX}_holds_released", "budget holds released by posted usage", registry=registry
        )
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "budget loads from PostgreSQL into Redis, by cause",
            ["why"],
            registry=registry,
        )
