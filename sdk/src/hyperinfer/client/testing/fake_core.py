"""The engine every wire format of the fake upstream shares.

A wire format (``fake_openai.ChatWire``, ``fake_anthropic.MessagesWire``, ...) only
parses its request into a ``Prompt`` and renders answers, errors and stream frames in
its own shape. ``serve_exchange`` does the rest the same way for every protocol:
authentication, recording, the capacity model (running slots + a FIFO queue), injected
failures (status codes, hangs, dropped connections, malformed JSON, broken or cut
streams), latency (fixed + per token) and the vLLM-style metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol, get_args

import orjson
from hyperinfer.client.testing.fake_model import Answer, Prompt, compose_answer
from hyperinfer.client.testing.http_server import HttpRequest, HttpResponder

Fault = Literal["hang", "drop", "malformed_json", "broken_sse", "cut_stream"]
FAULTS: tuple[str, ...] = get_args(Fault)


@dataclass
class Behaviour:
    """How the fake answers (globally, or for one model). Change it at run time."""

    latency_s: float = 0.0
    """Before the first byte of every answer."""
    per_token_s: float = 0.0
    """Per completion token: between stream frames, or added to a whole answer."""
    fail_status: int | None = None
    """Answer with this HTTP status (in the protocol's error shape) instead."""
    fault: Fault | None = None
    """hang (no answer until the client gives up), drop (close the connection), malformed_json,
    broken_sse (garbage in the stream), cut_stream (the connection dies mid-stream)."""
    fail_times: int | None = None
    """Apply ``fail_status``/``fault`` to this many more requests only (None: to all)."""
    retry_after_s: float | None = None
    """Sent as ``Retry-After`` with a failure status (429, 503)."""
    fault_after_frames: int = 2
    """Stream frames sent before broken_sse / cut_stream strike."""
    answer: str | None = None
    """A fixed answer text instead of ``echo: <last user text>``."""
    hang_s: float = 300.0
    report_usage: bool = True
    """False: answers carry no token usage (as some OpenAI-compatible servers do)."""

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {', '.join(sorted(unknown))}")
        fault = changes.get("fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        for name, value in changes.items():
            setattr(self, name, value)

    def take_failure(self) -> bool:
        """Whether this request fails (and count it against ``fail_times``)."""
        if self.fail_status is None and self.fault is None:
            return False
        if self.fail_times is None:
            return True
        if self.fail_times <= 0:
            return False
        self.fail_times -= 1
        return True


@dataclass
class Capacity:
    """A vLLM-like engine: ``max_concurrency`` requests run, the rest wait in a FIFO queue;
    with ``max_queue`` set, a request finding the queue full is refused (429)."""

    max_concurrency: int | None = None
    max_queue: int | None = None
    running: int = 0
    waiting: int = 0
    _queue: deque[asyncio.Future[None]] = field(default_factory=deque)

    def update(self, changes: dict[str, Any]) -> None:
        for name in changes:
            if name not in ("max_concurrency", "max_queue"):
                raise ValueError(f"unknown capacity field: {name}")
        self.max_concurrency = changes.get("max_concurrency", self.max_concurrency)
        self.max_queue = changes.get("max_queue", self.max_queue)
        self._wake()

    def full(self) -> bool:
        return self.max_concurrency is not None and self.running >= self.max_concurrency

    @contextlib.asynccontextmanager
    async def slot(self, metrics: ModelMetrics) -> AsyncIterator[None]:
        """Run now, or wait in line (``Overloaded`` when the line is full)."""
        if self.full() or self._queue:
            if self.max_queue is not None and self.waiting >= self.max_queue:
                raise Overloaded
            await self._wait_in_line(metrics)
        else:
            self.running += 1
        metrics.running += 1
        try:
            yield
        finally:
            metrics.running -= 1
            self.running -= 1
            self._wake()

    async def _wait_in_line(self, metrics: ModelMetrics) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self.waiting += 1
        metrics.waiting += 1
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.running -= 1  # the slot was handed over just before we left
                self._wake()
            raise
        finally:
            self.waiting -= 1
            metrics.waiting -= 1
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)

    def _wake(self) -> None:
        while self._queue and not self.full():
            waiter = self._queue.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)

    def status(self) -> dict[str, Any]:
        return {
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "running": self.running,
            "waiting": self.waiting,
        }


