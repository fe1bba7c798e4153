"""QuotaLimiter against a real Redis: headers, settle, budgets, the exact Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from hyperinfer.client.errors import QuotaUnavailable, RateLimited
from hyperinfer.client.quota import (
    QuotaExceeded,
    QuotaLimiter,
    budget_key,
    period_id,
    ready_key,
    reservation_key,
    tpm_key,
)
from hyperinfer.contracts import names

from .conftest import index_of, key_quota, team_quota

MakeLimiter = Callable[..., QuotaLimiter]


async def test_admitted_request_carries_openai_rate_limit_headers(
    make_limiter: MakeLimiter,
) -> None:
    limits = index_of(key_quota(rpm=60, tpm=1000), team_quota(rpm=100)).limits("t1", "k1")
    limiter = make_limiter()
    res = await limiter.reserve(
        request_id="r1", team_id="t1", key_id="k1", tokens=100, cost_micros=0, limits=limits
    )
    assert res.mode == "redis"
    assert res.settleable
    assert not res.duplicate
    assert res.headers() == {
        "x-ratelimit-limit-requests": "60",  # the key is tighter than the team
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }


async def test_denial_names_the_limit_and_waits_exactly(make_limiter: MakeLimiter) -> None:
    limits = index_of(team_quota(rpm=2)).limits("t1", "k1")
    limiter = make_limiter()
    for rid in ("a", "b"):
        await limiter.reserve(
            request_id=rid, team_id="t1", key_id="k1", tokens=1, cost_micros=0, limits=limits
        )
    with pytest.raises(RateLimited) as caught:
        await limiter.reserve(
            request_id="c", team_id="t1", key_id="k1", tokens=1, cost_micros=0, limits=limits
        )
    exc = caught.value
    assert isinstance(exc, QuotaExceeded)
    assert (exc.status, exc.reason, exc.scope, exc.code) == (
        429,
        "rpm",
        "team",
        "rate_limit_exceeded",
    )
    assert 29_000 < exc.retry_after_ms <= 30_000  # one request per 30 s
    headers = exc.headers()
    assert headers["retry-after-ms"] == str(exc.retry_after_ms)
    assert headers["retry-after"] == str(-(-exc.retry_after_ms // 1000))
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute of team t1" in exc.message
    assert limiter.metrics.denials["rpm"] == 1
    assert limiter.metrics.checks["allowed"] == 2


async def test_same_request_id_is_not_charged_twice(make_limiter: MakeLimiter) -> None:
    limits = index_of(key_quota(rpm=1, tpm=100)).limits("t1", "k1")
    limiter = make_limiter()
    first = await limiter.reserve(
        request_id="r", team_id="t1", key_id="k1", tokens=10, cost_micros=0, limits=limits
    )
    again = await limiter.reserve(
        request_id="r", team_id="t1", key_id="k1", tokens=10, cost_micros=0, limits=limits
    )
    assert not first.duplicate
    assert again.duplicate
    with pytest.raises(QuotaExceeded):  # the one request per minute was taken once
        await limiter.reserve(
            request_id="other", team_id="t1", key_id="k1", tokens=10, cost_micros=0, limits=limits
        )


async def test_settle_refunds_tokens_and_cost_in_the_usage_pipeline(
    make_limiter: MakeLimiter, client: aioredis.Redis
) -> None:
    limits = index_of(key_quota(tpm=1000, budget_micros=1000, budget_period="daily")).limits(
        "t1", "k1"
    )
    limiter = make_limiter()
    res = await limiter.reserve(
        request_id="r", team_id="t1", key_id="k1", tokens=600, cost_micros=900, limits=limits
    )
    bkey = budget_key("t1", "key", "k1", period_id("daily", res.now_us))
    assert await client.hget(bkey, "held") == b"900"
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.reserve(
            request_id="r2", team_id="t1", key_id="k1", tokens=500, cost_micros=50, limits=limits
        )
    assert caught.value.reason == "tpm"

    pipe = client.pipeline(transaction=False)
    limiter.settle_into(pipe, res, actual_tokens=100, actual_cost_micros=150)
    pipe.xadd(names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: b"{}"})
    settled, _ = await pipe.execute()
    assert settled == [1, 500, 750]
    assert await client.hget(bkey, "held") == b"150"
    assert await client.xlen(names.USAGE_STREAM) == 1
    record = await client.hgetall(reservation_key("t1", "r"))
    assert (record[b"st"], record[b"c"]) == (b"s", b"150")

    again = await limiter.reserve(
        request_id="r2", team_id="t1", key_id="k1", tokens=500, cost_micros=50, limits=limits
    )
    assert again.remaining_tokens is not None
    assert again.remaining_tokens <= 400
    await limiter.settle(res, 0, 0)  # settled already: changes nothing
    assert await client.hget(bkey, "held") == b"200"
    assert limiter.metrics.settles == 2


async def test_tpm_refund_never_lends_tokens_beyond_a_full_bucket(
    make_limiter: MakeLimiter, client: aioredis.Redis
) -> None:
    limits = index_of(key_quota(tpm=60)).limits("t1", "k1")
    limiter = make_limiter()
    res = await limiter.reserve(
        request_id="r", team_id="t1", key_id="k1", tokens=10, cost_micros=0, limits=limits
    )
    await limiter.settle(res, 0, 0)
    state = (await client.get(tpm_key("t1", "k1"))).decode()
    assert int(state.split(":")[0]) >= res.now_us  # TAT not before the settle
    full = await limiter.check(request_id="x", tokens=60, cost_micros=0, limits=limits)
    assert full.remaining_tokens == 0
    with pytest.raises(QuotaExceeded):
        await limiter.check(request_id="y", tokens=61, cost_micros=0, limits=limits)


async def test_budget_admits_only_what_fits_among_100_concurrent(
    make_limiter: MakeLimiter, client: aioredis.Redis
) -> None:
    limits = index_of(key_quota(budget_micros=10_000), team_quota(budget_micros=1_000_000)).limits(
        "t1", "k1"
    )
    limiter = make_limiter()

    async def one(i: int) -> bool:
        try:
            await limiter.reserve(
                request_id=f"r{i}",
                team_id="t1",
                key_id="k1",
                tokens=0,
                cost_micros=1_000,
                limits=limits,
            )
        except QuotaExceeded as exc:
            reasons.add((exc.reason, exc.scope, exc.code))
            return False
        return True

    reasons: set[tuple[str, str, str | None]] = set()
    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert sum(results) == 10
    assert reasons == {("budget", "key", "insufficient_quota")}
    period = period_id("monthly", (await client.time())[0] * 1_000_000)
    assert await client.hget(budget_key("t1", "key", "k1", period), "held") == b"10000"
    assert await client.hget(budget_key("t1", "team", "t1", period), "held") == b"10000"


async def test_requests_larger_than_a_limit_are_never_admitted(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limits = index_of(key_quota(tpm=100)).limits("t1", "k1")
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.reserve(
            request_id="big", team_id="t1", key_id="k1", tokens=101, cost_micros=0, limits=limits
        )
    assert caught.value.never
    assert caught.value.code == "request_too_large"
    assert "retry-after" not in caught.value.headers()
    blocked = index_of(key_quota(rpm=0)).limits("t1", "k1")
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.reserve(
            request_id="z", team_id="t1", key_id="k1", tokens=0, cost_micros=0, limits=blocked
        )
    assert caught.value.never
    assert caught.value.reason == "rpm"


async def test_check_takes_nothing(make_limiter: MakeLimiter, client: aioredis.Redis) -> None:
    limits = index_of(key_quota(rpm=1, tpm=10, budget_micros=5)).limits("t1", "k1")
    limiter = make_limiter()
    for _ in range(3):
        seen = await limiter.check(request_id="r", tokens=10, cost_micros=5, limits=limits)
        assert seen.remaining_requests == 0
        assert seen.budget_remaining_micros == 0
    assert await client.keys("*") == []


async def test_bad_amounts_are_refused_before_redis(make_limiter: MakeLimiter) -> None:
    limits = index_of(key_quota(rpm=1)).limits("t1", "k1")
    with pytest.raises(ValueError, match="tokens and cost"):
        await make_limiter().reserve(
            request_id="r", team_id="t1", key_id="k1", tokens=-1, cost_micros=0, limits=limits
        )


async def test_budgets_wait_for_the_quota_service_after_a_redis_loss(
    make_limiter: MakeLimiter, client: aioredis.Redis
) -> None:
    """Without its ready marker the team's spend is unknown: closed waits, open goes on."""
    index = index_of(
        team_quota("t1", budget_micros=100),
        team_quota("t2", budget_micros=100),
        keys={"k1": "t1", "k2": "t2"},
        policies={"t1": "closed", "t2": "open"},
    )
    limiter = make_limiter(require_budgets_loaded=True)
    with pytest.raises(QuotaUnavailable) as caught:
        await limiter.reserve(
            request_id="a",
            team_id="t1",
            key_id="k1",
            tokens=0,
            cost_micros=10,
            limits=index.limits("t1", "k1"),
        )
    assert caught.value.code == "quota_reloading"
    assert caught.value.status == 503
    res = await limiter.reserve(
        request_id="b",
        team_id="t2",
        key_id="k2",
        tokens=0,
        cost_micros=10,
        limits=index.limits("t2", "k2"),
    )
    assert res.mode == "redis"
    assert res.budget_remaining_micros == 90
    await client.set(ready_key("t1"), "epoch")
    ok = await limiter.reserve(
        request_id="a",
        team_id="t1",
        key_id="k1",
        tokens=0,
        cost_micros=10,
        limits=index.limits("t1", "k1"),
    )
    assert ok.budget_remaining_micros == 90


