"""Calendar-aligned UTC budget periods, by the same rules as the reserve script.

daily: a UTC day; weekly: an ISO week (Monday 00:00 UTC to the next Monday);
monthly: a UTC calendar month. Times are integer microseconds since the epoch, as
Redis ``TIME`` gives them to the script.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

Period = Literal["daily", "weekly", "monthly"]
PERIOD_CODES: dict[str, str] = {"daily": "d", "weekly": "w", "monthly": "m"}
_DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def period_start_date(period: str, at_us: int) -> date:
    """The first day of the period that contains ``at_us``."""
    day = _EPOCH + timedelta(days=at_us // _DAY_US)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def period_end_date(period: str, start: date) -> date:
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_id(period: str, at_us: int) -> str:
    """``d20260125``, ``w20260119`` or ``m202601``: the id the reserve script uses."""
    start = period_start_date(period, at_us)
    if period == "monthly":
        return f"m{start.year:04d}{start.month:02d}"
    return f"{PERIOD_CODES[period]}{start.year:04d}{start.month:02d}{start.day:02d}"


def period_bounds(period: str, at_us: int) -> tuple[datetime, datetime]:
    """``[start, end)`` of the period containing ``at_us``, as aware UTC datetimes."""
    start = period_start_date(period, at_us)
    end = period_end_date(period, start)
    return _midnight(start), _midnight(end)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
