"""Prometheus metrics of the quota service, and the exporter of a limiter's numbers.

``LimiterCollector`` turns a ``QuotaMetrics`` (plain counters kept by the client
library's limiter) into families at scrape time; the ingress can register the same
few lines in its own registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from hyperinfer.client.quota import Histogram as PlainHistogram
from hyperinfer.client.quota import QuotaMetrics
from hyperinfer.client.quota._metrics import ERROR_BUCKETS, LATENCY_BUCKETS_S
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

PREFIX = "hyperinfer_quota"


class LimiterCollector(Collector):
    """Checks, denials by reason, policy mode and switches, Redis latency of a limiter."""

    def __init__(self, metrics: QuotaMetrics, prefix: str = PREFIX) -> None:
        self._m = metrics
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        p, m = self._prefix, self._m
        yield _counter(f"{p}_checks", "quota checks by outcome", "outcome", m.checks)
        yield _counter(f"{p}_denials", "quota denials by reason", "reason", m.denials)
        yield _counter(
            f"{p}_policy_switches",
            "switches between Redis and a failure policy",
            "mode",
            m.switches,
        )
        mode = GaugeMetricFamily(
            f"{p}_policy_mode", "1 for the mode this node decides in now", labels=["mode"]
        )
        mode.add_metric(["redis"], 1.0 if m.redis_up else 0.0)
        mode.add_metric(["failure_policy"], 0.0 if m.redis_up else 1.0)
        yield mode
        yield GaugeMetricFamily(
            f"{p}_live_replicas", "live data-plane nodes (last count seen)", value=m.live_replicas
        )
        errors = CounterMetricFamily(f"{p}_redis_errors", "quota Redis calls that failed")
        errors.add_metric([], m.redis_errors)
        yield errors
        yield _histogram(
            f"{p}_check_redis_seconds", "latency of the reserve script", m.redis_latency
        )
        error = HistogramMetricFamily(
            f"{p}_settle_error_ratio",
            "|reserved - actual| / reserved at settle, by what",
            labels=["kind"],
        )
        for kind, hist in (("tokens", m.token_error), ("cost", m.cost_error)):
            error.add_metric([kind], hist.cumulative(), sum_value=hist.total)
        yield error


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


def _histogram(name: str, doc: str, hist: PlainHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], hist.cumulative(), sum_value=hist.total)
    return family


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
