"""Prometheus view of the router's latest decisions, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from hyperinfer.router.publisher import TablePublisher
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_LABELS = ["alias", "team", "backend", "model"]


class RouterMetrics:
    """Register with ``registry.register(RouterMetrics(publisher))``."""

    def __init__(self, publisher: TablePublisher) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        p = self._publisher
        yield _gauge(
            "hyperinfer_router_table_version", "routing table version held", p.table.version
        )
        yield _gauge("hyperinfer_router_publisher", "1 on the replica that publishes", p.leader)
        yield _gauge(
            "hyperinfer_router_static_fallback",
            "1 while some alias runs on static weights (stale state)",
            p.table.static_fallback,
        )
        published = CounterMetricFamily(
            "hyperinfer_router_tables_published", "routing tables published by this replica"
        )
        published.add_metric([], p.published_count)
        yield published
        yield from self._candidates()

    def _candidates(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily("hyperinfer_router_weight", "traffic share", labels=_LABELS)
        score = GaugeMetricFamily("hyperinfer_router_score", "candidate score 0..1", labels=_LABELS)
        ejected = GaugeMetricFamily("hyperinfer_router_ejected", "1 when ejected", labels=_LABELS)
        for decision in self._publisher.decisions:
            for c in decision.candidates:
                labels = [decision.alias, decision.team_id or "", c.view.backend_id, c.view.model]
                weight.add_metric(labels, c.weight)
                ejected.add_metric(labels, 1.0 if c.ejected else 0.0)
                if c.score is not None:
                    score.add_metric(labels, c.score)
        yield weight
        yield score
        yield ejected


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], float(value))
    return family
