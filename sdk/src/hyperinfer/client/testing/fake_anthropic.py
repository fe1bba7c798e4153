"""Anthropic's Messages API for the fake upstream: ``POST /v1/messages``.

Faithful where clients look: ``anthropic-version`` required, ``max_tokens`` required,
content blocks (text, tool_use, tool_result), ``stop_reason`` (end_turn, max_tokens,
tool_use), and the stream's event sequence: ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` (``text_delta`` / ``input_json_delta``),
``content_block_stop``, ``message_delta`` (stop reason + output usage),
``message_stop``. Errors are ``{"type": "error", "error": {"type", "message"}}``.

Extended thinking: with ``thinking: {"type": "enabled", "budget_tokens": n}`` (n at
least 1024 and below ``max_tokens``, else 400) the answer starts with a ``thinking``
block (``thinking: <the last user text>`` and a signature), streamed as
``thinking_delta`` and ``signature_delta``; its words count as output tokens. Prompt
caching: the texts up to the last block carrying ``cache_control`` (system, then
messages, in order) are the cached prefix; its tokens are reported as
``cache_creation_input_tokens`` the first time the fake sees it (per model) and as
``cache_read_input_tokens`` after, and ``input_tokens`` counts only the rest, as
Anthropic's does (no minimum cacheable length here).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from hyperinfer.client.testing.fake_core import (
    FakeState,
    Parsed,
    WireError,
    bearer_or_x_api_key,
    parse_json_body,
    serve_exchange,
    sse,
)
from hyperinfer.client.testing.fake_model import (
    Answer,
    Prompt,
    ToolSpec,
    count_tokens,
    stream_pieces,
)
from hyperinfer.client.testing.http_server import HttpRequest, HttpResponder

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
MIN_THINKING_BUDGET = 1024


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def block_text(content: Any) -> str:
    """The text of a message's content: a string, or its text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict) and block.get("type") == "tool_result":
                parts.append(block_text(block.get("content")))
        return " ".join(parts)
    return ""


def _tool_result(message: dict[str, Any]) -> str | None:
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    return " ".join(block_text(b.get("content")) for b in results) if results else None


def _tool_choice(value: Any) -> str | None:
    if isinstance(value, dict):
        if value.get("type") == "none":
            return "none"
        if value.get("type") == "tool":
            return str(value.get("name"))
    return None


