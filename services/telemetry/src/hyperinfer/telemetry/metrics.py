"""Prometheus metrics: the OpenTelemetry GenAI conventions from usage events, and ledger health.

GenAI (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/), named as the
OTel→Prometheus conversion names them, observed once per newly recorded request (a
duplicate never counts twice), with the conventions' bucket boundaries:

- ``gen_ai_client_token_usage`` (histogram, tokens; ``gen_ai_token_type`` input/output)
- ``gen_ai_server_request_duration_seconds`` (histogram; ``error_type`` set on failures)
- ``gen_ai_server_time_to_first_token_seconds`` (histogram, streamed requests)
- ``gen_ai_server_time_per_output_token_seconds`` (histogram, after the first token)

Labels: ``gen_ai_operation_name``, ``gen_ai_provider_name``, ``gen_ai_request_model``
(the alias asked for), ``gen_ai_response_model`` (the model that answered), plus
``hyperinfer_team_id`` and ``hyperinfer_backend_id``. Each replica exports what it
recorded; sum over instances.
"""

from __future__ import annotations

from typing import Any

from hyperinfer.contracts.usage.v1 import UsageRecorded
from hyperinfer.telemetry.adapters.redis_stream import GroupStats
from hyperinfer.telemetry.domain import time_per_output_token_s
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

_BASE = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "hyperinfer_team_id",
    "hyperinfer_backend_id",
]
_OPERATION = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}


class UsageMetrics:
    """GenAI histograms and spend counters, fed by newly recorded usage events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request (OTel gen_ai.client.token.usage)",
            [*_BASE, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Request duration (OTel gen_ai.server.request.duration)",
            [*_BASE, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first token (OTel gen_ai.server.time_to_first_token)",
            _BASE,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first (OTel gen_ai.server.time_per_output_token)",
            _BASE,
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.cost = Counter(
            "hyperinfer_usage_cost_micros",
            "Cost of recorded requests, in micro-units of currency",
            _BASE,
            registry=registry,
        )
        self.requests = Counter(
            "hyperinfer_usage_requests",
            "Recorded requests by status",
            [*_BASE, "status"],
            registry=registry,
        )
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def observe(self, usage: UsageRecorded) -> None:
        base = (
            _OPERATION.get(usage.api, usage.api),
            usage.provider,
            usage.alias,
            usage.model,
            usage.team_id,
            usage.backend_id,
        )
        error_type = "" if usage.status == "ok" else (usage.error_type or usage.status)
        tokens_in, tokens_out, duration, ttft, tpot, cost, requests = self._for(
            base, error_type, usage.status
        )
        tokens_in.observe(usage.prompt_tokens)
        tokens_out.observe(usage.completion_tokens)
        duration.observe(usage.latency_ms / 1000.0)
        if usage.ttft_ms is not None:
            ttft.observe(usage.ttft_ms / 1000.0)
        per_token = time_per_output_token_s(
            usage.latency_ms, usage.ttft_ms, usage.completion_tokens
        )
        if per_token is not None:
            tpot.observe(per_token)
        cost.inc(usage.cost_micros)
        requests.inc()

    def _for(self, base: tuple[str, ...], error_type: str, status: str) -> tuple[Any, ...]:
        """Labelled children, cached: ``labels()`` is the costly part of an observation."""
        key = (*base, error_type, status)
        found = self._children.get(key)
        if found is None:
            found = (
                self.tokens.labels(*base, "input"),
                self.tokens.labels(*base, "output"),
                self.duration.labels(*base, error_type),
                self.ttft.labels(*base),
                self.tpot.labels(*base),
                self.cost.labels(*base),
                self.requests.labels(*base, status),
            )
            self._children[key] = found
        return found


class LedgerMetrics:
    """How the ledger consumer is doing: throughput, outcomes, lag, failures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "hyperinfer_ledger_events",
            "Stream entries handled, by outcome (recorded, duplicate, dead_lettered)",
            ["outcome"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "hyperinfer_ledger_dead_lettered",
            "Entries moved to the dead-letter stream, by reason",
            ["reason"],
            registry=registry,
        )
        self.batches = Counter("hyperinfer_ledger_batches", "Batches committed", registry=registry)
        self.batch_seconds = Histogram(
            "hyperinfer_ledger_batch_write_seconds",
            "Time to commit one batch (COPY + dedupe + rollups)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.batch_size = Histogram(
            "hyperinfer_ledger_batch_size",
            "Entries per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.write_failures = Counter(
            "hyperinfer_ledger_write_failures",
            "Failed batch writes (the batch is kept and retried)",
            registry=registry,
        )
        self.reclaimed = Counter(
            "hyperinfer_ledger_reclaimed",
            "Entries taken over from idle (dead) consumers",
            registry=registry,
        )
        self.trimmed = Counter(
            "hyperinfer_ledger_trimmed_unrecorded",
            "Entries trimmed from the stream before they were recorded: usage lost (alert!)",
            registry=registry,
        )
        self.write_failing = Gauge(
            "hyperinfer_ledger_write_failing",
            "1 while the ledger cannot commit (entries wait unacknowledged)",
            registry=registry,
        )
        self.lag = Gauge(
            "hyperinfer_ledger_stream_lag",
            "Entries in the stream not yet delivered to the telemetry group",
            registry=registry,
        )
        self.pending = Gauge(
            "hyperinfer_ledger_pending",
            "Entries delivered to the telemetry group but not yet acknowledged",
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "hyperinfer_ledger_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry",
            registry=registry,
        )
        self.undelivered_age = Gauge(
            "hyperinfer_ledger_lag_seconds",
            "Age of the oldest entry not yet delivered (time behind the producers)",
            registry=registry,
        )
        self.stream_length = Gauge(
            "hyperinfer_ledger_stream_length", "Entries kept in the usage stream", registry=registry
        )

    def set_stats(self, stats: GroupStats) -> None:
        self.lag.set(float("nan") if stats.lag is None else stats.lag)
        self.pending.set(stats.pending)
        self.oldest_pending_age.set(stats.oldest_pending_age_s)
        self.undelivered_age.set(stats.undelivered_age_s)
        self.stream_length.set(stats.length)
