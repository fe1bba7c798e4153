"""End to end: the official OpenAI SDK → a running ingress → a real LLM (SmolLM2-135M on
llama.cpp, CPU), with governance on. Deterministic at temperature 0."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from hyperinfer.runtime.testing.servers import NatsServer, RedisServer

from tests.backends_fixtures import (
    INGRESS_KEY,
    INGRESS_TEAM,
    LOCAL_MODEL_ALIAS,
    IngressProcess,
    backends_snapshot,
    local_model_url_fixture,  # noqa: F401 (registers the local_model_url fixture)
    seed,
    usage_events,
)

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]

ALIAS = "smol"
MESSAGES = [{"role": "user", "content": "Name one colour of the sky."}]


@pytest.fixture(scope="module")
def stack(
    local_model_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Private Redis and NATS, the config seeded, and an ingress in front of the model."""
    workdir: Path = tmp_path_factory.mktemp("ingress-local-model")
    redis_server, nats_server = RedisServer(workdir / "redis"), NatsServer(workdir / "nats")
    redis_server.start()
    nats_server.start()
    ingress = IngressProcess(workdir, redis_server.url, nats_server.url)
    try:
        seed(
            redis_server.url,
            backends_snapshot(
                {"smol": ("openai_compatible", f"{local_model_url}/v1")},
                {ALIAS: ("smol", LOCAL_MODEL_ALIAS)},
            ),
        )
        ingress.start()
        yield {"url": ingress.url, "redis_url": redis_server.url}
    finally:
        ingress.stop()
        nats_server.stop()
        redis_server.stop()


@pytest.fixture
def client(stack: dict[str, str]) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=stack["url"] + "/v1", api_key=INGRESS_KEY, max_retries=0)
    yield sdk
    sdk.close()


def test_chat_through_the_ingress_is_real_and_deterministic(
    client: openai.OpenAI, stack: dict[str, str]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    first = raw.parse()
    again = client.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    text = first.choices[0].message.content or ""
    assert len(text.split()) >= 2  # a real model wrote words
    assert not text.startswith("echo:")
    assert again.choices[0].message.content == text  # temperature 0: the same answer
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    assert first.usage.prompt_tokens > 5  # the chat template counts, not just the words
    event = usage_events(stack["redis_url"], raw.headers["x-request-id"])
    assert event["team_id"] == INGRESS_TEAM
    assert event["alias"] == ALIAS
    assert event["model"] == LOCAL_MODEL_ALIAS
    assert event["completion_tokens"] == first.usage.completion_tokens
    assert event["tokens_estimated"] is False  # llama.cpp reported usage


def test_stream_through_the_ingress_matches_the_whole_answer(
    client: openai.OpenAI, stack: dict[str, str]
) -> None:
    whole = client.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    with client.chat.completions.with_streaming_response.create(
        model=ALIAS,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3  # really streamed, piece by piece
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    event = usage_events(stack["redis_url"], request_id)
    assert event["stream"] is True
    assert event["completion_tokens"] > 0
    assert event["tokens_estimated"] is True  # llama.cpp streams carry no usage: counted


def test_unknown_alias_is_a_typed_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-alias", messages=MESSAGES)  # type: ignore[arg-type]


def test_opt_in_cache_answers_the_second_call_without_the_model(
    client: openai.OpenAI, stack: dict[str, str]
) -> None:
    messages = [{"role": "user", "content": "Name one fruit."}]
    cached = client.with_options(default_headers={"x-hyperinfer-cache": "60"})
    first = cached.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=12,
    )
    second = cached.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=12,
    )
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    miss = usage_events(stack["redis_url"], first.headers["x-request-id"])
    hit = usage_events(stack["redis_url"], second.headers["x-request-id"])
    assert miss["cache_hit"] is False
    assert hit["cache_hit"] is True
    with urllib.request.urlopen(stack["url"] + "/health/detailed", timeout=5) as resp:
        stats = json.loads(resp.read())["cache"]
    assert stats["backend"] == "redis"
    assert stats["hits"] >= 1
    assert stats["writes"] >= 1
    uncached = client.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=12,
    )
    assert usage_events(stack["redis_url"], uncached.headers["x-request-id"])["cache_hit"] is False
