"""check / reserve / settle over NATS request-reply, for clients that are not Python."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import orjson
import pytest
from hyperinfer.contracts import names
from hyperinfer.contracts.config.v1 import QuotaConfig
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.runtime.bus import Bus, RequestFailed
from hyperinfer.runtime.connections import NatsConnection
from hyperinfer.runtime.jetstream import ensure_streams, load_stream_configs

from .conftest import Running, snapshot

Start = Callable[..., Awaitable[Running]]
pytestmark = pytest.mark.bus

SNAP = snapshot(
    [QuotaConfig(scope="key", subject_id="k1", team_id="t1", rpm=2, tpm=100, budget_micros=50)]
)


@pytest.fixture
async def client(nats_url: str, quota: Start) -> AsyncIterator[Bus]:
    run = await quota(SNAP)
    await run.redis.set("hyperinfer:quota:{t:t1}:ready", "test")  # budgets loaded
    conn = NatsConnection(nats_url, "quota-test-client")
    await conn.connect(5)
    dlq = [c for c in load_stream_configs("event-pipeline") if c.name == names.DLQ_STREAM]
    await ensure_streams(conn.jetstream, dlq)
    yield Bus(conn, source="test-client")
    await conn.close()


def reserve(rid: str, tokens: int = 10, cost: int = 10, **kw: object) -> quota_v1.ReserveQuota:
    return quota_v1.ReserveQuota(
        request_id=rid, team_id="t1", key_id="k1", tokens=tokens, cost_micros=cost, **kw
    )


async def ask(bus: Bus, subject: str, type_: str, data: object) -> object:
    reply = await bus.request(subject, type_, data, timeout_s=5)  # type: ignore[arg-type]
    return reply.data


async def test_reserve_check_and_settle_round_trip(client: Bus) -> None:
    checked = await ask(client, names.QUOTA_CHECK, quota_v1.COMMAND_CHECK, reserve("r0"))
    assert isinstance(checked, quota_v1.QuotaDecision)
    assert checked.allowed
    assert checked.remaining_requests == 1  # what it would leave; nothing was taken

    first = await ask(client, names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, reserve("r1", 60, 40))
    assert isinstance(first, quota_v1.QuotaDecision)
    assert (first.allowed, first.limit_requests, first.remaining_requests) == (True, 2, 1)
    assert (first.limit_tokens, first.remaining_tokens) == (100, 40)
    assert first.budget_remaining_micros == 10

    denied = await ask(client, names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, reserve("r2", 60))
    assert isinstance(denied, quota_v1.QuotaDecision)
    assert (denied.allowed, denied.reason) == (False, "tpm")
    assert 0 < denied.retry_after_ms <= 12_000

    settle = quota_v1.SettleQuota(
        request_id="r1", team_id="t1", key_id="k1", actual_tokens=20, actual_cost_micros=5
    )
    settled = await ask(client, names.QUOTA_SETTLE, quota_v1.COMMAND_SETTLE, settle)
    assert settled == quota_v1.SettleResult(
        settled=True, refunded_tokens=40, refunded_cost_micros=35
    )
    again = await ask(client, names.QUOTA_SETTLE, quota_v1.COMMAND_SETTLE, settle)
    assert isinstance(again, quota_v1.SettleResult)
    assert not again.settled

    after = await ask(client, names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, reserve("r3", 60))
    assert isinstance(after, quota_v1.QuotaDecision)
    assert after.allowed  # the refund made room


async def test_unknown_key_and_oversized_requests_are_refused(client: Bus) -> None:
    stranger = quota_v1.ReserveQuota(
        request_id="x", team_id="t1", key_id="nope", tokens=1, cost_micros=0
    )
    unknown = await ask(client, names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, stranger)
    assert isinstance(unknown, quota_v1.QuotaDecision)
    assert (unknown.allowed, unknown.reason) == (False, "unknown_key")
    big = await ask(client, names.QUOTA_RESERVE, quota_v1.COMMAND_RESERVE, reserve("y", 101))
    assert isinstance(big, quota_v1.QuotaDecision)
    assert (big.allowed, big.reason, big.never, big.retry_after_ms) == (False, "tpm", True, 0)


async def test_malformed_requests_get_an_error_reply(client: Bus, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        for payload in (b"not json", b'{"type": "quota.reserve", "source": "x", "data": {}}'):
            msg = await nc.request(names.QUOTA_RESERVE, payload, timeout=5)
            body = orjson.loads(msg.data)
            assert body["type"] == "error"
            assert body["data"]["reason"]
    finally:
        await nc.close()
    settle = quota_v1.SettleQuota(
        request_id="r", team_id="t1", key_id="k1", actual_tokens=0, actual_cost_micros=0
    )
    with pytest.raises(RequestFailed, match="MalformedCommand"):  # a settle on reserve
        await client.request(names.QUOTA_RESERVE, quota_v1.COMMAND_SETTLE, settle, timeout_s=5)
    # the service still answers
    ok = await ask(client, names.QUOTA_CHECK, quota_v1.COMMAND_CHECK, reserve("z"))
    assert isinstance(ok, quota_v1.QuotaDecision)
    assert ok.allowed
