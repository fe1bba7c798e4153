"""Quota policy with no I/O: spend rollups by period, and which alerts a change crosses.

Every usage event adds its cost to six rows: its key and its team, each for the
daily, weekly and monthly period containing its start (UTC, calendar-aligned).
Rows exist whatever the configured budgets are, so a budget added or re-periodised
mid-period starts from the period's true spend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from hyperinfer.client.quota import BudgetRule, period_bounds, period_id, to_us
from hyperinfer.contracts.usage.v1 import UsageRecorded

PERIODS = ("daily", "weekly", "monthly")


@dataclass(frozen=True, slots=True)
class UsageItem:
    """What quota needs from one ``UsageRecorded``."""

    request_id: str
    team_id: str
    key_id: str
    cost_micros: int
    tokens: int
    started_us: int
    reserved_tokens: int
    reserved_cost_micros: int

    @classmethod
    def from_event(cls, event: UsageRecorded) -> UsageItem:
        return cls(
            request_id=event.request_id,
            team_id=event.team_id,
            key_id=event.key_id,
            cost_micros=event.cost_micros,
            tokens=event.total_tokens or event.prompt_tokens + event.completion_tokens,
            started_us=to_us(event.started_at),
            reserved_tokens=event.reserved_tokens,
            reserved_cost_micros=event.reserved_cost_micros,
        )


@dataclass(frozen=True, slots=True, order=True)
class RowKey:
    """One spend rollup row: a scope's subject in one period."""

    scope: str
    subject_id: str
    period: str
    period_start: datetime
    team_id: str

    @property
    def rule_key(self) -> tuple[str, str, str]:
        return (self.scope, self.subject_id, self.period)

    @property
    def period_id(self) -> str:
        return period_id(self.period, to_us(self.period_start))


@dataclass(slots=True)
class Delta:
    spent: int = 0
    tokens: int = 0
    requests: int = 0


@dataclass(frozen=True, slots=True)
class RowTotal:
    """A row after an update: its totals, its new seq, and what this update added."""

    key: RowKey
    spent: int
    seq: int
    added: int


@dataclass(frozen=True, slots=True)
class Alert:
    key: RowKey
    kind: str  # threshold_crossed | exhausted
    threshold_pct: int
    spent: int
    limit: int
    hard: bool


def rows_of(item: UsageItem) -> list[RowKey]:
    """The six rows one usage event counts in."""
    rows = []
    for period in PERIODS:
        start, _ = period_bounds(period, item.started_us)
        rows.append(RowKey("key", item.key_id, period, start, item.team_id))
        rows.append(RowKey("team", item.team_id, period, start, item.team_id))
    return rows


def spend_deltas(items: Iterable[UsageItem]) -> dict[RowKey, Delta]:
    """What a batch adds to each row, in row order (so concurrent writers lock alike)."""
    deltas: dict[RowKey, Delta] = {}
    for item in items:
        for row in rows_of(item):
            delta = deltas.setdefault(row, Delta())
            delta.spent += item.cost_micros
            delta.tokens += item.tokens
            delta.requests += 1
    return dict(sorted(deltas.items()))


def alerts_for(total: RowTotal, rule: BudgetRule, thresholds: Iterable[int]) -> list[Alert]:
    """Thresholds (percent of the alert limit) and exhaustion (the cap) this update crossed."""
    before, after = total.spent - total.added, total.spent
    found = [
        Alert(total.key, "threshold_crossed", pct, after, rule.alert_limit_micros, rule.hard)
        for pct in thresholds
        if rule.alert_limit_micros > 0
        and before * 100 < pct * rule.alert_limit_micros <= after * 100
    ]
    if rule.cap_micros > 0 and before < rule.cap_micros <= after:
        found.append(Alert(total.key, "exhausted", 0, after, rule.cap_micros, rule.hard))
    return found


def rules_by_row(rules: Iterable[BudgetRule]) -> dict[tuple[str, str, str], BudgetRule]:
    """Configured budgets by (scope, subject, period): the rows that matter to Redis."""
    return {(r.scope, r.subject_id, r.period): r for r in rules}


def crossed(
    totals: Iterable[RowTotal],
    rules: Mapping[tuple[str, str, str], BudgetRule],
    thresholds: Iterable[int],
) -> list[Alert]:
    thresholds = tuple(thresholds)
    alerts: list[Alert] = []
    for total in totals:
        rule = rules.get(total.key.rule_key)
        if rule is not None and rule.team_id == total.key.team_id:
            alerts.extend(alerts_for(total, rule, thresholds))
    return alerts


def reservation_error(reserved: int, actual: int) -> float:
    """How far a reservation was from what the request used, relative to the reservation."""
    return abs(reserved - actual) / max(reserved, 1)
