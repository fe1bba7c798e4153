"""The pure parts of the data plane: breakers, route plans, translations, SSE, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hyperinfer.client.anthropic_format import (
    ChunksFromEvents,
    EventsFromChunks,
    charged_tokens,
    content_texts,
    event_text,
    event_usage,
    from_messages_request,
    from_messages_response,
    to_messages_request,
    to_messages_response,
)
from hyperinfer.client.errors import (
    AuthenticationFailed,
    InvalidRequest,
    UpstreamStatusError,
    UpstreamTimeout,
)
from hyperinfer.client.governance import GovernanceIndex, cost_micros
from hyperinfer.client.providers.sse import sse_events
from hyperinfer.client.resilience import CircuitBreaker, RetryPolicy
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.client.tokens import count_tokens, estimate_tokens
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ModelPrice
from hyperinfer.contracts.routing.v1 import RouteCandidate, RoutingTablePublished


def test_breaker_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=2, open_s=10)
    breaker.failure(now=0)
    assert breaker.allow(now=0)
    breaker.failure(now=0)
    assert breaker.state == "open"
    assert not breaker.allow(now=5)
    assert breaker.allow(now=11)  # half-open: one probe
    assert not breaker.allow(now=11)  # ... and only one
    breaker.failure(now=11)
    assert breaker.state == "open"
    assert breaker.allow(now=22)
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow(now=22)


def test_retry_policy_honours_retry_after_and_skips_timeouts() -> None:
    policy = RetryPolicy(retries_per_backend=1, base_s=0.1, max_backoff_s=1)
    limited = UpstreamStatusError(429, "slow down", retry_after_s=3)
    assert policy.backoff(0, limited) == 3
    assert 0 <= policy.backoff(5, UpstreamStatusError(500, "x")) <= 1
    assert policy.retry_same_backend(limited, 0)
    assert not policy.retry_same_backend(limited, 1)
    assert not policy.retry_same_backend(UpstreamTimeout("t"), 0)
    assert not policy.retry_same_backend(UpstreamStatusError(400, "bad"), 0)


def three_backends() -> Scenario:
    return Scenario.build(
        backends={b: ("openai_compatible", f"http://{b}") for b in ("a", "b", "c")},
        aliases={"m": [("a", "ma"), ("b", "mb"), ("c", "mc")]},
    )


def test_static_plan_keeps_config_order_and_router_weights_pick_the_primary() -> None:
    world = three_backends()
    static = GovernanceIndex.build(world.snapshot)
    caller = static.authenticate(world.api_key)
    assert [c.backend_id for c in static.plan(caller, "m").attempts(0.99)] == ["a", "b", "c"]
    table = RoutingTablePublished(
        version=4,
        generated_at=utc_now(),
        aliases={
            "m": [
                RouteCandidate(backend_id="a", model="ma", weight=0.0, healthy=False),
                RouteCandidate(backend_id="b", model="mb", weight=0.25),
                RouteCandidate(backend_id="c", model="mc", weight=0.75),
            ]
        },
    )
    routed = GovernanceIndex.build(world.snapshot, table)
    plan = routed.plan(caller, "m")
    assert [c.backend_id for c in plan.attempts(0.1)] == ["b", "c", "a"]  # ejected last
    assert [c.backend_id for c in plan.attempts(0.5)] == ["c", "b", "a"]
    picks = [plan.attempts()[0].backend_id for _ in range(2000)]
    assert 0.65 < picks.count("c") / len(picks) < 0.85
    assert "a" not in picks


def test_key_hash_lookup_and_cost() -> None:
    world = three_backends()
    index = GovernanceIndex.build(world.snapshot)
    with pytest.raises(AuthenticationFailed):
        index.authenticate(None)
    with pytest.raises(AuthenticationFailed):
        index.authenticate(world.api_key + "x")
    assert index.authenticate(world.api_key).key_id == "key-a"
    price = ModelPrice(input_per_mtok_micros=150_000, output_per_mtok_micros=600_000)
    assert cost_micros(price, 1000, 1000) == 750  # 0.15 + 0.6 per 1k tokens in micros
    assert cost_micros(price, 1, 0) == 1  # rounds up, never free
    assert cost_micros(None, 10, 10) == 0


def test_openai_request_becomes_anthropic_and_back() -> None:
    request: dict[str, Any] = {
        "model": "alias",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"P"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "required",
        "stop": "END",
        "response_format": {"type": "json_object"},
    }
    body = to_messages_request(request, "claude-x", 4096)
    assert body["model"] == "claude-x"
    assert body["max_tokens"] == 4096
    assert body["system"].startswith("be brief")
    assert "JSON" in body["system"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "w",
        "input": {"c": "P"},
    }
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"]
    back = from_messages_request({**body, "model": "alias"})
    roles = [m["role"] for m in back["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assert back["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"c":"P"}'
    assert back["tool_choice"] == "required"


def test_anthropic_response_and_stream_become_openai() -> None:
    response = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 5},
    }
    converted = from_messages_response(response)
    assert converted["choices"][0]["finish_reason"] == "tool_calls"
    assert converted["usage"] == {"prompt_tokens": 15, "completion_tokens": 4, "total_tokens": 19}
    events = [
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 7}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    translator = ChunksFromEvents()
    chunks = [c for e in events for c in translator.feed(e)]
    assert chunks[1]["choices"][0]["delta"] == {"content": "hi"}
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_anthropic_usage_is_charged_with_the_cache_and_thinking() -> None:
    usage = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 20,
        "output_tokens": 9,
    }
    assert charged_tokens(usage) == (123, 9)
    assert charged_tokens({"output_tokens": 4}) == (None, 4)
    assert charged_tokens({"input_tokens": "3", "output_tokens": -1}) == (None, None)
    assert charged_tokens(None) == (None, None)
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t", "name": "w", "input": {"c": "P"}},
    ]
    assert content_texts(content) == ["hmm", "hi", '{"c":"P"}']
    start = {"type": "message_start", "message": {"usage": usage}}
    assert event_usage(start) == usage
    assert event_usage({"type": "message_delta", "usage": {"output_tokens": 2}}) == {
        "output_tokens": 2
    }
    assert event_usage({"type": "ping"}) is None
    thinking = {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "a"}}
    signature = {
        "type": "content_block_delta",
        "delta": {"type": "signature_delta", "signature": "x"},
    }
    assert (event_text(thinking), event_text(signature)) == ("a", None)


def test_openai_answer_becomes_anthropic_events() -> None:
    events = EventsFromChunks("alias")
    out = events.feed(
        {"id": "chatcmpl-1", "choices": [{"delta": {"role": "assistant", "content": ""}}]}
    )
    out += events.feed({"choices": [{"delta": {"content": "hi"}}]})
    out += events.feed(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_9",
                                "function": {"name": "w", "arguments": "{}"},
                            }
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    out += events.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    out += events.close()
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in out]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = orjson.loads(out[-2].split(b"data: ", 1)[1])
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 3, "output_tokens": 2}
    whole = to_messages_response(
        {
            "id": "chatcmpl-2",
            "choices": [{"message": {"content": "ok"}, "finish_reason": "length"}],
        },
        "alias",
    )
    assert whole["stop_reason"] == "max_tokens"
    assert whole["id"] == "msg_2"


def test_messages_request_validation() -> None:
    with pytest.raises(InvalidRequest):
        from_messages_request({"model": "m", "messages": []})
    with pytest.raises(InvalidRequest):
        from_messages_request(
            {"model": "m", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]}
        )


async def test_sse_decoder_handles_split_frames_and_crlf() -> None:
    async def body() -> AsyncIterator[bytes]:
        for piece in (
            b"event: a\r\nda",
            b"ta: 1\r\n",
            b"\r\n: comment\n\ndata: x\ndata: y\n\n",
            b"data: cut",
        ):
            yield piece

    events = [e async for e in sse_events(body())]
    assert [(e.event, e.data) for e in events] == [("a", "1"), (None, "x\ny")]


def test_tokens_are_counted_offline() -> None:
    assert count_tokens("hello world") == 2  # cl100k_base, from the wheel
    assert count_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
