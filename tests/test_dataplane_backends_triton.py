"""End to end with a real Triton Inference Server (pytriton, CPU): chat and streaming through
a running ingress to Triton text models, and tensor inference through the Triton adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from hyperinfer.client.providers.base import PoolLimits, Upstream
from hyperinfer.client.providers.triton import TritonProvider
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer

from tests.backends_fixtures import (
    INGRESS_KEY,
    IngressProcess,
    backends_snapshot,
    seed,
    triton_url_fixture,  # noqa: F401 (registers the triton_url fixture)
    usage_events,
)

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(triton_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir: Path = tmp_path_factory.mktemp("ingress-triton")
    redis_server, nats_server = RedisServer(workdir / "redis"), NatsServer(workdir / "nats")
    redis_server.start()
    nats_server.start()
    ingress = IngressProcess(workdir, redis_server.url, nats_server.url)
    try:
        seed(
            redis_server.url,
            backends_snapshot(
                {"triton": ("triton", triton_url)},
                {"tiny": ("triton", "tinygen"), "tiny-stream": ("triton", "tinygen_stream")},
            ),
        )
        ingress.start()
        yield {"url": ingress.url, "redis_url": redis_server.url, "triton_url": triton_url}
    finally:
        ingress.stop()
        nats_server.stop()
        redis_server.stop()


@pytest.fixture
def client(stack: dict[str, str]) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=stack["url"] + "/v1", api_key=INGRESS_KEY, max_retries=0)
    yield sdk
    sdk.close()


def test_chat_through_the_ingress_to_triton(client: openai.OpenAI, stack: dict[str, str]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello from the ingress"}],
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "You said: hello from the ingress"
    event = usage_events(stack["redis_url"], raw.headers["x-request-id"])
    assert event["backend_id"] == "triton"
    assert event["provider"] == "triton"
    assert event["completion_tokens"] > 0
    assert event["tokens_estimated"] is True  # Triton reports no usage: counted


def test_stream_through_the_ingress_from_a_decoupled_triton_model(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-stream",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert [p for p in pieces if p] == ["You", " said:", " one", " two", " three"]


async def test_tensor_inference_through_the_triton_adapter(triton_url: str) -> None:
    backend = BackendConfig(id="triton", name="triton", kind="triton", base_url=triton_url)
    provider = TritonProvider(PoolLimits())
    try:
        answer = await provider.infer(
            Upstream(backend=backend, model="tensor_add", timeout_s=30),
            {
                "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                    {"name": "b", "datatype": "FP32", "shape": [4], "data": [0.5, 0.5, 1, 1]},
                ]
            },
        )
    finally:
        await provider.aclose()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["sum"]["shape"] == [4]
    assert outputs["sum"]["data"] == [1.5, 2.5, 4.0, 5.0]
    assert outputs["product"]["data"] == [0.5, 1.0, 3.0, 4.0]
