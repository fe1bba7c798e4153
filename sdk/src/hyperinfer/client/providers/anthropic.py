"""Anthropic's Messages API behind OpenAI chat shapes (translation in ``anthropic_format``).

``chat``/``chat_stream`` translate an OpenAI request to Messages and the answer back;
``messages``/``messages_stream`` (``MessagesProvider``) send a Messages body as it came
and hand back Anthropic's answer and stream events untranslated (the ingress's
``/v1/messages`` in front of an Anthropic backend). The translating pair is built on the
native one.

``BackendConfig.base_url`` is the API root without ``/v1`` (like the Anthropic SDK's
``base_url``): ``https://api.anthropic.com``. The key goes in ``x-api-key``; requests
carry ``anthropic-version``. Anthropic has no embeddings API: ``embeddings`` raises an
``UpstreamStatusError`` 400 (not retried on another candidate... unless it serves them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from hyperinfer.client.anthropic_format import (
    ChunksFromEvents,
    from_messages_response,
    to_messages_request,
)
from hyperinfer.client.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from hyperinfer.client.providers.base import (
    HttpTransport,
    PoolLimits,
    Upstream,
    parse_json_object,
    raise_for_status,
    translate_aiohttp_errors,
)
from hyperinfer.client.providers.sse import sse_events

ANTHROPIC_API = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# an ``error`` event mid-stream carries its type; these are worth another backend
RETRYABLE_STREAM_ERRORS = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429}


class AnthropicProvider:
    kind = "anthropic"

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self._http = HttpTransport(limits)

    def _url(self, upstream: Upstream) -> str:
        return (upstream.base_url or ANTHROPIC_API) + "/v1/messages"

    def _headers(self, upstream: Upstream, beta: str | None = None) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "anthropic-version": API_VERSION,
            **upstream.extra_headers,
        }
        if upstream.api_key:
            headers["x-api-key"] = upstream.api_key
        if beta:  # the caller's beta features, beside any the backend is configured with
            configured = headers.get("anthropic-beta")
            headers["anthropic-beta"] = f"{configured},{beta}" if configured else beta
        return headers

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        body = to_messages_request({**request, "stream": False}, upstream.model, DEFAULT_MAX_TOKENS)
        return from_messages_response(await self.messages(upstream, body))

    async def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        body = to_messages_request({**request, "stream": True}, upstream.model, DEFAULT_MAX_TOKENS)
        translator = ChunksFromEvents()
        async with contextlib.aclosing(self.messages_stream(upstream, body)) as events:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk

    async def messages(
        self, upstream: Upstream, body: dict[str, Any], beta: str | None = None
    ) -> dict[str, Any]:
        """``body`` as is but for ``model``; Anthropic's answer as is."""
        sent = orjson.dumps({**body, "model": upstream.model})
        status, headers, raw = await self._http.post(
            upstream, self._url(upstream), sent, self._headers(upstream, beta)
        )
        raise_for_status(upstream, status, headers, raw)
        return parse_json_object(upstream, raw)

    async def messages_stream(
        self, upstream: Upstream, body: dict[str, Any], beta: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``body`` as is but for ``model`` and ``stream``; every event as Anthropic sent it."""
        sent = orjson.dumps({**body, "model": upstream.model, "stream": True})
        async with self._http.stream(
            upstream, self._url(upstream), sent, self._headers(upstream, beta)
        ) as response:
            if response.status >= 300:
                raise_for_status(upstream, response.status, response.headers, await response.read())
            with translate_aiohttp_errors(upstream):
                async for event in _events(upstream, response.chunks):
                    yield event

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        name = upstream.backend.name or upstream.backend.id
        raise UpstreamStatusError(400, f"backend {name} (Anthropic) has no embeddings API")

    async def aclose(self) -> None:
        await self._http.aclose()


async def _events(upstream: Upstream, body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The stream's events through ``message_stop``; an ``error`` event raises."""
    name = upstream.backend.name or upstream.backend.id
    async for event in sse_events(body):
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"backend {name} sent a malformed stream event") from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"backend {name} sent a stream event that is no object")
        if data.get("type") == "error":
            raise _stream_error(name, data.get("error"))
        yield data
        if data.get("type") == "message_stop":
            return
    raise UpstreamProtocolError(f"backend {name} ended the stream before message_stop")


def _stream_error(name: str, error: Any) -> UpstreamError:
    error = error if isinstance(error, dict) else {}
    kind, message = str(error.get("type", "api_error")), str(error.get("message", "error"))
    status = RETRYABLE_STREAM_ERRORS.get(kind, 400 if "invalid" in kind else 500)
    return UpstreamStatusError(status, f"backend {name} failed mid-stream: {message}", code=kind)
