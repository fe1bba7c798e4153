"""The OpenAPI description of the hot routes (served by ``api.HotRoutes``, not FastAPI).

The models here only document; requests are never validated with them (the data
plane checks what it routes on and forwards the rest). They are strict enough that a
schema-driven fuzzer (schemathesis) sends the shapes the routes take, and loose enough
to accept every field OpenAI and Anthropic define.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionsBody(_Open):
    model: str = Field(min_length=1, description="an alias this key may use")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)


class EmbeddingsBody(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(description="text(s) to embed")
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None


class AnthropicMessage(_Open):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesBody(_Open):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


ERRORS = {
    str(code): {"description": text}
    for code, text in (
        (400, "invalid request"),
        (401, "missing, invalid or expired API key"),
        (403, "the key may not use this API or model"),
        (404, "unknown model alias"),
        (413, "request body too large"),
        (429, "rate limit or budget reached (Retry-After)"),
        (502, "the upstream failed"),
        (503, "no healthy backend, quota store or config unavailable"),
        (504, "the upstream timed out"),
    )
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def _operation(summary: str, body: type[BaseModel] | None, streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    operation: dict[str, Any] = {
        "summary": summary,
        "security": SECURITY,
        "responses": {"200": {"description": "OK", "content": ok}, **ERRORS},
    }
    if body is not None:
        schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}
            },
        }
        operation["x-schemas"] = schema
    return operation


HOT_PATHS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "post": _operation(
            "OpenAI chat completions (SSE with stream=true)", ChatCompletionsBody, True
        )
    },
    "/v1/embeddings": {"post": _operation("OpenAI embeddings", EmbeddingsBody, False)},
    "/v1/models": {"get": _operation("The aliases this key may use", None, False)},
    "/v1/messages": {
        "post": _operation(
            "Anthropic Messages, any backend (SSE with stream=true)", MessagesBody, True
        )
    },
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the hot routes too."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        for path, methods in HOT_PATHS.items():
            entry = schema["paths"].setdefault(path, {})
            for method, operation in methods.items():
                operation = dict(operation)
                extra = copy.deepcopy(operation.pop("x-schemas", None))
                if extra is not None:
                    schemas.update(extra.pop("$defs", {}))
                    name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    schemas[name.rsplit("/", 1)[1]] = extra
                entry[method] = operation
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
