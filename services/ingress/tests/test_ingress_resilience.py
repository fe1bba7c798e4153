"""Retries, fallbacks, circuit breakers, cut and garbled streams, disconnects — via the ingress."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.client.testing.scenario import Scenario

from .conftest import IngressFactory
from .test_ingress_sdks import HELLO, oai, wait_events


def two_backends(primary: FakeUpstream, fallback: FakeUpstream, **kwargs: Any) -> Scenario:
    return Scenario.build(
        backends={
            "primary": ("openai_compatible", primary.url + "/v1"),
            "fallback": ("openai_compatible", fallback.url + "/v1"),
        },
        aliases={"small": [("primary", "p-model"), ("fallback", "f-model")]},
        **kwargs,
    )


def ask(url: str, key: str) -> str | None:
    with oai(url, key) as client:
        return (
            client.chat.completions.create(model="small", messages=HELLO).choices[0].message.content
        )


@pytest.mark.parametrize(
    "failure",
    [{"fail_status": 500}, {"fail_status": 429, "retry_after_s": 30}, {"fault": "drop"}],
    ids=["500", "429-long-retry-after", "connection-drop"],
)
def test_primary_failure_is_answered_by_the_fallback(
    failure: dict[str, Any],
    fake: FakeUpstream,
    fallback: FakeUpstream,
    start_ingress: IngressFactory,
    redis_url: str,
) -> None:
    fake.configure(**failure)
    world = two_backends(fake, fallback)
    ingress = start_ingress(world)
    started = time.monotonic()
    assert ask(ingress.url, world.api_key) == "from the fallback"
    assert time.monotonic() - started < 5  # a 30 s Retry-After is not waited for
    (event,) = wait_events(redis_url, 1)
    assert event["fallback_used"] is True
    assert event["backend_id"] == "fallback"
    assert event["attempts"] >= 2


def test_timeout_goes_to_the_fallback(
    fake: FakeUpstream, fallback: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(latency_s=3)
    world = two_backends(fake, fallback, timeout_s=0.3)
    ingress = start_ingress(world)
    started = time.monotonic()
    assert ask(ingress.url, world.api_key) == "from the fallback"
    assert time.monotonic() - started < 2.5


def test_short_retry_after_is_honoured_on_the_same_backend(
    fake: FakeUpstream, fallback: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    fake.configure(fail_status=429, retry_after_s=0.3, fail_times=1)
    world = two_backends(fake, fallback)
    ingress = start_ingress(world)
    started = time.monotonic()
    assert ask(ingress.url, world.api_key) == "echo: hello there"
    assert time.monotonic() - started >= 0.3
    (event,) = wait_events(redis_url, 1)
    assert (event["attempts"], event["fallback_used"]) == (2, False)


def test_circuit_opens_then_recovers(
    fake: FakeUpstream, fallback: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(fail_status=503)
    world = two_backends(fake, fallback)
    ingress = start_ingress(world, breaker_failures=2, breaker_open_s=0.5, retries_per_backend=0)
    assert ask(ingress.url, world.api_key) == "from the fallback"
    assert ask(ingress.url, world.api_key) == "from the fallback"
    hits = len(fake.requests)
    assert hits == 2  # the breaker opened after two failures
    assert ask(ingress.url, world.api_key) == "from the fallback"
    assert len(fake.requests) == hits  # open: the primary is not called
    state = httpx.get(ingress.url + "/health/detailed").json()["dataplane"]["breakers"]
    assert state["primary"]["state"] == "open"
    fake.reset()  # the primary heals
    time.sleep(0.6)
    assert ask(ingress.url, world.api_key) == "echo: hello there"  # the half-open probe
    state = httpx.get(ingress.url + "/health/detailed").json()["dataplane"]["breakers"]
    assert state["primary"]["state"] == "closed"


def test_every_circuit_open_is_503(fake: FakeUpstream, start_ingress: IngressFactory) -> None:
    fake.configure(fail_status=500)
    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "p")]},
    )
    ingress = start_ingress(world, breaker_failures=1, breaker_open_s=30, retries_per_backend=0)
    with oai(ingress.url, world.api_key) as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="small", messages=HELLO)
        assert first.value.status_code == 502
        with pytest.raises(openai.APIStatusError) as second:
            client.chat.completions.create(model="small", messages=HELLO)
    assert second.value.status_code == 503
    assert second.value.code == "no_healthy_backend"


def test_stream_fails_over_before_the_first_byte(
    fake: FakeUpstream, fallback: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(fault="broken_sse", fault_after_frames=0)
    world = two_backends(fake, fallback)
    ingress = start_ingress(world)
    with oai(ingress.url, world.api_key) as client:
        chunks = list(client.chat.completions.create(model="small", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "from the fallback"
    )


def sse_body(url: str, key: str, body: dict[str, Any]) -> tuple[int, bytes]:
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    ) as response:
        return response.status_code, response.read()


@pytest.mark.parametrize("fault", ["cut_stream", "broken_sse"])
def test_stream_broken_after_the_first_byte_ends_with_an_error_event(
    fault: str,
    fake: FakeUpstream,
    fallback: FakeUpstream,
    start_ingress: IngressFactory,
    redis_url: str,
) -> None:
    fake.configure(fault=fault, fault_after_frames=2)
    world = two_backends(fake, fallback)
    ingress = start_ingress(world)
    words = {"role": "user", "content": "one two three four five six"}
    status, raw = sse_body(
        ingress.url, world.api_key, {"model": "small", "messages": [words], "stream": True}
    )
    assert status == 200
    events = [line for line in raw.split(b"\n\n") if line]
    assert events[0].startswith(b'data: {"id"')
    assert events[-1].startswith(b'data: {"error"')
    assert b"[DONE]" not in raw
    assert b"from the fallback" not in raw  # no failover once bytes went out
    with (
        oai(ingress.url, world.api_key) as client,
        pytest.raises(openai.APIError, match=r"mid-stream|broke|malformed|before"),
    ):
        list(client.chat.completions.create(model="small", messages=[words], stream=True))  # type: ignore[list-item]
    statuses = [e["status"] for e in wait_events(redis_url, 2)]
    assert statuses == ["error", "error"]


def test_malformed_upstream_json_is_a_clean_502(
    fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(fault="malformed_json")
    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "p")]},
    )
    ingress = start_ingress(world)
    with (
        oai(ingress.url, world.api_key) as client,
        pytest.raises(openai.InternalServerError) as failed,
    ):
        client.chat.completions.create(model="small", messages=HELLO)
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_protocol_error"


def test_client_that_leaves_mid_stream_is_charged(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    fake.configure(per_token_s=0.05)
    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "p")]},
    )
    ingress = start_ingress(world)
    words = " ".join(f"w{i}" for i in range(60))
    body = {"model": "small", "messages": [{"role": "user", "content": words}], "stream": True}
    received = 0
    with httpx.stream(
        "POST",
        ingress.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {world.api_key}"},
        timeout=10,
    ) as response:
        for chunk in response.iter_raw():
            received += chunk.count(b"data:")
            if received >= 6:
                break  # leaving the block closes the connection
    (event,) = wait_events(redis_url, 1, timeout_s=10)
    assert event["status"] == "cancelled"
    assert event["stream"] is True
    assert 5 <= event["completion_tokens"] < 40  # what had passed, not the whole answer
    assert event["prompt_tokens"] > 60
    assert event["cost_micros"] > 0


def test_messages_stream_cut_ends_with_an_anthropic_error_event(
    fake: FakeUpstream, start_ingress: IngressFactory
) -> None:
    fake.configure(fault="cut_stream", fault_after_frames=3)
    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "p")]},
    )
    ingress = start_ingress(world)
    body = {
        "model": "small",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five"}],
    }
    with httpx.stream(
        "POST", ingress.url + "/v1/messages", json=body, headers={"x-api-key": world.api_key}
    ) as response:
        raw = response.read()
    assert response.status_code == 200
    assert raw.startswith(b"event: message_start")
    assert b"event: content_block_delta" in raw
    assert raw.rstrip().split(b"\n\n")[-1].startswith(b"event: error")
    assert b"message_stop" not in raw


def test_opted_in_answers_come_from_the_response_cache(
    fake: FakeUpstream, start_ingress: IngressFactory, redis_url: str
) -> None:
    world = Scenario.build(
        backends={"primary": ("openai_compatible", fake.url + "/v1")},
        aliases={"small": [("primary", "p")]},
    )
    ingress = start_ingress(world)
    with oai(ingress.url, world.api_key) as client:
        cached = client.with_options(default_headers={"x-hyperinfer-cache": "60"})
        first = cached.chat.completions.create(model="small", messages=HELLO)
        second = cached.chat.completions.create(model="small", messages=HELLO)
        uncached = client.chat.completions.create(model="small", messages=HELLO)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert uncached.choices[0].message.content == first.choices[0].message.content
    assert len(fake.requests) == 2  # the second opted-in request never left the ingress
    events = wait_events(redis_url, 3)
    assert [e["cache_hit"] for e in events] == [False, True, False]
    assert events[1]["cost_micros"] == 0
