"""NVIDIA Triton Inference Server (KServe v2) behind OpenAI's chat shapes, plus tensor inference.

Calls go through ``tritonclient.http.aio`` (one pooled client per Triton base URL):
``health`` (server live/ready, model ready), ``model_metadata`` and ``infer``. Streams
use Triton's HTTP ``generate_stream`` extension (SSE) over this provider's pooled httpx
client, because ``tritonclient``'s HTTP client has no streaming call.

Chat on a **text-generation model** (one BYTES input, one BYTES output; by name
``text_input``/``text_output`` when present, else the first BYTES tensors):

- the messages become one prompt, ``"<role>: <text>"`` per line, ending ``"assistant:"``;
- ``max_tokens`` goes to an INT input named ``max_tokens`` when the model has one,
  ``temperature`` to an FP input named ``temperature``;
- a plain model is called with ``infer``; a decoupled (streaming) model, which Triton
  will not serve over HTTP ``infer``, through ``generate_stream``, joined;
- the answer is the OpenAI ``chat.completion`` with no ``usage`` (Triton reports none):
  the data plane counts the tokens and marks them estimated.

Tensor inference for **non-chat models**: :meth:`TritonProvider.infer` takes a KServe v2
JSON inference request (``{"inputs": [{"name", "datatype", "shape", "data"}],
"outputs": [{"name"}]?}``) and returns the KServe v2 JSON response with every output's
``data``, so whatever exposes it (a thick client, an ingress route) can pass it through.

Errors: Triton's status codes map as ``UpstreamStatusError`` does (an unknown model is a
404, a model not ready a 503 → retryable); connection failures, cut streams and the
per-backend timeout (``asyncio.timeout(upstream.timeout_s)``) become the matching
``UpstreamError``. A request that is not a valid tensor request is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import numpy as np
import orjson
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.providers.base import (
    PoolLimits,
    Upstream,
    parse_json_object,
    pooled_http_client,
    request_timeout,
    translate_transport_errors,
)
from hyperinfer.client.providers.sse import sse_events
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


class TritonRequestError(UpstreamStatusError):
    """A request this model cannot take (the caller's 400, not retried elsewhere)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, code="invalid_tensor_request")


_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError)


@contextlib.contextmanager
def caller_shape() -> Iterator[None]:
    """A request this adapter cannot translate is the caller's 400, never a crash."""
    try:
        yield
    except UpstreamError:
        raise
    except InferenceServerException as exc:  # tritonclient refusing an input it builds
        raise TritonRequestError(f"invalid tensor request: {exc.message()}") from None
    except _SHAPE_ERRORS as exc:
        raise TritonRequestError(f"invalid request for a Triton backend: {exc}") from None


@contextlib.contextmanager
def upstream_shape(upstream: Upstream) -> Iterator[None]:
    """Metadata or answers not in KServe v2's shape are the upstream's protocol error."""
    try:
        yield
    except UpstreamError:
        raise
    except _SHAPE_ERRORS as exc:
        raise UpstreamProtocolError(
            f"backend {_name(upstream)} answered in an unexpected shape: {exc}"
        ) from None


@dataclass(frozen=True)
class TextModel:
    """How to talk text to one Triton model, read from its metadata and config."""

    prompt: str
    prompt_shape: list[int]
    output: str
    decoupled: bool
    max_tokens: tuple[str, str] | None = None
    """(input name, datatype) of the generation budget, when the model has one."""
    temperature: tuple[str, str] | None = None


def render_prompt(messages: Any) -> str:
    """The conversation as ``role: text`` lines, ending with ``assistant:``."""
    if not isinstance(messages, list) or not messages:
        raise TritonRequestError("messages must be a non-empty list")
    lines = []
    for message in messages:
        if not isinstance(message, dict):
            raise TritonRequestError("every message must be an object")
        lines.append(f"{message.get('role', 'user')}: {_text(message.get('content'))}")
    return "\n".join([*lines, "assistant:"])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        if len(texts) == len(content) and all(p.get("type") == "text" for p in content):
            return "".join(texts)
        raise TritonRequestError("a Triton text model takes text parts only")
    return ""


