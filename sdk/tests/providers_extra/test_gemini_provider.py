"""The Gemini adapter against the fake upstream's Gemini wire format over real HTTP/SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hyperinfer.client.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.providers import PROVIDER_CLASSES, ProviderRegistry
from hyperinfer.client.providers.base import PoolLimits, Provider, Upstream
from hyperinfer.client.providers.gemini import GeminiProvider, to_gemini
from hyperinfer.client.testing import fake_gemini
from hyperinfer.client.testing.fake_core import FakeState
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.contracts.config.v1 import BackendConfig
from hyperinfer.runtime.testing.servers import free_port

KEY = "g-test-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class Fake:
    state: FakeState
    provider: GeminiProvider
    upstream: Upstream

    def last_body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.state.requests[-1].body
        return body


def upstream_at(url: str, api_key: str | None = KEY, timeout_s: float = 5.0) -> Upstream:
    backend = BackendConfig(id="b-gem", name="gemini-fake", kind="gemini", base_url=url)
    return Upstream(backend=backend, model="gemini-2.0-flash", api_key=api_key, timeout_s=timeout_s)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    async with FakeUpstream(api_key=KEY) as server:
        provider = GeminiProvider(PoolLimits())
        yield Fake(server.state, provider, upstream_at(server.url))
        await provider.aclose()


def chat(text: str = "hello gemini", **extra: Any) -> dict[str, Any]:
    return {"model": "my-alias", "messages": [{"role": "user", "content": text}], **extra}


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


# --- chat ------------------------------------------------------------------------------
async def test_chat_with_system_instruction_and_usage(fake: Fake) -> None:
    request = chat()
    request["messages"].insert(0, {"role": "system", "content": "be brief"})
    answer = await fake.provider.chat(fake.upstream, {**request, "temperature": 0})
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello gemini"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    recorded = fake.state.requests[-1]
    assert recorded.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert recorded.headers["x-goog-api-key"] == KEY
    assert recorded.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert recorded.body["contents"] == [{"role": "user", "parts": [{"text": "hello gemini"}]}]
    assert recorded.body["generationConfig"] == {"temperature": 0}


async def test_max_tokens_cuts_the_answer_with_finish_length(fake: Fake) -> None:
    answer = await fake.provider.chat(fake.upstream, chat("one two three four", max_tokens=2))
    assert answer["choices"][0]["message"]["content"] == "echo: one"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert fake.last_body()["generationConfig"]["maxOutputTokens"] == 2


async def test_tool_call_and_tool_result_round_trip(fake: Fake) -> None:
    first = await fake.provider.chat(fake.upstream, chat("weather in Paris", tools=[WEATHER]))
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "weather in Paris", "days": 1}
    declared = fake.last_body()["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in declared["parameters"]  # Gemini rejects it

    follow_up = chat("weather in Paris", tools=[WEATHER])
    follow_up["messages"] += [
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
    ]
    second = await fake.provider.chat(fake.upstream, follow_up)
    assert second["choices"][0]["message"]["content"] == "tool said: sunny, 21C"
    contents = fake.last_body()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "weather in Paris", "days": 1}}}
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "sunny, 21C"}}}
    ]


async def test_tool_choice_none_and_forced(fake: Fake) -> None:
    plain = await fake.provider.chat(fake.upstream, chat(tools=[WEATHER], tool_choice="none"))
    assert plain["choices"][0]["message"]["content"] == "echo: hello gemini"
    assert fake.last_body()["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    forced = {"type": "function", "function": {"name": "get_weather"}}
    await fake.provider.chat(fake.upstream, chat(tools=[WEATHER], tool_choice=forced))
    assert fake.last_body()["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_weather"],
    }


async def test_json_schema_response_format(fake: Fake) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "$schema": "x"}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    answer = await fake.provider.chat(fake.upstream, chat("Rome", response_format=fmt))
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == {"city": "Rome"}
    config = fake.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
    }


# --- streaming -------------------------------------------------------------------------
async def test_stream_text_then_usage(fake: Fake) -> None:
    chunks = await collect(fake.provider.chat_stream(fake.upstream, chat("a b c")))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: a b c"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len({c["id"] for c in chunks}) == 1
    assert fake.state.requests[-1].path.endswith(":streamGenerateContent")


async def test_stream_tool_call(fake: Fake) -> None:
    chunks = await collect(fake.provider.chat_stream(fake.upstream, chat("Oslo", tools=[WEATHER])))
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(tc["index"], tc["function"]["name"]) for tc in calls] == [(0, "get_weather")]
    assert orjson.loads(calls[0]["function"]["arguments"])["city"] == "Oslo"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


@pytest.mark.parametrize("fault", ["cut_stream", "broken_sse"])
async def test_a_broken_stream_raises_instead_of_ending_cleanly(fake: Fake, fault: str) -> None:
    fake.state.configure(fault=fault)
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in fake.provider.chat_stream(fake.upstream, chat("one two three four")):
            seen.append(chunk)

    with pytest.raises(UpstreamProtocolError):
        await consume()
    assert seen  # frames before the fault were delivered


async def test_stream_error_status_before_the_first_byte(fake: Fake) -> None:
    fake.state.configure(fail_status=503)
    with pytest.raises(UpstreamStatusError) as info:
        await collect(fake.provider.chat_stream(fake.upstream, chat()))
    assert info.value.status == 502
    assert info.value.retryable


# --- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("upstream_status", "status", "retryable"),
    [(429, 429, True), (500, 502, True), (503, 502, True), (400, 400, False), (404, 404, False)],
)
async def test_upstream_statuses_map(
    fake: Fake, upstream_status: int, status: int, retryable: bool
) -> None:
    fake.state.configure(fail_status=upstream_status, retry_after_s=3)
    with pytest.raises(UpstreamStatusError) as info:
        await fake.provider.chat(fake.upstream, chat())
    assert (info.value.status, info.value.retryable) == (status, retryable)
    assert f"injected failure {upstream_status}" in info.value.message
    if upstream_status == 429:
        assert info.value.retry_after_s == 3
        assert info.value.headers()["retry-after"] == "3"


async def test_a_wrong_api_key_is_our_credentials_not_the_callers_fault(fake: Fake) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await fake.provider.chat(upstream_at(fake.upstream.base_url, api_key="wrong"), chat())
    assert info.value.status == 502
    assert info.value.retryable
    assert info.value.code == "API_KEY_INVALID"


async def test_malformed_json_is_a_protocol_error(fake: Fake) -> None:
    fake.state.configure(fault="malformed_json")
    with pytest.raises(UpstreamProtocolError):
        await fake.provider.chat(fake.upstream, chat())


async def test_the_backend_timeout_applies(fake: Fake) -> None:
    fake.state.configure(fault="hang", hang_s=5)
    slow = upstream_at(fake.upstream.base_url, timeout_s=0.3)
    with pytest.raises(UpstreamTimeout) as info:
        await fake.provider.chat(slow, chat())
    assert info.value.status == 504


async def test_a_dropped_connection_is_an_upstream_error(fake: Fake) -> None:
    fake.state.configure(fault="drop")
    with pytest.raises((UpstreamProtocolError, UpstreamConnectError)):
        await fake.provider.chat(fake.upstream, chat())


async def test_nothing_listening_is_a_connect_error() -> None:
    provider = GeminiProvider(PoolLimits())
    try:
        with pytest.raises(UpstreamConnectError):
            await provider.chat(upstream_at(f"http://127.0.0.1:{free_port()}"), chat())
    finally:
        await provider.aclose()


# --- embeddings ------------------------------------------------------------------------
async def test_embeddings_batch(fake: Fake) -> None:
    request = {"model": "emb", "input": ["alpha", "beta"], "dimensions": 8}
    answer = await fake.provider.embeddings(fake.upstream, request)
    assert answer["object"] == "list"
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in answer["data"])
    assert answer["data"][0]["embedding"] != answer["data"][1]["embedding"]
    single = await fake.provider.embeddings(fake.upstream, {"model": "emb", "input": "alpha"})
    assert len(single["data"]) == 1
    assert len(single["data"][0]["embedding"]) == fake_gemini.EMBEDDING_DIMENSIONS


async def test_token_array_embeddings_are_refused_as_a_bad_request(fake: Fake) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await fake.provider.embeddings(fake.upstream, {"model": "emb", "input": [[1, 2, 3]]})
    assert info.value.status == 400
    assert not info.value.retryable


# --- translation details and registration -----------------------------------------------
def test_images_consecutive_turns_and_stop_sequences() -> None:
    request = {
        "model": "m",
        "stop": "END",
        "messages": [
            {"role": "user", "content": "first"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
                ],
            },
        ],
    }
    body = to_gemini(request)
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "first"},
                {"text": "what is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                {"fileData": {"fileUri": "gs://bucket/cat.jpg"}},
            ],
        }
    ]
    assert body["generationConfig"] == {"stopSequences": ["END"]}


def test_untranslatable_requests_are_bad_requests() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        to_gemini({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})
    assert info.value.status == 400


def test_registered_for_its_kind() -> None:
    assert PROVIDER_CLASSES["gemini"].endswith(":GeminiProvider")
    provider = ProviderRegistry().get("gemini")
    assert isinstance(provider, GeminiProvider)
    assert isinstance(provider, Provider)
