"""Google Gemini (``generateContent`` / ``streamGenerateContent``) behind OpenAI's chat shapes.

::

    POST {base}/models/{model}:generateContent                  chat
    POST {base}/models/{model}:streamGenerateContent?alt=sse    chat_stream (SSE, no [DONE])
    POST {base}/models/{model}:batchEmbedContents               embeddings
    header x-goog-api-key: <key>

``base`` is the backend's ``base_url`` with ``/v1beta`` added unless it already names an
API version. Translation, OpenAI → Gemini: ``system``/``developer`` messages become the
``systemInstruction``; ``assistant`` → role ``model`` (``tool_calls`` → ``functionCall``
parts); ``tool`` messages → ``functionResponse`` parts (named by the call they answer);
image parts → ``inlineData`` (data URLs) or ``fileData``; ``tools``/``tool_choice`` →
``functionDeclarations``/``functionCallingConfig``; sampling fields and
``response_format`` → ``generationConfig``. Back: text parts → ``content``,
``functionCall`` parts → ``tool_calls``, ``finishReason`` → ``finish_reason``,
``usageMetadata`` → ``usage`` (absent when Gemini sends none: the data plane counts).

Gemini errors (``{"error": {"code", "message", "status"}}``) map by HTTP status as
``UpstreamStatusError`` does; an invalid API key (400 ``API_KEY_INVALID``) counts as our
credentials being wrong (401 upstream → 502), not the caller's fault. A request Gemini
cannot express (token-array embedding input) is a 400.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
from hyperinfer.client.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from hyperinfer.client.providers.base import (
    PoolLimits,
    Upstream,
    parse_json_object,
    pooled_http_client,
    request_timeout,
    retry_after_seconds,
    translate_transport_errors,
)
from hyperinfer.client.providers.sse import sse_events

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# JSON Schema keywords Gemini's OpenAPI subset rejects.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "strict", "$id"})
GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
}


class GeminiRequestError(UpstreamStatusError):
    """A request that cannot be expressed in Gemini's wire format (the caller's 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, code="unsupported_by_backend")


_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError)


@contextlib.contextmanager
def caller_shape() -> Iterator[None]:
    """A request whose shape Gemini's format cannot take is the caller's 400, never a crash."""
    try:
        yield
    except UpstreamError:
        raise
    except _SHAPE_ERRORS as exc:
        raise GeminiRequestError(f"request cannot be expressed for Gemini: {exc}") from None


@contextlib.contextmanager
def upstream_shape() -> Iterator[None]:
    """An answer not in Gemini's shape is the upstream's protocol error, never a crash."""
    try:
        yield
    except UpstreamError:
        raise
    except _SHAPE_ERRORS as exc:
        raise UpstreamProtocolError(f"Gemini answered in an unexpected shape: {exc}") from None


