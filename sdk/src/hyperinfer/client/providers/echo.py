"""The built-in ``echo`` backend: deterministic, instant, no network.

It answers ``echo: <the last user message>`` (cut at ``max_tokens`` cl100k tokens), so a
fresh install routes, meters and bills real requests with no provider key. The model
name it reports is ``echo/<model>`` so nobody mistakes it for a real model. Usage is
counted with cl100k_base (exact by that tokenizer). When the request demands a tool
(``tool_choice`` ``required`` or a named function) it calls it with ``{}``. Embeddings
are deterministic hash vectors (``dimensions``, default 16).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from hyperinfer.client.providers.base import PoolLimits, Upstream
from hyperinfer.client.tokens import (
    cl100k,
    count_input_tokens,
    count_prompt_tokens,
    count_tokens,
    message_text,
)

DEFAULT_DIMENSIONS = 16


class EchoProvider:
    kind = "echo"

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        text, finish, call = _answer(request)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        prompt = count_prompt_tokens(request.get("messages"))
        completion = count_tokens(text) if not call else 1
        return {
            "id": _id(request),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"echo/{upstream.model}",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": _usage(prompt, completion),
        }

    async def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        whole = await self.chat(upstream, request)
        base = {
            "id": whole["id"],
            "object": "chat.completion.chunk",
            "created": whole["created"],
            "model": whole["model"],
        }
        choice = whole["choices"][0]
        message = choice["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            yield chunk({"tool_calls": [{"index": 0, **call}]})
        else:
            for piece in _pieces(message["content"] or ""):
                yield chunk({"content": piece})
        yield chunk({}, choice["finish_reason"])
        yield {**base, "choices": [], "usage": whole["usage"]}

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        size = request.get("dimensions")
        size = size if isinstance(size, int) and 0 < size <= 4096 else DEFAULT_DIMENSIONS
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(t), size)}
            for i, t in enumerate(texts)
        ]
        tokens = count_input_tokens(inputs)
        return {
            "object": "list",
            "data": data,
            "model": f"echo/{upstream.model}",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def aclose(self) -> None:
        return None


def _answer(request: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    messages = request.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = "echo: " + (message_text(users[-1].get("content")) if users else "")
    call = _forced_call(request)
    if call is not None:
        return "", "tool_calls", call
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and limit >= 0:
        encoding = cl100k()
        if encoding is not None:
            tokens = encoding.encode_ordinary(text)
            if len(tokens) > limit:
                return _decode(text, limit), "length", None
    return text, "stop", None


def _decode(text: str, limit: int) -> str:
    """The longest prefix of ``text`` (in words) within ``limit`` tokens."""
    words = text.split(" ")
    while words and count_tokens(" ".join(words)) > limit:
        words.pop()
    return " ".join(words)


def _forced_call(request: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict)]
    choice = request.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name", name)
    call_id = "call_" + hashlib.sha256(name.encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _id(request: dict[str, Any]) -> str:
    digest = hashlib.sha256(repr(request.get("messages")).encode()).hexdigest()
    return f"chatcmpl-echo-{digest[:20]}"


def _vector(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < size:
        digest += hashlib.sha256(digest).digest()
    return [round((b - 127.5) / 127.5, 6) for b in digest[:size]]