def text_model(metadata: dict[str, Any], config: dict[str, Any]) -> TextModel:
    """Pick the prompt/output tensors of a text-generation model, or refuse."""
    inputs = {t["name"]: t for t in metadata.get("inputs", [])}
    outputs = {t["name"]: t for t in metadata.get("outputs", [])}
    prompt = _bytes_tensor(inputs, "text_input")
    output = _bytes_tensor(outputs, "text_output")
    if prompt is None or output is None:
        raise TritonRequestError(
            f"model {metadata.get('name')!r} has no BYTES input/output, so it is not a "
            "text-generation model: use tensor inference for it"
        )
    decoupled = bool((config.get("model_transaction_policy") or {}).get("decoupled"))
    return TextModel(
        prompt=prompt["name"],
        prompt_shape=[1 if d < 0 else d for d in prompt.get("shape", [1])] or [1],
        output=output["name"],
        decoupled=decoupled,
        max_tokens=_typed(inputs.get("max_tokens"), INT_TYPES),
        temperature=_typed(inputs.get("temperature"), FLOAT_TYPES),
    )


def _bytes_tensor(tensors: dict[str, Any], preferred: str) -> dict[str, Any] | None:
    if tensors.get(preferred, {}).get("datatype") == "BYTES":
        return dict(tensors[preferred])
    return next((dict(t) for t in tensors.values() if t.get("datatype") == "BYTES"), None)


def _typed(tensor: dict[str, Any] | None, kinds: frozenset[str]) -> tuple[str, str] | None:
    if tensor is None or tensor.get("datatype") not in kinds:
        return None
    return str(tensor["name"]), str(tensor["datatype"])


