"""The thick client end to end: governance, providers, usage — real Redis, fake upstreams."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
import redis.asyncio as aioredis
from hyperinfer.client import (
    AuthenticationFailed,
    ChatCompletionRequest,
    ChatMessage,
    HyperInferClient,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
)
from hyperinfer.client.config_agent import store_snapshot
from hyperinfer.client.credentials import CredentialsCipher, generate_master_key
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.usage.v1 import UsageRecorded
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import ClientFactory, usage_events

HELLO = [{"role": "user", "content": "hello there"}]


def world_for(fake: FakeUpstream, **kwargs: object) -> Scenario:
    return Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "fake-model")]},
        **kwargs,  # type: ignore[arg-type]
    )


async def test_chat_answers_and_emits_one_exact_usage_event(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    client = await make_client(world_for(fake))
    answer = await client.chat({"model": "small", "messages": HELLO})
    await client.flush()
    assert answer.choices[0].message.content == "echo: hello there"
    assert fake.requests[-1].body["model"] == "fake-model"  # the alias was resolved
    raw = await redis.xrange(names.USAGE_STREAM)
    assert len(raw) == 1
    envelope = Envelope[UsageRecorded].model_validate_json(raw[0][1][b"envelope"])
    event = envelope.data
    assert envelope.type == "usage.recorded"
    assert envelope.tenant == "team-a"
    assert (event.alias, event.backend_id, event.model) == ("small", "primary", "fake-model")
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (2, 3, 5)
    assert event.tokens_estimated is False
    assert event.status == "ok"
    assert event.origin == "client"
    # 2 prompt tokens at 1 unit/Mtok + 3 completion tokens at 2 units/Mtok, in micro-units
    assert event.cost_micros == 8
    assert event.price_version == "test-1"
    assert event.reserved_tokens > event.total_tokens


async def test_typed_requests_are_accepted(fake: FakeUpstream, make_client: ClientFactory) -> None:
    client = await make_client(world_for(fake))
    request = ChatCompletionRequest(
        model="small", messages=[ChatMessage(role="user", content="typed")], max_tokens=5
    )
    answer = await client.chat(request)
    assert answer.choices[0].message.content == "echo: typed"
    assert "max_tokens" in fake.requests[-1].body
    assert "temperature" not in fake.requests[-1].body  # unset fields are not sent


async def test_usage_is_counted_and_marked_estimated_when_upstream_reports_none(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    fake.configure(report_usage=False)
    client = await make_client(world_for(fake))
    await client.chat({"model": "small", "messages": HELLO})
    await client.flush()
    (event,) = await usage_events(redis)
    assert event["tokens_estimated"] is True
    # cl100k: "echo: hello there" is 4 tokens; "hello there" + chat overhead is 3 + 3 + 2
    assert event["completion_tokens"] == 4
    assert event["prompt_tokens"] == 8


async def test_stream_hides_usage_unless_asked_but_always_meters(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    client = await make_client(world_for(fake))
    chunks = [c async for c in client.chat_stream({"model": "small", "messages": HELLO})]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert all(c.usage is None for c in chunks)
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    asked = [
        c
        async for c in client.chat_stream(
            {"model": "small", "messages": HELLO, "stream_options": {"include_usage": True}}
        )
    ]
    assert asked[-1].usage is not None
    assert asked[-1].usage.completion_tokens == 3
    await client.flush()
    events = await usage_events(redis)
    assert [e["stream"] for e in events] == [True, True]
    assert [e["completion_tokens"] for e in events] == [3, 3]
    assert all(e["tokens_estimated"] is False for e in events)
    assert all(e["ttft_ms"] is not None for e in events)


async def test_leaving_a_stream_early_is_charged_for_what_was_produced(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    fake.configure(per_token_s=0.02)
    client = await make_client(world_for(fake))
    words = " ".join(f"w{i}" for i in range(40))
    stream = client.chat_stream(
        {"model": "small", "messages": [{"role": "user", "content": words}]}
    )
    received = 0
    async with stream:
        async for chunk in stream:
            received += sum(1 for c in chunk.choices if c.delta.content)
            if received == 5:
                break
    await client.flush()
    (event,) = await usage_events(redis)
    assert event["status"] == "cancelled"
    assert event["tokens_estimated"] is True
    assert event["completion_tokens"] >= 5  # what passed through, counted
    assert event["prompt_tokens"] > 40


async def test_auth_alias_and_scope_errors(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    world = world_for(fake, scopes=["embeddings"])
    client = await make_client(world)
    with pytest.raises(PermissionDenied):
        await client.chat({"model": "small", "messages": HELLO})
    stranger = await make_client(world, api_key="hi-not-a-key")
    with pytest.raises(AuthenticationFailed):
        await stranger.chat({"model": "small", "messages": HELLO})
    await store_snapshot(redis, world_for(fake, version=2).snapshot)
    await asyncio.sleep(0.3)
    with pytest.raises(AuthenticationFailed):  # the new snapshot has new keys
        await client.chat({"model": "small", "messages": HELLO})


async def test_unknown_alias_and_expired_key(
    fake: FakeUpstream, make_client: ClientFactory
) -> None:
    client = await make_client(world_for(fake))
    with pytest.raises(ModelNotFound):
        await client.chat({"model": "no-such-alias", "messages": HELLO})
    expired = await make_client(world_for(fake, version=3, expires_at=utc_now() - timedelta(1)))
    with pytest.raises(AuthenticationFailed, match="expired"):
        await expired.chat({"model": "small", "messages": HELLO})


async def test_team_alias_overrides_global_one(
    fake: FakeUpstream, fallback: FakeUpstream, make_client: ClientFactory
) -> None:
    world = Scenario.build(
        backends={
            "global": ("openai_compatible", fake.url + "/v1"),
            "mine": ("openai_compatible", fallback.url + "/v1"),
        },
        aliases={"small": [("global", "g-model")]},
        team_aliases={"small": [("mine", "team-model")]},
    )
    client = await make_client(world)
    answer = await client.chat({"model": "small", "messages": HELLO})
    assert answer.choices[0].message.content == "from the fallback"
    assert fallback.requests[-1].body["model"] == "team-model"
    assert await client.models() == ["small"]


async def test_rate_limit_is_enforced_with_exact_retry_after(
    fake: FakeUpstream, make_client: ClientFactory
) -> None:
    client = await make_client(world_for(fake, rpm=2))
    await client.chat({"model": "small", "messages": HELLO})
    await client.chat({"model": "small", "messages": HELLO})
    with pytest.raises(RateLimited) as denied:
        await client.chat({"model": "small", "messages": HELLO})
    assert 0 < denied.value.retry_after_ms <= 30_000
    assert denied.value.headers()["retry-after"] == str(-(-denied.value.retry_after_ms // 1000))
    assert len(fake.requests) == 2  # the denied request never reached the upstream


async def test_embeddings_and_models(fake: FakeUpstream, make_client: ClientFactory) -> None:
    client = await make_client(world_for(fake))
    vectors = await client.embeddings({"model": "small", "input": ["a b", "c"]})
    assert len(vectors.data) == 2
    assert vectors.usage is not None
    assert vectors.usage.prompt_tokens == 3
    assert await client.models() == ["small"]


async def test_upstream_credentials_are_decrypted_in_memory(
    make_client: ClientFactory,
) -> None:
    master = generate_master_key()
    async with FakeUpstream(api_key="sk-upstream-secret") as locked:
        world = Scenario.build(
            backends={"locked": ("openai", locked.url + "/v1")},
            aliases={"small": [("locked", "gpt")]},
            credentials={"locked": {"api_key": "sk-upstream-secret", "OpenAI-Organization": "o"}},
            cipher=CredentialsCipher(master),
        )
        assert "sk-upstream-secret" not in world.snapshot.model_dump_json()
        client = await make_client(world, credentials_key=master)
        answer = await client.chat({"model": "small", "messages": HELLO})
        headers = locked.requests[-1].headers
    assert answer.choices[0].message.content == "echo: hello there"
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    assert headers["openai-organization"] == "o"


async def test_echo_backend_needs_no_network(
    make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    world = Scenario.build(backends={"echo": ("echo", "")}, aliases={"demo": [("echo", "echo-1")]})
    client = await make_client(world)
    answer = await client.chat({"model": "demo", "messages": HELLO})
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.model == "echo/echo-1"
    chunks = [c async for c in client.chat_stream({"model": "demo", "messages": HELLO})]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "echo: hello there"
    )
    await client.flush()
    events = await usage_events(redis)
    assert [e["completion_tokens"] for e in events] == [4, 4]
    assert all(e["tokens_estimated"] is False for e in events)


async def test_events_validate_against_the_contract(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    client = await make_client(world_for(fake))
    await client.chat({"model": "small", "messages": HELLO})
    await client.flush()
    (entry,) = await redis.xrange(names.USAGE_STREAM)
    body = orjson.loads(entry[1][b"envelope"])
    assert body["schema_version"] == 1
    assert body["source"] == "client"
    UsageRecorded.model_validate(body["data"])


async def test_client_without_started_config_waits_for_it(
    fake: FakeUpstream, redis_url: str, redis: aioredis.Redis
) -> None:
    world = world_for(fake)
    client = HyperInferClient(redis_url, world.api_key, wait_config_s=2)
    try:

        async def seed_later() -> None:
            await asyncio.sleep(0.2)
            await store_snapshot(redis, world.snapshot)

        seeding = asyncio.create_task(seed_later())
        answer = await client.chat({"model": "small", "messages": HELLO})
        await seeding
    finally:
        await client.aclose()
    assert answer.choices[0].message.content == "echo: hello there"


async def test_a_traced_client_adds_its_spans_under_the_callers(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    client = await make_client(world_for(fake), tracer=tracer)
    with tracer.start_as_current_span("agent step") as step:
        await client.chat({"model": "small", "messages": HELLO})
    await client.flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "agent step",
        "quota reserve",
        "chat fake-model",
        "usage.recorded publish",
    }
    for name in ("quota reserve", "chat fake-model", "usage.recorded publish"):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == step.get_span_context().span_id
    producer = spans["usage.recorded publish"].context
    (entry,) = await redis.xrange(names.USAGE_STREAM)
    flags = int(producer.trace_flags)
    expected = f"00-{producer.trace_id:032x}-{producer.span_id:016x}-{flags:02x}"
    assert entry[1][b"traceparent"].decode() == expected
    assert orjson.loads(entry[1][b"envelope"])["traceparent"] == expected


async def test_an_untraced_client_sends_no_traceparent(
    fake: FakeUpstream, make_client: ClientFactory, redis: aioredis.Redis
) -> None:
    client = await make_client(world_for(fake))
    await client.chat({"model": "small", "messages": HELLO})
    await client.flush()
    (entry,) = await redis.xrange(names.USAGE_STREAM)
    assert b"traceparent" not in entry[1]
    assert orjson.loads(entry[1][b"envelope"])["traceparent"] is None
