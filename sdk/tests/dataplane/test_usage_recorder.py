"""The usage recorder against a real Redis: envelopes as the contract says, settles and
XADDs in one batch (reloading a forgotten settle script), no stream cap unless asked,
and nothing lost silently when Redis refuses."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from hyperinfer.client.quota import QuotaIndex, QuotaLimiter, hot_path_redis
from hyperinfer.client.resp import RespClient
from hyperinfer.client.usage import UsageDraft, UsageRecorder, envelope_json, usage_data
from hyperinfer.contracts import Envelope, names, utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot, KeyConfig, QuotaConfig, TeamConfig
from hyperinfer.contracts.usage.v1 import UsageRecorded
from hyperinfer.runtime.testing.servers import RedisServer


def draft(n: int = 0, **changes: Any) -> UsageDraft:
    now = time.time()
    fields: dict[str, Any] = {
        "request_id": f"req-{n}",
        "team_id": "t1",
        "key_id": "k1",
        "user_id": None,
        "alias": "small",
        "api": "chat",
        "stream": False,
        "origin": "client",
        "started_at": now - 0.25,
        "model": "fake-model",
        "backend_id": "primary",
        "provider": "openai_compatible",
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "latency_ms": 250.0,
        "ttft_ms": 40.5,
        "finished_at": now,
    }
    return UsageDraft(**{**fields, **changes})


def test_envelope_json_is_what_the_contract_models_write() -> None:
    data = usage_data(draft(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"), 12, 30, False)
    raw = envelope_json(data, "ingress", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    parsed = Envelope[UsageRecorded].model_validate_json(raw)
    expected = Envelope[UsageRecorded](
        id=parsed.id,
        time=parsed.time,
        type="usage.recorded",
        source="ingress",
        tenant="t1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        data=UsageRecorded.model_validate(data),
    )
    assert parsed == expected
    assert Envelope[UsageRecorded].model_validate_json(expected.model_dump_json()) == parsed
    assert parsed.data.started_at.tzinfo is not None
    assert abs((utc_now() - parsed.time).total_seconds()) < 5
    assert parsed.data.total_tokens == 42


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[tuple[RespClient, QuotaLimiter, aioredis.Redis]]:
    plain = hot_path_redis(redis_url)
    wire = RespClient(redis_url)
    limiter = QuotaLimiter(plain, node_id="rec", require_budgets_loaded=False, wire=wire)
    yield wire, limiter, plain
    await wire.aclose()
    await plain.aclose()


def quota_index() -> QuotaIndex:
    snapshot = ConfigSnapshot(
        version=1,
        generated_at=datetime.now(UTC),
        teams={"t1": TeamConfig(id="t1", name="t1")},
        keys={"h": KeyConfig(id="k1", team_id="t1")},
        quotas=[QuotaConfig(scope="key", subject_id="k1", team_id="t1", tpm=10_000)],
    )
    return QuotaIndex.from_snapshot(snapshot)


async def test_settles_and_events_go_in_one_batch_even_after_a_script_flush(
    stack: tuple[RespClient, QuotaLimiter, aioredis.Redis],
) -> None:
    wire, limiter, plain = stack
    limits = quota_index().limits("t1", "k1")
    reservations = [
        await limiter.reserve(
            request_id=f"req-{n}",
            team_id="t1",
            key_id="k1",
            tokens=1000,
            cost_micros=0,
            limits=limits,
        )
        for n in range(3)
    ]
    assert reservations[0].remaining_tokens == 9000
    await plain.script_flush()  # Redis forgot the settle script: EVALSHA says NOSCRIPT
    recorder = UsageRecorder(wire, limiter, source="client", linger_s=0.05)
    for n, reservation in enumerate(reservations):
        recorder.record(draft(n, reservation=reservation))
    await recorder.drain(5)
    assert recorder.stats.emitted == 3
    assert recorder.stats.batches == 1  # the linger let all three share one write
    assert recorder.stats.failed == recorder.stats.settle_failed == 0
    assert await plain.xlen(names.USAGE_STREAM) == 3
    # each used 42 of its 1000 reserved tokens: the refunds are back in the bucket (which
    # also refills at 10,000 per minute meanwhile; unsettled, it would hold ~7,000)
    after = await limiter.check(request_id="probe", tokens=1, cost_micros=0, limits=limits)
    assert after.remaining_tokens is not None
    assert 10_000 - 3 * 42 - 1 <= after.remaining_tokens <= 10_000 - 1
    await recorder.stop()


async def test_the_stream_is_capped_only_when_asked(
    stack: tuple[RespClient, QuotaLimiter, aioredis.Redis],
) -> None:
    wire, _, plain = stack
    uncapped = UsageRecorder(wire, None, source="client", linger_s=0)
    for n in range(300):
        uncapped.record(draft(n))
    await uncapped.stop()
    assert await plain.xlen(names.USAGE_STREAM) == 300  # nothing trimmed
    capped = UsageRecorder(wire, None, source="client", linger_s=0, stream_maxlen=50)
    for n in range(300, 600):
        capped.record(draft(n))
    await capped.stop()
    assert await plain.xlen(names.USAGE_STREAM) < 300  # MAXLEN ~ 50 trims whole nodes


async def test_events_redis_refused_are_counted_and_logged(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    wire = RespClient(redis_url, timeout_s=0.2, connect_timeout_s=0.2)
    recorder = UsageRecorder(wire, None, source="client", linger_s=0)
    redis_server.kill()
    try:
        for n in range(3):
            recorder.record(draft(n))
        await recorder.drain(5)
    finally:
        redis_server.start()
        await recorder.stop()
        await wire.aclose()
    assert recorder.stats.failed == 3
    assert recorder.stats.emitted == 0
    assert recorder.stats.last_error is not None
    assert any("event(s) lost after retries" in r.getMessage() for r in caplog.records)