def completion(text: str, model: str, finish: str = "stop") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def chunk(
    cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def tensor_inputs(request: dict[str, Any]) -> list[Any]:
    """KServe v2 JSON inputs → ``tritonclient`` InferInputs (data sent as JSON)."""
    specs = request.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise TritonRequestError("'inputs' must be a non-empty list of tensors")
    return [_tensor_input(spec) for spec in specs]


def _tensor_input(spec: Any) -> Any:
    if not isinstance(spec, dict):
        raise TritonRequestError("every input must be an object")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise TritonRequestError("every input needs a 'name' and a 'datatype'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise TritonRequestError(f"input {name!r}: 'shape' must be a list of sizes")
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise TritonRequestError(f"input {name!r}: unknown datatype {datatype!r}")
    try:
        array = np.array(spec.get("data"), dtype=dtype).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise TritonRequestError(f"input {name!r}: data does not fit {shape}: {exc}") from None
    tensor = InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


class TritonProvider:
    """Triton over ``tritonclient.http.aio`` (one client per base URL) and httpx for SSE."""

    kind = "triton"

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self.http = pooled_http_client(self.limits)
        self._clients: dict[str, Any] = {}
        self._text_models: dict[tuple[str, str], TextModel] = {}

    def _client(self, upstream: Upstream) -> Any:
        """The pooled KServe client of this base URL, made on first use (inside the loop)."""
        client = self._clients.get(upstream.base_url)
        if client is None:
            parts = urlsplit(upstream.base_url)
            client = InferenceServerClient(
                parts.netloc + parts.path,
                conn_limit=self.limits.max_connections,
                conn_timeout=3600.0,  # the backend's own timeout is applied per call
                ssl=parts.scheme == "https",
            )
            self._clients[upstream.base_url] = client
        return client

    def _headers(self, upstream: Upstream) -> dict[str, str]:
        headers = dict(upstream.extra_headers)
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        return headers

    # --- KServe v2: health, metadata, infer ------------------------------------------
    async def health(self, upstream: Upstream) -> dict[str, bool]:
        """Server live and ready, and the upstream's model ready (KServe v2 health)."""
        client, headers = self._client(upstream), self._headers(upstream)
        with _kserve_errors(upstream):
            async with asyncio.timeout(upstream.timeout_s):
                live = bool(await client.is_server_live(headers=headers))
                ready = bool(await client.is_server_ready(headers=headers))
                model = bool(await client.is_model_ready(upstream.model, headers=headers))
        return {"live": live, "ready": ready, "model_ready": model}

    async def model_metadata(self, upstream: Upstream) -> dict[str, Any]:
        """The model's KServe v2 metadata (name, versions, platform, inputs, outputs)."""
        with _kserve_errors(upstream):
            async with asyncio.timeout(upstream.timeout_s):
                metadata: dict[str, Any] = await self._client(upstream).get_model_metadata(
                    upstream.model, headers=self._headers(upstream)
                )
        return metadata

    async def _text_model(self, upstream: Upstream) -> TextModel:
        key = (upstream.base_url, upstream.model)
        known = self._text_models.get(key)
        if known is None:
            metadata = await self.model_metadata(upstream)
            with _kserve_errors(upstream):
                async with asyncio.timeout(upstream.timeout_s):
                    config = await self._client(upstream).get_model_config(
                        upstream.model, headers=self._headers(upstream)
                    )
            with upstream_shape(upstream):
                known = self._text_models[key] = text_model(metadata, config)
        return known

    async def infer(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        """Tensor inference: a KServe v2 JSON request in, the JSON response (with data) out."""
        with caller_shape():
            inputs = tensor_inputs(request)
        wanted = request.get("outputs")
        outputs = None
        if isinstance(wanted, list) and wanted:
            names = [o.get("name") for o in wanted if isinstance(o, dict)]
            outputs = [InferRequestedOutput(str(n), binary_data=False) for n in names]
        with _kserve_errors(upstream):
            async with asyncio.timeout(upstream.timeout_s):
                if outputs is None:
                    metadata = await self.model_metadata(upstream)
                    names = [o["name"] for o in metadata.get("outputs", [])]
                    outputs = [InferRequestedOutput(n, binary_data=False) for n in names]
                result = await self._client(upstream).infer(
                    upstream.model, inputs, outputs=outputs, headers=self._headers(upstream)
                )
        with upstream_shape(upstream):
            response = dict(result.get_response())
        return response

    # --- chat ------------------------------------------------------------------------
    def _generate_body(
        self, model: TextModel, request: dict[str, Any], prompt: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {model.prompt: prompt}
        budget = request.get("max_completion_tokens") or request.get("max_tokens")
        temperature = request.get("temperature")
        if budget is not None and (not isinstance(budget, int) or budget < 0):
            raise TritonRequestError("max_tokens must be a non-negative integer")
        if temperature is not None and not isinstance(temperature, int | float):
            raise TritonRequestError("temperature must be a number")
        if model.max_tokens is not None and budget is not None:
            body[model.max_tokens[0]] = budget
        if model.temperature is not None and temperature is not None:
            body[model.temperature[0]] = float(temperature)
        return body

    def _infer_inputs(self, model: TextModel, body: dict[str, Any]) -> list[Any]:
        prompt = InferInput(model.prompt, model.prompt_shape, "BYTES")
        prompt.set_data_from_numpy(
            np.array([body[model.prompt].encode()], dtype=np.object_).reshape(model.prompt_shape)
        )
        inputs = [prompt]
        for spec in (model.max_tokens, model.temperature):
            if spec is not None and spec[0] in body:
                tensor = InferInput(spec[0], [1], spec[1])
                tensor.set_data_from_numpy(
                    np.array([body[spec[0]]], dtype=triton_to_np_dtype(spec[1]))
                )
                inputs.append(tensor)
        return inputs

    def _chat_body(self, model: TextModel, request: dict[str, Any]) -> dict[str, Any]:
        with caller_shape():
            return self._generate_body(model, request, render_prompt(request.get("messages")))

    async def chat(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        model = await self._text_model(upstream)
        body = self._chat_body(model, request)
        if model.decoupled:
            pieces = [p async for p in self._generate_stream(upstream, model, body)]
            return completion("".join(pieces), upstream.model)
        with caller_shape():
            inputs = self._infer_inputs(model, body)
        with _kserve_errors(upstream):
            async with asyncio.timeout(upstream.timeout_s):
                result = await self._client(upstream).infer(
                    upstream.model,
                    inputs,
                    outputs=[InferRequestedOutput(model.output)],
                    headers=self._headers(upstream),
                )
        with upstream_shape(upstream):
            text = _decode(result.as_numpy(model.output))
        return completion(text, upstream.model)

    async def chat_stream(
        self, upstream: Upstream, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        model = await self._text_model(upstream)
        body = self._chat_body(model, request)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        yield chunk(cid, created, upstream.model, {"role": "assistant", "content": ""}, None)
        async for piece in self._generate_stream(upstream, model, body):
            yield chunk(cid, created, upstream.model, {"content": piece}, None)
        yield chunk(cid, created, upstream.model, {}, "stop")

    async def _generate_stream(
        self, upstream: Upstream, model: TextModel, body: dict[str, Any]
    ) -> AsyncIterator[str]:
        """The text pieces of Triton's ``generate_stream`` (SSE) for ``body``."""
        url = f"{upstream.base_url}/v2/models/{upstream.model}/generate_stream"
        with translate_transport_errors(upstream):
            async with self.http.stream(
                "POST",
                url,
                content=orjson.dumps(body),
                headers={"content-type": "application/json", **self._headers(upstream)},
                timeout=request_timeout(upstream, self.limits),
            ) as response:
                if response.status_code >= 300:
                    raise _status_error(upstream, response.status_code, await response.aread())
                async for event in sse_events(response.aiter_bytes()):
                    yield self._piece(upstream, model, event.data)

    def _piece(self, upstream: Upstream, model: TextModel, data: str) -> str:
        with upstream_shape(upstream):
            return self._text_of_event(upstream, model, data)

    def _text_of_event(self, upstream: Upstream, model: TextModel, data: str) -> str:
        event = parse_json_object(upstream, data.encode())
        if "error" in event:
            raise UpstreamProtocolError(
                f"backend {_name(upstream)} failed mid-stream: {str(event['error'])[:300]}"
            )
        piece = event.get(model.output)
        if isinstance(piece, list):
            piece = "".join(str(p) for p in piece)
        return "" if piece is None else str(piece)

    async def embeddings(self, upstream: Upstream, request: dict[str, Any]) -> dict[str, Any]:
        raise TritonRequestError(
            f"backend {_name(upstream)} is Triton: embeddings are not translated; "
            "call the embedding model with tensor inference"
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await self.http.aclose()


def _decode(array: Any) -> str:
    if array is None:
        raise UpstreamProtocolError("Triton answered without the text output")
    value = np.asarray(array).reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _name(upstream: Upstream) -> str:
    return upstream.backend.name or upstream.backend.id


def _status_error(upstream: Upstream, status: int, body: bytes) -> UpstreamStatusError:
    try:
        message = str(orjson.loads(body).get("error", ""))[:500]
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:200].decode(errors="replace")
    return _triton_status(upstream, status, message)


def _triton_status(upstream: Upstream, status: int, message: str) -> UpstreamStatusError:
    lowered = message.lower()
    if "unknown model" in lowered:
        status = 404
    elif "is not ready" in lowered:
        status = 503
    return UpstreamStatusError(status, f"backend {_name(upstream)} answered {status}: {message}")


@contextlib.contextmanager
def _kserve_errors(upstream: Upstream) -> Iterator[None]:
    """Turn ``tritonclient``/aiohttp failures and the backend timeout into ``UpstreamError``."""
    name = _name(upstream)
    try:
        yield
    except UpstreamError:
        raise
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        code = int(status) if status.isdigit() else 502
        raise _triton_status(upstream, code, str(exc.message())) from None
    except TimeoutError:
        raise UpstreamTimeout(
            f"backend {name} did not answer within {upstream.timeout_s:g}s"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamConnectError(f"backend {name} unreachable: {exc}") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamProtocolError(f"backend {name} broke the connection: {exc}") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"backend {name} failed: {exc}") from None
    except (ValueError, KeyError) as exc:  # a body tritonclient could not parse
        raise UpstreamProtocolError(f"backend {name} sent an unreadable answer: {exc}") from None
    except httpx.HTTPError as exc:  # not expected here; keep the contract anyway
        raise UpstreamError(f"backend {name} failed: {exc}") from None
