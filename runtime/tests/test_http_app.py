"""The HTTP app every service starts from: request and trace ids in JSON logs, trace
context across HTTP headers, Prometheus /metrics, health routes."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hyperinfer.runtime import DependencyCheck, Health, build_http_app, get_logger
from hyperinfer.runtime.logs import JsonFormatter
from hyperinfer.runtime.tracing import configure_tracing, current_traceparent
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the app logs, rendered by the runtime's JSON formatter."""
    configure_tracing("runtime-tests", None)  # real spans, no exporter
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("tester"))
    logger = get_logger("tester")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)


def log_entries(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


class Flaky:
    """A dependency probe whose state the test sets."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    async def probe(self) -> None:
        if self.error is not None:
            raise self.error


def make_app(health: Health, registry: CollectorRegistry) -> FastAPI:
    app = build_http_app(health, registry)

    @app.get("/work")
    async def work() -> dict[str, str | None]:
        get_logger("tester").info("working", extra={"step": "one"})
        return {"outgoing_traceparent": current_traceparent()}

    return app


@pytest.fixture
def flaky() -> Flaky:
    return Flaky()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(flaky: Flaky, registry: CollectorRegistry) -> AsyncIterator[httpx.AsyncClient]:
    health = Health("tester", version="9.9.9")
    health.add_check(DependencyCheck("redis", flaky.probe))
    health.add_detail("config_version", lambda: {"version": 7})

    async def queue_depths() -> dict[str, int]:
        return {"jobs": 3}

    health.add_detail("queues", queue_depths)
    app = make_app(health, registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tester") as client:
        yield client


async def test_logs_carry_the_request_id_and_the_incoming_trace_id(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    response = await client.get(
        "/work", headers={"x-request-id": "req-42", "traceparent": TRACEPARENT}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    [entry] = log_entries(json_log)
    assert entry["msg"] == "working"
    assert entry["level"] == "info"
    assert entry["service"] == "tester"
    assert entry["step"] == "one"
    assert entry["request_id"] == "req-42"
    assert entry["trace_id"] == TRACE_ID
    assert len(entry["span_id"]) == 16
    assert entry["span_id"] != PARENT_SPAN  # the server's own span, child of the caller's


async def test_a_request_without_ids_gets_fresh_ones(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    first = await client.get("/work")
    second = await client.get("/work")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(len(i) == 32 for i in ids)
    assert ids[0] != ids[1]
    entries = log_entries(json_log)
    assert [e["request_id"] for e in entries] == ids
    assert entries[0]["trace_id"] != entries[1]["trace_id"]


async def test_trace_context_crosses_http_headers_both_ways(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    response = await client.get("/work", headers={"traceparent": TRACEPARENT})
    outgoing = response.json()["outgoing_traceparent"]
    version, trace_id, parent_span, flags = outgoing.split("-")
    [entry] = log_entries(json_log)
    # what this service would send on carries the caller's trace, under its own span
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_span == entry["span_id"]


async def test_metrics_serve_prometheus_text_with_request_durations(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/work")
    await client.get("/work")
    await client.get("/nowhere")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    counts = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["hyperinfer_http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts[("/work", "200")] == 2
    assert counts[("unmatched", "404")] == 1


async def test_readiness_names_the_failing_dependency_and_recovers(
    client: httpx.AsyncClient, flaky: Flaky
) -> None:
    assert (await client.get("/health/ready")).status_code == 200
    flaky.error = ConnectionError("connection refused")
    down = await client.get("/health/ready")
    assert down.status_code == 503
    assert down.json() == {
        "status": "not_ready",
        "checks": {"redis": "ConnectionError: connection refused"},
        "failing": ["redis"],
    }
    assert (await client.get("/health")).json() == {"status": "ok", "service": "tester"}
    flaky.error = None
    up = await client.get("/health/ready")
    assert (up.status_code, up.json()) == (200, {"status": "ready", "checks": {"redis": "ok"}})


async def test_a_hanging_probe_is_reported_as_a_timeout() -> None:
    async def hang() -> None:
        import asyncio

        await asyncio.sleep(30)

    health = Health("tester")
    health.add_check(DependencyCheck("postgres", hang, timeout_s=0.2))
    assert await health.readiness() == {"postgres": "timeout"}


async def test_detailed_health_reports_version_dependencies_and_sections(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/health/detailed")).json()
    assert body["service"] == "tester"
    assert body["version"] == "9.9.9"
    assert body["uptime_s"] >= 0
    assert body["dependencies"] == {"redis": "ok"}
    assert body["config_version"] == {"version": 7}
    assert body["queues"] == {"jobs": 3}
