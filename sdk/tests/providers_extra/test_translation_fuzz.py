"""No input crashes the Gemini and Triton translations: any JSON a caller or an upstream
sends either translates or raises an ``UpstreamError`` (a clean 400 or 502), never
TypeError/KeyError/AttributeError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hyperinfer.client.errors import UpstreamError
from hyperinfer.client.providers.base import Upstream
from hyperinfer.client.providers.gemini import (
    StreamTranslator,
    from_gemini,
    to_gemini,
    to_gemini_embeddings,
)
from hyperinfer.client.providers.triton import (
    caller_shape,
    render_prompt,
    tensor_inputs,
    text_model,
    upstream_shape,
)
from hyperinfer.contracts.config.v1 import BackendConfig
from hypothesis import given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def fields(*names: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects using the field names a translator reads, with arbitrary JSON values."""
    return st.dictionaries(st.sampled_from(names), JSON, max_size=len(names))


MESSAGE = fields("role", "content", "tool_calls", "tool_call_id", "name") | JSON
CHAT_REQUEST = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=4) | JSON},
    optional={
        "tools": st.lists(fields("type", "function") | JSON, max_size=3) | JSON,
        "tool_choice": JSON,
        "response_format": fields("type", "json_schema") | JSON,
        "stop": JSON,
        "max_tokens": JSON,
        "temperature": JSON,
        "n": JSON,
        "input": JSON,
        "dimensions": JSON,
    },
)
CANDIDATE = fields("content", "finishReason", "index") | JSON
GEMINI_ANSWER = st.fixed_dictionaries(
    {},
    optional={
        "candidates": st.lists(CANDIDATE, max_size=3) | JSON,
        "usageMetadata": fields("promptTokenCount", "candidatesTokenCount", "totalTokenCount")
        | JSON,
        "promptFeedback": JSON,
        "responseId": JSON,
        "modelVersion": JSON,
    },
)
UPSTREAM = Upstream(backend=BackendConfig(id="b", name="b", kind="triton"), model="m")


def status_of(call: Callable[[], object]) -> int | None:
    """None when ``call`` translated (and its result serialises), else the error's status."""
    try:
        orjson.dumps(call())
    except UpstreamError as exc:
        return exc.status
    return None


@settings(max_examples=300, deadline=None)
@given(CHAT_REQUEST)
def test_gemini_requests_translate_or_are_refused(request: dict[str, Any]) -> None:
    assert status_of(lambda: to_gemini(request)) in (None, 400)
    assert status_of(lambda: to_gemini_embeddings("m", request)) in (None, 400)


@settings(max_examples=300, deadline=None)
@given(GEMINI_ANSWER)
def test_gemini_answers_translate_or_are_protocol_errors(answer: dict[str, Any]) -> None:
    assert status_of(lambda: from_gemini(answer, "m")) in (None, 502)
    assert status_of(lambda: StreamTranslator("m").chunks(answer)) in (None, 502)


def guarded_tensor_inputs(inputs: list[Any]) -> list[Any]:
    with caller_shape():
        return [type(i).__name__ for i in tensor_inputs({"inputs": inputs})]


@settings(max_examples=300, deadline=None)
@given(JSON, st.lists(fields("name", "datatype", "shape", "data") | JSON, max_size=3))
def test_triton_requests_translate_or_are_refused(messages: Any, inputs: list[Any]) -> None:
    assert status_of(lambda: render_prompt(messages)) in (None, 400)
    assert status_of(lambda: guarded_tensor_inputs(inputs)) in (None, 400)


TENSOR = fields("name", "datatype", "shape") | JSON


def guarded_text_model(metadata: dict[str, Any], config: dict[str, Any]) -> str:
    with upstream_shape(UPSTREAM):
        return repr(text_model(metadata, config))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {}, optional={"inputs": st.lists(TENSOR, max_size=3) | JSON, "outputs": JSON, "name": JSON}
    ),
    JSON,
)
def test_triton_metadata_reads_or_is_refused(metadata: dict[str, Any], config: Any) -> None:
    config = config if isinstance(config, dict) else {"x": config}
    # not a text model: 400; not KServe v2's shape: 502
    assert status_of(lambda: guarded_text_model(metadata, config)) in (None, 400, 502)


@pytest.mark.parametrize(
    "request_body",
    [
        {"messages": [{"role": "user", "content": "hi"}], "tools": ["x"]},
        {"messages": [{"role": "user", "content": "hi"}], "stop": 5},
        {
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": "x"},
        },
    ],
)
def test_known_odd_gemini_requests_are_400(request_body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        to_gemini(request_body)
    assert info.value.status == 400
