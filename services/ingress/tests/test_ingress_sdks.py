"""The official openai and anthropic SDKs, unchanged, against a real ingress and a fake upstream."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario

from .conftest import IngressFactory, usage_events, world_for

HELLO: Any = [{"role": "user", "content": "hello there"}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def oai(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def claude(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)


def wait_events(redis_url: str, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        events = usage_events(redis_url)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def test_openai_chat_stream_tools_embeddings_models(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = world_for(fake)
    ingress = start_ingress(world)
    with oai(ingress.url, world.api_key) as client:
        raw = client.chat.completions.with_raw_response.create(model="small", messages=HELLO)
        answer = raw.parse()
        assert answer.choices[0].message.content == "echo: hello there"
        assert len(raw.headers["x-request-id"]) == 32

        stream = client.chat.completions.create(
            model="small", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "echo: hello there"
        )
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 5

        paris: Any = [{"role": "user", "content": "Paris"}]
        called = client.chat.completions.create(model="small", messages=paris, tools=TOOLS)
        call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
        streamed = client.chat.completions.create(
            model="small", messages=paris, tools=TOOLS, stream=True
        )
        arguments = "".join(
            d.function.arguments or ""  # type: ignore[union-attr]
            for c in streamed
            for d in (c.choices[0].delta.tool_calls or [] if c.choices else [])
        )
        assert arguments == '{"city":"Paris"}'

        vectors = client.embeddings.create(model="small", input=["a b", "c"])  # base64 default
        assert len(vectors.data) == 2
        assert len(vectors.data[0].embedding) == 16
        assert [m.id for m in client.models.list()] == ["small"]
        assert client.models.retrieve("small").id == "small"
    events = wait_events(redis_url, 5)
    assert [(e["api"], e["stream"]) for e in events] == [
        ("chat", False),
        ("chat", True),
        ("chat", False),
        ("chat", True),
        ("embeddings", False),
    ]
    assert all(e["origin"] == "ingress" and e["status"] == "ok" for e in events)


def test_openai_typed_errors(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = world_for(fake, rpm=3)
    ingress = start_ingress(world, max_body_bytes=64 * 1024)
    with oai(ingress.url, "hi-wrong") as stranger:
        with pytest.raises(openai.AuthenticationError) as auth:
            stranger.chat.completions.create(model="small", messages=HELLO)
        assert auth.value.response.headers["x-request-id"]
    with oai(ingress.url, world.api_key) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="nope", messages=HELLO)
        assert missing.value.code == "model_not_found"
        huge: Any = [{"role": "user", "content": "x" * 70_000}]
        with pytest.raises(openai.APIStatusError) as too_big:
            client.chat.completions.create(model="small", messages=huge)
        assert too_big.value.status_code == 413
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="small", messages=[])
        client.chat.completions.create(model="small", messages=HELLO)
        client.chat.completions.create(model="small", messages=HELLO)
        client.chat.completions.create(model="small", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="small", messages=HELLO)
        headers = limited.value.response.headers
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == "0"


def test_permission_upstream_failure_and_timeout(
    fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    world = world_for(fake, scopes=["model:other"], timeout_s=0.3)
    ingress = start_ingress(world)
    with oai(ingress.url, world.api_key) as client, pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="small", messages=HELLO)
    open_world = world_for(fake, version=2, timeout_s=0.3)
    ingress = start_ingress(open_world)
    fake.configure(fail_status=500)
    with oai(ingress.url, open_world.api_key) as client:
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="small", messages=HELLO)
        assert failed.value.status_code == 502
        fake.reset()
        fake.configure(latency_s=2)
        with pytest.raises(openai.APIStatusError) as timed_out:
            client.chat.completions.create(model="small", messages=HELLO)
    assert timed_out.value.status_code == 504


def test_anthropic_sdk_against_any_backend(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = world_for(fake)
    ingress = start_ingress(world)
    with claude(ingress.url, world.api_key) as client:
        message = client.messages.create(model="small", max_tokens=50, messages=HELLO)
        assert message.content[0].type == "text"
        assert message.content[0].text == "echo: hello there"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 3)
        with client.messages.stream(model="small", max_tokens=50, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "echo: hello there"
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 3
        tool = {
            "name": "lookup",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
        used = client.messages.create(
            model="small",
            max_tokens=50,
            messages=[{"role": "user", "content": "find"}],
            tools=[tool],
        )
        assert used.stop_reason == "tool_use"
        assert used.content[0].type == "tool_use"
        assert used.content[0].input == {"q": "find"}
        with client.messages.stream(
            model="small",
            max_tokens=50,
            messages=[{"role": "user", "content": "find"}],
            tools=[tool],
        ) as stream:
            streamed = stream.get_final_message()
        assert streamed.content[0].type == "tool_use"
        assert streamed.content[0].input == {"q": "find"}
        # the tool result goes back as a tool message upstream
        answer = client.messages.create(
            model="small",
            max_tokens=50,
            messages=[
                {"role": "user", "content": "find"},
                {"role": "assistant", "content": [used.content[0].model_dump()]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": used.content[0].id, "content": "42"}
                    ],
                },
            ],
            tools=[tool],
        )
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "tool said: 42"
    events = wait_events(redis_url, 5)
    assert {e["api"] for e in events} == {"messages"}


def test_anthropic_typed_errors(fake: FakeUpstream, start_ingress: IngressFactory) -> None:
    world = world_for(fake, rpm=1)
    ingress = start_ingress(world)
    with claude(ingress.url, "hi-wrong") as stranger:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            stranger.messages.create(model="small", max_tokens=5, messages=HELLO)
        assert auth.value.body["type"] == "error"  # type: ignore[index]
    with claude(ingress.url, world.api_key) as client:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(model="nope", max_tokens=5, messages=HELLO)
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="small", max_tokens=0, messages=HELLO)
        client.messages.create(model="small", max_tokens=5, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="small", max_tokens=5, messages=HELLO)


def test_anthropic_backend_behind_the_openai_route(start_ingress: IngressFactory) -> None:
    with FakeUpstream(api_key="sk-ant").running_in_thread() as upstream:
        from hyperinfer.client.credentials import CredentialsCipher, generate_master_key

        master = generate_master_key()
        world = Scenario.build(
            backends={"claude": ("anthropic", upstream.url)},
            aliases={"smart": [("claude", "claude-x")]},
            credentials={"claude": {"api_key": "sk-ant"}},
            cipher=CredentialsCipher(master),
        )
        ingress = start_ingress(world, credentials_key=master)
        with oai(ingress.url, world.api_key) as client:
            answer = client.chat.completions.create(
                model="smart",
                messages=[{"role": "system", "content": "be brief"}, *HELLO],
                max_tokens=20,
            )
            assert answer.choices[0].message.content == "echo: hello there"
            assert answer.usage is not None
            assert answer.usage.completion_tokens == 3
            chunks = list(
                client.chat.completions.create(model="smart", messages=HELLO, stream=True)
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "echo: hello there"
            paris: Any = [{"role": "user", "content": "Paris"}]
            called = client.chat.completions.create(model="smart", messages=paris, tools=TOOLS)
            assert called.choices[0].finish_reason == "tool_calls"
            call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
            assert call.function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
        sent = upstream.requests[0].body
        assert sent["system"] == "be brief"
        assert sent["model"] == "claude-x"
        assert upstream.requests[0].headers["x-api-key"] == "sk-ant"


def test_health_and_metrics(fake: FakeUpstream, start_ingress: IngressFactory) -> None:
    world = world_for(fake)
    ingress = start_ingress(world)
    with oai(ingress.url, world.api_key) as client:
        client.chat.completions.create(model="small", messages=HELLO)
    detailed = httpx.get(ingress.url + "/health/detailed").json()
    assert detailed["config"]["version"] == 1
    assert detailed["dataplane"]["config_version"] == 1
    assert detailed["quota"]["redis_up"] is True
    assert "cache" in detailed
    assert httpx.get(ingress.url + "/health/ready").status_code == 200
    metrics = httpx.get(ingress.url + "/metrics").text
    labels = 'alias="small",api="chat",backend="primary",status="200"'
    assert f"hyperinfer_ingress_requests_total{{{labels}}} 1.0" in metrics
    assert "hyperinfer_ingress_upstream_latency_seconds_count" in metrics
    assert httpx.get(ingress.url + "/nope").headers["x-request-id"]


def test_config_pushed_after_start_applies_within_a_second(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    from .conftest import seed

    first = world_for(fake)
    ingress = start_ingress(first)
    time.sleep(6)  # past one check interval: the watch must survive an idle pub/sub read
    second = world_for(fake, version=2)
    seed(redis_url, second)
    deadline = time.monotonic() + 1.0
    with oai(ingress.url, second.api_key) as client:
        while True:
            try:
                client.chat.completions.create(model="small", messages=HELLO)
                break
            except openai.AuthenticationError:
                assert time.monotonic() < deadline, "the new key was not accepted within 1 s"
                time.sleep(0.05)
    with oai(ingress.url, first.api_key) as old, pytest.raises(openai.AuthenticationError):
        old.chat.completions.create(model="small", messages=HELLO)
