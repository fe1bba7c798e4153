"""Pure ledger policy: latency histograms, rollup windows and periods. No I/O.

Latency histograms have fixed bucket bounds, so two rows merge by adding counts and a
percentile of any merged set is read from the counts (linear within a bucket). Bucket
``i`` counts latencies in ``[LATENCY_BOUNDS_MS[i-1], LATENCY_BOUNDS_MS[i])``; bucket 0
starts at 0 and the last bucket is open-ended.

A period ``[start, end)`` of whole minutes is read from the coarsest rollups that fit:
whole days from day rows, whole hours left at the edges from hour rows, the remaining
minutes from minute rows, so a month costs ~30 day rows per group, not 43,200.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Window = Literal["minute", "hour", "day"]
WINDOWS: tuple[Window, ...] = ("minute", "hour", "day")
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000,
    3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000,
)  # fmt: skip
HISTOGRAM_SIZE = len(LATENCY_BOUNDS_MS) + 1


def latency_bucket(latency_ms: float) -> int:
    """The histogram bucket of one latency (same rule as SQL ``width_bucket``)."""
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms < bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def merge_histograms(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Element-wise sum; a shorter histogram counts 0 where it has no element."""
    size = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size)]


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) estimated from bucket counts; None when empty."""
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(lower)  # open-ended bucket: its lower bound is all we know
            upper = LATENCY_BOUNDS_MS[i]
            return float(lower + (upper - lower) * (rank - seen) / count)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


def latency_summary(hist: Sequence[int]) -> dict[str, float | None]:
    """p50/p95/p99 of a histogram, rounded to 0.1 ms."""
    out: dict[str, float | None] = {}
    for name, q in (("latency_ms_p50", 0.5), ("latency_ms_p95", 0.95), ("latency_ms_p99", 0.99)):
        value = percentile(hist, q)
        out[name] = None if value is None else round(value, 1)
    return out


def time_per_output_token_s(
    latency_ms: float, ttft_ms: float | None, completion_tokens: int
) -> float | None:
    """Generation time per output token after the first (OTel GenAI), or None if unknown."""
    if ttft_ms is None or completion_tokens < 2 or latency_ms < ttft_ms:
        return None
    return (latency_ms - ttft_ms) / 1000.0 / (completion_tokens - 1)


# --- windows and periods -------------------------------------------------------------
def floor_to(ts: datetime, window: Window) -> datetime:
    """The start of the UTC ``window`` that holds ``ts``."""
    ts = ts.astimezone(UTC)
    if window == "minute":
        return ts.replace(second=0, microsecond=0)
    if window == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_to_minute(ts: datetime) -> datetime:
    floored = floor_to(ts, "minute")
    return floored if floored == ts.astimezone(UTC) else floored + _STEP["minute"]


@dataclass(frozen=True)
class Segment:
    """Rows of one window kind whose bucket starts in ``[start, end)``."""

    window: Window
    start: datetime
    end: datetime


def decompose(start: datetime, end: datetime, coarsest: Window = "day") -> list[Segment]:
    """Cover the whole-minute period ``[start, end)`` with the fewest rollup rows.

    No row used crosses a boundary of ``coarsest``, so grouping by ``coarsest`` (or any
    finer-or-equal time bucket) stays exact.
    """
    allowed = WINDOWS[: WINDOWS.index(coarsest) + 1]
    return _cover(start, end, allowed)


def _cover(start: datetime, end: datetime, allowed: tuple[Window, ...]) -> list[Segment]:
    if start >= end:
        return []
    window = allowed[-1]
    if window == "minute":
        return [Segment("minute", start, end)]
    inner_start = _ceil(start, window)
    inner_end = floor_to(end, window)
    if inner_start >= inner_end:
        return _cover(start, end, allowed[:-1])
    return [
        *_cover(start, inner_start, allowed[:-1]),
        Segment(window, inner_start, inner_end),
        *_cover(inner_end, end, allowed[:-1]),
    ]


def _ceil(ts: datetime, window: Window) -> datetime:
    floored = floor_to(ts, window)
    return floored if floored == ts else floored + _STEP[window]


def resolve_period(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The period a query covers: whole minutes, UTC; defaults to this month so far.

    A naive timestamp is read as UTC. Raises ``ValueError`` when the period is empty.
    """
    end_ts = ceil_to_minute(_aware(end) if end else now)
    start_ts = floor_to(_aware(start), "minute") if start else _month_start(now)
    if start_ts >= end_ts:
        raise ValueError("start must be before end")
    return start_ts, end_ts


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _month_start(now: datetime) -> datetime:
    return floor_to(now, "day").replace(day=1)


