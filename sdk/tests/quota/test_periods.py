"""Budget periods: the script (server time) and Python (the quota service) agree."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from hyperinfer.client.quota import QuotaIndex, budget_key, period_bounds, period_id, script_source
from hyperinfer.client.quota._periods import to_us
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import key_quota, make_snapshot

_teams = itertools.count()
instants = st.integers(0, 4_102_444_800_000_000 - 1)  # 1970 .. 2099, in us


@pytest.fixture(scope="module")
def sync_redis(redis_server: object) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    yield client
    client.close()


@given(at=instants)
def test_python_periods_follow_the_calendar(at: int) -> None:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at)
    start, end = period_bounds("weekly", at)
    assert start.isocalendar().weekday == 1
    assert start <= when < end == start + timedelta(days=7)
    start, end = period_bounds("monthly", at)
    assert (start.day, start.month, start.year) == (1, when.month, when.year)
    assert when < end
    assert end.day == 1
    assert (end - timedelta(days=1)).month == when.month
    start, end = period_bounds("daily", at)
    assert start.date() == when.date()
    assert end - start == timedelta(days=1)
    assert period_id("monthly", at) == f"m{when:%Y%m}"
    assert period_id("daily", at) == f"d{when:%Y%m%d}"
    assert to_us(when) == at


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    at=st.one_of(instants, st.integers(1_800_000_000_000_000, 4_102_444_800_000_000)),
    period=st.sampled_from(["daily", "weekly", "monthly"]),
)
def test_script_period_ids_and_resets_match_python(
    sync_redis: redis.Redis, at: int, period: str
) -> None:
    team = f"per{next(_teams)}"
    quota = key_quota("k", team, budget_micros=100, budget_period=period)
    limits = QuotaIndex.from_snapshot(make_snapshot([quota], keys={"k": team})).limits(team, "k")
    script = sync_redis.register_script(script_source("reserve"))

    def reserve(rid: str, cost: int) -> list[int]:
        args = [rid, 0, cost, 0, 900_000_000, limits.spec, at]
        keys = [*limits.keys, limits.res_prefix + rid.encode()]
        return script(keys=keys, args=args)  # type: ignore[no-any-return]

    assert reserve("a", 100)[0] == 1
    key = budget_key(team, "key", "k", period_id(period, at))
    assert sync_redis.hget(limits.res_prefix + b"a", "kb") == key.encode()
    if at < to_us(datetime.now(UTC)):
        return  # a past period's hash expires at once; its id was checked above
    assert sync_redis.hget(key, "held") == b"100"
    denied = reserve("b", 1)
    _, end = period_bounds(period, at)
    assert denied[0] == 0
    assert denied[1] == 5
    assert denied[2] == to_us(end) - at  # the budget resets at the period's end
    ttl_at = sync_redis.pexpiretime(key)
    assert ttl_at == to_us(end) // 1000 + 8 * 86_400_000
