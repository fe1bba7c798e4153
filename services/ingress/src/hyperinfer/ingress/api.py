"""The hot routes, served as plain ASGI in front of the FastAPI app.

``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models`` and ``/v1/messages`` carry
every request, so they skip the framework: no routing table walk, no middleware stack,
no pydantic validation of pass-through payloads. A request costs a header scan, one
body read (size-limited), one ``orjson.loads``, the data plane (one awaited Redis
call), and one ``orjson.dumps``. Everything else (health, metrics, docs) falls through
to the FastAPI app. Their OpenAPI description lives in ``openapi.py``.

Tracing (when ``create_app`` is given a tracer: ``HYPERINFER_INGRESS_TRACING``): a SERVER
span per request, continuing an incoming ``traceparent``; the data plane adds its quota,
upstream-attempt and usage-event spans under it (``hyperinfer.client.spans``). Without
a tracer no span is made and the incoming ``traceparent`` is passed to the usage event
as is.

``/v1/messages`` in front of an Anthropic backend passes through: the caller's body goes
upstream as it came (only ``model`` and ``stream`` set) and Anthropic's answer or events
come back as sent, but for ``model``, which names the alias asked for on every backend
(as the translated answers do); thinking, prompt caching and its usage, ``top_k``,
``metadata``, documents all survive. In front of any other backend (a fallback of an
Anthropic primary, say) the request is translated to OpenAI shape and the answer back.

Streams are SSE: OpenAI ``data: {chunk}`` events ending with ``data: [DONE]``, or
Anthropic's event sequence on ``/v1/messages``. A failure after the first byte ends
the stream with an explicit error event and no ``[DONE]``/``message_stop``. A client
that goes away is noticed (``http.disconnect``): the upstream stream is closed and the
request recorded as cancelled, charged for the tokens that had passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from hyperinfer.client.anthropic_format import (
    EventsFromChunks,
    from_messages_request,
    sse_event,
    to_messages_response,
)
from hyperinfer.client.dataplane import ChatStream, DataPlane, Outcome, new_request_id
from hyperinfer.client.errors import (
    HyperInferError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamError,
)
from hyperinfer.ingress.errors import InternalError, anthropic_body, anthropic_error, openai_body
from hyperinfer.ingress.metrics import IngressMetrics
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CacheTtl = Callable[[str | None], float | None]
JSON = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


@dataclass(slots=True)
class Exchange:
    """What the hot path reads from the request head."""

    request_id: str
    api_key: str | None
    content_length: int | None
    traceparent: str | None
    cache: str | None
    anthropic_beta: str | None = None
    """Sent on to an Anthropic backend with the Messages body it passes through."""

    @classmethod
    def of(cls, scope: Scope) -> Exchange:
        api_key = traceparent = cache = beta = None
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token:
                    api_key = token.strip()
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1").strip()
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")[:128]
            elif name == b"x-hyperinfer-cache":
                cache = value.decode("latin-1")
            elif name == b"anthropic-beta":
                beta = value.decode("latin-1")[:1024]
        return cls(new_request_id(), api_key, length, traceparent, cache, beta)


class SseFormat(Protocol):
    def chunk(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, exc: HyperInferError) -> bytes: ...


class OpenAISse:
    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: HyperInferError) -> bytes:
        return b"data: " + openai_body(exc) + b"\n\n"


class AnthropicSse:
    def __init__(self, alias: str) -> None:
        self._events = EventsFromChunks(alias)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(self._events.feed(chunk))

    def end(self) -> bytes:
        return b"".join(self._events.close())

    def error(self, exc: HyperInferError) -> bytes:
        return sse_event("error", anthropic_error(exc))


class AnthropicPassthroughSse:
    """An Anthropic backend's events as they came, the alias in ``message_start``'s model."""

    def __init__(self, alias: str) -> None:
        self._alias = alias

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        kind = str(chunk.get("type", ""))
        message = chunk.get("message")
        if kind == "message_start" and isinstance(message, dict):
            message["model"] = self._alias
        return sse_event(kind, chunk)

    def end(self) -> bytes:
        return b""  # the upstream's message_stop has passed

    def error(self, exc: HyperInferError) -> bytes:
        return sse_event("error", anthropic_error(exc))


def messages_sse(stream: ChatStream, alias: str) -> SseFormat:
    if stream.shape == "anthropic":
        return AnthropicPassthroughSse(alias)
    return AnthropicSse(alias)


def messages_answer(outcome: Outcome, alias: str) -> dict[str, Any]:
    """The Messages response: an Anthropic backend's as it came (but the model), or translated."""
    if outcome.shape == "anthropic":
        return {**outcome.body, "model": alias}
    return to_messages_response(outcome.body, alias)


