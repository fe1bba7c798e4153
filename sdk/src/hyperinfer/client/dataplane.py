"""The data plane: one engine behind the ingress and the thick client alike.

Per request (DESIGN §2): authenticate against the local snapshot (a dict lookup),
resolve the alias to a route plan (a dict lookup), reserve quota (ONE awaited Redis
call), call the upstream with retries, fallbacks and circuit breakers, then hand the
usage to the ``UsageRecorder`` (settle + ``XADD`` pipelined in the background).
Payloads stay plain dicts parsed once by the caller (orjson); only the fields routed
on are read.

Streams: ``open_chat_stream`` returns once the first chunk is in hand, so every
failure before the first byte can still fail over to the next candidate (or become a
proper HTTP error). After that a failure ends the stream with the error (the ingress
sends an explicit error event). Tokens are metered as chunks pass, so a stream closed
early (the client went away) is charged for what the upstream produced, with status
``cancelled``.

Anthropic's Messages API end to end (``api="messages"`` with ``anthropic_body``): a
candidate whose provider speaks Messages natively (``MessagesProvider``) is sent the
caller's own body, and its answer (``Outcome.shape == "anthropic"``) or stream events
(``MessagesStream``) come back untranslated; any other candidate (a fallback, say) gets
the OpenAI-shaped ``request`` and answers in OpenAI shape, for the caller to translate.
Governance is the same either way: the quota is sized from ``request``, and the tokens
charged are Anthropic's (``anthropic_format.charged_tokens``: cache reads and writes
count as prompt tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import redis.asyncio as aioredis
from hyperinfer.client.anthropic_format import (
    charged_tokens,
    content_texts,
    event_text,
    event_usage,
)
from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.client.errors import (
    HyperInferError,
    InvalidRequest,
    NoHealthyBackend,
    NotReady,
    UpstreamError,
)
from hyperinfer.client.governance import Caller, Candidate, GovernanceIndex, RoutePlan, cost_micros
from hyperinfer.client.providers import ProviderRegistry
from hyperinfer.client.providers.base import MessagesProvider, Provider, Upstream
from hyperinfer.client.quota import QuotaLimiter, Reservation
from hyperinfer.client.resilience import Breakers, CircuitBreaker, RetryPolicy
from hyperinfer.client.routing_table import RoutingTableAgent
from hyperinfer.client.spans import PlaneSpans
from hyperinfer.client.tokens import estimate_input_tokens, estimate_prompt_tokens
from hyperinfer.client.usage import Api, Origin, UsageDraft, UsageRecorder
from opentelemetry import trace
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)
T = TypeVar("T")


def hot_path_redis_pool(
    url: str, *, timeout_s: float = 0.5, max_connections: int = 64, wait_s: float = 2.0
) -> aioredis.Redis:
    """The Redis client for quota reserves and usage pipelines: a bounded, blocking pool.

    A burst of requests waits (up to ``wait_s``) for one of ``max_connections``
    connections instead of opening one each: 512 simultaneous first requests opening
    512 connections under a 0.5 s connect timeout made some fail, and the quota limiter
    then took Redis for down. Commands are retried once at once and time out after
    ``timeout_s``, like ``quota.hot_path_redis``.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


class ResponseCacheHook(Protocol):
    """An exact-match cache of non-streaming chat answers (``hyperinfer.client.cache``)."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None: ...


CacheKey = Callable[[str, dict[str, Any]], str]
Observer = Callable[[UsageDraft], None]
Shape = Literal["openai", "anthropic"]
"""An answer's wire shape: OpenAI chat, or Anthropic Messages as the upstream sent it."""
ShapedAnswer = tuple[Shape, dict[str, Any]]


