"""Usage events -> spend rollups in PostgreSQL -> spend and holds in Redis -> alerts.

One batch: decode the entries, record the new events (idempotent by request id) and
the alerts they cross in one PostgreSQL transaction, then per team one Redis script
that sets each configured budget's ``spent`` to the PostgreSQL total (only forward,
by seq) and releases the holds of the requests the batch covers, then acknowledge.
A crash anywhere before the acknowledgement replays the batch, which changes
nothing twice. Entries that are not usage envelopes are acknowledged and counted
(telemetry's group dead-letters them).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.client.quota import BudgetRule, QuotaIndex, budget_key, period_bounds, to_us
from hyperinfer.client.quota._keys import Scope
from hyperinfer.contracts import ContractError, decode_envelope, names
from hyperinfer.contracts.usage.v1 import EVENT_RECORDED
from hyperinfer.quota.adapters.redis_state import BudgetValue, RedisQuotaState, TeamPost
from hyperinfer.quota.adapters.redis_usage import Entry, UsageFeed
from hyperinfer.quota.alerts import AlertPublisher
from hyperinfer.quota.domain import (
    RowKey,
    RowTotal,
    UsageItem,
    reservation_error,
    rows_of,
    rules_by_row,
)
from hyperinfer.quota.metrics import ServiceMetrics
from hyperinfer.quota.ports import SpendStore
from hyperinfer.runtime import get_logger

log = get_logger(__name__)
KEEP_AFTER_PERIOD_MS = 8 * 86_400_000  # as the reserve script keeps budget hashes


@dataclass(frozen=True)
class SettlementPolicy:
    batch_size: int = 200
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    thresholds: tuple[int, ...] = (80, 100)


def budget_value(row: RowKey, spent: int, seq: int) -> BudgetValue:
    """The Redis budget hash of a rollup row, with what to post into it."""
    scope: Scope = "key" if row.scope == "key" else "team"
    _, end = period_bounds(row.period, to_us(row.period_start))
    return BudgetValue(
        budget_key(row.team_id, scope, row.subject_id, row.period_id),
        spent,
        seq,
        to_us(end) // 1000 + KEEP_AFTER_PERIOD_MS,
    )


class Settlement:
    """The usage consumer of one quota replica."""

    def __init__(
        self,
        feed: UsageFeed,
        store: SpendStore,
        state: RedisQuotaState,
        index: Callable[[], QuotaIndex],
        alerts: AlertPublisher,
        metrics: ServiceMetrics,
        policy: SettlementPolicy,
    ) -> None:
        self.feed = feed
        self._store = store
        self._state = state
        self._index = index
        self._alerts = alerts
        self._metrics = metrics
        self._policy = policy
        self._task: asyncio.Task[None] | None = None
        self._next_claim = 0.0
        self._stopping = False
        self.processed = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="quota-settlement")

    async def stop(self) -> None:
        self._stopping = True
        await stop_task(self._task)
        self._task = None

    def status(self) -> dict[str, object]:
        return {"processed": self.processed, "last_error": self.last_error}

    async def _run(self) -> None:
        backoff, own_pending = 0.1, True
        while not self._stopping:
            try:
                if own_pending:  # after a start or a failure: what we hold but never acked
                    await self.feed.ensure_group()
                    own_pending = await self.handle(await self._read(own_pending=True)) > 0
                else:
                    await self.handle(await self._read(own_pending=False))
                backoff, self.last_error = 0.1, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()  # a cancel a library turned into an error
                if self._stopping:  # a client library turned our cancellation into an error
                    return
                if self.last_error is None:
                    log.warning("usage settlement failing: %s: %s", type(exc).__name__, exc)
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                own_pending = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _read(self, *, own_pending: bool) -> list[Entry]:
        policy = self._policy
        if own_pending:
            return await self.feed.read(policy.batch_size, 0, own_pending=True)
        entries = await self.feed.read(policy.batch_size, policy.block_ms)
        if not entries and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + policy.claim_idle_ms / 1000
            entries = await self.feed.claim_idle(policy.claim_idle_ms, policy.batch_size)
        return entries

    async def handle(self, entries: Sequence[Entry]) -> int:
        """Process one batch; returns the entries handled (acknowledged)."""
        if not entries:
            return 0
        items = self._decode(entries)
        if items:
            await self._record(items)
        await self.feed.ack([entry_id for entry_id, _ in entries])
        self.processed += len(entries)
        return len(entries)

    def _decode(self, entries: Iterable[Entry]) -> list[UsageItem]:
        items = []
        for entry_id, fields in entries:
            raw = fields.get(names.USAGE_STREAM_FIELD.encode())
            try:
                if raw is None:
                    raise ContractError("entry has no envelope field")
                env = decode_envelope(raw)
                if env.type != EVENT_RECORDED:
                    raise ContractError(f"not a usage event: {env.type}")
            except ContractError as exc:
                self._metrics.usage_events.labels("rejected").inc()
                log.info("usage entry skipped", extra={"entry": entry_id.decode(), "why": str(exc)})
                continue
            items.append(UsageItem.from_event(env.data))
        return items

    async def _record(self, items: list[UsageItem]) -> None:
        index = self._index()
        rules = rules_by_row(index.budget_rules())
        recorded = await self._store.record(items, rules, self._policy.thresholds)
        old = [i for i in items if i.request_id not in recorded.new_ids]
        totals = list(recorded.totals)
        if old:  # replayed: post their rows' current totals too (a crash may have lost them)
            rows = sorted({r for i in old for r in rows_of(i) if r.rule_key in rules})
            found = await self._store.totals(rows)
            totals += [RowTotal(row, spent, seq, 0) for row, (spent, seq) in found.items()]
        self._count(items, recorded.new_ids)
        posts = _team_posts(items, totals, rules)
        self._metrics.released.inc(await self._state.post(posts))
        if recorded.alerts:
            await self._alerts.flush()

    def _count(self, items: list[UsageItem], new_ids: set[str]) -> None:
        metrics = self._metrics
        for item in items:
            if item.request_id not in new_ids:
                metrics.usage_events.labels("duplicate").inc()
                continue
            metrics.usage_events.labels("new").inc()
            if item.reserved_tokens or item.reserved_cost_micros:
                metrics.reservation_error.labels("tokens").observe(
                    reservation_error(item.reserved_tokens, item.tokens)
                )
                metrics.reservation_error.labels("cost").observe(
                    reservation_error(item.reserved_cost_micros, item.cost_micros)
                )


def _team_posts(
    items: Iterable[UsageItem],
    totals: Iterable[RowTotal],
    rules: dict[tuple[str, str, str], BudgetRule],
) -> dict[str, TeamPost]:
    posts: dict[str, TeamPost] = defaultdict(lambda: TeamPost([], []))
    for item in items:
        posts[item.team_id].request_ids.append(item.request_id)
    for total in totals:
        if total.key.rule_key in rules:
            post = posts[total.key.team_id]
            post.budgets.append(budget_value(total.key, total.spent, total.seq))
    return dict(posts)
