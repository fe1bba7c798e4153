"""The ingress's Prometheus metrics: requests by API/alias/backend/status, latency, TTFT.

Requests that reached the upstream are counted from their usage draft (``observe``);
requests refused before (401, 404, 429, ...) by the handler (``refused``). The labelled
children are looked up once per label set and kept (``labels()`` costs a few µs, on
every request).
"""

from __future__ import annotations

from typing import Any

from hyperinfer.client.usage import UsageDraft
from prometheus_client import CollectorRegistry, Counter, Histogram

MAX_CHILDREN = 10_000  # label sets kept; aliases and backends come from the config
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hyperinfer_ingress_requests",
            "requests by API, alias, backend and HTTP status",
            ["api", "alias", "backend", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "hyperinfer_ingress_upstream_latency_seconds",
            "time from the request to the upstream's last byte, by backend",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "hyperinfer_ingress_ttft_seconds",
            "time to the first streamed chunk, by backend",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fallbacks = Counter(
            "hyperinfer_ingress_fallbacks",
            "requests answered by a fallback candidate, by alias",
            ["alias"],
            registry=registry,
        )

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < MAX_CHILDREN:
                self._children[key] = child
        return child

    def observe(self, draft: UsageDraft) -> None:
        status = str(draft.http_status)
        self._child(self.requests, draft.api, draft.alias, draft.backend_id, status).inc()
        if draft.backend_id and not draft.cache_hit:
            self._child(self.latency, draft.backend_id).observe(draft.latency_ms / 1000)
            if draft.ttft_ms is not None:
                self._child(self.ttft, draft.backend_id).observe(draft.ttft_ms / 1000)
        if draft.fallback_used and draft.status == "ok":
            self._child(self.fallbacks, draft.alias).inc()

    def refused(self, api: str, status: int) -> None:
        self._child(self.requests, api, "", "", str(status)).inc()
