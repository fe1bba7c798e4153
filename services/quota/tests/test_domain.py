"""Spend rollups and alerts (pure), and the in-memory store against PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hyperinfer.client.quota import BudgetRule, to_us
from hyperinfer.quota.adapters.memory_spend import MemorySpendStore
from hyperinfer.quota.adapters.postgres_spend import PostgresSpendStore
from hyperinfer.quota.domain import (
    RowKey,
    RowTotal,
    UsageItem,
    alerts_for,
    rows_of,
    rules_by_row,
    spend_deltas,
)
from hyperinfer.runtime import PostgresPool

SUNDAY_LATE = datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)  # a Sunday, month's 1st


def item(rid: str, cost: int, at: datetime = SUNDAY_LATE, key: str = "k1") -> UsageItem:
    return UsageItem(rid, "t1", key, cost, 10, to_us(at), 0, 0)


def rule(cap: int = 1_000, alert: int = 1_000, period: str = "weekly") -> BudgetRule:
    return BudgetRule("key", "k1", "t1", period, cap, alert, hard=cap == alert)


def test_one_event_counts_in_six_calendar_rows() -> None:
    rows = {(r.scope, r.period): r.period_start for r in rows_of(item("a", 5))}
    assert rows[("key", "daily")] == datetime(2026, 3, 1, tzinfo=UTC)
    assert rows[("key", "weekly")] == datetime(2026, 2, 23, tzinfo=UTC)  # its Monday
    assert rows[("team", "monthly")] == datetime(2026, 3, 1, tzinfo=UTC)
    assert len(rows) == 6


def test_deltas_add_up_per_row_in_lock_order() -> None:
    deltas = spend_deltas([item("a", 5), item("b", 7), item("c", 1, key="k2")])
    assert list(deltas) == sorted(deltas)
    daily = RowKey("key", "k1", "daily", datetime(2026, 3, 1, tzinfo=UTC), "t1")
    assert (deltas[daily].spent, deltas[daily].requests) == (12, 2)
    team = RowKey("team", "t1", "daily", datetime(2026, 3, 1, tzinfo=UTC), "t1")
    assert deltas[team].spent == 13


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (0, 799, []),
        (0, 800, [("threshold_crossed", 80)]),
        (799, 1_000, [("threshold_crossed", 80), ("threshold_crossed", 100), ("exhausted", 0)]),
        (800, 999, []),
        (1_000, 5_000, []),
    ],
)
def test_alerts_fire_when_a_change_crosses_them(
    before: int, after: int, expected: list[tuple[str, int]]
) -> None:
    key = RowKey("key", "k1", "weekly", datetime(2026, 2, 23, tzinfo=UTC), "t1")
    total = RowTotal(key, after, 1, after - before)
    found = [(a.kind, a.threshold_pct) for a in alerts_for(total, rule(), (80, 100))]
    assert found == expected


def test_soft_limit_alerts_before_the_cap() -> None:
    key = RowKey("key", "k1", "weekly", datetime(2026, 2, 23, tzinfo=UTC), "t1")
    soft = rule(cap=1_200, alert=1_000)
    found = alerts_for(RowTotal(key, 1_100, 1, 1_100), soft, (80, 100))
    assert [(a.kind, a.threshold_pct, a.limit) for a in found] == [
        ("threshold_crossed", 80, 1_000),
        ("threshold_crossed", 100, 1_000),
    ]
    exhausted = alerts_for(RowTotal(key, 1_200, 2, 100), soft, (80, 100))
    assert [(a.kind, a.limit, a.hard) for a in exhausted] == [("exhausted", 1_200, False)]


async def test_memory_store_behaves_like_postgres(postgres_dsn: str) -> None:
    pool = PostgresPool(postgres_dsn)
    await pool.connect(5)
    stores = [PostgresSpendStore(pool), MemorySpendStore()]
    rules = rules_by_row([rule()])
    try:
        results = []
        for store in stores:
            first = await store.record([item("a", 500), item("b", 300)], rules, (80, 100))
            again = await store.record([item("b", 300), item("c", 300)], rules, (80, 100))
            alerts = await store.unpublished_alerts(10, datetime(2000, 1, 1, tzinfo=UTC))
            await store.mark_alerts([a.id for a in alerts], [])
            left = await store.unpublished_alerts(10, datetime(2000, 1, 1, tzinfo=UTC))
            weekly = RowKey("key", "k1", "weekly", datetime(2026, 2, 23, tzinfo=UTC), "t1")
            totals = await store.totals([weekly])
            results.append(
                (
                    first.new_ids,
                    again.new_ids,
                    first.alerts,
                    again.alerts,
                    sorted((a.alert.kind, a.alert.threshold_pct) for a in alerts),
                    [(a.published, a.job_published) for a in left],
                    totals[weekly][0],
                )
            )
        assert results[0] == results[1]
        assert results[0][1] == {"c"}
        assert results[0][-1] == 1_100
    finally:
        await pool.close()
