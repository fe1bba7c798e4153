"""Gemini's wire format for the fake upstream (``generateContent``, ``streamGenerateContent``).

::

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   SSE, CRLF-separated, no [DONE]
    POST /v1beta/models/{model}:batchEmbedContents
    POST /v1beta/models/{model}:embedContent
    auth: header x-goog-api-key (or ?key=)

Chat goes through ``fake_core.serve_exchange`` like every other protocol (latency,
failures, capacity, metrics); this module only parses a Gemini request into a
``Prompt`` and renders the answer, errors (``{"error": {"code", "message", "status"}}``;
a wrong key gets reason ``API_KEY_INVALID`` as Gemini sends it) and stream frames.
:func:`handle` is the entry point the fake upstream's router calls for ``/v1beta/``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from hyperinfer.client.testing.fake_core import (
    FakeState,
    Parsed,
    WireError,
    parse_json_body,
    serve_exchange,
)
from hyperinfer.client.testing.fake_model import Answer, Prompt, ToolSpec, embedding_for
from hyperinfer.client.testing.http_server import HttpRequest, HttpResponder

PATH_PREFIX = "/v1beta/models/"
EMBEDDING_DIMENSIONS = 768
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def split_path(path: str) -> tuple[str, str]:
    """``/v1beta/models/<model>:<method>`` → (model, method)."""
    model, _, method = path[len(PATH_PREFIX) :].rpartition(":")
    if not path.startswith(PATH_PREFIX) or not model or not method:
        raise WireError(404, f"no such method: {path}")
    return model, method


def error_body(status: int, message: str) -> bytes:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if status == 401:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ]
    return orjson.dumps({"error": error})


def authorized(request: HttpRequest, key: str) -> bool:
    return request.headers.get("x-goog-api-key") == key or request.query.get("key") == key


def _texts(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise WireError(400, "every content needs a 'parts' list")
    return [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]


def _tool_result(contents: list[Any]) -> str | None:
    parts = contents[-1].get("parts") or [] if contents else []
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
            response = part["functionResponse"].get("response")
            if isinstance(response, dict) and isinstance(response.get("content"), str):
                return str(response["content"])
            return orjson.dumps(response).decode()
    return None


def _tools(body: dict[str, Any]) -> list[ToolSpec]:
    specs = []
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            specs.append(ToolSpec(declaration["name"], declaration.get("parameters") or {}))
    return specs


def _tool_choice(body: dict[str, Any]) -> str | None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("mode") == "NONE":
        return "none"
    allowed = config.get("allowedFunctionNames") or []
    return str(allowed[0]) if config.get("mode") == "ANY" and allowed else None


def to_prompt(model: str, body: dict[str, Any]) -> Prompt:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise WireError(400, "contents must be a non-empty list")
    texts = _texts(body["systemInstruction"]) if body.get("systemInstruction") else []
    last_user = ""
    for content in contents:
        content_texts = _texts(content)
        texts += content_texts
        if content.get("role", "user") == "user" and content_texts:
            last_user = content_texts[-1]
    generation = body.get("generationConfig") or {}
    return Prompt(
        model=model,
        texts=texts,
        last_user_text=last_user,
        tool_result=_tool_result(contents),
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        json_schema=generation.get("responseSchema"),
        json_mode=generation.get("responseMimeType") == "application/json",
        max_tokens=generation.get("maxOutputTokens"),
    )


class GenerateContentWire:
    """``generateContent`` and ``streamGenerateContent`` (the method picks streaming)."""

    def parse(self, request: HttpRequest) -> Parsed:
        model, method = split_path(request.path)
        if method not in ("generateContent", "streamGenerateContent"):
            raise WireError(404, f"unknown method {method}")
        if method == "streamGenerateContent" and request.query.get("alt") != "sse":
            raise WireError(400, "the fake serves streamGenerateContent only with alt=sse")
        body = parse_json_body(request)
        return Parsed(to_prompt(model, body), method == "streamGenerateContent", body)

    def authorized(self, request: HttpRequest, key: str) -> bool:
        return authorized(request, key)

    def error_body(self, status: int, message: str) -> bytes:
        return error_body(status, message)

    def render(self, parsed: Parsed, answer: Answer) -> bytes:
        return orjson.dumps(_response(parsed, answer, _parts(answer), FINISH[answer.finish_reason]))

    def frames(self, parsed: Parsed, answer: Answer) -> list[bytes]:
        if answer.tool_calls:
            pieces = [_parts(answer)]
        else:
            pieces = [[{"text": word}] for word in answer.words] or [[{"text": ""}]]
        frames = []
        for i, parts in enumerate(pieces):
            last = i == len(pieces) - 1
            finish = FINISH[answer.finish_reason] if last else None
            event = _response(parsed, answer, parts, finish, done=i + 1, of=len(pieces))
            frames.append(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
        return frames


def _parts(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in answer.tool_calls]
    return [{"text": answer.text}]


def _response(
    parsed: Parsed,
    answer: Answer,
    parts: list[dict[str, Any]],
    finish: str | None,
    done: int = 1,
    of: int = 1,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    completion = answer.completion_tokens * done // of
    digest = hashlib.sha256(orjson.dumps(parsed.body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": answer.prompt_tokens + completion,
        },
        "modelVersion": parsed.prompt.model,
        "responseId": digest[:20],
    }


async def _embed(state: FakeState, request: HttpRequest, responder: HttpResponder) -> None:
    model, method = split_path(request.path)
    if state.api_key is not None and not authorized(request, state.api_key):
        await responder.send(401, error_body(401, "API key not valid"))
        return
    behaviour = state.behaviour_for(model)
    if behaviour.fail_status is not None and behaviour.take_failure():
        status = behaviour.fail_status
        await responder.send(status, error_body(status, f"injected failure {status}"))
        return
    body = parse_json_body(request)
    requests = body.get("requests") if method == "batchEmbedContents" else [body]
    if not isinstance(requests, list) or not requests:
        raise WireError(400, "requests must be a non-empty list")
    vectors = [_vector(r) for r in requests]
    answer = (
        {"embeddings": vectors} if method == "batchEmbedContents" else {"embedding": vectors[0]}
    )
    await responder.send(200, orjson.dumps(answer))


def _vector(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise WireError(400, "each embedding request must be an object")
    text = " ".join(_texts(request.get("content")))
    dimensions = int(request.get("outputDimensionality") or EMBEDDING_DIMENSIONS)
    return {"values": embedding_for(text, dimensions)}


GENERATE = GenerateContentWire()


async def handle(state: FakeState, request: HttpRequest, responder: HttpResponder) -> None:
    """Serve one Gemini request (the router sends every ``/v1beta/models/`` path here)."""
    try:
        if request.method != "POST":
            raise WireError(405, "Gemini methods are POST")
        if request.path.endswith((":batchEmbedContents", ":embedContent")):
            await _embed(state, request, responder)
            return
    except WireError as exc:
        await responder.send(exc.status, error_body(exc.status, exc.message))
        return
    await serve_exchange(state, GENERATE, request, responder)


ROUTES = (("POST", PATH_PREFIX + "*", handle),)
"""(method, path, handler) for ``fake_upstream.WIRE_ROUTES``: every Gemini model method."""