@dataclass(frozen=True)
class DataPlaneOptions:
    origin: Origin = "ingress"
    default_max_tokens: int = 1024
    """Reserved for the completion when the request sets no max_tokens (settled after)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_failures: int = 5
    breaker_open_s: float = 10.0


@dataclass(slots=True)
class Outcome:
    """A whole answer and what the response headers should say."""

    body: dict[str, Any]
    request_id: str
    reservation: Reservation
    draft: UsageDraft
    shape: Shape = "openai"
    """"anthropic": ``body`` is a Messages response, untranslated (see ``anthropic_body``)."""

    @property
    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` (formatted only when asked: a thick client never does)."""
        return self.reservation.headers()


class DataPlane:
    """Governance, routing, resilience and metering for one node."""

    def __init__(
        self,
        *,
        config: ConfigAgent,
        limiter: QuotaLimiter,
        providers: ProviderRegistry,
        recorder: UsageRecorder,
        routing: RoutingTableAgent | None = None,
        cipher: CredentialsCipher | None = None,
        cache: ResponseCacheHook | None = None,
        cache_key: CacheKey | None = None,
        options: DataPlaneOptions | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.config = config
        self.routing = routing
        self.limiter = limiter
        self.providers = providers
        self.recorder = recorder
        self.cipher = cipher
        self.cache = cache
        self.cache_key = cache_key
        self.options = options or DataPlaneOptions()
        self.breakers = Breakers(self.options.breaker_failures, self.options.breaker_open_s)
        self.observers: list[Observer] = []
        self.spans = PlaneSpans(tracer) if tracer is not None else None
        """Spans (quota, upstream attempts, usage event) only when given a tracer."""
        self.index = GovernanceIndex.build(config.snapshot, None, cipher)
        config.on_change(lambda _: self.rebuild())
        if routing is not None:
            routing.on_change(lambda _: self.rebuild())

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, wait_config_s: float = 5.0) -> None:
        waits = [self.config.start(wait_config_s)]
        if self.routing is not None:
            waits.append(self.routing.start(min(wait_config_s, 1.0)))
        await asyncio.gather(*waits)
        await self.limiter.start()
        self.recorder.start()
        self.rebuild()

    async def stop(self) -> None:
        await self.recorder.stop()
        await self.limiter.stop()
        await self.config.stop()
        if self.routing is not None:
            await self.routing.stop()
        await self.providers.aclose()

    def rebuild(self) -> None:
        """New per-snapshot indexes (called on every config or routing table change)."""
        table = self.routing.table if self.routing is not None else None
        self.index = GovernanceIndex.build(self.config.snapshot, table, self.cipher)

    def status(self) -> dict[str, Any]:
        return {
            **self.index.status(),
            "breakers": self.breakers.status(),
            "usage": self.recorder.status(),
            "providers_loaded": self.providers.kinds_loaded,
        }

    # --- governance -----------------------------------------------------------------------
    def authenticate(self, api_key: str | None) -> Caller:
        if self.index.version == 0:
            raise NotReady("This node has not loaded its configuration yet; retry shortly.")
        return self.index.authenticate(api_key)

    def models(self, caller: Caller) -> list[str]:
        return self.index.aliases_for(caller)

    # --- chat -------------------------------------------------------------------------------
    async def chat(
        self,
        caller: Caller,
        request: dict[str, Any],
        *,
        api: Api = "chat",
        anthropic_body: dict[str, Any] | None = None,
        anthropic_beta: str | None = None,
        cache_ttl_s: float | None = None,
        traceparent: str | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        """One answer. ``anthropic_body``: the caller's Messages body behind ``request`` (its
        OpenAI translation), sent as is to a Messages-native candidate (module docstring),
        with ``anthropic_beta`` (the caller's ``anthropic-beta`` header)."""
        _require_messages(request)
        plan, _ = self._plan(caller, request, "chat" if api == "chat" else "messages")
        prompt = estimate_prompt_tokens(request["messages"])
        draft, reservation = await self._reserve(
            caller, plan, api, prompt, _max_tokens(request, self.options), traceparent, request_id
        )
        draft.prompt = request["messages"]
        cache_key = self._cache_key(caller, request, cache_ttl_s)
        if cache_key is not None:
            cached = await self._cached(cache_key)
            if cached is not None:
                return self._cache_hit(cached, draft, reservation)
        shape, body = await self._attempt(
            plan, draft, _chat_call(request, anthropic_body, anthropic_beta)
        )
        _take_answer(draft, shape, body)
        self._finish(draft)
        if cache_key is not None and self.cache is not None and cache_ttl_s and shape == "openai":
            with contextlib.suppress(Exception):  # a cache failure is never the caller's
                await self.cache.set(cache_key, body, cache_ttl_s)
        return Outcome(body, draft.request_id, reservation, draft, shape)

    async def open_chat_stream(
        self,
        caller: Caller,
        request: dict[str, Any],
        *,
        api: Api = "chat",
        anthropic_body: dict[str, Any] | None = None,
        anthropic_beta: str | None = None,
        traceparent: str | None = None,
        request_id: str | None = None,
    ) -> ChatStream:
        """Reserve, connect and wait for the first chunk (failing over until then).

        ``anthropic_body`` as for ``chat``: a Messages-native candidate streams Anthropic's
        events untranslated, in a ``MessagesStream``.
        """
        _require_messages(request)
        plan, _ = self._plan(caller, request, "chat" if api == "chat" else "messages")
        prompt = estimate_prompt_tokens(request["messages"])
        draft, reservation = await self._reserve(
            caller, plan, api, prompt, _max_tokens(request, self.options), traceparent, request_id
        )
        draft.stream = True
        draft.prompt = request["messages"]
        opened: list[Any] = []
        shapes: list[Shape] = []

        async def first_chunk(provider: Provider, upstream: Upstream) -> dict[str, Any]:
            shape, chunks = _open_stream(
                provider, upstream, request, anthropic_body, anthropic_beta
            )
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                raise UpstreamError("the upstream ended the stream before any chunk") from None
            except BaseException:
                with contextlib.suppress(Exception):
                    await chunks.aclose()  # type: ignore[attr-defined]
                raise
            opened[:], shapes[:] = [chunks], [shape]
            return chunk

        first = await self._attempt(plan, draft, first_chunk)
        draft.ttft_ms = (time.time() - draft.started_at) * 1000
        wants_usage = _wants_usage(request)
        breaker = self.breakers.get(draft.backend_id)
        kind = MessagesStream if shapes[0] == "anthropic" else ChatStream
        return kind(self, draft, reservation.headers(), opened[0], first, wants_usage, breaker)

    async def embeddings(
        self,
        caller: Caller,
        request: dict[str, Any],
        *,
        traceparent: str | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        if "input" not in request:
            raise InvalidRequest("'input' is a required property", code="missing_input")
        plan, _ = self._plan(caller, request, "embeddings")
        prompt = estimate_input_tokens(request["input"])
        draft, reservation = await self._reserve(
            caller, plan, "embeddings", prompt, 0, traceparent, request_id
        )
        draft.prompt = request["input"]
        body = await self._attempt(plan, draft, lambda p, u: p.embeddings(u, request))
        usage = body.get("usage")
        if isinstance(usage, dict) and _is_count(usage.get("prompt_tokens")):
            draft.prompt_tokens, draft.completion_tokens = usage["prompt_tokens"], 0
        else:
            draft.completion_tokens = 0
        self._finish(draft)
        return Outcome(body, draft.request_id, reservation, draft)

    # --- the steps --------------------------------------------------------------------------
    def _plan(
        self, caller: Caller, request: dict[str, Any], api: str
    ) -> tuple[RoutePlan, GovernanceIndex]:
        index = self.index
        index.authorize_api(caller, api)
        return index.plan(caller, request.get("model")), index

    async def _reserve(
        self,
        caller: Caller,
        plan: RoutePlan,
        api: Api,
        prompt_tokens: int,
        completion_tokens: int,
        traceparent: str | None,
        request_id: str | None,
    ) -> tuple[UsageDraft, Reservation]:
        index = self.index
        price = _dearest(index, plan)
        reserved_cost = cost_micros(price, prompt_tokens, completion_tokens)
        draft = UsageDraft(
            request_id=request_id or new_request_id(),
            team_id=caller.team_id,
            key_id=caller.key_id,
            user_id=caller.user_id,
            alias=plan.alias,
            api=api,
            stream=False,
            origin=self.options.origin,
            started_at=time.time(),
            price_version=index.price_version,
            reserved_tokens=prompt_tokens + completion_tokens,
            reserved_cost_micros=reserved_cost,
            traceparent=traceparent,
        )
        reserve = self.limiter.reserve(
            request_id=draft.request_id,
            team_id=caller.team_id,
            key_id=caller.key_id,
            tokens=draft.reserved_tokens,
            cost_micros=reserved_cost,
            limits=index.limits(caller),
        )
        if self.spans is None:
            reservation = await reserve
        else:
            with self.spans.quota():
                reservation = await reserve
        draft.reservation = reservation
        return draft, reservation

    async def _attempt(
        self,
        plan: RoutePlan,
        draft: UsageDraft,
        call: Callable[[Provider, Upstream], Awaitable[T]],
    ) -> T:
        """Try the plan's candidates in order, with retries; raise the last error."""
        policy = self.options.retry
        last: UpstreamError | None = None
        waited = 0.0
        tried = 0
        try:
            for position, candidate in enumerate(plan.attempts()):
                breaker = self.breakers.get(candidate.backend_id)
                retries = 0
                while tried < policy.max_attempts and breaker.allow():
                    tried += 1
                    self._mark(draft, candidate, tried, position)
                    try:
                        result = await self._call_one(candidate, call, draft)
                    except UpstreamError as exc:
                        last = exc
                        if not exc.retryable:
                            breaker.success()  # the backend answered; the request was bad
                            raise
                        breaker.failure()
                        if not policy.retry_same_backend(exc, retries):
                            break
                        delay = policy.backoff(retries, exc)
                        if waited + delay > policy.budget_s:
                            break
                        await asyncio.sleep(delay)
                        waited += delay
                        retries += 1
                    except BaseException:
                        breaker.release()
                        raise
                    else:
                        breaker.success()
                        return result
            raise last or NoHealthyBackend(
                f"No healthy backend for '{plan.alias}': every circuit is open; retry shortly."
            )
        except HyperInferError as exc:
            self._failed(draft, exc)
            raise
        except asyncio.CancelledError:  # the caller went away mid-call: charge the prompt
            draft.status, draft.http_status, draft.error_type = "cancelled", 499, "client_closed"
            draft.completion_tokens = 0
            self._finish(draft)
            raise

    async def _call_one(
        self,
        candidate: Candidate,
        call: Callable[[Provider, Upstream], Awaitable[T]],
        draft: UsageDraft,
    ) -> T:
        if candidate.credentials_error is not None:
            raise UpstreamError(
                f"backend {candidate.backend.name or candidate.backend_id}: "
                f"credentials unavailable ({candidate.credentials_error})",
                code="upstream_credentials",
            )
        provider = self.providers.get(candidate.backend.kind)
        if self.spans is None:
            return await call(provider, candidate.upstream)
        operation = "embeddings" if draft.api == "embeddings" else "chat"
        backend = candidate.backend
        with self.spans.upstream(
            operation,
            backend.kind,
            candidate.upstream.model,
            backend.base_url,
            backend.id,
            draft.attempts,
        ):
            return await call(provider, candidate.upstream)

    @staticmethod
    def _mark(draft: UsageDraft, candidate: Candidate, tried: int, position: int) -> None:
        draft.attempts = tried
        draft.fallback_used = position > 0
        draft.backend_id = candidate.backend_id
        draft.provider = candidate.backend.kind
        draft.model = candidate.upstream.model

    def _failed(self, draft: UsageDraft, exc: HyperInferError) -> None:
        draft.status, draft.http_status = "error", exc.status
        draft.error_type = exc.code or exc.error_type
        draft.prompt_tokens = draft.completion_tokens = 0  # the upstream produced nothing
        self._finish(draft)

    def _finish(self, draft: UsageDraft) -> None:
        draft.finished_at = time.time()
        draft.latency_ms = (draft.finished_at - draft.started_at) * 1000
        if draft.price is None:
            draft.price = (
                self.index.price(draft.model, draft.alias) if not draft.cache_hit else None
            )
        if self.spans is not None:
            self.spans.usage(draft)  # its traceparent goes in the usage event
        self.recorder.record(draft)
        for observer in self.observers:
            observer(draft)

    # --- the response cache -----------------------------------------------------------------
    def _cache_key(
        self, caller: Caller, request: dict[str, Any], ttl_s: float | None
    ) -> str | None:
        if ttl_s is None or self.cache is None or self.cache_key is None:
            return None
        return self.cache_key(caller.team_id, request)

    async def _cached(self, key: str) -> dict[str, Any] | None:
        assert self.cache is not None
        try:
            return await self.cache.get(key)
        except Exception:  # a cache failure is a miss
            return None

    def _cache_hit(
        self, cached: dict[str, Any], draft: UsageDraft, reservation: Reservation
    ) -> Outcome:
        draft.cache_hit = True
        draft.prompt_tokens = draft.completion_tokens = 0  # nothing was generated
        draft.model = str(cached.get("model", ""))
        self._finish(draft)
        return Outcome(cached, draft.request_id, reservation, draft)


class ChatStream:
    """An open upstream stream: iterate it for chunks; ``aclose`` when done or abandoned."""

    shape: Shape = "openai"

    def __init__(
        self,
        plane: DataPlane,
        draft: UsageDraft,
        headers: dict[str, str],
        chunks: AsyncIterator[dict[str, Any]],
        first: dict[str, Any],
        wants_usage: bool,
        breaker: CircuitBreaker,
    ) -> None:
        self._plane = plane
        self.draft = draft
        self.headers = headers
        self._chunks = chunks
        self._first: dict[str, Any] | None = first
        self._wants_usage = wants_usage
        self._breaker = breaker
        self.done = False

    @property
    def request_id(self) -> str:
        return self.draft.request_id

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._first is not None:
                chunk, self._first = self._first, None
            else:
                chunk = await self._next()
            self._meter(chunk)
            visible = self._visible(chunk)
            if visible is not None:
                return visible

    async def _next(self) -> dict[str, Any]:
        if self.done:
            raise StopAsyncIteration
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._end("ok")
            raise
        except HyperInferError as exc:
            self._breaker.failure()
            self._end("error", exc)
            raise

    def _meter(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            _take_usage(self.draft, usage)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.draft.completion_texts.append(content)
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str) and arguments:
                    self.draft.completion_texts.append(arguments)

    def _visible(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """What the caller sees: usage only if it asked for it (we always ask upstream)."""
        if self._wants_usage or "usage" not in chunk:
            return chunk
        del chunk["usage"]
        return chunk if chunk.get("choices") else None

    def _end(self, status: str, exc: HyperInferError | None = None) -> None:
        if self.done:
            return
        self.done = True
        draft = self.draft
        if status == "ok":
            self._breaker.success()
        elif exc is not None:
            draft.status, draft.http_status = "error", exc.status
            draft.error_type = exc.code or exc.error_type
        else:
            draft.status, draft.http_status, draft.error_type = "cancelled", 499, "client_closed"
        self._plane._finish(draft)

    async def aclose(self) -> None:
        """End the stream; if it had not ended, it is recorded (and charged) as cancelled."""
        if not self.done:
            self._end("cancelled")
        with contextlib.suppress(Exception):
            await self._chunks.aclose()  # type: ignore[attr-defined]


class MessagesStream(ChatStream):
    """A Messages-native upstream's stream: Anthropic's event dicts, every one passed on.

    Metered as they pass: the prompt tokens from ``message_start`` (exact at once), the
    completion tokens from ``message_delta`` (the final count); a stream cut before then
    is charged for the text, thinking and tool input that had passed.
    """

    shape: Shape = "anthropic"

    def _meter(self, chunk: dict[str, Any]) -> None:
        usage = event_usage(chunk)
        if usage is not None:
            prompt, completion = charged_tokens(usage)
            if prompt is not None:
                self.draft.prompt_tokens = prompt
            if completion is not None and chunk.get("type") == "message_delta":
                self.draft.completion_tokens = completion
        text = event_text(chunk)
        if text:
            self.draft.completion_texts.append(text)

    def _visible(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        return chunk


def new_request_id() -> str:
    """128 random bits, hex: the id of a request's reservation and usage event."""
    return os.urandom(16).hex()


def _require_messages(request: dict[str, Any]) -> None:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", code="invalid_messages")
    if not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("each message must be an object", code="invalid_messages")


def _chat_call(
    request: dict[str, Any], anthropic_body: dict[str, Any] | None, beta: str | None
) -> Callable[[Provider, Upstream], Awaitable[ShapedAnswer]]:
    """One candidate's call: the Messages body to a Messages-native provider, else ``request``."""

    async def call(provider: Provider, upstream: Upstream) -> ShapedAnswer:
        if anthropic_body is not None and isinstance(provider, MessagesProvider):
            return "anthropic", await provider.messages(upstream, anthropic_body, beta)
        return "openai", await provider.chat(upstream, request)

    return call


def _open_stream(
    provider: Provider,
    upstream: Upstream,
    request: dict[str, Any],
    anthropic_body: dict[str, Any] | None,
    beta: str | None,
) -> tuple[Shape, AsyncIterator[dict[str, Any]]]:
    if anthropic_body is not None and isinstance(provider, MessagesProvider):
        return "anthropic", provider.messages_stream(upstream, anthropic_body, beta)
    return "openai", provider.chat_stream(upstream, request)


def _take_answer(draft: UsageDraft, shape: Shape, body: dict[str, Any]) -> None:
    """The answer's tokens (when reported) and generated texts (to count them if not)."""
    if shape == "openai":
        _take_usage(draft, body.get("usage"))
        draft.completion_texts = _answer_texts(body)
        return
    prompt, completion = charged_tokens(body.get("usage"))
    if prompt is not None and completion is not None:
        draft.prompt_tokens, draft.completion_tokens = prompt, completion
    draft.completion_texts = content_texts(body.get("content"))


def _max_tokens(request: dict[str, Any], options: DataPlaneOptions) -> int:
    value = request.get("max_completion_tokens") or request.get("max_tokens")
    if value is None:
        return options.default_max_tokens
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2**31:
        raise InvalidRequest("max_tokens must be a non-negative integer", code="invalid_max_tokens")
    return value


def _wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _take_usage(draft: UsageDraft, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if _is_count(prompt) and _is_count(completion):  # else counted (a usage event must be valid)
        draft.prompt_tokens, draft.completion_tokens = prompt, completion


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**53


def _answer_texts(body: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        for call in message.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments")
            if isinstance(arguments, str):
                texts.append(arguments)
    return texts


def _dearest(index: GovernanceIndex, plan: RoutePlan) -> Any:
    """The price a reservation is sized with: the dearest candidate (a fallback may answer)."""
    best = None
    for candidate in plan.candidates:
        price = index.price(candidate.upstream.model, plan.alias)
        if price is not None and (
            best is None or price.output_per_mtok_micros > best.output_per_mtok_micros
        ):
            best = price
    return best
