"""/v1/messages in front of an Anthropic backend: the caller's body and Anthropic's answer pass
through untranslated (thinking, prompt caching, top_k, metadata, documents), governed as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from hyperinfer.client.governance import cost_micros
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import DEFAULT_PRICE, Scenario

from .conftest import IngressFactory
from .test_ingress_sdks import wait_events

PREAMBLE = "you are a careful assistant and this long preamble is cached"
REQUEST: dict[str, Any] = {
    "model": "smart",
    "max_tokens": 2048,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "system": [{"type": "text", "text": PREAMBLE, "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "a memo"},
                },
                {"type": "text", "text": "hello there"},
            ],
        }
    ],
    "metadata": {"user_id": "u-42"},
    "extra_body": {"top_k": 5},  # this SDK has no top_k argument
}
WIRE_BODY = {**{k: v for k, v in REQUEST.items() if k != "extra_body"}, "top_k": 5}


@pytest.fixture
def claude_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream().running_in_thread() as server:
        yield server


def claude_world(upstream: FakeUpstream, **kwargs: Any) -> Scenario:
    return Scenario.build(
        backends={"claude": ("anthropic", upstream.url)},
        aliases={"smart": [("claude", "claude-x")]},
        **kwargs,
    )


class RecordingClaude:
    """The official SDK against the ingress, keeping every request body it sent."""

    def __init__(self, url: str, key: str) -> None:
        self.sent: list[dict[str, Any]] = []
        self.http = anthropic.DefaultHttpxClient(event_hooks={"request": [self._keep]})
        self.client = anthropic.Anthropic(
            base_url=url, api_key=key, max_retries=0, http_client=self.http
        )

    def _keep(self, request: Any) -> None:  # the SDK's own httpx request
        self.sent.append(orjson.loads(request.content))

    def close(self) -> None:
        self.client.close()
        self.http.close()


def assert_passed_through(received: dict[str, Any], sent: dict[str, Any]) -> None:
    """The upstream got the caller's body as is, in its order, but for the model."""
    assert received["top_k"] == 5
    assert received["metadata"] == {"user_id": "u-42"}
    assert list(received) == list(sent)
    assert received == {**sent, "model": "claude-x"}


def stream_raw(url: str, api_key: str) -> tuple[httpx.Response, bytes]:
    """``WIRE_BODY`` streamed through the ingress: the response and its raw SSE bytes."""
    with httpx.stream(
        "POST",
        url + "/v1/messages",
        json={**WIRE_BODY, "stream": True},
        headers={"x-api-key": api_key},
    ) as response:
        return response, response.read()


