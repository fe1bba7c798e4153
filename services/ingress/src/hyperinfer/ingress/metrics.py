"""The ingress's Prometheus metrics: requests by API/alias/backend/status, latency, TTFT.

Requests that reached the upstream are counted from their usage draft (``observe``);
requests refused before (401, 404, 429, ...) by the handler (``refused``).
"""

from __future__ import annotations

from hyperinfer.client.usage import UsageDraft
from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def observe(self, draft: UsageDraft) -> None:
        self.requests.labels(draft.api, draft.alias, draft.backend_id, str(draft.http_status)).inc()
        if draft.backend_id and not draft.cache_hit:
            self.latency.labels(draft.backend_id).observe(draft.latency_ms / 1000)
            if draft.ttft_ms is not None:
                self.ttft.labels(draft.backend_id).observe(draft.ttft_ms / 1000)
        if draft.fallback_used and draft.status == "ok":
            self.fallbacks.labels(draft.alias).inc()

    def refused(self, api: str, status: int) -> None:
        self.requests.labels(api, "", "", str(status)).inc()
