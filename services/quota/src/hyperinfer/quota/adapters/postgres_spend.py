"""Spend rollups and the alert outbox in PostgreSQL (migration 0020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from hyperinfer.client.quota import BudgetRule
from hyperinfer.quota.domain import Alert, RowKey, RowTotal, UsageItem, crossed, spend_deltas
from hyperinfer.quota.ports import Recorded, StoredAlert
from hyperinfer.runtime import PostgresPool

CONSUMER = "quota.usage"

_CLAIM = """
INSERT INTO processed_events (consumer, event_id)
SELECT $1, id FROM unnest($2::text[]) AS id
ON CONFLICT DO NOTHING
RETURNING event_id
"""

_UPSERT = """
INSERT INTO quota_spend AS s
    (scope, subject_id, team_id, period, period_start, spent_micros, tokens, requests)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
ON CONFLICT (scope, subject_id, period, period_start) DO UPDATE SET
    spent_micros = s.spent_micros + EXCLUDED.spent_micros,
    tokens = s.tokens + EXCLUDED.tokens,
    requests = s.requests + EXCLUDED.requests,
    seq = nextval('quota_spend_seq'),
    updated_at = now()
RETURNING scope, subject_id, team_id, period, period_start, spent_micros, seq
"""

_INSERT_ALERTS = """
INSERT INTO quota_alerts (scope, subject_id, team_id, period, period_start, kind,
                          threshold_pct, spent_micros, limit_micros, hard)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::text[], $7::int[], $8::bigint[], $9::bigint[], $10::bool[])
ON CONFLICT DO NOTHING
RETURNING id
"""

_TOTALS = """
SELECT scope, subject_id, team_id, period, period_start, spent_micros, seq
FROM quota_spend
WHERE (scope, subject_id, period, period_start) IN (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]))
"""

_UNPUBLISHED = """
SELECT id, scope, subject_id, team_id, period, period_start, kind, threshold_pct,
       spent_micros, limit_micros, hard, published_at IS NOT NULL AS published,
       job_published_at IS NOT NULL AS job_published
FROM quota_alerts
WHERE (published_at IS NULL OR job_published_at IS NULL) AND created_at >= $2
ORDER BY id LIMIT $1
"""


class PostgresSpendStore:
    """``SpendStore`` on an asyncpg pool."""

    def __init__(self, pg: PostgresPool) -> None:
        self._pg = pg

    async def record(
        self,
        items: Sequence[UsageItem],
        rules: Mapping[tuple[str, str, str], BudgetRule],
        thresholds: Sequence[int],
    ) -> Recorded:
        by_id = {item.request_id: item for item in items}
        async with self._pg.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, CONSUMER, list(by_id))
            new_ids = {r["event_id"] for r in rows}
            if not new_ids:
                return Recorded()
            deltas = spend_deltas(by_id[i] for i in sorted(new_ids))
            keys = list(deltas)
            written = await conn.fetch(
                _UPSERT,
                [k.scope for k in keys],
                [k.subject_id for k in keys],
                [k.team_id for k in keys],
                [k.period for k in keys],
                [k.period_start for k in keys],
                [d.spent for d in deltas.values()],
                [d.tokens for d in deltas.values()],
                [d.requests for d in deltas.values()],
            )
            totals = [
                RowTotal(key, row["spent_micros"], row["seq"], deltas[key].spent)
                for row in written
                for key in (_row_key(row),)
            ]
            created = await _insert_alerts(conn, crossed(totals, rules, thresholds))
        return Recorded(new_ids, totals, created)

    async def totals(self, rows: Sequence[RowKey]) -> dict[RowKey, tuple[int, int]]:
        if not rows:
            return {}
        async with self._pg.pool.acquire() as conn:
            found = await conn.fetch(
                _TOTALS,
                [r.scope for r in rows],
                [r.subject_id for r in rows],
                [r.period for r in rows],
                [r.period_start for r in rows],
            )
        return {_row_key(r): (r["spent_micros"], r["seq"]) for r in found}

    async def unpublished_alerts(self, limit: int, since: datetime) -> list[StoredAlert]:
        async with self._pg.pool.acquire() as conn:
            rows = await conn.fetch(_UNPUBLISHED, limit, since)
        return [
            StoredAlert(
                r["id"],
                Alert(
                    _row_key(r),
                    r["kind"],
                    r["threshold_pct"],
                    r["spent_micros"],
                    r["limit_micros"],
                    r["hard"],
                ),
                r["published"],
                r["job_published"],
            )
            for r in rows
        ]

    async def mark_alerts(self, published: Sequence[int], jobs: Sequence[int]) -> None:
        async with self._pg.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE quota_alerts SET published_at = now() WHERE id = ANY($1::bigint[])",
                list(published),
            )
            await conn.execute(
                "UPDATE quota_alerts SET job_published_at = now() WHERE id = ANY($1::bigint[])",
                list(jobs),
            )

    async def forget_processed(self, before: datetime) -> int:
        async with self._pg.pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM processed_events WHERE consumer = $1 AND processed_at < $2",
                CONSUMER,
                before,
            )
        return int(status.split()[-1])


async def _insert_alerts(conn: Any, alerts: list[Alert]) -> int:
    if not alerts:
        return 0
    rows = await conn.fetch(
        _INSERT_ALERTS,
        [a.key.scope for a in alerts],
        [a.key.subject_id for a in alerts],
        [a.key.team_id for a in alerts],
        [a.key.period for a in alerts],
        [a.key.period_start for a in alerts],
        [a.kind for a in alerts],
        [a.threshold_pct for a in alerts],
        [a.spent for a in alerts],
        [a.limit for a in alerts],
        [a.hard for a in alerts],
    )
    return len(rows)


def _row_key(row: asyncpg.Record) -> RowKey:
    return RowKey(
        row["scope"], row["subject_id"], row["period"], row["period_start"], row["team_id"]
    )
