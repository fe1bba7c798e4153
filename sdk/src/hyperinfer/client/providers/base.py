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
- A provider owns one pooled HTTP client (``pooled_http_client``), opened at construction
  and closed by ``aclose``; construction never does I/O.

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

import httpx
import orjson
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
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


def retry_after_seconds(headers: httpx.Headers) -> float | None:
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


def raise_for_status(upstream: Upstream, status: int, headers: httpx.Headers, body: bytes) -> None:
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
