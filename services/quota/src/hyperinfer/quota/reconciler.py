"""Redis against PostgreSQL: reload budgets when Redis lost them, sweep reservations.

- The epoch key is set once per Redis lifetime. Found missing (a restart without
  persistence, a flush), the replica sets a new one and reloads every configured
  budget's current-period spend from PostgreSQL, then marks each team ready (the
  reserve script holds budget-limited requests of a team until then: fail-closed
  teams get 503, fail-open teams go on without the budget). The same load runs at
  start, on every config change and every ``reconcile_interval_s`` (it only moves
  spend forward, by seq, so it is safe at any time).
- Reservations whose deadline passed (a node crashed before settling, or the usage
  event never reached us) have their budget holds released.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

from hyperinfer.client.quota import QuotaIndex, period_bounds
from hyperinfer.quota.adapters.redis_state import BudgetValue, RedisQuotaState
from hyperinfer.quota.domain import RowKey
from hyperinfer.quota.metrics import ServiceMetrics
from hyperinfer.quota.ports import SpendStore
from hyperinfer.quota.settlement import budget_value
from hyperinfer.runtime import get_logger

log = get_logger(__name__)
SWEEP_BATCH = 500


class Reconciler:
    """Keeps Redis budget spend equal to PostgreSQL's, and reservations from leaking."""

    def __init__(
        self,
        state: RedisQuotaState,
        store: SpendStore,
        index: Callable[[], QuotaIndex],
        metrics: ServiceMetrics,
    ) -> None:
        self._state = state
        self._store = store
        self._index = index
        self._metrics = metrics
        self.epoch: str | None = None
        self.reconciled = 0

    async def watch_epoch(self) -> bool:
        """Reload everything if Redis changed lifetime since the last look. True if it did."""
        current = await self._state.epoch()
        lost = current is None
        if current is None:
            current = await self._state.claim_epoch(uuid.uuid4().hex)
        if current == self.epoch:
            return False
        why = "start" if self.epoch is None else "redis_lost" if lost else "epoch_changed"
        if why != "start":
            log.warning("Redis lost the quota state (%s); reloading budgets from PostgreSQL", why)
        self.epoch = current
        await self.reconcile(why)
        return True

    async def reconcile(self, why: str) -> int:
        """Load every configured budget's current spend and mark each team ready."""
        if self.epoch is None:
            return 0
        now_us = await self._state.now_us()
        index = self._index()
        rows = {
            rule: RowKey(
                rule.scope,
                rule.subject_id,
                rule.period,
                period_bounds(rule.period, now_us)[0],
                rule.team_id,
            )
            for rule in index.budget_rules()
        }
        totals = await self._store.totals(list(rows.values()))
        teams: dict[str, list[BudgetValue]] = {team: [] for team in index.team_ids()}
        for row in rows.values():
            spent, seq = totals.get(row, (0, 0))
            teams.setdefault(row.team_id, []).append(budget_value(row, spent, seq))
        changed = await self._state.load(self.epoch, teams)
        self.reconciled += 1
        self._metrics.reconciles.labels(why).inc()
        log.info(
            "budgets loaded into Redis",
            extra={"why": why, "teams": len(teams), "budgets": len(rows), "changed": changed},
        )
        return changed

    async def sweep(self) -> Counter[str]:
        """Release the holds of overdue reservations of every team in the config."""
        now_us = await self._state.now_us()
        found: Counter[str] = Counter()
        for team_id in self._index().team_ids():
            due = await self._state.due(team_id, now_us, SWEEP_BATCH)
            found += await self._state.sweep(team_id, due)
        for state, count in found.items():
            self._metrics.swept.labels(state or "gone").inc(count)
        if found:
            log.info("overdue reservations released", extra={"states": dict(found)})
        return found
