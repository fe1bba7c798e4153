"""Prometheus families for a quota limiter's plain counters, shared by every service.

The client library's ``QuotaLimiter`` keeps its numbers in a ``QuotaMetrics`` object
(plain ints and histograms: the library imports no metrics framework). A service that
runs a limiter — the ingress on every request, the quota service for its NATS API —
registers ``LimiterCollector(limiter.metrics)`` and the numbers are read at scrape time:

- ``<prefix>_checks_total{outcome}``: allowed, denied, unavailable, local_allowed, local_denied
- ``<prefix>_denials_total{reason}``: rpm, tpm, budget, redis_unavailable
- ``<prefix>_policy_switches_total{mode}`` and ``<prefix>_policy_mode{mode}`` (1 for
  ``redis`` or ``failure_policy``, whichever decides now)
- ``<prefix>_live_replicas``, ``<prefix>_redis_errors_total``
- ``<prefix>_check_redis_seconds``: latency of the reserve script
- ``<prefix>_settle_error_ratio{kind}``: |reserved - actual| / reserved, tokens and cost

Typed structurally (``LimiterNumbers``), so the runtime does not import the client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["LimiterCollector", "LimiterNumbers"]


class BucketCounts(Protocol):
    @property
    def total(self) -> float: ...

    def cumulative(self) -> list[tuple[str, int]]: ...


class LimiterNumbers(Protocol):
    """What ``hyperinfer.client.quota.QuotaMetrics`` holds (read here, never written)."""

    @property
    def checks(self) -> Mapping[str, int]: ...

    @property
    def denials(self) -> Mapping[str, int]: ...

    @property
    def switches(self) -> Mapping[str, int]: ...

    @property
    def redis_errors(self) -> int: ...

    @property
    def redis_up(self) -> bool: ...

    @property
    def live_replicas(self) -> int: ...

    @property
    def redis_latency(self) -> BucketCounts: ...

    @property
    def token_error(self) -> BucketCounts: ...

    @property
    def cost_error(self) -> BucketCounts: ...


class LimiterCollector(Collector):
    """Checks, denials by reason, policy mode and switches, Redis latency, settle error."""

    def __init__(self, metrics: LimiterNumbers, prefix: str = "hyperinfer_quota") -> None:
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
        latency = HistogramMetricFamily(
            f"{p}_check_redis_seconds", "latency of the reserve script, seconds"
        )
        latency.add_metric([], m.redis_latency.cumulative(), sum_value=m.redis_latency.total)
        yield latency
        error = HistogramMetricFamily(
            f"{p}_settle_error_ratio",
            "|reserved - actual| / reserved at settle, by what",
            labels=["kind"],
        )
        for kind, hist in (("tokens", m.token_error), ("cost", m.cost_error)):
            error.add_metric([kind], hist.cumulative(), sum_value=hist.total)
        yield error


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family
