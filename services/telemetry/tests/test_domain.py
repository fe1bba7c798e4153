"""Pure ledger policy: histograms and percentiles, period decomposition, partitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hyperinfer.telemetry.domain import (
    HISTOGRAM_SIZE,
    LATENCY_BOUNDS_MS,
    RollupHorizons,
    Segment,
    UsageQuery,
    decompose,
    latency_bucket,
    merge_histograms,
    month_start,
    parse_group_by,
    partition_month,
    percentile,
    resolve_period,
    time_per_output_token_s,
)

T0 = datetime(2031, 1, 30, 22, 17, tzinfo=UTC)


def hist_of(values: list[float]) -> list[int]:
    hist = [0] * HISTOGRAM_SIZE
    for value in values:
        hist[latency_bucket(value)] += 1
    return hist


def test_bucket_bounds_are_lower_inclusive_like_sql_width_bucket() -> None:
    assert latency_bucket(0.0) == 0
    assert latency_bucket(0.999) == 0
    assert latency_bucket(1.0) == 1
    assert latency_bucket(99.99) == LATENCY_BOUNDS_MS.index(100)
    assert latency_bucket(100.0) == LATENCY_BOUNDS_MS.index(100) + 1
    assert latency_bucket(10**9) == HISTOGRAM_SIZE - 1


def test_percentiles_from_buckets_stay_within_the_true_values_bucket() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(5, 1.2) for _ in range(5000))
    hist = hist_of(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = values[int(q * len(values)) - 1]
        estimate = percentile(hist, q)
        assert estimate is not None
        i = latency_bucket(exact)
        lower = LATENCY_BOUNDS_MS[i - 1] if i else 0.0
        upper = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else float("inf")
        assert lower <= estimate <= upper, (q, exact, estimate)
    assert percentile([0] * HISTOGRAM_SIZE, 0.5) is None


def test_merged_histograms_give_the_percentiles_of_the_union() -> None:
    a, b = [10.0] * 90, [4000.0] * 10
    merged = merge_histograms(hist_of(a), hist_of(b)[:10] + hist_of(b)[10:])
    assert merged == hist_of(a + b)
    assert merge_histograms([1, 2], [3]) == [4, 2]
    p95 = percentile(merged, 0.95)
    assert p95 is not None
    assert 3000 <= p95 <= 5000


def test_time_per_output_token_only_when_it_is_defined() -> None:
    assert time_per_output_token_s(1100.0, 100.0, 11) == pytest.approx(0.1)
    assert time_per_output_token_s(1100.0, None, 11) is None
    assert time_per_output_token_s(1100.0, 100.0, 1) is None
    assert time_per_output_token_s(50.0, 100.0, 11) is None


def covered_minutes(segments: list[Segment]) -> list[datetime]:
    step = {"minute": 1, "hour": 60, "day": 1440}
    out = []
    for seg in segments:
        t = seg.start
        while t < seg.end:
            out.append(t)
            t += timedelta(minutes=step[seg.window])
    return out


@pytest.mark.parametrize("seed", range(30))
def test_decomposition_covers_every_minute_exactly_once_with_whole_rollup_rows(seed: int) -> None:
    rng = random.Random(seed)
    start = T0 + timedelta(minutes=rng.randrange(-5000, 5000))
    end = start + timedelta(minutes=rng.randrange(1, 9000))
    segments = decompose(start, end)
    total = sum((s.end - s.start) / timedelta(minutes=1) for s in segments)
    assert total == (end - start) / timedelta(minutes=1)
    assert covered_minutes(segments) == sorted(covered_minutes(segments))
    for seg in segments:
        unit = {
            "minute": timedelta(minutes=1),
            "hour": timedelta(hours=1),
            "day": timedelta(days=1),
        }
        assert (seg.start - datetime(2000, 1, 1, tzinfo=UTC)) % unit[seg.window] == timedelta(0)
        assert (seg.end - seg.start) % unit[seg.window] == timedelta(0)
    assert len(segments) <= 5


def test_decomposition_never_uses_rows_coarser_than_a_time_group() -> None:
    start, end = T0, T0 + timedelta(days=4)
    assert {s.window for s in decompose(start, end, "hour")} <= {"minute", "hour"}
    assert {s.window for s in decompose(start, end, "minute")} == {"minute"}
    query = UsageQuery(start=start, end=end, group_by=("team", "hour"))
    assert query.coarsest_window() == "hour"
    assert UsageQuery(start=start, end=end, group_by=("month",)).coarsest_window() == "day"


def test_periods_are_whole_minutes_defaulting_to_this_month() -> None:
    now = datetime(2031, 2, 14, 10, 30, 15, tzinfo=UTC)
    assert resolve_period(None, None, now) == (
        datetime(2031, 2, 1, tzinfo=UTC),
        datetime(2031, 2, 14, 10, 31, tzinfo=UTC),
    )
    naive = datetime(2031, 2, 1, 8, 0, 59)
    start, _ = resolve_period(naive, None, now)
    assert start == datetime(2031, 2, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="before end"):
        resolve_period(now, now - timedelta(hours=1), now)


def test_group_by_is_parsed_strictly() -> None:
    assert parse_group_by("team, day") == ("team", "day")
    assert parse_group_by("") == ()
    with pytest.raises(ValueError, match="cannot group by planet"):
        parse_group_by("team,planet")
    with pytest.raises(ValueError, match="twice"):
        parse_group_by("key,key")


def test_months_and_partition_names() -> None:
    assert month_start(T0) == datetime(2031, 1, 1, tzinfo=UTC)
    assert month_start(T0, 1) == datetime(2031, 2, 1, tzinfo=UTC)
    assert month_start(T0, 12) == datetime(2032, 1, 1, tzinfo=UTC)
    assert month_start(T0, -1) == datetime(2030, 12, 1, tzinfo=UTC)
    assert partition_month("usage_events_p203101") == datetime(2031, 1, 1, tzinfo=UTC)
    for other in ("usage_events_default", "usage_events_p2031", "usage_events_p203113", "x"):
        assert partition_month(other) is None


def test_periods_needing_pruned_rollups_are_refused_with_the_way_out() -> None:
    now = datetime(2031, 6, 1, tzinfo=UTC)
    kept = RollupHorizons(minute_days=14, hour_days=400)
    old = now - timedelta(days=30)
    by_minute = decompose(old + timedelta(minutes=5), old + timedelta(days=2))
    assert "whole hours" in (kept.problem(by_minute, now) or "")
    by_hour = decompose(old + timedelta(hours=5), old + timedelta(days=2))
    assert kept.problem(by_hour, now) is None
    ancient = now - timedelta(days=500)
    assert "whole days" in (kept.problem(decompose(ancient + timedelta(hours=1), now), now) or "")
    assert RollupHorizons(0, 0).problem(by_minute, now) is None