def month_start(ts: datetime, months_ahead: int = 0) -> datetime:
    """The first instant (UTC) of the month ``months_ahead`` after the one holding ``ts``."""
    first = _month_start(ts)
    index = first.year * 12 + first.month - 1 + months_ahead
    return first.replace(year=index // 12, month=index % 12 + 1)


def partition_month(name: str) -> datetime | None:
    """``usage_events_p202501`` → 2025-01-01 UTC; None for any other name."""
    digits = name.removeprefix("usage_events_p")
    if len(digits) != 6 or not digits.isdigit() or digits == name:
        return None
    year, month = int(digits[:4]), int(digits[4:])
    if not 1 <= month <= 12:
        return None
    return datetime(year, month, 1, tzinfo=UTC)


# --- spend queries -------------------------------------------------------------------
Dimension = Literal["team", "key", "model", "backend", "minute", "hour", "day", "month"]
Metric = Literal["cost", "tokens", "requests", "errors"]
KEY_DIMENSIONS: dict[str, str] = {
    "team": "team_id",
    "key": "key_id",
    "model": "model",
    "backend": "backend_id",
}
TIME_DIMENSIONS: tuple[str, ...] = ("minute", "hour", "day", "month")
METRICS: tuple[str, ...] = ("cost", "tokens", "requests", "errors")


@dataclass(frozen=True)
class UsageQuery:
    """Usage of ``[start, end)`` grouped by ``group_by``, filtered, one page of it."""

    start: datetime
    end: datetime
    group_by: tuple[Dimension, ...] = ("team",)
    team_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    backend_id: str | None = None
    order_by: Metric | None = None  # None: by the groups; a metric: largest first
    limit: int = 100
    offset: int = 0

    def coarsest_window(self) -> Window:
        """The coarsest rollup whose rows never straddle a time group of this query."""
        times = [d for d in self.group_by if d in TIME_DIMENSIONS]
        if not times:
            return "day"
        finest = min(times, key=TIME_DIMENSIONS.index)
        return "day" if finest == "month" else finest  # type: ignore[return-value]

    def segments(self) -> list[Segment]:
        return decompose(self.start, self.end, self.coarsest_window())


def parse_group_by(raw: str) -> tuple[Dimension, ...]:
    """``"team,day"`` → ``("team", "day")``; ``ValueError`` naming what is unknown."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    known = (*KEY_DIMENSIONS, *TIME_DIMENSIONS)
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(known)}")
    if len(set(parts)) != len(parts):
        raise ValueError("group_by names a dimension twice")
    return tuple(parts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RollupHorizons:
    """How long minute and hour rollups are kept (days; 0: for ever). Day rows stay."""

    minute_days: int = 14
    hour_days: int = 400

    def problem(self, segments: Sequence[Segment], now: datetime) -> str | None:
        """Why a period cannot be answered exactly (it needs pruned rows), or None."""
        for window, days, coarser in (("minute", self.minute_days, "hour"),
                                      ("hour", self.hour_days, "day")):  # fmt: skip
            if days <= 0:
                continue
            horizon = now - timedelta(days=days)
            if any(s.window == window and s.start < horizon for s in segments):
                return (
                    f"{window} rollups are kept {days} days: before {horizon:%Y-%m-%d %H:%M}Z "
                    f"bound the period (and group time) by whole {coarser}s"
                )
        return None
