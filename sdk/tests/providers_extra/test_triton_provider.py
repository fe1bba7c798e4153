"""The Triton adapter against a real Triton Inference Server (pytriton, CPU).

Models (hyperinfer.client.testing.triton_server): ``tinygen`` answers
``You said: <last user line>``, ``tinygen_stream`` is the same model decoupled (one
response per word), ``tensor_add`` adds and multiplies two FP32 vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.providers import ProviderRegistry
from hyperinfer.client.providers.base import PoolLimits, Provider, Upstream
from hyperinfer.client.providers.triton import TritonProvider, TritonRequestError, render_prompt
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.runtime.testing.servers import free_port

pytestmark = pytest.mark.backends


def upstream(url: str, model: str, timeout_s: float = 30.0) -> Upstream:
    backend = BackendConfig(id="b-tri", name="triton-cpu", kind="triton", base_url=url)
    return Upstream(backend=backend, model=model, timeout_s=timeout_s)


@pytest.fixture
async def provider() -> AsyncIterator[TritonProvider]:
    provider = TritonProvider(PoolLimits())
    yield provider
    await provider.aclose()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": text}]
    return {"model": "alias", "messages": messages, **extra}


def add_request(a: list[float], b: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [len(a)], "data": a},
            {"name": "b", "datatype": "FP32", "shape": [len(b)], "data": b},
        ],
        **extra,
    }


# --- KServe v2 ------------------------------------------------------------------------
async def test_health_and_metadata(provider: TritonProvider, triton_url: str) -> None:
    assert await provider.health(upstream(triton_url, "tinygen")) == {
        "live": True,
        "ready": True,
        "model_ready": True,
    }
    assert (await provider.health(upstream(triton_url, "no_such_model")))["model_ready"] is False
    metadata = await provider.model_metadata(upstream(triton_url, "tensor_add"))
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("a", "FP32"),
        ("b", "FP32"),
    ]
    assert [t["name"] for t in metadata["outputs"]] == ["sum", "product"]


async def test_tensor_inference(provider: TritonProvider, triton_url: str) -> None:
    answer = await provider.infer(
        upstream(triton_url, "tensor_add"), add_request([1, 2, 3], [10, 20, 30.5])
    )
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_name"] == "tensor_add"
    assert outputs["sum"]["data"] == [11.0, 22.0, 33.5]
    assert outputs["sum"]["shape"] == [3]
    assert outputs["sum"]["datatype"] == "FP32"
    assert outputs["product"]["data"] == [10.0, 40.0, 91.5]


async def test_tensor_inference_of_chosen_outputs(
    provider: TritonProvider, triton_url: str
) -> None:
    request = add_request([2], [5], outputs=[{"name": "product"}])
    answer = await provider.infer(upstream(triton_url, "tensor_add"), request)
    assert [(o["name"], o["data"]) for o in answer["outputs"]] == [("product", [10.0])]


async def test_a_request_triton_refuses_is_the_callers_400(
    provider: TritonProvider, triton_url: str
) -> None:
    request = add_request([1], [2])
    request["inputs"][0]["datatype"] = "INT32"  # the model declares FP32
    with pytest.raises(UpstreamStatusError) as info:
        await provider.infer(upstream(triton_url, "tensor_add"), request)
    assert info.value.status == 400
    assert "expects 'FP32'" in info.value.message
    assert not info.value.retryable


async def test_a_model_that_fails_is_a_retryable_502(
    provider: TritonProvider, triton_url: str
) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await provider.infer(upstream(triton_url, "tensor_add"), add_request([1, 2], [1]))
    assert info.value.status == 502
    assert "differ in shape" in info.value.message
    assert info.value.retryable


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2, 3]}]},
        {"inputs": [{"name": "a", "datatype": "NOPE", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": "3", "data": [1]}]},
        {"inputs": ["a"]},
    ],
)
async def test_malformed_tensor_requests_are_refused_before_calling(
    provider: TritonProvider, bad: dict[str, Any]
) -> None:
    nowhere = upstream(f"http://127.0.0.1:{free_port()}", "tensor_add")
    with pytest.raises(TritonRequestError) as info:
        await provider.infer(nowhere, bad)
    assert info.value.status == 400


async def test_unknown_model_is_404(provider: TritonProvider, triton_url: str) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await provider.chat(upstream(triton_url, "no_such_model"), chat("hi"))
    assert info.value.status == 404


# --- chat ------------------------------------------------------------------------------
async def test_chat_on_a_text_model(provider: TritonProvider, triton_url: str) -> None:
    answer = await provider.chat(upstream(triton_url, "tinygen"), chat("hello triton"))
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: hello triton",
    }
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in answer  # Triton reports none: the data plane counts (estimated)


async def test_max_tokens_reaches_the_model(provider: TritonProvider, triton_url: str) -> None:
    answer = await provider.chat(
        upstream(triton_url, "tinygen"), chat("one two three four", max_tokens=3)
    )
    assert answer["choices"][0]["message"]["content"] == "You said: one"


async def test_chat_on_a_decoupled_model_joins_its_stream(
    provider: TritonProvider, triton_url: str
) -> None:
    answer = await provider.chat(upstream(triton_url, "tinygen_stream"), chat("streamed reply"))
    assert answer["choices"][0]["message"]["content"] == "You said: streamed reply"


async def test_stream_from_a_decoupled_model(provider: TritonProvider, triton_url: str) -> None:
    stream = provider.chat_stream(upstream(triton_url, "tinygen_stream"), chat("a b c"))
    chunks = [c async for c in stream]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert pieces[0] == ""
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert pieces[1:-1] == ["You", " said:", " a", " b", " c"]  # one chunk per word
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert len({c["id"] for c in chunks}) == 1


async def test_stream_from_a_plain_model_is_one_piece(
    provider: TritonProvider, triton_url: str
) -> None:
    stream = provider.chat_stream(upstream(triton_url, "tinygen"), chat("x y"))
    pieces = [c["choices"][0]["delta"].get("content") async for c in stream]
    assert pieces == ["", "You said: x y", None]


async def test_chat_on_a_tensor_model_is_refused(provider: TritonProvider, triton_url: str) -> None:
    with pytest.raises(TritonRequestError, match="not a text-generation model"):
        await provider.chat(upstream(triton_url, "tensor_add"), chat("hi"))


async def test_embeddings_are_refused(provider: TritonProvider, triton_url: str) -> None:
    with pytest.raises(TritonRequestError):
        await provider.embeddings(upstream(triton_url, "tinygen"), {"input": "x"})


# --- transport failures -------------------------------------------------------------------
async def test_nothing_listening_is_a_connect_error(provider: TritonProvider) -> None:
    nowhere = upstream(f"http://127.0.0.1:{free_port()}", "tinygen")
    with pytest.raises(UpstreamConnectError):
        await provider.chat(nowhere, chat("hi"))
    with pytest.raises(UpstreamConnectError):
        await provider.infer(nowhere, add_request([1], [1]))


async def test_the_backend_timeout_applies(provider: TritonProvider) -> None:
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    hung = upstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", "tinygen", 0.3)
    try:
        with pytest.raises(UpstreamTimeout):
            await provider.chat(hung, chat("hi"))
        with pytest.raises(UpstreamTimeout):
            await provider.infer(hung, add_request([1], [1], outputs=[{"name": "sum"}]))
    finally:
        release.set()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# --- pure parts -------------------------------------------------------------------------
def test_prompt_template() -> None:
    assert render_prompt(chat("hi")["messages"]) == "system: be kind\nuser: hi\nassistant:"
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert render_prompt([{"role": "user", "content": parts}]) == "user: ab\nassistant:"
    with pytest.raises(TritonRequestError):
        render_prompt([{"role": "user", "content": [{"type": "image_url"}]}])
    with pytest.raises(TritonRequestError):
        render_prompt([])


def test_registered_for_its_kind() -> None:
    provider = ProviderRegistry().get("triton")
    assert isinstance(provider, TritonProvider)
    assert isinstance(provider, Provider)
