"""The ledger write: one transaction per batch, exactly once per request id.

1. COPY the batch (already unique by request id) into a per-connection temp table.
2. Claim the request ids in ``usage_request_ids`` (``ON CONFLICT DO NOTHING``, in id
   order) and mark which rows were new: a replayed or duplicated event is not.
3. Add the new rows to the minute/hour/day rollups (merge on conflict, in key order).
4. Insert the new rows into the partitioned ``usage_events``.

All in one transaction, so raw rows and rollups never disagree, and a batch that is
retried after a crash (committed but not acknowledged) changes nothing. Lock order
(ids, then rollup rows, each sorted) keeps replicas from deadlocking each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from hyperinfer.runtime import PostgresPool
from hyperinfer.telemetry.domain import LATENCY_BOUNDS_MS
from hyperinfer.telemetry.errors import StoreRejected, StoreUnavailable
from hyperinfer.telemetry.intake import LedgerEvent

COLUMNS = (
    "request_id",
    "event_id",
    "source",
    "team_id",
    "key_id",
    "user_id",
    "alias",
    "model",
    "backend_id",
    "provider",
    "api",
    "stream",
    "status",
    "http_status",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "tokens_estimated",
    "cost_micros",
    "price_version",
    "reserved_tokens",
    "reserved_cost_micros",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "fallback_used",
    "cache_hit",
    "origin",
    "trace_id",
    "started_at",
    "finished_at",
)
_COLS = ", ".join(COLUMNS)
_STAGE = "_usage_stage"

CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    LIKE usage_events INCLUDING DEFAULTS,
    fresh boolean NOT NULL DEFAULT false
) ON COMMIT DELETE ROWS
"""

MARK_FRESH = f"""
WITH claimed AS (
    INSERT INTO usage_request_ids (request_id, started_at)
    SELECT request_id, started_at FROM {_STAGE} ORDER BY request_id
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
)
UPDATE {_STAGE} AS s SET fresh = true FROM claimed WHERE s.request_id = claimed.request_id
"""  # noqa: S608 (built from module constants, no input)

_BOUNDS = "ARRAY[" + ", ".join(repr(float(b)) for b in LATENCY_BOUNDS_MS) + "]::float8[]"
_HIST = ", ".join(
    f"count(*) FILTER (WHERE b.bucket = {i})" for i in range(len(LATENCY_BOUNDS_MS) + 1)
)
_ROLLUP_KEY = "window_kind, bucket_start, team_id, key_id, model, backend_id"

UPSERT_ROLLUPS = f"""
INSERT INTO usage_rollups AS r ({_ROLLUP_KEY}, requests, errors, prompt_tokens,
    completion_tokens, cost_micros, latency_ms_sum, latency_hist)
SELECT w.kind, date_trunc(w.kind, b.started_at, 'UTC'), b.team_id, b.key_id, b.model,
    b.backend_id, count(*), count(*) FILTER (WHERE b.status = 'error'),
    sum(b.prompt_tokens)::bigint, sum(b.completion_tokens)::bigint, sum(b.cost_micros)::bigint,
    sum(b.latency_ms), ARRAY[{_HIST}]::bigint[]
FROM (
    SELECT s.*, width_bucket(s.latency_ms, {_BOUNDS}) AS bucket FROM {_STAGE} s WHERE s.fresh
) AS b
CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS w (kind)
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY 1, 2, 3, 4, 5, 6
ON CONFLICT ({_ROLLUP_KEY}) DO UPDATE SET
    requests = r.requests + excluded.requests,
    errors = r.errors + excluded.errors,
    prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = r.completion_tokens + excluded.completion_tokens,
    cost_micros = r.cost_micros + excluded.cost_micros,
    latency_ms_sum = r.latency_ms_sum + excluded.latency_ms_sum,
    latency_hist = usage_hist_add(r.latency_hist, excluded.latency_hist)
"""  # noqa: S608 (built from module constants, no input)

INSERT_EVENTS = f"""
INSERT INTO usage_events ({_COLS})
SELECT {_COLS} FROM {_STAGE} WHERE fresh
RETURNING request_id
"""  # noqa: S608 (built from module constants, no input)

# Failures of the data itself: split the batch to find the event, never retry it as is.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def record(event: LedgerEvent) -> tuple[Any, ...]:
    """One row of ``COLUMNS`` for COPY."""
    u = event.usage
    return (
        u.request_id,
        event.event_id,
        event.source,
        u.team_id,
        u.key_id,
        u.user_id,
        u.alias,
        u.model,
        u.backend_id,
        u.provider,
        u.api,
        u.stream,
        u.status,
        u.http_status,
        u.error_type,
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
        u.tokens_estimated,
        u.cost_micros,
        u.price_version,
        u.reserved_tokens,
        u.reserved_cost_micros,
        u.latency_ms,
        u.ttft_ms,
        u.attempts,
        u.fallback_used,
        u.cache_hit,
        u.origin,
        trace_id(event.traceparent),
        u.started_at,
        u.finished_at,
    )


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace>-<span>-<flags>``), if well formed."""
    if not traceparent or len(traceparent) < 55 or traceparent[2] != "-":
        return None
    candidate = traceparent[3:35]
    return candidate if candidate.isalnum() and candidate != "0" * 32 else None


class PostgresLedgerStore:
    """Writes batches of usage events and their rollups into PostgreSQL."""

    def __init__(self, pg: PostgresPool) -> None:
        self._pg = pg

    async def write(self, events: Sequence[LedgerEvent]) -> set[str]:
        """Commit ``events`` (unique by request id); return the request ids that were new."""
        try:
            return await self._write(events)
        except _DATA_ERRORS as exc:
            raise StoreRejected(f"{type(exc).__name__}: {exc}") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}".strip()) from exc
        except RuntimeError as exc:  # the pool is not connected (yet)
            raise StoreUnavailable(str(exc)) from exc

    async def _write(self, events: Sequence[LedgerEvent]) -> set[str]:
        async with self._pg.pool.acquire() as conn, conn.transaction():
            await conn.execute(CREATE_STAGE)
            await conn.copy_records_to_table(
                _STAGE, records=[record(e) for e in events], columns=COLUMNS
            )
            await conn.execute(MARK_FRESH)
            await conn.execute(UPSERT_ROLLUPS)
            rows = await conn.fetch(INSERT_EVENTS)
        return {r[0] for r in rows}
