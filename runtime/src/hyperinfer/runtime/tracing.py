"""OpenTelemetry setup and context propagation across HTTP, NATS headers and Redis fields.

Traces are always created (so ids reach the logs); they are exported over OTLP only
when ``HYPERINFER_OTLP_ENDPOINT`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Install the tracer provider once per process (called from the runner)."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"hyperinfer-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


def inject_into(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write ``traceparent`` (W3C) of the current span into headers or stream fields."""
    propagate.inject(carrier)
    return carrier


def extract_from(carrier: Mapping[str, str]) -> context.Context:
    """The trace context carried by headers, NATS headers or Redis stream fields."""
    return propagate.extract(dict(carrier))


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