class Overloaded(Exception):
    """The queue is full."""


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ModelMetrics:
    running: int = 0
    waiting: int = 0
    success: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def observe(self, seconds: float) -> None:
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    model: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FakeState:
    """Everything a running fake knows: behaviours, capacity, metrics, recorded requests."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    per_model: dict[str, Behaviour] = field(default_factory=dict)
    capacity: Capacity = field(default_factory=Capacity)
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    api_key: str | None = None
    """When set, requests must carry it (Bearer or x-api-key) or get a 401."""
    record: bool = True
    requests: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=500))
    metrics: dict[str, ModelMetrics] = field(default_factory=dict)
    connections_dropped: int = 0
    prompt_cache: set[str] = field(default_factory=set)
    """The prompt prefixes cached so far (Anthropic's ``cache_control``; ``fake_anthropic``)."""

    def behaviour_for(self, model: str | None) -> Behaviour:
        if model is not None and model in self.per_model:
            return self.per_model[model]
        return self.behaviour

    def configure(self, model: str | None = None, **changes: Any) -> Behaviour:
        """Change the behaviour (of ``model`` only, when given: it gets its own copy)."""
        if model is None:
            target = self.behaviour
        else:
            target = self.per_model.setdefault(model, Behaviour(**asdict(self.behaviour)))
        target.update(changes)
        return target

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.per_model.clear()
        self.capacity.update({"max_concurrency": None, "max_queue": None})
        self.requests.clear()
        self.metrics.clear()
        self.connections_dropped = 0
        self.prompt_cache.clear()

    def model_metrics(self, model: str) -> ModelMetrics:
        metrics = self.metrics.get(model)
        if metrics is None:
            metrics = self.metrics[model] = ModelMetrics()
        return metrics


class WireError(Exception):
    """A request the wire format refuses (status + message, rendered in its error shape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Parsed:
    prompt: Prompt
    stream: bool
    body: dict[str, Any]
    report_usage: bool = True


class WireFormat(Protocol):
    """One protocol's shapes. ``frames`` are complete SSE events (bytes)."""

    def parse(self, request: HttpRequest) -> Parsed: ...

    def authorized(self, request: HttpRequest, key: str) -> bool: ...

    def error_body(self, status: int, message: str) -> bytes: ...

    def render(self, parsed: Parsed, answer: Answer) -> bytes: ...

    def frames(self, parsed: Parsed, answer: Answer) -> list[bytes]: ...


def bearer_or_x_api_key(request: HttpRequest, key: str) -> bool:
    auth = request.headers.get("authorization", "")
    return auth == f"Bearer {key}" or request.headers.get("x-api-key") == key


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise WireError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise WireError(400, "request body must be a JSON object")
    return body


async def serve_exchange(
    state: FakeState, wire: WireFormat, request: HttpRequest, responder: HttpResponder
) -> None:
    """Answer one request of ``wire``'s protocol, applying every configured behaviour."""
    try:
        parsed = wire.parse(request)
    except WireError as exc:
        await responder.send(exc.status, wire.error_body(exc.status, exc.message))
        return
    model = parsed.prompt.model
    if state.record:
        state.requests.append(
            RecordedRequest(request.method, request.path, request.headers, parsed.body, model)
        )
    if state.api_key is not None and not wire.authorized(request, state.api_key):
        await responder.send(401, wire.error_body(401, "invalid api key"))
        return
    metrics = state.model_metrics(model)
    started = time.monotonic()
    try:
        async with state.capacity.slot(metrics):
            ok = await _answer(state, wire, parsed, responder)
    except Overloaded:
        metrics.failed += 1
        await responder.send(429, wire.error_body(429, "engine queue full"), retry_after="1")
        return
    if ok:
        metrics.success += 1
        metrics.observe(time.monotonic() - started)
    else:
        metrics.failed += 1


async def _answer(
    state: FakeState, wire: WireFormat, parsed: Parsed, responder: HttpResponder
) -> bool:
    behaviour = state.behaviour_for(parsed.prompt.model)
    failing = behaviour.take_failure()
    if failing and behaviour.fault in ("hang", "drop"):
        if behaviour.fault == "drop":
            state.connections_dropped += 1
            responder.abort()
        else:
            await responder.wait_disconnected(behaviour.hang_s)
        return False
    if behaviour.latency_s:
        await asyncio.sleep(behaviour.latency_s)
    if failing and behaviour.fail_status is not None:
        headers = {}
        if behaviour.retry_after_s is not None:
            headers["retry_after"] = f"{behaviour.retry_after_s:g}"
        body = wire.error_body(behaviour.fail_status, f"injected failure {behaviour.fail_status}")
        await responder.send(behaviour.fail_status, body, **headers)
        return False
    answer = compose_answer(parsed.prompt, behaviour.answer)
    parsed.report_usage = behaviour.report_usage
    fault = behaviour.fault if failing else None
    if parsed.stream:
        return await _stream(wire.frames(parsed, answer), behaviour, fault, responder)
    if behaviour.per_token_s:
        await asyncio.sleep(behaviour.per_token_s * answer.completion_tokens)
    body = wire.render(parsed, answer)
    if fault == "malformed_json":
        await responder.send(200, body[: max(1, len(body) // 2)])
        return False
    if fault == "cut_stream":
        await responder.send_truncated(200, body)
        return False
    await responder.send(200, body)
    return True


async def _stream(
    frames: list[bytes], behaviour: Behaviour, fault: str | None, responder: HttpResponder
) -> bool:
    await responder.start_stream()
    for index, frame in enumerate(frames):
        if fault is not None and index == behaviour.fault_after_frames:
            if fault == "cut_stream":
                responder.abort()
                return False
            await responder.send_chunk(b'data: {"choices": [{"delta": {"content": "bro\n\n')
            await responder.end_stream()
            return False
        if behaviour.per_token_s and index:
            await asyncio.sleep(behaviour.per_token_s)
        await responder.send_chunk(frame)
    await responder.end_stream()
    return True


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event carrying ``data`` as JSON (or as is, when bytes)."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