def _prompt(body: dict[str, Any]) -> Prompt:
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise WireError(400, "model: field required")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise WireError(400, "max_tokens: field required (a positive integer)")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages: at least one message is required")
    if not all(isinstance(m, dict) for m in messages):
        raise WireError(400, "messages: each message must be an object")
    _check_thinking(body.get("thinking"), max_tokens)
    texts = [block_text(body.get("system"))] if body.get("system") else []
    texts += [block_text(m.get("content")) for m in messages]
    users = [
        block_text(m.get("content"))
        for m in messages
        if m.get("role") == "user" and _tool_result(m) is None
    ]
    tools = [
        ToolSpec(t["name"], t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    return Prompt(
        model=model,
        texts=texts,
        last_user_text=users[-1] if users else "",
        tool_result=_tool_result(messages[-1]),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice")),
        max_tokens=max_tokens,
    )


def _check_thinking(thinking: Any, max_tokens: int) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise WireError(400, "thinking: type must be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise WireError(400, "thinking.enabled.budget_tokens: must be at least 1024")
    if budget >= max_tokens:
        raise WireError(400, "max_tokens: must be greater than thinking.budget_tokens")


def thinking_block(parsed: Parsed) -> dict[str, Any] | None:
    """The answer's thinking block, when the request enabled extended thinking."""
    thinking = parsed.body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    text = f"thinking: {parsed.prompt.last_user_text}"
    signature = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return {"type": "thinking", "thinking": text, "signature": signature}


def cached_prefix(body: dict[str, Any]) -> list[str]:
    """The texts up to the last ``cache_control`` breakpoint: what the prompt cache holds."""
    texts: list[str] = []
    cut = 0
    contents = [body["system"]] if body.get("system") else []
    contents += [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
    for content in contents:
        texts.append(block_text(content))
        if isinstance(content, list) and any(
            isinstance(b, dict) and "cache_control" in b for b in content
        ):
            cut = len(texts)
    return texts[:cut]


def message_id(prompt: Prompt) -> str:
    return "msg_" + hashlib.sha256(orjson.dumps(prompt.texts)).hexdigest()[:24]


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


class MessagesWire:
    def __init__(self, prompt_cache: set[str] | None = None) -> None:
        self._prompt_cache = prompt_cache if prompt_cache is not None else set()

    def parse(self, request: HttpRequest) -> Parsed:
        if "anthropic-version" not in request.headers:
            raise WireError(400, "anthropic-version: header is required")
        body = parse_json_body(request)
        return Parsed(_prompt(body), bool(body.get("stream")), body)

    def authorized(self, request: HttpRequest, key: str) -> bool:
        return bearer_or_x_api_key(request, key)  # newer SDKs send the key as a bearer token

    def error_body(self, status: int, message: str) -> bytes:
        return error_body(status, message)

    def _content(self, answer: Answer) -> list[dict[str, Any]]:
        if answer.tool_calls:
            return [
                {"type": "tool_use", "id": tool_use_id(c.id), "name": c.name, "input": c.arguments}
                for c in answer.tool_calls
            ]
        return [{"type": "text", "text": answer.text}]

    def _usage(self, parsed: Parsed, answer: Answer, output: int) -> dict[str, int]:
        if not parsed.report_usage:
            return {"input_tokens": 0, "output_tokens": 0}
        written, read = self._cache_tokens(parsed)
        return {
            "input_tokens": answer.prompt_tokens - written - read,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": output,
        }

    def _cache_tokens(self, parsed: Parsed) -> tuple[int, int]:
        """(written, read): the cached prefix's tokens, new to the cache or found in it."""
        prefix = cached_prefix(parsed.body)
        tokens = sum(count_tokens(t) for t in prefix)
        if not tokens:
            return 0, 0
        key = hashlib.sha256(orjson.dumps([parsed.prompt.model, prefix])).hexdigest()
        if key in self._prompt_cache:
            return 0, tokens
        self._prompt_cache.add(key)
        return tokens, 0

    def render(self, parsed: Parsed, answer: Answer) -> bytes:
        thinking = thinking_block(parsed)
        content = [thinking, *self._content(answer)] if thinking else self._content(answer)
        output = answer.completion_tokens + _thinking_tokens(thinking)
        return orjson.dumps(
            {
                "id": message_id(parsed.prompt),
                "type": "message",
                "role": "assistant",
                "model": parsed.prompt.model,
                "content": content,
                "stop_reason": STOP_REASONS[answer.finish_reason],
                "stop_sequence": None,
                "usage": self._usage(parsed, answer, output),
            }
        )

    def frames(self, parsed: Parsed, answer: Answer) -> list[bytes]:
        start: dict[str, Any] = {
            "id": message_id(parsed.prompt),
            "type": "message",
            "role": "assistant",
            "model": parsed.prompt.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(parsed, answer, 1),
        }
        frames = [sse({"type": "message_start", "message": start}, "message_start")]
        frames.append(sse({"type": "ping"}, "ping"))
        thinking = thinking_block(parsed)
        first = 0
        if thinking is not None:
            frames += _thinking_frames(thinking)
            first = 1
        if answer.tool_calls:
            for index, call in enumerate(answer.tool_calls, first):
                frames += _tool_use_frames(
                    index, tool_use_id(call.id), call.name, call.arguments_json
                )
        else:
            frames += _text_frames(answer.words, first)
        delta = {"stop_reason": STOP_REASONS[answer.finish_reason], "stop_sequence": None}
        output = answer.completion_tokens + _thinking_tokens(thinking)
        usage = {"output_tokens": output if parsed.report_usage else 0}
        frames.append(
            sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        frames.append(sse({"type": "message_stop"}, "message_stop"))
        return frames


def _thinking_tokens(thinking: dict[str, Any] | None) -> int:
    return count_tokens(thinking["thinking"]) if thinking else 0


def _thinking_frames(thinking: dict[str, Any]) -> list[bytes]:
    block = {"type": "thinking", "thinking": "", "signature": ""}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    frames = [sse(start, "content_block_start")]
    deltas: list[dict[str, Any]] = [
        {"type": "thinking_delta", "thinking": word} for word in stream_pieces(thinking["thinking"])
    ]
    deltas.append({"type": "signature_delta", "signature": thinking["signature"]})
    for delta in deltas:
        frames.append(
            sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        )
    frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    return frames


def _text_frames(words: list[str], index: int = 0) -> list[bytes]:
    block = {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }
    frames = [sse(block, "content_block_start")]
    for word in words:
        delta = {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": word},
        }
        frames.append(sse(delta, "content_block_delta"))
    frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    return frames


def _tool_use_frames(index: int, call_id: str, name: str, arguments: str) -> list[bytes]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    frames = [
        sse(
            {"type": "content_block_start", "index": index, "content_block": block},
            "content_block_start",
        )
    ]
    half = len(arguments) // 2
    for piece in (arguments[:half], arguments[half:]):
        delta = {"type": "input_json_delta", "partial_json": piece}
        frames.append(
            sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        )
    frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    return frames


async def messages(state: FakeState, req: HttpRequest, resp: HttpResponder) -> None:
    await serve_exchange(state, MessagesWire(state.prompt_cache), req, resp)


ROUTES = (("POST", "/v1/messages", messages),)
