"""The deterministic "model" behind every wire format of the fake upstream.

Each wire module (``fake_openai``, ``fake_anthropic``, ...) turns its request into a
``Prompt`` and renders the ``Answer`` in its own format, so every protocol answers the
same thing for the same conversation:

- plain chat: ``echo: <the last user text>`` (or ``Behaviour.answer``), cut at
  ``max_tokens`` tokens;
- the last message is a tool result: ``tool said: <its text>``;
- tools offered (and not refused with tool_choice "none"): one call of the chosen (or the
  first) tool, with arguments built from its JSON schema;
- JSON mode / a JSON schema: a JSON object (``{"echo": ...}`` or built from the schema).

A token is a whitespace-separated word; usage counts words, so it is exact by the
fake's own definition and easy to assert on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class ToolSpec:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prompt:
    """What every wire format's request boils down to."""

    model: str
    texts: list[str]
    """The text of every message, in order (the prompt's tokens are counted over these)."""
    last_user_text: str = ""
    tool_result: str | None = None
    """The text of a trailing tool-result message, if the conversation ends with one."""
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | None = None
    """None: auto; "none": no tool; another value: that tool's name."""
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    max_tokens: int | None = None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass
class Answer:
    text: str
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """OpenAI's vocabulary: stop, length, tool_calls."""

    @property
    def words(self) -> list[str]:
        """The text split into streamable pieces (each ends with its space)."""
        return stream_pieces(self.text)


def stream_pieces(text: str) -> list[str]:
    """``text`` split into streamable pieces (each ends with its space)."""
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]] if text else []


def count_tokens(text: str) -> int:
    return len(text.split())


def compose_answer(prompt: Prompt, fixed_answer: str | None = None) -> Answer:
    prompt_tokens = sum(count_tokens(t) for t in prompt.texts)
    tool = _chosen_tool(prompt)
    if tool is not None:
        call = ToolCall(_call_id(prompt, tool.name), tool.name, value_for(tool.parameters, prompt))
        return Answer("", [call], prompt_tokens, count_tokens(call.arguments_json), "tool_calls")
    text = _text(prompt, fixed_answer)
    words = text.split(" ")
    finish = "stop"
    if prompt.max_tokens is not None and len(words) > prompt.max_tokens:
        words, finish = words[: max(prompt.max_tokens, 0)], "length"
    text = " ".join(words)
    return Answer(text, [], prompt_tokens, count_tokens(text), finish)


def _chosen_tool(prompt: Prompt) -> ToolSpec | None:
    if not prompt.tools or prompt.tool_result is not None or prompt.tool_choice == "none":
        return None
    for tool in prompt.tools:
        if tool.name == prompt.tool_choice:
            return tool
    return prompt.tools[0]


def _text(prompt: Prompt, fixed_answer: str | None) -> str:
    if prompt.tool_result is not None:
        text = f"tool said: {prompt.tool_result}"
    else:
        text = fixed_answer if fixed_answer is not None else f"echo: {prompt.last_user_text}"
    if prompt.json_schema is not None:
        return orjson.dumps(value_for(prompt.json_schema, prompt)).decode()
    if prompt.json_mode:
        return orjson.dumps({"echo": text}).decode()
    return text


def _call_id(prompt: Prompt, name: str) -> str:
    digest = hashlib.sha256(f"{name}:{prompt.last_user_text}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def value_for(schema: dict[str, Any], prompt: Prompt, depth: int = 0) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" and depth < 4:
        props = schema.get("properties") or {}
        return {
            name: value_for(sub if isinstance(sub, dict) else {}, prompt, depth + 1)
            for name, sub in props.items()
        }
    return _scalar(kind, schema, prompt, depth)


def _scalar(kind: str, schema: dict[str, Any], prompt: Prompt, depth: int) -> Any:
    if kind == "array":
        items = schema.get("items")
        return [value_for(items, prompt, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "object":
        return {}
    return prompt.last_user_text or "x"


def embedding_for(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector for ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [round((b - 127.5) / 127.5, 6) for b in digest[:dimensions]]
