"""End to end: the official OpenAI SDK → a running ingress → a Gemini backend (the fake
upstream's Gemini wire format over real HTTP/SSE): chat, streaming, tool calls, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer

from tests.backends_fixtures import (
    INGRESS_KEY,
    IngressProcess,
    backends_snapshot,
    seed,
    usage_events,
)

pytestmark = [pytest.mark.e2e]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    workdir: Path = tmp_path_factory.mktemp("ingress-gemini")
    redis_server, nats_server = RedisServer(workdir / "redis"), NatsServer(workdir / "nats")
    redis_server.start()
    nats_server.start()
    ingress = IngressProcess(workdir, redis_server.url, nats_server.url)
    with FakeUpstream(models=["gemini-2.0-flash"]).running_in_thread() as fake:
        try:
            seed(
                redis_server.url,
                backends_snapshot(
                    {"gem": ("gemini", fake.url)}, {"gem": ("gem", "gemini-2.0-flash")}
                ),
            )
            ingress.start()
            yield {"url": ingress.url, "redis_url": redis_server.url, "fake": fake}
        finally:
            ingress.stop()
            nats_server.stop()
            redis_server.stop()


@pytest.fixture
def client(stack: dict[str, object]) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=INGRESS_KEY, max_retries=0)
    yield sdk
    sdk.close()


def test_chat_with_exact_usage(client: openai.OpenAI, stack: dict[str, object]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gem",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello gemini"},
        ],
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello gemini"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    event = usage_events(str(stack["redis_url"]), raw.headers["x-request-id"])
    assert event["provider"] == "gemini"
    assert event["tokens_estimated"] is False  # from Gemini's usageMetadata
    assert event["prompt_tokens"] == 4
    fake = stack["fake"]
    assert isinstance(fake, FakeUpstream)
    recorded = fake.state.requests[-1]
    assert recorded.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert recorded.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}


def test_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gem",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_tool_call(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="gem",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_upstream_rate_limit_reaches_the_sdk_typed(
    client: openai.OpenAI, stack: dict[str, object]
) -> None:
    fake = stack["fake"]
    assert isinstance(fake, FakeUpstream)
    fake.configure(fail_status=429, retry_after_s=2)
    try:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="gem", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        fake.state.reset()
