"""An in-memory ``SpendStore`` with the PostgreSQL store's semantics, for tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime

from hyperinfer.client.quota import BudgetRule
from hyperinfer.contracts import utc_now
from hyperinfer.quota.domain import RowKey, RowTotal, UsageItem, crossed, spend_deltas
from hyperinfer.quota.ports import Recorded, StoredAlert


class MemorySpendStore:
    """Rows, processed ids and the alert outbox in dicts; one global seq."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, tuple[int, int]] = {}
        self.processed: dict[str, datetime] = {}
        self.alerts: dict[tuple[RowKey, str, int], StoredAlert] = {}
        self._seq = itertools.count(1)
        self._alert_ids = itertools.count(1)
        self._created: dict[int, datetime] = {}

    async def record(
        self,
        items: Sequence[UsageItem],
        rules: Mapping[tuple[str, str, str], BudgetRule],
        thresholds: Sequence[int],
    ) -> Recorded:
        fresh = {i.request_id: i for i in items if i.request_id not in self.processed}
        for request_id in fresh:
            self.processed[request_id] = utc_now()
        totals = []
        for key, delta in spend_deltas(fresh.values()).items():
            spent = self.rows.get(key, (0, 0))[0] + delta.spent
            self.rows[key] = (spent, next(self._seq))
            totals.append(RowTotal(key, spent, self.rows[key][1], delta.spent))
        created = 0
        for alert in crossed(totals, rules, thresholds):
            slot = (alert.key, alert.kind, alert.threshold_pct)
            if slot not in self.alerts:
                alert_id = next(self._alert_ids)
                self.alerts[slot] = StoredAlert(alert_id, alert, False, False)
                self._created[alert_id] = utc_now()
                created += 1
        return Recorded(set(fresh), totals, created)

    async def totals(self, rows: Sequence[RowKey]) -> dict[RowKey, tuple[int, int]]:
        return {r: self.rows[r] for r in rows if r in self.rows}

    async def unpublished_alerts(self, limit: int, since: datetime) -> list[StoredAlert]:
        pending = [
            a
            for a in self.alerts.values()
            if not (a.published and a.job_published) and self._created[a.id] >= since
        ]
        return sorted(pending, key=lambda a: a.id)[:limit]

    async def mark_alerts(self, published: Sequence[int], jobs: Sequence[int]) -> None:
        for slot, stored in list(self.alerts.items()):
            self.alerts[slot] = StoredAlert(
                stored.id,
                stored.alert,
                stored.published or stored.id in published,
                stored.job_published or stored.id in jobs,
            )

    async def forget_processed(self, before: datetime) -> int:
        old = [r for r, at in self.processed.items() if at < before]
        for request_id in old:
            del self.processed[request_id]
        return len(old)
