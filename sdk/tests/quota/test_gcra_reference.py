"""The reserve script against an independent reference, on random arrival sequences.

Time is driven deterministically: the script takes an optional last argument, the
current time in microseconds, that only tests pass (production always uses Redis
``TIME``). The reference is not a GCRA: it is the arrival-curve definition of a
token bucket in exact rationals: with A[s, t] the units admitted in [s, t], the
backlog at t is max(0, max over admitted s of A[s, t] - rate * (t - s)); a request
of n units passes iff backlog + n <= capacity, and otherwise the exact wait is
(backlog + n - capacity) / rate. Several limits pass together or not at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor

import pytest
import redis
from hyperinfer.client.quota import QuotaIndex, gcra_params, script_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import key_quota, make_snapshot, team_quota

T0 = 1_780_000_000_000_000  # some instant in 2026, in us
WINDOW_US = 60_000_000


@dataclass
class ArrivalCurve:
    """A token bucket defined by its arrival curve (not by a theoretical arrival time)."""

    limit: int  # per minute; also the capacity (the burst)
    admitted: list[tuple[int, int]] = field(default_factory=list)

    @property
    def rate(self) -> Fraction:  # units per microsecond
        return Fraction(self.limit, WINDOW_US)

    def backlog(self, t: int) -> Fraction:
        worst = Fraction(0)
        for i, (s, _) in enumerate(self.admitted):
            units = sum(n for _, n in self.admitted[i:])
            worst = max(worst, units - self.rate * (t - s))
        return worst

    def wait(self, t: int, n: int) -> Fraction | None:
        """0 when it passes now, the exact wait otherwise, None when it never passes."""
        if n > self.limit or (self.limit == 0 and n > 0):
            return None
        excess = self.backlog(t) + n - self.limit
        return max(Fraction(0), excess / self.rate) if excess > 0 else Fraction(0)


@pytest.fixture(scope="module")
def sync_redis(redis_server: object) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    yield client
    client.close()


_teams = itertools.count()

limits_st = st.one_of(st.none(), st.integers(1, 600), st.sampled_from([1, 7, 60, 1000, 59_999]))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key_rpm=limits_st,
    team_rpm=limits_st,
    key_tpm=st.one_of(st.none(), st.integers(1, 5000)),
    team_tpm=st.one_of(st.none(), st.integers(1, 5000)),
    steps=st.lists(
        st.tuples(st.integers(0, 3_000_000), st.integers(0, 2000)), min_size=1, max_size=40
    ),
)
def test_reserve_matches_arrival_curve_reference(
    sync_redis: redis.Redis,
    key_rpm: int | None,
    team_rpm: int | None,
    key_tpm: int | None,
    team_tpm: int | None,
    steps: list[tuple[int, int]],
) -> None:
    team = f"ref{next(_teams)}"
    quotas = [
        key_quota("k", team, rpm=key_rpm, tpm=key_tpm),
        team_quota(team, rpm=team_rpm, tpm=team_tpm),
    ]
    limits = QuotaIndex.from_snapshot(make_snapshot(quotas, keys={"k": team})).limits(team, "k")
    script = sync_redis.register_script(script_source("reserve"))
    refs = {
        name: ArrivalCurve(limit)
        for name, limit in (
            ("krpm", key_rpm),
            ("trpm", team_rpm),
            ("ktpm", key_tpm),
            ("ttpm", team_tpm),
        )
        if limit is not None
    }
    now = T0
    for i, (dt, tokens) in enumerate(steps):
        now += dt
        units = {"krpm": 1, "trpm": 1, "ktpm": tokens, "ttpm": tokens}
        waits = {name: ref.wait(now, units[name]) for name, ref in refs.items()}
        args = [f"r{i}", tokens, 0, 0, 900_000_000, limits.spec, now]
        out = script(keys=[*limits.keys, limits.res_prefix + f"r{i}".encode()], args=args)
        expect_allowed = all(w == 0 for w in waits.values())
        assert out[0] == int(expect_allowed), (i, waits, out)
        assert out[3] == now
        if expect_allowed:
            for name, ref in refs.items():
                ref.admitted.append((now, units[name]))
            _check_headers(out, refs, now)
            continue
        if any(w is None for w in waits.values()):
            assert out[2] == -1
        else:
            assert out[2] == max(ceil(w) for w in waits.values() if w is not None)  # type: ignore[arg-type]


def _check_headers(out: list[int], refs: dict[str, ArrivalCurve], now: int) -> None:
    """Remaining and reset of the tighter of key and team, after this request."""
    for at, names in ((4, ("krpm", "trpm")), (7, ("ktpm", "ttpm"))):
        present = [refs[n] for n in names if n in refs]
        if not present:
            assert out[at] == -1
            continue
        remaining = [floor(r.limit - r.backlog(now)) for r in present]
        tightest = present[remaining.index(min(remaining))]
        assert out[at + 1] == min(remaining)
        assert out[at] == tightest.limit
        assert out[at + 2] == ceil(tightest.backlog(now) / tightest.rate)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(1, 10_000), start=st.integers(0, 10**12), tokens=st.integers(1, 10_000))
def test_retry_after_is_exact_to_the_microsecond(
    sync_redis: redis.Redis, limit: int, start: int, tokens: int
) -> None:
    """Denied at now + wait - 1us, admitted at now + wait (TPM bucket drained first)."""
    team = f"exact{next(_teams)}"
    limits = QuotaIndex.from_snapshot(
        make_snapshot([key_quota("k", team, tpm=limit)], keys={"k": team})
    ).limits(team, "k")
    script = sync_redis.register_script(script_source("reserve"))
    now = T0 + start

    def reserve(rid: str, n: int, at: int) -> list[int]:
        args = [rid, n, 0, 0, 900_000_000, limits.spec, at]
        keys = [*limits.keys, limits.res_prefix + rid.encode()]
        return script(keys=keys, args=args)  # type: ignore[no-any-return]

    assert reserve("drain", limit, now)[0] == 1
    denied = reserve("a", min(tokens, limit), now)
    assert denied[0] == 0
    wait = denied[2]
    assert wait == ceil(Fraction(min(tokens, limit) * WINDOW_US, limit))
    assert reserve("b", min(tokens, limit), now + wait - 1)[0] == 0
    assert reserve("c", min(tokens, limit), now + wait)[0] == 1


def test_gcra_params_reduce_exactly() -> None:
    assert gcra_params(None) == (-1, 1, 0)
    assert gcra_params(0) == (0, 1, 0)
    assert gcra_params(60) == (1, 1_000_000, 60)  # one per second
    assert gcra_params(7) == (7, 60_000_000, 7)
    n, p, c = gcra_params(150_000_000)
    assert Fraction(n, p) == Fraction(150_000_000, WINDOW_US)
    assert c == 150_000_000
    n, p, c = gcra_params(20_000_011)  # coarsened: the rate stays within 1e-7
    assert c * p < 2**49
    assert abs(Fraction(n, p) / Fraction(20_000_011, WINDOW_US) - 1) < Fraction(1, 10**7)
