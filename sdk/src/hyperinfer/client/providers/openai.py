"""OpenAI and OpenAI-compatible servers (vLLM, LM Studio, llama.cpp server, ...).

The request is forwarded as is with ``model`` set to the upstream's model name; only
streams are touched: ``stream_options.include_usage`` is always asked for so the last
chunk carries exact usage (the data plane hides it from a caller that did not ask).

``BackendConfig.base_url`` is the API root the paths hang off, like the OpenAI SDK's
``base_url``: ``https://api.openai.com/v1``, ``http://vllm:8000/v1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from hyperinfer.client.errors import UpstreamError, UpstreamProtocolError
from hyperinfer.client.providers.base import (
    HttpTransport,
    PoolLimits,
    Upstream,
    parse_json_object,
    raise_for_status,
    translate_aiohttp_errors,
)
from hyperinfer.client.providers.sse import sse_events

OPENAI_API = "https://api.openai.com/v1"
DONE = "[DONE]"


class OpenAIProvider:
    kind = "openai"
    default_base_url = OPENAI_API

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self._http = HttpTransport(limits)

    def _url(self, upstream: Upstream, path: str) -> str:
        return (upstream.base_url or self.default_base_url) + path

    def _headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {"content-type": "application/json", **upstream.extra_headers}
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        return headers

    async def _post_json(
        self, upstream: Upstream, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        status, headers, raw = await self._http.post(
            upstream, self._url(upstream, path), orjson.dumps(body), self._headers(upstream)
        )
        raise_for_status(upstream, status, headers, raw)
        return parse_json_object(upstream, raw)

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        body = {**request, "model": upstream.model}
        body.pop("stream", None)
        body.pop("stream_options", None)
        return await self._post_json(upstream, "/chat/completions", body)

    async def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        options = request.get("stream_options")
        options = {**options, "include_usage": True} if isinstance(options, dict) else None
        body = {
            **request,
            "model": upstream.model,
            "stream": True,
            "stream_options": options or {"include_usage": True},
        }
        url = self._url(upstream, "/chat/completions")
        async with self._http.stream(
            upstream, url, orjson.dumps(body), self._headers(upstream)
        ) as response:
            if response.status >= 300:
                raise_for_status(upstream, response.status, response.headers, await response.read())
            with translate_aiohttp_errors(upstream):
                async for chunk in _chunks(upstream, response.chunks):
                    yield chunk

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(upstream, "/embeddings", {**request, "model": upstream.model})

    async def aclose(self) -> None:
        await self._http.aclose()


class OpenAICompatibleProvider(OpenAIProvider):
    """vLLM, LM Studio, llama.cpp's server...: the same wire format at a configured URL."""

    kind = "openai_compatible"
    default_base_url = "http://127.0.0.1:8000/v1"


async def _chunks(upstream: Upstream, body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The chunk objects of an OpenAI SSE stream; it must end with ``[DONE]``."""
    name = upstream.backend.name or upstream.backend.id
    async for event in sse_events(body):
        if event.data == DONE:
            return
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"backend {name} sent a malformed stream event") from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(f"backend {name} sent a stream event that is no object")
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamError(f"backend {name} failed mid-stream: {message}")
        yield chunk
    raise UpstreamProtocolError(f"backend {name} ended the stream before [DONE]")
