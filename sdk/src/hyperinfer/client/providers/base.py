"""What every provider adapter is: the ``Provider`` protocol and the ``Upstream`` it calls.

The data plane speaks OpenAI's chat shapes internally. A provider takes an OpenAI
``chat.completions`` request dict and returns an OpenAI response dict (or, streaming,
OpenAI ``chat.completion.chunk`` dicts), translating to and from its own wire format.

Conventions every provider keeps:

- ``request["model"]`` is what the caller asked for (an alias); send ``upstream.model``.
- Everything in the request the provider does not translate is forwarded as is
  (OpenAI-compatible upstreams) or dropped (others); nothing is validated here.
- The result's ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) is
  exact when the upstream reported it and absent otherwise: the data plane then counts.
  A stream's last chunk carries ``usage`` when known.
- Errors: only ``hyperinfer.client.errors.UpstreamError`` subclasses leave a provider
  (``raise_for_status`` and ``translate_transport_errors`` below do the mapping).
- A provider owns one connection pool, closed by ``aclose``; construction never does I/O.
  ``HttpTransport`` (aiohttp) is the pool to use: measured here, an httpx ``AsyncClient``
  falls from ~1,200 to ~400 requests/s at 32 concurrent requests (its pool's bookkeeping)
  while aiohttp goes from ~3,200 to ~5,000, and the ingress must pass 1,500 requests/s
  with hundreds of streams open. ``pooled_http_client`` (httpx) remains for adapters that
  need httpx.

A provider module exposes a class whose constructor takes one ``PoolLimits``; the
registry (``hyperinfer.client.providers``) builds it the first time its ``kind`` is used.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
import types
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp
import httpx
import orjson
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.providers.http1 import Http1Pool
from hyperinfer.contracts.config.v1 import BackendConfig

NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})


@dataclass(frozen=True)
class Upstream:
    """One call target: a backend of the config snapshot and the model to ask there."""

    backend: BackendConfig
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    extra_headers: Mapping[str, str] = field(default_factory=lambda: NO_HEADERS)
    """More headers from the backend's decrypted credentials (e.g. an org id)."""

    @property
    def base_url(self) -> str:
        return self.backend.base_url.rstrip("/")


@runtime_checkable
class Provider(Protocol):
    """A model provider's wire format behind OpenAI's chat shapes."""

    kind: str
    """The ``BackendConfig.kind`` this provider serves."""

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        """One ``chat.completions`` call; the OpenAI response dict."""
        ...

    def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The ``chat.completion.chunk`` dicts of a streamed call; the last carries usage."""
        ...

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        """One ``embeddings`` call; the OpenAI response dict."""
        ...

    async def aclose(self) -> None:
        """Close the provider's connection pool."""
        ...


@runtime_checkable
class MessagesProvider(Protocol):
    """A provider whose upstream speaks Anthropic's Messages API natively.

    For a request that arrived in Messages shape (the ingress's ``/v1/messages``) the
    data plane calls these instead of ``chat``/``chat_stream``: the caller's body goes
    upstream as it came (only ``model``, and ``stream``, set) and the answer comes back
    untranslated, so what OpenAI's shapes cannot carry (thinking, ``cache_control``,
    cache usage, ``top_k``, ``metadata``, documents) survives.
    """

    async def messages(
        self, upstream: Upstream, body: dict[str, Any], beta: str | None = None
    ) -> dict[str, Any]:
        """One Messages call with ``body``; the upstream's Messages response dict.

        ``beta``: the caller's ``anthropic-beta`` header, sent on (beta features need it).
        """
        ...

    def messages_stream(
        self, upstream: Upstream, body: dict[str, Any], beta: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The stream's event dicts, ``message_start`` to ``message_stop`` (``error`` raises)."""
        ...


@dataclass(frozen=True)
class PoolLimits:
    """The connection pool of one provider: sized for hundreds of concurrent streams."""

    max_connections: int = 1024
    max_keepalive_connections: int = 512
    keepalive_expiry_s: float = 60.0
    connect_timeout_s: float = 5.0


def pooled_http_client(limits: PoolLimits, **kwargs: Any) -> httpx.AsyncClient:
    """One keep-alive HTTP/1.1 pool for one provider (timeouts are set per request)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry_s,
        ),
        timeout=httpx.Timeout(60.0, connect=limits.connect_timeout_s),
        http2=False,
        follow_redirects=False,
        trust_env=False,
        **kwargs,
    )


def request_timeout(upstream: Upstream, limits: PoolLimits) -> httpx.Timeout:
    """The backend's timeout for every read (and the pool wait); connect is capped."""
    return httpx.Timeout(
        upstream.timeout_s,
        connect=min(limits.connect_timeout_s, upstream.timeout_s),
        pool=upstream.timeout_s,
    )


@contextlib.contextmanager
def translate_transport_errors(upstream: Upstream) -> Iterator[None]:
    """Turn httpx's transport failures into ``UpstreamError`` subclasses."""
    name = upstream.backend.name or upstream.backend.id
    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            raise UpstreamConnectError(f"backend {name}: connect timed out") from None
        raise UpstreamTimeout(
            f"backend {name} did not answer within {upstream.timeout_s:g}s"
        ) from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        raise UpstreamConnectError(f"backend {name} unreachable: {_reason(exc)}") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamProtocolError(
            f"backend {name} broke the connection: {_reason(exc)}"
        ) from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"backend {name} failed: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``, if given."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def raise_for_status(
    upstream: Upstream, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Raise ``UpstreamStatusError`` for a non-2xx answer, with the upstream's message."""
    if status < 300:
        return
    name = upstream.backend.name or upstream.backend.id
    message, code = error_message(body)
    raise UpstreamStatusError(
        status,
        f"backend {name} answered {status}: {message}",
        code=code,
        retry_after_s=retry_after_seconds(headers),
    )


def error_message(body: bytes) -> tuple[str, str | None]:
    """The message (and code) of an OpenAI- or Anthropic-shaped error body, else its text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace") or "no body", None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message", "error"))[:500], str(code) if code else None
    if isinstance(error, str):
        return error[:500], None
    return body[:200].decode(errors="replace"), None


def parse_json_object(upstream: Upstream, body: bytes) -> dict[str, Any]:
    """The upstream's JSON object, or ``UpstreamProtocolError``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"backend {upstream.backend.name or upstream.backend.id} sent malformed JSON"
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(
            f"backend {upstream.backend.name or upstream.backend.id} sent JSON that is not an "
            "object"
        )
    return parsed


@dataclass(slots=True)
class StreamedResponse:
    status: int
    headers: Mapping[str, str]
    chunks: AsyncIterator[bytes]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])


