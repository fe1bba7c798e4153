"""The thick client: the ingress's governance, in process, with no gateway hop.

::

    async with HyperInferClient(redis_url="redis://...", api_key="hi-...") as client:
        answer = await client.chat({"model": "gpt-small", "messages": [...]})
        async for chunk in client.chat_stream({"model": "gpt-small", "messages": [...]}):
            ...
        vectors = await client.embeddings({"model": "embed", "input": ["a", "b"]})

It runs the same ``DataPlane`` as the ingress: the key is checked against the local
config snapshot, the alias resolved from the local routing table, quota reserved with
one Redis call (shared with every ingress replica), the provider called directly, and
the usage event (``origin="client"``) emitted in the background. Errors are the
``hyperinfer.client.errors`` tree (``RateLimited``, ``ModelNotFound``, ...).

Upstream credentials are decrypted with ``credentials_key`` (default: the environment
variable ``HYPERINFER_CREDENTIALS_KEY`` when set). Given ``tracer=`` (OpenTelemetry), a
request adds its quota, upstream-attempt and usage-event spans under the application's
current span (``hyperinfer.client.spans``); without one, it makes none.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from hyperinfer.client.config_agent import ConfigAgent
from hyperinfer.client.credentials import ENV_VAR, CredentialsCipher
from hyperinfer.client.dataplane import (
    CacheKey,
    ChatStream,
    DataPlane,
    DataPlaneOptions,
    ResponseCacheHook,
    hot_path_redis_pool,
)
from hyperinfer.client.governance import Caller, GovernanceIndex
from hyperinfer.client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    EmbeddingResponse,
    as_request,
)
from hyperinfer.client.providers import ProviderRegistry
from hyperinfer.client.quota import QuotaLimiter
from hyperinfer.client.resp import RespClient
from hyperinfer.client.routing_table import RoutingTableAgent
from hyperinfer.client.usage import UsageRecorder
from opentelemetry import trace
from pydantic import BaseModel

Request = BaseModel | Mapping[str, Any]


class HyperInferClient:
    def __init__(
        self,
        redis_url: str,
        api_key: str,
        *,
        credentials_key: str | None = None,
        node_id: str | None = None,
        options: DataPlaneOptions | None = None,
        cache: ResponseCacheHook | None = None,
        cache_key: CacheKey | None = None,
        wait_config_s: float = 5.0,
        require_budgets_loaded: bool = True,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.api_key = api_key
        self._wait_config_s = wait_config_s
        self._watch_redis = aioredis.Redis.from_url(redis_url)
        self._redis = hot_path_redis_pool(redis_url)
        self._wire = RespClient(redis_url)  # the reserve on every request, usage batches
        node = node_id or f"client-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        limiter = QuotaLimiter(
            self._redis,
            node_id=node,
            require_budgets_loaded=require_budgets_loaded,
            wire=self._wire,
        )
        key = credentials_key or os.environ.get(ENV_VAR) or None
        self.dataplane = DataPlane(
            config=ConfigAgent(self._watch_redis),
            routing=RoutingTableAgent(self._watch_redis),
            limiter=limiter,
            providers=ProviderRegistry(),
            recorder=UsageRecorder(self._wire, limiter, source="client"),
            cipher=CredentialsCipher(key) if key else None,
            cache=cache,
            cache_key=cache_key,
            options=options or DataPlaneOptions(origin="client"),
            tracer=tracer,
        )
        self._started = False
        self._auth: tuple[GovernanceIndex, Caller] | None = None

    async def start(self) -> HyperInferClient:
        """Load config and routing (waits up to ``wait_config_s``); idempotent."""
        if not self._started:
            self._started = True
            await self.dataplane.start(self._wait_config_s)
        return self

    async def aclose(self) -> None:
        """Flush pending usage events, then close everything."""
        if self._started:
            await self.dataplane.stop()
            self._started = False
        await self._wire.aclose()
        await self._redis.aclose()
        await self._watch_redis.aclose()

    async def __aenter__(self) -> HyperInferClient:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def chat_raw(
        self, request: Request, *, cache_ttl_s: float | None = None
    ) -> dict[str, Any]:
        """One chat completion as the plain OpenAI dict (no model validation)."""
        if not self._started:
            await self.start()
        plane = self.dataplane
        outcome = await plane.chat(self._caller(), as_request(request), cache_ttl_s=cache_ttl_s)
        return outcome.body

    def _caller(self) -> Caller:
        """This client's key, authenticated once per config snapshot (expiry every time)."""
        index = self.dataplane.index
        if self._auth is None or self._auth[0] is not index:
            self._auth = (index, self.dataplane.authenticate(self.api_key))
        caller = self._auth[1]
        if caller.expires_at is not None and time.time() >= caller.expires_at:
            return self.dataplane.authenticate(self.api_key)  # raises: expired
        return caller

    async def chat(self, request: Request, *, cache_ttl_s: float | None = None) -> ChatCompletion:
        """One chat completion (``stream`` in the request is ignored: see ``chat_stream``)."""
        return ChatCompletion.model_validate(await self.chat_raw(request, cache_ttl_s=cache_ttl_s))

    def chat_stream(self, request: Request) -> CompletionStream:
        """``async for chunk in client.chat_stream(...)`` (or ``async with`` it)."""
        return CompletionStream(self, as_request(request))

    async def embeddings(self, request: Request) -> EmbeddingResponse:
        await self.start()
        caller = self.dataplane.authenticate(self.api_key)
        outcome = await self.dataplane.embeddings(caller, as_request(request))
        return EmbeddingResponse.model_validate(outcome.body)

    async def models(self) -> list[str]:
        """The aliases this key may use."""
        await self.start()
        return self.dataplane.models(self.dataplane.authenticate(self.api_key))

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every usage event so far is in Redis."""
        await self.dataplane.recorder.drain(timeout_s)


class CompletionStream:
    """Chunks of one streamed completion; opening happens on the first iteration.

    Leaving early (``break``, an exception, ``aclose``) closes the upstream stream and
    records the request as cancelled, charged for the tokens received so far.
    """

    def __init__(self, client: HyperInferClient, request: dict[str, Any]) -> None:
        self._client = client
        self._request = {**request, "stream": True}
        self._stream: ChatStream | None = None

    @property
    def request_id(self) -> str | None:
        return self._stream.request_id if self._stream is not None else None

    def __aiter__(self) -> CompletionStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._stream is None:
            await self._client.start()
            plane = self._client.dataplane
            caller = plane.authenticate(self._client.api_key)
            self._stream = await plane.open_chat_stream(caller, self._request)
        try:
            chunk = await self._stream.__anext__()
        except BaseException:
            await self._stream.aclose()
            raise
        return ChatCompletionChunk.model_validate(chunk)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> CompletionStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