def charged(usage: anthropic.types.Usage) -> int:
    return (
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def test_thinking_and_prompt_caching_pass_through(
    claude_fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    sdk = RecordingClaude(ingress.url, world.api_key)
    try:
        first = sdk.client.messages.create(**REQUEST)
        follow_up = [
            *REQUEST["messages"],
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": "and again"},
        ]
        second = sdk.client.messages.create(**{**REQUEST, "messages": follow_up})
    finally:
        sdk.close()
    for received, sent in zip(claude_fake.requests, sdk.sent, strict=True):
        assert_passed_through(received.body, sent)
    assert sdk.sent[1]["messages"][1]["content"][0]["type"] == "thinking"  # signed, sent back

    assert first.model == "smart"  # the alias, as on every backend
    thinking, text = first.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "thinking: hello there"
    assert thinking.signature
    assert text.type == "text"
    assert text.text == "echo: hello there"
    preamble = len(PREAMBLE.split())
    assert first.usage.cache_creation_input_tokens == preamble
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == preamble
    assert second.usage.input_tokens > 0

    events = wait_events(redis_url, 2)
    for event, answer in zip(events, (first, second), strict=True):
        assert (event["api"], event["provider"], event["model"]) == (
            "messages",
            "anthropic",
            "claude-x",
        )
        # cache writes and reads are charged as prompt tokens; thinking as completion tokens
        assert event["prompt_tokens"] == charged(answer.usage)
        assert event["completion_tokens"] == answer.usage.output_tokens
        assert event["tokens_estimated"] is False
        prompt, completion = event["prompt_tokens"], event["completion_tokens"]
        assert event["cost_micros"] == cost_micros(DEFAULT_PRICE, prompt, completion)
    assert events[1]["prompt_tokens"] > second.usage.input_tokens + preamble - 1


def test_streamed_thinking_passes_through(
    claude_fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    sdk = RecordingClaude(ingress.url, world.api_key)
    try:
        with sdk.client.messages.stream(**REQUEST) as stream:
            deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
            final = stream.get_final_message()
    finally:
        sdk.close()
    (received,) = claude_fake.requests
    assert_passed_through(received.body, {**sdk.sent[0], "stream": True})
    assert "thinking_delta" in deltas
    assert "signature_delta" in deltas
    assert deltas[-1] == "text_delta"
    assert final.model == "smart"
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == "thinking: hello there"
    assert final.content[0].signature
    assert final.content[1].type == "text"
    assert final.content[1].text == "echo: hello there"
    assert final.usage.cache_creation_input_tokens == len(PREAMBLE.split())
    (event,) = wait_events(redis_url, 1)
    assert event["stream"] is True
    assert event["status"] == "ok"
    assert event["prompt_tokens"] == charged(final.usage)
    assert event["completion_tokens"] == final.usage.output_tokens
    assert event["tokens_estimated"] is False


def test_the_callers_beta_header_goes_to_the_anthropic_backend(
    claude_fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    beta = "interleaved-thinking-2025-05-14"
    client = anthropic.Anthropic(base_url=ingress.url, api_key=world.api_key)
    try:
        client.messages.create(**REQUEST, extra_headers={"anthropic-beta": beta})
        with client.messages.stream(**REQUEST, extra_headers={"anthropic-beta": beta}) as s:
            s.get_final_message()
        client.messages.create(**REQUEST)
    finally:
        client.close()
    with_beta, streamed, without = claude_fake.requests
    assert with_beta.headers.get("anthropic-beta") == beta
    assert streamed.headers.get("anthropic-beta") == beta
    assert "anthropic-beta" not in without.headers
    assert with_beta.headers.get("anthropic-version") == "2023-06-01"  # the adapter's own


def test_stream_events_are_anthropic_s_own(
    claude_fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    response, raw = stream_raw(ingress.url, world.api_key)
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["request-id"] == response.headers["x-request-id"]
    names = [block.split(b"\n")[0] for block in raw.strip().split(b"\n\n")]
    assert names[:3] == [b"event: message_start", b"event: ping", b"event: content_block_start"]
    assert names[-2:] == [b"event: message_delta", b"event: message_stop"]
    assert names.count(b"event: message_stop") == 1
    start = orjson.loads(raw.split(b"\n\n")[0].split(b"data: ", 1)[1])
    assert start["message"]["model"] == "smart"
    assert start["message"]["usage"]["cache_creation_input_tokens"] == len(PREAMBLE.split())


def test_upstream_refusals_keep_their_status(
    claude_fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    with anthropic.Anthropic(base_url=ingress.url, api_key=world.api_key, max_retries=0) as sdk:
        with pytest.raises(anthropic.BadRequestError) as refused:
            sdk.messages.create(**{**REQUEST, "thinking": {"type": "enabled", "budget_tokens": 9}})
        assert "budget_tokens" in refused.value.message
    (event,) = wait_events(redis_url, 1)
    assert (event["status"], event["http_status"]) == ("error", 400)


def test_anthropic_primary_failing_over_to_an_openai_backend(
    claude_fake: FakeUpstream,
    fallback: FakeUpstream,
    start_ingress: IngressFactory,
    redis_url: str,
) -> None:
    claude_fake.configure(fail_status=500)
    world = Scenario.build(
        backends={
            "claude": ("anthropic", claude_fake.url),
            "oai": ("openai_compatible", fallback.url + "/v1"),
        },
        aliases={"smart": [("claude", "claude-x"), ("oai", "f-model")]},
    )
    ingress = start_ingress(world)
    with anthropic.Anthropic(base_url=ingress.url, api_key=world.api_key, max_retries=0) as sdk:
        answer = sdk.messages.create(**REQUEST)
        with sdk.messages.stream(**REQUEST) as stream:
            streamed = stream.get_final_message()
    for message in (answer, streamed):  # translated from OpenAI's shape
        assert message.model == "smart"
        assert [b.type for b in message.content] == ["text"]
        assert message.content[0].text == "from the fallback"  # type: ignore[union-attr]
    assert all(r.body["thinking"] == REQUEST["thinking"] for r in claude_fake.requests)
    assert all("thinking" not in r.body for r in fallback.requests)
    assert fallback.requests[0].body["messages"][0] == {"role": "system", "content": PREAMBLE}
    events = wait_events(redis_url, 2)
    assert [(e["backend_id"], e["fallback_used"], e["stream"]) for e in events] == [
        ("oai", True, False),
        ("oai", True, True),
    ]


def test_openai_primary_failing_over_to_an_anthropic_backend(
    fake: FakeUpstream, claude_fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(fail_status=500)
    world = Scenario.build(
        backends={
            "oai": ("openai_compatible", fake.url + "/v1"),
            "claude": ("anthropic", claude_fake.url),
        },
        aliases={"smart": [("oai", "p-model"), ("claude", "claude-x")]},
    )
    ingress = start_ingress(world)
    sdk = RecordingClaude(ingress.url, world.api_key)
    try:
        answer = sdk.client.messages.create(**REQUEST)
        with sdk.client.messages.stream(**REQUEST) as stream:
            streamed = stream.get_final_message()
    finally:
        sdk.close()
    for message in (answer, streamed):  # passed through from the Anthropic fallback
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert message.usage.cache_creation_input_tokens is not None
    first, second = claude_fake.requests
    assert_passed_through(first.body, sdk.sent[0])
    assert_passed_through(second.body, {**sdk.sent[1], "stream": True})


def test_stream_cut_upstream_ends_with_an_error_event(
    claude_fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    claude_fake.configure(fault="cut_stream", fault_after_frames=5)
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    raw = stream_raw(ingress.url, world.api_key)[1]
    assert raw.startswith(b"event: message_start")
    assert b"thinking_delta" in raw
    assert raw.rstrip().split(b"\n\n")[-1].startswith(b"event: error")
    assert b"message_stop" not in raw
    (event,) = wait_events(redis_url, 1)
    assert (event["status"], event["http_status"]) == ("error", 502)


def test_client_that_leaves_mid_stream_is_charged(
    claude_fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    claude_fake.configure(per_token_s=0.05)
    world = claude_world(claude_fake)
    ingress = start_ingress(world)
    words = " ".join(f"w{i}" for i in range(60))
    body = {**WIRE_BODY, "messages": [{"role": "user", "content": words}], "stream": True}
    received = 0
    with httpx.stream(
        "POST",
        ingress.url + "/v1/messages",
        json=body,
        headers={"x-api-key": world.api_key},
        timeout=10,
    ) as response:
        for chunk in response.iter_raw():
            received += chunk.count(b"event: content_block_delta")
            if received >= 6:
                break  # leaving the block closes the connection
    (event,) = wait_events(redis_url, 1, timeout_s=10)
    assert event["status"] == "cancelled"
    assert event["prompt_tokens"] == 60 + len(PREAMBLE.split())  # message_start's, exact
    assert 5 <= event["completion_tokens"] < 60  # the thinking and text that had passed
    assert event["cost_micros"] > 0
