"""The ledger write continues the request's trace: context carried in the stream entry."""

from __future__ import annotations

from typing import Any

from hyperinfer.contracts import names
from hyperinfer.runtime import RedisConnection
from hyperinfer.runtime.tracing import inject_into
from hyperinfer.telemetry.testing import entry_fields, eventually, make_usage, produce
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


async def test_a_producer_trace_id_reaches_the_ledger_write_span(
    make_ledger: Any, redis: RedisConnection, spans: InMemorySpanExporter
) -> None:
    producer = TracerProvider().get_tracer("ingress")  # the request's side, not exported here
    carried: dict[str, dict[str, str]] = {}
    for name in ("in-field", "in-envelope"):
        with producer.start_as_current_span(f"POST /v1/chat/completions ({name})"):
            carried[name] = inject_into({})
    untraced = make_usage("untraced")
    await make_ledger(batch_max_wait_ms=200)
    await produce(
        redis.client,
        [
            entry_fields(make_usage("in-field"), traceparent=carried["in-field"]["traceparent"]),
            entry_fields(
                make_usage("in-envelope"),
                traceparent=carried["in-envelope"]["traceparent"],
                in_envelope=True,
            ),
            entry_fields(untraced),
        ],
    )

    async def written() -> bool:  # the per-event spans end before their batch span does
        finished = [s.name for s in spans.get_finished_spans()]
        per_event = finished.count("usage.recorded ledger write")
        return per_event == 2 and "usage ledger write" in finished

    await eventually(written, what="ledger-write spans exported")
    finished = spans.get_finished_spans()
    per_event = {
        s.attributes["hyperinfer.request_id"]: s
        for s in finished
        if s.name == "usage.recorded ledger write"
    }
    for name, carrier in carried.items():
        parent = trace.get_current_span(extract(carrier)).get_span_context()
        span = per_event[name]
        assert span.context.trace_id == parent.trace_id  # the same trace as the request
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id
        assert span.attributes["messaging.destination.name"] == names.USAGE_STREAM

    (batch,) = [s for s in finished if s.name == "usage ledger write"]
    linked = {link.context.trace_id for link in batch.links}
    assert linked == {per_event[n].context.trace_id for n in carried}
    assert batch.attributes["messaging.batch.message_count"] == 3
