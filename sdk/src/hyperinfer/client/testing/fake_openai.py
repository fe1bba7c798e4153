"""OpenAI's wire format for the fake upstream: chat completions, embeddings, models.

Faithful where clients look: ``chat.completion`` / ``chat.completion.chunk`` objects,
tool calls (streamed as a name chunk then argument pieces), ``response_format``
(json_object and json_schema), ``stream_options.include_usage`` (a last chunk with
empty ``choices`` and the usage, every other chunk with ``"usage": null``), ``data:
[DONE]``, embeddings as floats or base64 float32, and errors as ``{"error": {...}}``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
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
    embedding_for,
)
from hyperinfer.client.testing.http_server import HttpRequest, HttpResponder

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _tools(body: dict[str, Any]) -> list[ToolSpec]:
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools.append(ToolSpec(function["name"], function.get("parameters") or {}))
    return tools


def _tool_choice(value: Any) -> str | None:
    if value == "none":
        return "none"
    if isinstance(value, dict):
        function = value.get("function")
        if isinstance(function, dict):
            return str(function.get("name"))
    return None


def _prompt(body: dict[str, Any]) -> Prompt:
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise WireError(400, "you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages must be a non-empty array")
    if not all(isinstance(m, dict) for m in messages):
        raise WireError(400, "each message must be an object")
    texts = [content_text(m.get("content")) for m in messages]
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last = messages[-1]
    fmt = body.get("response_format") or {}
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return Prompt(
        model=model,
        texts=texts,
        last_user_text=users[-1] if users else "",
        tool_result=content_text(last.get("content")) if last.get("role") == "tool" else None,
        tools=_tools(body),
        tool_choice=_tool_choice(body.get("tool_choice")),
        json_schema=schema,
        json_mode=isinstance(fmt, dict) and fmt.get("type") == "json_object",
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def completion_id(prompt: Prompt) -> str:
    digest = hashlib.sha256(orjson.dumps(prompt.texts)).hexdigest()
    return f"chatcmpl-{digest[:24]}"


def usage_of(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


class ChatWire:
    """``POST /v1/chat/completions``."""

    def parse(self, request: HttpRequest) -> Parsed:
        body = parse_json_body(request)
        return Parsed(_prompt(body), bool(body.get("stream")), body)

    def authorized(self, request: HttpRequest, key: str) -> bool:
        return bearer_or_x_api_key(request, key)

    def error_body(self, status: int, message: str) -> bytes:
        return error_body(status, message)

    def render(self, parsed: Parsed, answer: Answer) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if not answer.tool_calls else None,
            "refusal": None,
        }
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in answer.tool_calls
            ]
        result: dict[str, Any] = {
            "id": completion_id(parsed.prompt),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.prompt.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
        }
        if parsed.report_usage:
            result["usage"] = usage_of(answer)
        return orjson.dumps(result)

    def frames(self, parsed: Parsed, answer: Answer) -> list[bytes]:
        options = parsed.body.get("stream_options")
        include_usage = (
            parsed.report_usage and isinstance(options, dict) and bool(options.get("include_usage"))
        )
        base: dict[str, Any] = {
            "id": completion_id(parsed.prompt),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": parsed.prompt.model,
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": word}) for word in answer.words]
        for index, call in enumerate(answer.tool_calls):
            frames += self._tool_call_frames(chunk, index, call.id, call.name, call.arguments_json)
        frames.append(chunk({}, answer.finish_reason))
        if include_usage:
            frames.append(sse({**base, "choices": [], "usage": usage_of(answer)}))
        frames.append(b"data: [DONE]\n\n")
        return frames

    @staticmethod
    def _tool_call_frames(
        chunk: Any, index: int, call_id: str, name: str, arguments: str
    ) -> list[bytes]:
        head = {"index": index, "id": call_id, "type": "function"}
        frames = [chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})]
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            if piece:
                frames.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        return frames


class EmbeddingsWire(ChatWire):
    """``POST /v1/embeddings``: deterministic vectors, floats or base64 float32."""

    def parse(self, request: HttpRequest) -> Parsed:
        body = parse_json_body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(400, "you must provide a model parameter")
        inputs = embedding_inputs(body.get("input"))
        return Parsed(Prompt(model=model, texts=inputs), False, body)

    def render(self, parsed: Parsed, answer: Answer) -> bytes:
        dimensions = parsed.body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 4096 else 16
        as_base64 = parsed.body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(parsed.prompt.texts):
            vector = embedding_for(text, size)
            encoded: Any = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(t) for t in parsed.prompt.texts)
        result: dict[str, Any] = {"object": "list", "data": data, "model": parsed.prompt.model}
        if parsed.report_usage:
            result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return orjson.dumps(result)


def embedding_inputs(value: Any) -> list[str]:
    """``input``: a string, a list of strings, a token array, or a list of token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise WireError(400, "input must be a string, an array of strings, or token arrays")


CHAT = ChatWire()
EMBEDDINGS = EmbeddingsWire()


async def chat_completions(state: FakeState, req: HttpRequest, resp: HttpResponder) -> None:
    await serve_exchange(state, CHAT, req, resp)


async def embeddings(state: FakeState, req: HttpRequest, resp: HttpResponder) -> None:
    await serve_exchange(state, EMBEDDINGS, req, resp)


async def list_models(state: FakeState, req: HttpRequest, resp: HttpResponder) -> None:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in state.models]
    await resp.send(200, orjson.dumps({"object": "list", "data": data}))


ROUTES = (
    ("POST", "/v1/chat/completions", chat_completions),
    ("POST", "/v1/embeddings", embeddings),
    ("GET", "/v1/models", list_models),
)
"""(method, path, handler) — a path ending with ``*`` matches as a prefix."""