@pytest.mark.parametrize(("kind", "tokens"), [("rpm", 1), ("tpm", 150)])
async def test_waiting_retry_after_is_enough_and_half_of_it_is_not(
    make_limiter: MakeLimiter, kind: str, tokens: int
) -> None:
    # waits of 0.5 s (rpm) and 1.5 s (tpm): half of one leaves room for a loaded machine's
    # scheduling delays (at 600 rpm a 50 ms stall made the half wait look sufficient)
    limits = index_of(key_quota(**{kind: 120 if kind == "rpm" else 6000})).limits("t1", "k1")
    limiter = make_limiter()
    counter = iter(range(10**6))

    async def attempt() -> QuotaExceeded | None:
        try:
            await limiter.reserve(
                request_id=f"r{next(counter)}",
                team_id="t1",
                key_id="k1",
                tokens=tokens,
                cost_micros=0,
                limits=limits,
            )
        except QuotaExceeded as exc:
            return exc
        return None

    while await attempt() is None:  # drain the burst
        pass
    for _ in range(3):
        denied = await attempt()
        assert denied is not None
        assert denied.reason == kind
        assert 0 < denied.retry_after_ms <= 1_500
        await asyncio.sleep(denied.retry_after_ms / 2000)
        assert await attempt() is not None  # half the wait is not enough
        await asyncio.sleep(denied.retry_after_ms / 2000)  # in all: the announced wait
        assert await attempt() is None, f"denied after waiting {denied.retry_after_ms} ms"


async def test_a_redis_that_forgot_the_scripts_gets_them_again(
    make_limiter: MakeLimiter, client: aioredis.Redis
) -> None:
    limits = index_of(key_quota(rpm=10, tpm=100)).limits("t1", "k1")
    limiter = make_limiter()
    first = await limiter.reserve(
        request_id="a", team_id="t1", key_id="k1", tokens=5, cost_micros=0, limits=limits
    )
    await client.script_flush()  # what a restart does to the script cache
    again = await limiter.reserve(
        request_id="b", team_id="t1", key_id="k1", tokens=5, cost_micros=0, limits=limits
    )
    assert again.remaining_requests == first.remaining_requests - 1  # type: ignore[operator]
    await client.script_flush()
    await limiter.settle(again, 1, 0)  # settle travels as EVAL: no script cache needed
    assert again.remaining_tokens is not None
    seen = await limiter.check(request_id="c", tokens=0, cost_micros=0, limits=limits)
    assert seen.remaining_tokens == again.remaining_tokens + 4
