"""What the quota service's logic needs from its stores (PostgreSQL and Redis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hyperinfer.client.quota import BudgetRule
from hyperinfer.quota.domain import Alert, RowKey, RowTotal, UsageItem


@dataclass
class Recorded:
    """One batch written: which events were new, the rows they moved, alerts created."""

    new_ids: set[str] = field(default_factory=set)
    totals: list[RowTotal] = field(default_factory=list)
    alerts: int = 0


@dataclass(frozen=True)
class StoredAlert:
    id: int
    alert: Alert
    published: bool
    job_published: bool


class SpendStore(Protocol):
    """The durable spend rollups (the truth Redis is reconciled against)."""

    async def record(
        self,
        items: Sequence[UsageItem],
        rules: Mapping[tuple[str, str, str], BudgetRule],
        thresholds: Sequence[int],
    ) -> Recorded:
        """Add new events (idempotent by request id) and their alerts, in one transaction."""
        ...

    async def totals(self, rows: Sequence[RowKey]) -> dict[RowKey, tuple[int, int]]:
        """``(spent, seq)`` of the rows that exist."""
        ...

    async def unpublished_alerts(self, limit: int, since: datetime) -> list[StoredAlert]: ...

    async def mark_alerts(self, published: Sequence[int], jobs: Sequence[int]) -> None: ...

    async def forget_processed(self, before: datetime) -> int: ...
