"""Prometheus metrics of the pipeline, and the JSON snapshot served at /internal/events/metrics."""

from __future__ import annotations

from typing import Any

from hyperinfer.contracts import Priority
from hyperinfer.event_pipeline.ports import QueueState
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
_HANDLER_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 120)


class PipelineMetrics:
    """Counters, gauges and histograms, plus plain counts for the JSON view."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "hyperinfer_pipeline_published_total",
            "events accepted into a queue",
            ["priority", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "hyperinfer_pipeline_rejected_total",
            "events refused at the door",
            ["priority", "reason"],
            registry=registry,
        )
        self.processed = Counter(
            "hyperinfer_pipeline_processed_total",
            "deliveries handled, by outcome",
            ["type", "outcome"],
            registry=registry,
        )
        self.depth = Gauge(
            "hyperinfer_pipeline_queue_depth", "messages held", ["priority"], registry=registry
        )
        self.oldest = Gauge(
            "hyperinfer_pipeline_oldest_age_seconds",
            "age of the oldest message",
            ["priority"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "hyperinfer_pipeline_in_flight", "jobs running now", registry=registry
        )
        self.dlq_depth = Gauge(
            "hyperinfer_pipeline_dlq_depth", "dead letters held", registry=registry
        )
        self.handler_seconds = Histogram(
            "hyperinfer_pipeline_handler_seconds",
            "handler run time",
            ["type"],
            buckets=_HANDLER_BUCKETS,
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "hyperinfer_pipeline_queue_wait_seconds",
            "time from enqueue to start",
            ["priority"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.counts: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def observe_states(self, states: dict[Priority, QueueState], dlq_depth: int) -> None:
        for priority, state in states.items():
            self.depth.labels(priority.value).set(state.depth)
            self.oldest.labels(priority.value).set(state.oldest_age_s)
        self.dlq_depth.set(dlq_depth)

    def snapshot(
        self, states: dict[Priority, QueueState], dlq_depth: int, in_flight: int
    ) -> dict[str, Any]:
        return {
            "queues": {
                p.value: {
                    "depth": s.depth,
                    "capacity": s.capacity,
                    "fill": round(s.depth / max(1, s.capacity), 4),
                    "oldest_age_s": round(s.oldest_age_s, 3),
                }
                for p, s in states.items()
            },
            "in_flight": in_flight,
            "dlq_depth": dlq_depth,
            "counts": dict(sorted(self.counts.items())),
        }
