"""Anthropic's Messages API for the fake upstream: ``POST /v1/messages``.

Faithful where clients look: ``anthropic-version`` required, ``max_tokens`` required,
content blocks (text, tool_use, tool_result), ``stop_reason`` (end_turn, max_tokens,
tool_use), and the stream's event sequence: ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` (``text_delta`` / ``input_json_delta``),
``content_block_stop``, ``message_delta`` (stop reason + output usage),
``message_stop``. Errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

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
from hyperinfer.client.testing.fake_model import Answer, Prompt, ToolSpec
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


def message_id(prompt: Prompt) -> str:
    return "msg_" + hashlib.sha256(orjson.dumps(prompt.texts)).hexdigest()[:24]


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


class MessagesWire:
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
        return {"input_tokens": answer.prompt_tokens, "output_tokens": output}

    def render(self, parsed: Parsed, answer: Answer) -> bytes:
        return orjson.dumps(
            {
                "id": message_id(parsed.prompt),
                "type": "message",
                "role": "assistant",
                "model": parsed.prompt.model,
                "content": self._content(answer),
                "stop_reason": STOP_REASONS[answer.finish_reason],
                "stop_sequence": None,
                "usage": self._usage(parsed, answer, answer.completion_tokens),
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
        if answer.tool_calls:
            for index, call in enumerate(answer.tool_calls):
                frames += _tool_use_frames(
                    index, tool_use_id(call.id), call.name, call.arguments_json
                )
        else:
            frames += _text_frames(answer.words)
        delta = {"stop_reason": STOP_REASONS[answer.finish_reason], "stop_sequence": None}
        usage = {"output_tokens": answer.completion_tokens if parsed.report_usage else 0}
        frames.append(
            sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        frames.append(sse({"type": "message_stop"}, "message_stop"))
        return frames


def _text_frames(words: list[str]) -> list[bytes]:
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    frames = [sse(block, "content_block_start")]
    for word in words:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": word},
        }
        frames.append(sse(delta, "content_block_delta"))
    frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
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


MESSAGES = MessagesWire()


async def messages(state: FakeState, req: HttpRequest, resp: HttpResponder) -> None:
    await serve_exchange(state, MESSAGES, req, resp)


ROUTES = (("POST", "/v1/messages", messages),)