Handler = Callable[[Scope, Receive, Send, Exchange], Awaitable[None]]


class HotRoutes:
    """Pure ASGI: the data-plane routes; every other request goes to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        plane: DataPlane,
        metrics: IngressMetrics,
        *,
        max_body_bytes: int,
        cache_ttl: CacheTtl | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.plane = plane
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.cache_ttl = cache_ttl
        self.routes: dict[tuple[str, str], tuple[str, bool, Handler]] = {
            ("POST", "/v1/chat/completions"): ("chat", False, self.chat_completions),
            ("POST", "/v1/embeddings"): ("embeddings", False, self.embeddings),
            ("GET", "/v1/models"): ("models", False, self.models),
            ("POST", "/v1/messages"): ("messages", True, self.messages),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], scope["path"]))
            if route is None and scope["method"] == "GET" and scope["path"][:11] == "/v1/models/":
                route = ("models", False, self.model)
            if route is not None:
                await self._serve(scope, receive, send, *route)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        api: str,
        anthropic: bool,
        handler: Handler,
    ) -> None:
        exchange = Exchange.of(scope)
        if self.tracer is None:
            await self._handle(scope, receive, send, api, anthropic, handler, exchange)
            return
        span = self.tracer.start_span(
            f"{scope['method']} {route_of(scope)}",
            context=_parent(exchange.traceparent),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": scope["method"],
                "http.route": route_of(scope),
                "url.path": scope["path"],
                "hyperinfer.request_id": exchange.request_id,
            },
        )
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._handle(scope, receive, send_traced, api, anthropic, handler, exchange)
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()
            otel_context.detach(token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        api: str,
        anthropic: bool,
        handler: Handler,
        exchange: Exchange,
    ) -> None:
        try:
            await handler(scope, receive, send, exchange)
        except ClientGone:
            return
        except HyperInferError as exc:
            if not isinstance(exc, UpstreamError):
                self.metrics.refused(api, exc.status)
            await send_error(send, exc, exchange.request_id, anthropic)
        except Exception:
            log.exception(
                "%s %s failed (request %s)", scope["method"], scope["path"], exchange.request_id
            )
            self.metrics.refused(api, 500)
            error = InternalError("Internal error; the request id says which.")
            await send_error(send, error, exchange.request_id, anthropic)

    # --- OpenAI ---------------------------------------------------------------------------
    async def chat_completions(
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange
    ) -> None:
        caller = self.plane.authenticate(exchange.api_key)
        request = await self._json(receive, exchange)
        if request.get("stream") is True:
            stream = await self.plane.open_chat_stream(
                caller, request, traceparent=exchange.traceparent, request_id=exchange.request_id
            )
            await self._stream(receive, send, stream, OpenAISse(), exchange, anthropic=False)
            return
        ttl = self.cache_ttl(exchange.cache) if self.cache_ttl and exchange.cache else None
        outcome = await self.plane.chat(
            caller,
            request,
            cache_ttl_s=ttl,
            traceparent=exchange.traceparent,
            request_id=exchange.request_id,
        )
        await send_json(send, 200, orjson.dumps(outcome.body), exchange.request_id, outcome.headers)

    async def embeddings(
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange
    ) -> None:
        caller = self.plane.authenticate(exchange.api_key)
        request = await self._json(receive, exchange)
        outcome = await self.plane.embeddings(
            caller, request, traceparent=exchange.traceparent, request_id=exchange.request_id
        )
        await send_json(send, 200, orjson.dumps(outcome.body), exchange.request_id, outcome.headers)

    async def models(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
        caller = self.plane.authenticate(exchange.api_key)
        data = [model_entry(alias) for alias in self.plane.models(caller)]
        body = orjson.dumps({"object": "list", "data": data})
        await send_json(send, 200, body, exchange.request_id)

    async def model(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
        caller = self.plane.authenticate(exchange.api_key)
        alias = scope["path"][len("/v1/models/") :]
        if alias not in self.plane.models(caller):
            raise ModelNotFound(f"The model '{alias}' does not exist or you do not have access.")
        await send_json(send, 200, orjson.dumps(model_entry(alias)), exchange.request_id)

    # --- Anthropic ------------------------------------------------------------------------
    async def messages(
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange
    ) -> None:
        caller = self.plane.authenticate(exchange.api_key)
        body = await self._json(receive, exchange)
        request = from_messages_request(body)
        alias = str(request.get("model"))
        if request.get("stream"):
            request["stream_options"] = {"include_usage": True}
            stream = await self.plane.open_chat_stream(
                caller,
                request,
                api="messages",
                anthropic_body=body,
                anthropic_beta=exchange.anthropic_beta,
                traceparent=exchange.traceparent,
                request_id=exchange.request_id,
            )
            fmt = messages_sse(stream, alias)
            await self._stream(receive, send, stream, fmt, exchange, anthropic=True)
            return
        outcome = await self.plane.chat(
            caller,
            request,
            api="messages",
            anthropic_body=body,
            anthropic_beta=exchange.anthropic_beta,
            traceparent=exchange.traceparent,
            request_id=exchange.request_id,
        )
        answer = orjson.dumps(messages_answer(outcome, alias))
        headers = {**outcome.headers, "request-id": exchange.request_id}
        await send_json(send, 200, answer, exchange.request_id, headers)

    # --- plumbing -------------------------------------------------------------------------
    async def _json(self, receive: Receive, exchange: Exchange) -> dict[str, Any]:
        raw = await read_body(receive, exchange.content_length, self.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "The request body is not valid JSON.", code="invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        return body

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        stream: ChatStream,
        fmt: SseFormat,
        exchange: Exchange,
        *,
        anthropic: bool,
    ) -> None:
        headers = [*SSE_HEADERS, *_header_list(exchange.request_id, stream.headers)]
        if anthropic:
            headers.append((b"request-id", exchange.request_id.encode()))
        pump = asyncio.ensure_future(_pump(send, stream, fmt, headers))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            await stream.aclose()
        if not pump.cancelled() and pump.exception() is not None:
            log.error("stream %s failed: %r", exchange.request_id, pump.exception())


async def _pump(
    send: Send, stream: ChatStream, fmt: SseFormat, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        async for chunk in stream:
            data = fmt.chunk(chunk)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        tail = fmt.end()
    except HyperInferError as exc:
        tail = fmt.error(exc)  # an explicit error event, never a clean end
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to pass ``limit`` bytes."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def route_of(scope: Scope) -> str:
    path: str = scope["path"]
    return "/v1/models/{model}" if path.startswith("/v1/models/") else path


def _parent(traceparent: str | None) -> otel_context.Context | None:
    """The caller's trace context, when its request carried a ``traceparent``."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else None


def model_entry(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "hyperinfer"}


def _header_list(request_id: str, extra: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-request-id", request_id.encode())]
    if extra:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    return headers


async def send_json(
    send: Send, status: int, body: bytes, request_id: str, extra: dict[str, str] | None = None
) -> None:
    headers = [JSON, (b"content-length", str(len(body)).encode()), *_header_list(request_id, extra)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: HyperInferError, request_id: str, anthropic: bool) -> None:
    body = anthropic_body(exc) if anthropic else openai_body(exc)
    extra = exc.headers()
    if anthropic:
        extra = {**extra, "request-id": request_id}
    with contextlib.suppress(Exception):  # the response may have started (then: nothing to do)
        await send_json(send, exc.status, body, request_id, extra)
