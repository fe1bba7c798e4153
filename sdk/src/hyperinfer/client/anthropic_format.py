"""Anthropic Messages ⇄ OpenAI chat: requests, responses and stream events, both ways.

Used twice: the Anthropic provider speaks Messages to Anthropic behind OpenAI shapes
(``to_messages_request``, ``from_messages_response``, ``ChunksFromEvents``), and the
ingress serves ``/v1/messages`` in front of any backend (``from_messages_request``,
``to_messages_response``, ``EventsFromChunks``).

Mapped: system prompts, text and image content, tool definitions and tool_choice,
assistant tool calls ⇄ ``tool_use`` blocks, tool results ⇄ ``tool_result`` blocks,
``stop``/``stop_sequences``, temperature/top_p/top_k, stop reasons, usage. Not mapped
(dropped): Anthropic ``thinking``, ``cache_control``, citations; OpenAI ``n`` > 1,
logprobs. OpenAI ``response_format`` becomes an instruction in the system prompt
(Messages has no JSON mode). None of this is lost on ``/v1/messages`` in front of an
Anthropic backend: there nothing is translated (``MessagesProvider``), and the last
section here only meters Anthropic's answers and events as they pass.

Tokens charged for Anthropic usage (``charged_tokens``, ``openai_usage``): prompt =
``input_tokens`` + ``cache_creation_input_tokens`` + ``cache_read_input_tokens``
(Anthropic's ``input_tokens`` leaves out what was written to or read from the prompt
cache; leaving it out of ours would under-count budgets), each priced as a plain input
token (the price table has no cache rates); completion = ``output_tokens`` (thinking
included, as Anthropic counts it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from hyperinfer.client.errors import InvalidRequest
from hyperinfer.client.tokens import message_text

STOP_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- OpenAI request → Anthropic request (the provider) ------------------------------
def to_messages_request(
    request: dict[str, Any], model: str, default_max_tokens: int
) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message_text(message.get("content")))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
                "content": message_text(message.get("content")),
            }
            _append(messages, "user", [block])
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message))
        else:
            _append(messages, "user", _user_blocks(message.get("content")))
    instruction = _format_instruction(request.get("response_format"))
    if instruction:
        system.append(instruction)
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens if isinstance(max_tokens, int) else default_max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    _copy_sampling(request, body)
    tools = [_tool_to_anthropic(t) for t in request.get("tools") or [] if isinstance(t, dict)]
    if tools:
        body["tools"] = tools
        choice = _tool_choice_to_anthropic(request.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = choice
    if request.get("stream"):
        body["stream"] = True
    return body


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive messages of one role merge (Messages wants alternating roles)."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            blocks.append({"type": "image", "source": _image_source(str(url))})
    return blocks or [{"type": "text", "text": ""}]


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = message_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": _json_object(function.get("arguments")),
            }
        )
    return blocks or [{"type": "text", "text": ""}]


def _json_object(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _format_instruction(fmt: Any) -> str | None:
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "Respond with a single JSON object and nothing else."
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return (
            "Respond with a single JSON object and nothing else, matching this JSON schema: "
            + orjson.dumps(schema).decode()
        )
    return None


def _copy_sampling(request: dict[str, Any], body: dict[str, Any]) -> None:
    for name in ("temperature", "top_p", "top_k"):
        if request.get(name) is not None:
            body[name] = request[name]
    stop = request.get("stop")
    if isinstance(stop, str):
        body["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        body["stop_sequences"] = [str(s) for s in stop]
    user = request.get("user")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}


def _tool_to_anthropic(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": str(function.get("name", "")),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if choice == "auto":
        return {"type": "auto"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": str(choice["function"].get("name", ""))}
    return None


# --- Anthropic response → OpenAI response (the provider) ----------------------------
def from_messages_response(response: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in response.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(_openai_call(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    result: dict[str, Any] = {
        "id": str(response.get("id", "")),
        "object": "chat.completion",
        "created": 0,
        "model": str(response.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_TO_OPENAI.get(str(response.get("stop_reason")), "stop"),
            }
        ],
    }
    usage = openai_usage(response.get("usage"))
    if usage is not None:
        result["usage"] = usage
    return result


def _openai_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(block.get("id", "")),
        "type": "function",
        "function": {
            "name": str(block.get("name", "")),
            "arguments": orjson.dumps(block.get("input") or {}).decode(),
        },
    }


def openai_usage(usage: Any) -> dict[str, int] | None:
    """OpenAI usage from Anthropic's (cache reads/writes count as prompt tokens)."""
    prompt, completion = charged_tokens(usage)
    if prompt is None:
        return None
    completion = completion or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ChunksFromEvents:
    """Anthropic stream events → OpenAI ``chat.completion.chunk`` dicts (the provider)."""

    def __init__(self) -> None:
        self.base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": 0}
        self.usage: dict[str, int] = {}
        self.tool_index = -1
        self.finish: str | None = None
        self.stopped = False

    def feed(self, event: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.base["id"] = str(message.get("id", ""))
            self.base["model"] = str(message.get("model", ""))
            self.usage = dict(message.get("usage") or {})
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                call = {**_openai_call(block), "index": self.tool_index}
                call["function"]["arguments"] = ""
                yield self._chunk({"tool_calls": [call]})
            elif block.get("type") == "text" and block.get("text"):
                yield self._chunk({"content": block["text"]})
        elif kind == "content_block_delta":
            yield from self._delta(event.get("delta") or {})
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.finish = STOP_TO_OPENAI.get(str(delta.get("stop_reason")), "stop")
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            yield self._chunk({}, self.finish)
        elif kind == "message_stop":
            self.stopped = True
            usage = openai_usage(self.usage)
            if usage is not None:
                yield {**self.base, "choices": [], "usage": usage}

    def _delta(self, delta: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if delta.get("type") == "text_delta":
            yield self._chunk({"content": str(delta.get("text", ""))})
        elif delta.get("type") == "input_json_delta":
            piece = {
                "index": self.tool_index,
                "function": {"arguments": delta.get("partial_json", "")},
            }
            yield self._chunk({"tool_calls": [piece]})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# --- Anthropic request → OpenAI request (the ingress's /v1/messages) ------------------
def from_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request from a Messages request (``InvalidRequest`` when malformed)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: a positive integer is required")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _anthropic_text(system)})
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("messages: each message needs role 'user' or 'assistant'")
        out.extend(_openai_messages(message))
    request: dict[str, Any] = {
        "model": body.get("model"),
        "messages": out,
        "max_tokens": max_tokens,
    }
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    if isinstance(body.get("stop_sequences"), list):
        request["stop"] = body["stop_sequences"]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        request["tools"] = [_tool_to_openai(t) for t in tools if isinstance(t, dict)]
        choice = _tool_choice_to_openai(body.get("tool_choice"))
        if choice is not None:
            request["tool_choice"] = choice
    if body.get("stream"):
        request["stream"] = True
    return request


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _openai_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    role = message["role"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest("messages: content must be a string or a list of blocks")
    blocks = [b for b in content if isinstance(b, dict)]
    if role == "assistant":
        return [_openai_assistant(blocks)]
    results: list[dict[str, Any]] = [
        {
            "role": "tool",
            "tool_call_id": str(b.get("tool_use_id", "")),
            "content": _anthropic_text(b.get("content")),
        }
        for b in blocks
        if b.get("type") == "tool_result"
    ]
    parts = [_openai_part(b) for b in blocks if b.get("type") in ("text", "image")]
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _openai_part(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


def _openai_assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    calls = [_openai_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_to_openai(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": str(tool.get("name", "")),
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind in ("auto", "none"):
        return kind
    if kind == "tool":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    return None


# --- OpenAI response → Anthropic response (the ingress's /v1/messages) -----------------
def to_messages_response(response: dict[str, Any], alias: str) -> dict[str, Any]:
    choices = response.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": _tool_use_id(str(call.get("id", ""))),
                "name": str(function.get("name", "")),
                "input": _json_object(function.get("arguments")),
            }
        )
    usage = response.get("usage") or {}
    return {
        "id": _message_id(str(response.get("id", ""))),
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": FINISH_TO_ANTHROPIC.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def _message_id(openai_id: str) -> str:
    return (
        openai_id if openai_id.startswith("msg_") else "msg_" + openai_id.removeprefix("chatcmpl-")
    )


def _tool_use_id(call_id: str) -> str:
    return call_id if call_id.startswith("toolu_") else "toolu_" + call_id.removeprefix("call_")


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventsFromChunks:
    """OpenAI chunks → Anthropic stream events (SSE bytes), for ``/v1/messages``."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.started = False
        self.block: str | None = None
        self.index = -1
        self.tool_slots: dict[int, int] = {}
        self.finish: str | None = None
        self.usage: dict[str, int] = {}

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            out += self._start(str(chunk.get("id", "")))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                out += self._text(content)
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def close(self) -> list[bytes]:
        """The closing events: the open block's stop, message_delta, message_stop."""
        out = [] if self.started else self._start("")
        out += self._close_block()
        delta = {
            "stop_reason": FINISH_TO_ANTHROPIC.get(self.finish or "stop", "end_turn"),
            "stop_sequence": None,
        }
        usage = {
            "input_tokens": int(self.usage.get("prompt_tokens") or 0),
            "output_tokens": int(self.usage.get("completion_tokens") or 0),
        }
        out.append(
            sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        return out

    def _start(self, chunk_id: str) -> list[bytes]:
        self.started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk_id),
            "type": "message",
            "role": "assistant",
            "model": self.alias,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event("ping", {"type": "ping"}),
        ]

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.block != "text":
            out += self._close_block()
            out += self._open_block({"type": "text", "text": ""}, "text")
        delta = {"type": "text_delta", "text": text}
        out.append(
            sse_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta},
            )
        )
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        slot = int(call.get("index", 0))
        function = call.get("function") or {}
        if slot not in self.tool_slots:
            out += self._close_block()
            block = {
                "type": "tool_use",
                "id": _tool_use_id(str(call.get("id", ""))),
                "name": str(function.get("name", "")),
                "input": {},
            }
            out += self._open_block(block, "tool_use")
            self.tool_slots[slot] = self.index
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            event = {"type": "content_block_delta", "index": self.tool_slots[slot], "delta": delta}
            out.append(sse_event("content_block_delta", event))
        return out

    def _open_block(self, block: dict[str, Any], kind: str) -> list[bytes]:
        self.index += 1
        self.block = kind
        event = {"type": "content_block_start", "index": self.index, "content_block": block}
        return [sse_event("content_block_start", event)]

    def _close_block(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": self.index})
        ]


# --- Anthropic answers as they are (metered on /v1/messages to an Anthropic backend) --
CACHE_USAGE_FIELDS = ("cache_creation_input_tokens", "cache_read_input_tokens")
DELTA_TEXT_FIELDS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}


def charged_tokens(usage: Any) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens charged for Anthropic ``usage``; None where not reported.

    Prompt tokens include cache writes and reads (see the module docstring).
    """
    if not isinstance(usage, dict):
        return None, None
    prompt = _count(usage.get("input_tokens"))
    if prompt is not None:
        prompt += sum(_count(usage.get(name)) or 0 for name in CACHE_USAGE_FIELDS)
    return prompt, _count(usage.get("output_tokens"))


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value < 2**40 else None


def content_texts(content: Any) -> list[str]:
    """The generated text of a Messages answer's blocks: text, thinking, tool input."""
    texts: list[str] = []
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" or kind == "thinking":
            texts.append(str(block.get(kind, "")))
        elif kind == "tool_use":
            texts.append(orjson.dumps(block.get("input") or {}).decode())
    return texts


def event_usage(event: dict[str, Any]) -> dict[str, Any] | None:
    """The usage a stream event reports: ``message_start``'s or ``message_delta``'s."""
    kind = event.get("type")
    if kind == "message_start":
        message = event.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
    elif kind == "message_delta":
        usage = event.get("usage")
    else:
        return None
    return usage if isinstance(usage, dict) else None


def event_text(event: dict[str, Any]) -> str | None:
    """The generated text a ``content_block_delta`` carries (text, thinking, tool input)."""
    if event.get("type") != "content_block_delta":
        return None
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return None
    text = delta.get(DELTA_TEXT_FIELDS.get(str(delta.get("type")), ""))
    return text if isinstance(text, str) else None
