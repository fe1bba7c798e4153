"""Typed request and response models in OpenAI's chat shapes, for the public API.

Users may build requests with these (or pass plain dicts); the thick client returns
them. Every model keeps unknown fields (``extra="allow"``), so whatever a provider adds
survives. The hot path never validates with them: requests become dicts once
(``as_request``) and responses are validated only where a caller asked for models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Open):
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None


class Usage(_Open):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(_Open):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Open):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(_Open):
    id: str
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice]
    usage: Usage | None = None


class ChunkDelta(_Open):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Open):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(_Open):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice]
    usage: Usage | None = None


class EmbeddingRequest(_Open):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


class Embedding(_Open):
    object: str = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(_Open):
    object: str = "list"
    data: list[Embedding]
    model: str = ""
    usage: Usage | None = None


def as_request(request: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A request as the plain dict the data plane forwards (models dump without Nones)."""
    if isinstance(request, BaseModel):
        return request.model_dump(exclude_none=True)
    if isinstance(request, Mapping):
        return dict(request)
    raise TypeError(f"a request is a dict or a request model, not {type(request).__name__}")
