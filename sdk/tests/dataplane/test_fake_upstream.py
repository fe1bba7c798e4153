"""The fake upstream is faithful enough that the official SDKs accept it, and misbehaves on cue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest
from hyperinfer.client.testing.fake_upstream import FakeUpstream
from hyperinfer.runtime.testing.servers import free_port, wait_for_port

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


def oai(fake: FakeUpstream) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="k", max_retries=0)
    _CLIENTS.append(client)
    return client


def claude(fake: FakeUpstream, api_key: str = "k") -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key=api_key, max_retries=0)
    _CLIENTS.append(client)
    return client


_CLIENTS: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = []


@pytest.fixture(autouse=True)
async def _close_sdk_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


async def test_openai_chat_is_deterministic_echo_with_usage(fake: FakeUpstream) -> None:
    result = await oai(fake).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}]
    )
    assert result.choices[0].message.content == "echo: hello there"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2, 3)


async def test_openai_stream_sends_usage_last_only_when_asked(fake: FakeUpstream) -> None:
    client = oai(fake)
    messages = [{"role": "user", "content": "one two three"}]
    stream = await client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    plain = await client.chat.completions.create(model="m", messages=messages, stream=True)
    assert all(c.usage is None for c in [c async for c in plain])


async def test_openai_tool_calls_whole_and_streamed(fake: FakeUpstream) -> None:
    client = oai(fake)
    messages = [{"role": "user", "content": "Paris"}]
    result = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city":"Paris","days":1}'  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=TOOLS, stream=True
    )
    arguments = ""
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            arguments += delta.function.arguments or ""  # type: ignore[union-attr]
    assert arguments == '{"city":"Paris","days":1}'


async def test_openai_json_schema_and_embeddings(fake: FakeUpstream) -> None:
    client = oai(fake)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    result = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert result.choices[0].message.content == '{"n":1}'
    # the SDK asks for base64 and decodes it: both encodings must agree
    vectors = await client.embeddings.create(model="e", input=["a b", "c"])
    floats = await client.embeddings.create(model="e", input=["a b", "c"], encoding_format="float")
    assert len(vectors.data) == 2
    assert len(vectors.data[0].embedding) == 16
    assert vectors.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-5)
    assert vectors.usage.prompt_tokens == 3


async def test_anthropic_messages_text_and_streamed_tool_use(fake: FakeUpstream) -> None:
    client = claude(fake)
    message = await client.messages.create(
        model="c", max_tokens=50, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hi claude"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 3)
    tool = {
        "name": "lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    async with client.messages.stream(
        model="c", max_tokens=50, messages=[{"role": "user", "content": "find"}], tools=[tool]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"q": "find"}


async def test_anthropic_requires_version_and_max_tokens(fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        body = {"model": "c", "messages": [{"role": "user", "content": "x"}]}
        no_version = await http.post("/v1/messages", json={**body, "max_tokens": 5})
        no_max = await http.post("/v1/messages", json=body, headers={"anthropic-version": "1"})
    assert no_version.status_code == 400
    assert no_max.status_code == 400
    assert no_max.json()["type"] == "error"
    assert no_max.json()["error"]["type"] == "invalid_request_error"


async def test_injected_statuses_reach_sdks_as_typed_errors(fake: FakeUpstream) -> None:
    fake.configure(fail_status=429, retry_after_s=3, fail_times=1)
    with pytest.raises(openai.RateLimitError) as rate:
        await oai(fake).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert rate.value.response.headers["retry-after"] == "3"
    fake.configure(fail_status=529, fail_times=1)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await claude(fake).messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529
    # fail_times ran out: the next request succeeds
    ok = await oai(fake).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert ok.choices[0].message.content == "echo: x"


async def test_faults_per_model(fake: FakeUpstream) -> None:
    fake.configure("broken", fault="malformed_json")
    fake.configure("dropped", fault="drop")
    fake.configure("cut", fault="cut_stream", fault_after_frames=2)
    body = {"messages": [{"role": "user", "content": "a b c d"}]}
    async with httpx.AsyncClient(base_url=fake.url) as http:
        broken = await http.post("/v1/chat/completions", json={**body, "model": "broken"})
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/v1/chat/completions", json={**body, "model": "dropped"})
        received: list[bytes] = []
        stream_body = {**body, "model": "cut", "stream": True}
        with pytest.raises(httpx.RemoteProtocolError):
            await read_stream(http, stream_body, received)
        fine = await http.post("/v1/chat/completions", json={**body, "model": "other"})
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    assert b"".join(received).count(b"data:") == 2
    assert b"[DONE]" not in b"".join(received)
    assert fine.json()["choices"][0]["message"]["content"] == "echo: a b c d"


async def read_stream(http: httpx.AsyncClient, body: dict[str, object], into: list[bytes]) -> None:
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        async for chunk in response.aiter_bytes():
            into.append(chunk)


async def test_hang_lasts_until_the_client_gives_up(fake: FakeUpstream) -> None:
    fake.configure(fault="hang")
    async with httpx.AsyncClient(base_url=fake.url, timeout=0.3) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert time.monotonic() - started >= 0.3


async def test_capacity_queues_and_metrics_show_it(fake: FakeUpstream) -> None:
    fake.set_capacity(max_concurrency=2, max_queue=1)
    fake.configure(latency_s=0.3)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=fake.url) as http:
        tasks = [
            asyncio.create_task(http.post("/v1/chat/completions", json=body)) for _ in range(4)
        ]
        await asyncio.sleep(0.15)
        metrics = (await http.get("/metrics")).text
        statuses = sorted(r.status_code for r in await asyncio.gather(*tasks))
        after = (await http.get("/metrics")).text
    assert 'vllm:num_requests_running{model_name="m"} 2' in metrics
    assert 'vllm:num_requests_waiting{model_name="m"} 1' in metrics
    assert 'vllm:kv_cache_usage_perc{model_name="m"} 1.0000' in metrics
    assert statuses == [200, 200, 200, 429]
    assert 'vllm:request_success_total{model_name="m"} 3' in after
    assert 'vllm:e2e_request_latency_seconds_count{model_name="m"} 3' in after


async def test_control_api_changes_behaviour_at_run_time(fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        changed = await http.post("/_fake/behaviour", json={"answer": "fixed words", "model": "m"})
        bad = await http.post("/_fake/behaviour", json={"no_such_field": 1})
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        answer = (await http.post("/v1/chat/completions", json=body)).json()
        recorded = (await http.get("/_fake/requests")).json()
        await http.post("/_fake/reset")
        state = (await http.get("/_fake/state")).json()
    assert changed.status_code == 200
    assert bad.status_code == 400
    assert answer["choices"][0]["message"]["content"] == "fixed words"
    assert recorded[-1]["body"]["messages"][0]["content"] == "x"
    assert state["per_model"] == {}
    assert state["requests_recorded"] == 0


async def test_api_key_is_enforced_when_set() -> None:
    async with FakeUpstream(api_key="sk-upstream") as fake:
        with pytest.raises(openai.AuthenticationError):
            await oai(fake).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        ok = await claude(fake, "sk-upstream").messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert ok.content[0].type == "text"


def test_runs_as_a_process_and_in_a_thread() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperinfer.client.testing.fake_upstream", "--port", str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert models["data"][0]["id"] == "fake-model"
    with FakeUpstream().running_in_thread() as fake:
        sync = openai.OpenAI(base_url=fake.url + "/v1", api_key="k")
        result = sync.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "t"}]
        )
    assert result.choices[0].message.content == "echo: t"
