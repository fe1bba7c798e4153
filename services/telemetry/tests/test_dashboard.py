"""The Grafana dashboard only charts metrics the service exports, with labels they carry."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hyperinfer.contracts import utc_now
from hyperinfer.telemetry.adapters.redis_stream import GroupStats
from hyperinfer.telemetry.metrics import LedgerMetrics, UsageMetrics
from hyperinfer.telemetry.testing import make_usage
from prometheus_client import CollectorRegistry

DASHBOARD = Path(__file__).resolve().parents[3] / "infra" / "grafana" / "telemetry.json"
_SERIES = re.compile(r"\b((?:gen_ai|hyperinfer)_[a-z_]+)\b")
_LABELS = re.compile(r"\b([a-z_]+)\s*(?:=~|!=|=)\s*\"")
_BY = re.compile(r"by \(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\([a-z_]+,\s*([a-z_]+)\)")


def exported() -> tuple[set[str], set[str]]:
    """Every sample name and label name a busy replica exports."""
    registry = CollectorRegistry()
    usage, ledger = UsageMetrics(registry), LedgerMetrics(registry)
    usage.observe(make_usage("r1", ttft_ms=50.0, completion_tokens=20, at=utc_now()))
    usage.observe(make_usage("r2", status="error", error_type="upstream_timeout"))
    for outcome in ("recorded", "duplicate", "dead_lettered"):
        ledger.events.labels(outcome).inc()
    ledger.dead_lettered.labels("invalid_payload").inc()
    ledger.batch_seconds.observe(0.01)
    ledger.set_stats(GroupStats(1, 0, 0, 0.0, 0.0, 1))
    names, labels = set(), {"le"}
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def test_every_series_and_label_of_the_dashboard_is_exported() -> None:
    board = json.loads(DASHBOARD.read_text())
    names, labels = exported()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) > 20
    for expr in exprs:
        bare = re.sub(r"\{[^}]*\}|by \([^)]*\)|,\s*[a-z_]+\)", " ", expr)  # matchers, groupings
        for series in _SERIES.findall(bare):
            assert series in names, f"{series} (in {expr!r}) is not exported"
        used = set(_LABELS.findall(expr)) | set(_LABEL_VALUES.findall(expr))
        for group in _BY.findall(expr):
            used.update(part.strip() for part in group.split(","))
        assert used <= labels, f"{used - labels} (in {expr!r}) are not labels of ours"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
