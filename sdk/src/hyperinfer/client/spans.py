"""OpenTelemetry spans of the data plane, made only when it is given a tracer.

A ``DataPlane`` without a tracer creates no span and pays one ``is None`` test per step.
With one (the ingress when tracing is on, a thick client given ``tracer=``), a request
adds to the trace that is current (the ingress's SERVER span, or the caller's own):

- ``quota reserve`` (CLIENT, ``db.system.name=redis``): the one EVALSHA;
- ``chat <model>`` / ``embeddings <model>`` (CLIENT, OpenTelemetry GenAI attributes):
  one per upstream attempt, so retries and fallbacks show; a stream's ends with its
  first chunk (the SERVER span covers the rest);
- ``usage.recorded publish`` (PRODUCER): from the request's end until its usage event
  is in the Redis stream. Its ``traceparent`` travels in the event (envelope and stream
  field), and telemetry's ledger-write span continues it: ingress → upstream call →
  usage event → ledger write, one trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from hyperinfer.contracts import names
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["PlaneSpans", "Traced", "traceparent_of"]

USAGE_SPAN = "usage.recorded publish"


class Traced(Protocol):
    """What a usage draft offers the spans (``hyperinfer.client.usage.UsageDraft``)."""

    request_id: str
    team_id: str
    span: Any
    traceparent: str | None


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C ``traceparent`` of ``span`` (None for a non-recording, invalid one)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class PlaneSpans:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    @contextlib.contextmanager
    def quota(self) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(
            "quota reserve",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "redis", "db.operation.name": "EVALSHA"},
        ) as span:
            yield span

    @contextlib.contextmanager
    def upstream(
        self,
        operation: str,
        provider: str,
        model: str,
        base_url: str,
        backend_id: str,
        attempt: int,
    ) -> Iterator[trace.Span]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "hyperinfer.backend.id": backend_id,
            "hyperinfer.attempt": attempt,
        }
        host = urlsplit(base_url).hostname if base_url else None
        if host:
            attributes["server.address"] = host
        with self.tracer.start_as_current_span(
            f"{operation} {model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                code = getattr(exc, "code", None) or type(exc).__name__
                span.set_attribute("error.type", str(code))
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                raise

    def usage(self, draft: Traced) -> None:
        """Start the PRODUCER span of ``draft``'s event; its context goes in the event."""
        span = self.tracer.start_span(
            USAGE_SPAN,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.name": "send",
                "messaging.destination.name": names.USAGE_STREAM,
                "hyperinfer.request_id": draft.request_id,
                "hyperinfer.team_id": draft.team_id,
            },
        )
        draft.span = span
        draft.traceparent = traceparent_of(span) or draft.traceparent