class HttpTransport:
    """One keep-alive HTTP/1.1 pool for one provider (``http1.Http1Pool``).

    Non-streaming calls have a hard deadline of ``upstream.timeout_s``; streams time out
    when no byte arrives for ``timeout_s`` (the first included). Errors name the backend.
    """

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._pool: Http1Pool | None = None

    def _client(self) -> Http1Pool:
        if self._pool is None:
            self._pool = Http1Pool(
                max_connections=self.limits.max_connections,
                max_idle_per_host=self.limits.max_keepalive_connections,
                keepalive_expiry_s=self.limits.keepalive_expiry_s,
                connect_timeout_s=self.limits.connect_timeout_s,
            )
        return self._pool

    async def post(
        self, upstream: Upstream, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST and read the whole answer: ``(status, headers, body)``."""
        label = f"backend {upstream.backend.name or upstream.backend.id}"
        return await self._client().post(url, body, headers, upstream.timeout_s, label)

    @contextlib.asynccontextmanager
    async def stream(
        self, upstream: Upstream, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamedResponse]:
        """POST and hand over the answer as it arrives (the connection is freed on exit)."""
        label = f"backend {upstream.backend.name or upstream.backend.id}"
        async with self._client().stream(url, body, headers, upstream.timeout_s, label) as response:
            yield StreamedResponse(response.status, response.headers, response.chunks())

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


class AiohttpTransport:
    """One keep-alive aiohttp pool for one provider, with errors as ``UpstreamError``s.

    The transport used before ``HttpTransport`` (kept for ``bench/dataplane_upstream.py``,
    which measures both side by side).

    The session is made on first use (inside the running event loop). Non-streaming
    calls have a hard deadline of ``upstream.timeout_s``; streams time out when no byte
    arrives for ``timeout_s`` (the first included).
    """

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                limit_per_host=0,
                keepalive_timeout=self.limits.keepalive_expiry_s,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, trust_env=False
            )
        return self._session

    def _timeout(self, upstream: Upstream, whole: bool) -> aiohttp.ClientTimeout:
        connect = min(self.limits.connect_timeout_s, upstream.timeout_s)
        if whole:
            return aiohttp.ClientTimeout(total=upstream.timeout_s, sock_connect=connect)
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=upstream.timeout_s)

    async def post(
        self, upstream: Upstream, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST and read the whole answer: ``(status, headers, body)``."""
        with translate_aiohttp_errors(upstream):
            async with self._client().post(
                url, data=body, headers=headers, timeout=self._timeout(upstream, True)
            ) as response:
                return response.status, response.headers, await response.read()

    @contextlib.asynccontextmanager
    async def stream(
        self, upstream: Upstream, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamedResponse]:
        """POST and hand over the answer as it arrives (the connection is freed on exit)."""
        with translate_aiohttp_errors(upstream):
            async with self._client().post(
                url, data=body, headers=headers, timeout=self._timeout(upstream, False)
            ) as response:
                yield StreamedResponse(
                    response.status, response.headers, response.content.iter_any()
                )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@contextlib.contextmanager
def translate_aiohttp_errors(upstream: Upstream) -> Iterator[None]:
    """Turn aiohttp's transport failures into ``UpstreamError`` subclasses."""
    name = upstream.backend.name or upstream.backend.id
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            raise UpstreamConnectError(f"backend {name}: connect timed out") from None
        raise UpstreamTimeout(
            f"backend {name} did not answer within {upstream.timeout_s:g}s"
        ) from None
    except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
        raise UpstreamConnectError(f"backend {name} unreachable: {_reason(exc)}") from None
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
        aiohttp.ClientOSError,
    ) as exc:
        raise UpstreamProtocolError(
            f"backend {name} broke the connection: {_reason(exc)}"
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"backend {name} failed: {_reason(exc)}") from None
