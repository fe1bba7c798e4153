"""Partitions ahead of time, and retention, for the usage ledger in PostgreSQL.

Every step runs under one advisory lock, so replicas never do it twice at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from asyncpg.pool import PoolConnectionProxy
from hyperinfer.runtime import PostgresPool
from hyperinfer.telemetry.domain import month_start, partition_month

_LOCK_ID = 0x48495F55534147  # "HI_USAG"
Conn: TypeAlias = "PoolConnectionProxy[Any]"


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: int = 90
    minute_rollup_days: int = 14
    hour_rollup_days: int = 400
    months_ahead: int = 2


@dataclass
class MaintenanceReport:
    ran: bool = False
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: dict[str, int] = field(default_factory=dict)


class PostgresMaintenance:
    def __init__(self, pg: PostgresPool, policy: RetentionPolicy) -> None:
        self._pg = pg
        self._policy = policy

    async def run(self, now: datetime) -> MaintenanceReport:
        """Create partitions ahead, then apply retention; skipped if a replica holds the lock."""
        report = MaintenanceReport()
        async with self._pg.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_ID):
                return report
            report.ran = True
            for ahead in range(-1, self._policy.months_ahead + 1):
                month = month_start(now, ahead)
                if await conn.fetchval("SELECT usage_ensure_month_partition($1)", month):
                    report.created.append(f"usage_events_p{month:%Y%m}")
            if self._policy.raw_days > 0:
                await self._expire_raw(conn, now - timedelta(days=self._policy.raw_days), report)
            await self._expire_rollups(conn, now, report)
        return report

    async def _expire_raw(self, conn: Conn, cutoff: datetime, report: MaintenanceReport) -> None:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_events'::regclass"
        )
        for row in rows:
            month = partition_month(row["relname"])
            if month is not None and month_start(month, 1) <= cutoff:
                await conn.execute(f'DROP TABLE "{row["relname"]}"')
                report.dropped.append(row["relname"])
        status = await conn.execute(
            "DELETE FROM usage_events_default WHERE started_at < $1", cutoff
        )
        report.deleted_rows["usage_events_default"] = _count(status)
        # ids outlive their rows by a day: an event older than retention is refused at
        # intake, so a remembered id is only needed while its event could still arrive
        status = await conn.execute(
            "DELETE FROM usage_request_ids WHERE recorded_at < $1", cutoff - timedelta(days=1)
        )
        report.deleted_rows["usage_request_ids"] = _count(status)

    async def _expire_rollups(self, conn: Conn, now: datetime, report: MaintenanceReport) -> None:
        for window, days in (
            ("minute", self._policy.minute_rollup_days),
            ("hour", self._policy.hour_rollup_days),
        ):
            if days <= 0:
                continue
            status = await conn.execute(
                "DELETE FROM usage_rollups WHERE window_kind = $1 AND bucket_start < $2",
                window,
                now - timedelta(days=days),
            )
            report.deleted_rows[f"usage_rollups_{window}"] = _count(status)


def _count(status: str) -> int:
    """Rows named by a command tag such as ``DELETE 12``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