# --- OpenAI → Gemini -------------------------------------------------------------------
def to_gemini(request: dict[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request."""
    with caller_shape():
        return _to_gemini(request)


def _to_gemini(request: dict[str, Any]) -> dict[str, Any]:
    system, contents = _contents(request.get("messages") or [])
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if request.get("tools"):
        body["tools"] = [{"functionDeclarations": _declarations(request["tools"])}]
    tool_config = _tool_config(request.get("tool_choice"))
    if tool_config is not None:
        body["toolConfig"] = tool_config
    generation = _generation_config(request)
    if generation:
        body["generationConfig"] = generation
    return body


def _contents(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            raise GeminiRequestError("every message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        gemini_role, parts = _message_parts(message, call_names)
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)  # Gemini wants turns to alternate
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return system, contents


def _message_parts(
    message: dict[str, Any], call_names: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "assistant":
        parts = _content_parts(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            call_names[str(call.get("id"))] = str(function.get("name", ""))
            args = _json_arguments(function.get("arguments"))
            parts.append({"functionCall": {"name": function.get("name", ""), "args": args}})
        return "model", parts or [{"text": ""}]
    if role == "tool":
        name = call_names.get(str(message.get("tool_call_id")), message.get("name") or "tool")
        response = _tool_response(message.get("content"))
        return "user", [{"functionResponse": {"name": name, "response": response}}]
    if role == "user":
        return "user", _content_parts(message.get("content")) or [{"text": ""}]
    raise GeminiRequestError(f"unsupported message role {role!r}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise GeminiRequestError("message content must be a string or a list of parts")
    return [_part(p) for p in content]


def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else str(image or "")
        return _image(url)
    raise GeminiRequestError(f"unsupported content part type {kind!r} for a Gemini backend")


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        mime = header.split(";")[0] or "application/octet-stream"
        if not header.endswith(";base64"):
            raise GeminiRequestError("data URLs for images must be base64")
        return {"inlineData": {"mimeType": mime, "data": data}}
    return {"fileData": {"fileUri": url}}


def _json_arguments(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise GeminiRequestError("tool call arguments must be a JSON object") from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _tool_response(content: Any) -> dict[str, Any]:
    text = _text_of(content)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"content": text}
    return parsed if isinstance(parsed, dict) else {"content": parsed}


def _declarations(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise GeminiRequestError("tools must be a list")
    declarations = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise GeminiRequestError("only function tools can be sent to a Gemini backend")
        declaration: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parameters"] = gemini_schema(function["parameters"])
        declarations.append(declaration)
    return declarations


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema without the keywords Gemini rejects, recursively."""
    if isinstance(schema, dict):
        return {k: gemini_schema(v) for k, v in schema.items() if k not in UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [gemini_schema(v) for v in schema]
    return schema


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"functionCallingConfig": {"mode": TOOL_MODES[choice]}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name", "")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise GeminiRequestError(f"unsupported tool_choice {choice!r}")


def _generation_config(request: dict[str, Any]) -> dict[str, Any]:
    config = {
        gemini: request[openai]
        for openai, gemini in GENERATION_FIELDS.items()
        if request.get(openai) is not None
    }
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    config.update(_response_format(request.get("response_format")))
    return config


def _response_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        if schema:
            out["responseSchema"] = gemini_schema(schema)
        return out
    return {}


def to_gemini_embeddings(model: str, request: dict[str, Any]) -> dict[str, Any]:
    with caller_shape():
        return _to_gemini_embeddings(model, request)


def _to_gemini_embeddings(model: str, request: dict[str, Any]) -> dict[str, Any]:
    texts = request.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise GeminiRequestError("a Gemini backend embeds only strings (not token arrays)")
    base: dict[str, Any] = {"model": f"models/{model}"}
    if request.get("dimensions"):
        base["outputDimensionality"] = request["dimensions"]
    return {"requests": [{**base, "content": {"parts": [{"text": t}]}} for t in texts]}


# --- Gemini → OpenAI -------------------------------------------------------------------
def from_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for a ``generateContent`` answer."""
    with upstream_shape():
        return _from_gemini(body, model)


def _from_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    candidates = body.get("candidates") or []
    choices = [_choice(c, i) for i, c in enumerate(candidates)]
    if not choices:  # the prompt itself was blocked
        message = {"role": "assistant", "content": None}
        choices = [{"index": 0, "message": message, "finish_reason": "content_filter"}]
    result: dict[str, Any] = {
        "id": _completion_id(body),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _text(body.get("modelVersion")) or model,
        "choices": choices,
    }
    usage = usage_from(body.get("usageMetadata"))
    if usage is not None:
        result["usage"] = usage
    return result


def _completion_id(body: dict[str, Any]) -> str:
    return "chatcmpl-" + str(body.get("responseId") or uuid.uuid4().hex)


def _choice(candidate: Any, fallback_index: int) -> dict[str, Any]:
    if not isinstance(candidate, dict):
        raise UpstreamProtocolError("Gemini sent a candidate that is not an object")
    text, calls = _split_parts(candidate)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "index": _count(candidate.get("index", fallback_index)),
        "message": message,
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
    }


def _split_parts(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = candidate.get("content") or {}
    parts = content.get("parts") or [] if isinstance(content, dict) else []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part["functionCall"]))
    return "".join(texts), calls


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
        "type": "function",
        "function": {
            "name": str(call.get("name", "")),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }


def finish_reason(reason: Any, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if has_calls and reason == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(str(reason), "stop")


def usage_from(metadata: Any) -> dict[str, int] | None:
    if not isinstance(metadata, dict) or "promptTokenCount" not in metadata:
        return None
    prompt = _count(metadata.get("promptTokenCount") or 0)
    completion = _count(metadata.get("candidatesTokenCount") or 0) + _count(
        metadata.get("thoughtsTokenCount") or 0
    )
    total = _count(metadata.get("totalTokenCount") or prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _count(value: Any) -> int:
    """A count or index from the answer: a non-negative integer JSON can carry exactly."""
    number = int(value)
    if not 0 <= number < 2**53:
        raise ValueError(f"count out of range: {number}")
    return number


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class StreamTranslator:
    """Gemini stream events → OpenAI ``chat.completion.chunk`` dicts (one stream)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.started: set[int] = set()
        self.call_counts: dict[int, int] = {}
        self.finished = False
        self.usage: dict[str, int] | None = None

    def chunks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one stream event (an answer not in Gemini's shape: protocol error)."""
        with upstream_shape():
            return self._chunks(event)

    def _chunks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("responseId"):
            self.id = "chatcmpl-" + str(event["responseId"])
        self.usage = usage_from(event.get("usageMetadata")) or self.usage
        out = []
        for i, candidate in enumerate(event.get("candidates") or []):
            if isinstance(candidate, dict):
                out.append(self._chunk(candidate, _count(candidate.get("index", i))))
        if not event.get("candidates") and event.get("promptFeedback", {}).get("blockReason"):
            self.finished = True
            out.append(self._wrap(0, {"role": "assistant"}, "content_filter"))
        return out

    def _chunk(self, candidate: dict[str, Any], index: int) -> dict[str, Any]:
        text, calls = _split_parts(candidate)
        delta: dict[str, Any] = {}
        if index not in self.started:
            self.started.add(index)
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if calls:
            first = self.call_counts.get(index, 0)
            delta["tool_calls"] = [{"index": first + n, **c} for n, c in enumerate(calls)]
            self.call_counts[index] = first + len(calls)
        reason = finish_reason(candidate.get("finishReason"), index in self.call_counts)
        if reason is not None:
            self.finished = True
        return self._wrap(index, delta, reason)

    def _wrap(self, index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": reason}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage,
        }


# --- errors ----------------------------------------------------------------------------
def gemini_error(upstream: Upstream, status: int, headers: httpx.Headers, body: bytes) -> None:
    """Raise the ``UpstreamStatusError`` for a non-2xx Gemini answer."""
    if status < 300:
        return
    message, reason = _error_detail(body)
    if reason == "API_KEY_INVALID":
        status = 401  # our credentials for Gemini are wrong, not the caller's request
    name = upstream.backend.name or upstream.backend.id
    raise UpstreamStatusError(
        status,
        f"backend {name} answered {status}: {message}",
        code=reason,
        retry_after_s=retry_after_seconds(headers),
    )


def _error_detail(body: bytes) -> tuple[str, str | None]:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace") or "no body", None
    if not isinstance(error, dict):
        return str(error)[:500], None
    reason = error.get("status")
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reason = detail["reason"]
    return str(error.get("message", "error"))[:500], str(reason) if reason else None


# --- the provider ----------------------------------------------------------------------
class GeminiProvider:
    """The Gemini REST API over one pooled HTTP client."""

    kind = "gemini"

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self.http = pooled_http_client(self.limits)

    def _url(self, upstream: Upstream, method: str) -> str:
        base = upstream.base_url or DEFAULT_BASE_URL
        if not base.rsplit("/", 1)[-1].startswith("v1"):
            base += "/v1beta"
        return f"{base}/models/{upstream.model}:{method}"

    def _headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {"content-type": "application/json", **upstream.extra_headers}
        if upstream.api_key:
            headers["x-goog-api-key"] = upstream.api_key
        return headers

    async def _post(self, upstream: Upstream, method: str, body: dict[str, Any]) -> dict[str, Any]:
        with translate_transport_errors(upstream):
            response = await self.http.post(
                self._url(upstream, method),
                content=orjson.dumps(body),
                headers=self._headers(upstream),
                timeout=request_timeout(upstream, self.limits),
            )
        gemini_error(upstream, response.status_code, response.headers, response.content)
        return parse_json_object(upstream, response.content)

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        answer = await self._post(upstream, "generateContent", to_gemini(request))
        return from_gemini(answer, upstream.model)

    async def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        body = orjson.dumps(to_gemini(request))
        translator = StreamTranslator(upstream.model)
        url = self._url(upstream, "streamGenerateContent") + "?alt=sse"
        with translate_transport_errors(upstream):
            async with self.http.stream(
                "POST",
                url,
                content=body,
                headers=self._headers(upstream),
                timeout=request_timeout(upstream, self.limits),
            ) as response:
                if response.status_code >= 300:
                    content = await response.aread()
                    gemini_error(upstream, response.status_code, response.headers, content)
                async for event in sse_events(response.aiter_bytes()):
                    for chunk in translator.chunks(self._event(upstream, event.data)):
                        yield chunk
        if not translator.finished:
            raise UpstreamProtocolError(
                f"backend {upstream.backend.name or upstream.backend.id}: "
                "the Gemini stream ended before a finish reason"
            )
        if translator.usage is not None:
            yield translator.usage_chunk()

    def _event(self, upstream: Upstream, data: str) -> dict[str, Any]:
        event = parse_json_object(upstream, data.encode())
        if isinstance(event.get("error"), dict):
            code = event["error"].get("code")
            status = code if isinstance(code, int) else 502
            gemini_error(upstream, status if status >= 300 else 502, httpx.Headers(), data.encode())
        return event

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        body = to_gemini_embeddings(upstream.model, request)
        answer = await self._post(upstream, "batchEmbedContents", body)
        vectors = answer.get("embeddings")
        if not isinstance(vectors, list):
            raise UpstreamProtocolError("Gemini embeddings answer has no 'embeddings' list")
        with upstream_shape():
            data = [
                {"object": "embedding", "index": i, "embedding": list(v["values"])}
                for i, v in enumerate(vectors)
            ]
        return {"object": "list", "data": data, "model": upstream.model}

    async def aclose(self) -> None:
        await self.http.aclose()
