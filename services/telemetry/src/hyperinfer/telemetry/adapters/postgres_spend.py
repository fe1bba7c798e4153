"""Spend and usage queries over the rollups (never the raw rows).

A period is read from the coarsest rollup rows that fit it (``domain.decompose``), so
the sums equal those of the raw rows of the same period while touching few rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from hyperinfer.runtime import PostgresPool
from hyperinfer.telemetry.domain import KEY_DIMENSIONS, UsageQuery, latency_summary
from hyperinfer.telemetry.errors import StoreUnavailable

_SUMS = """
    sum(requests)::bigint AS requests,
    sum(errors)::bigint AS errors,
    sum(prompt_tokens)::bigint AS prompt_tokens,
    sum(completion_tokens)::bigint AS completion_tokens,
    sum(cost_micros)::bigint AS cost_micros,
    sum(latency_ms_sum) AS latency_ms_sum,
    usage_hist_sum(latency_hist) AS latency_hist
"""
_ORDER = {
    "cost": "cost_micros",
    "tokens": "prompt_tokens + completion_tokens",
    "requests": "requests",
    "errors": "errors",
}
_FILTERS = ("team_id", "key_id", "model", "backend_id")
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def build_where(query: UsageQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (period segments and filters) and its arguments."""
    args: list[Any] = []
    spans = []
    for seg in query.segments():
        args += [seg.window, seg.start, seg.end]
        n = len(args)
        spans.append(
            f"(window_kind = ${n - 2} AND bucket_start >= ${n - 1} AND bucket_start < ${n})"
        )
    clauses = ["(" + " OR ".join(spans) + ")"]
    for column in _FILTERS:
        value = getattr(query, column)
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    return " AND ".join(clauses), args


def _group_columns(query: UsageQuery) -> list[tuple[str, str]]:
    """(SQL expression, output name) per group dimension, in the order asked."""
    out = []
    for dim in query.group_by:
        if dim in KEY_DIMENSIONS:
            out.append((KEY_DIMENSIONS[dim], KEY_DIMENSIONS[dim]))
        else:
            out.append((f"date_trunc('{dim}', bucket_start, 'UTC')", dim))
    return out


def build_grouped(query: UsageQuery, limit: int, offset: int) -> tuple[str, list[Any]]:
    where, args = build_where(query)
    groups = _group_columns(query)
    select = ", ".join(f"{expr} AS {name}" for expr, name in groups)
    names = [name for _, name in groups]
    order = ([f"{_ORDER[query.order_by]} DESC"] if query.order_by else []) + names
    # every name and expression comes from fixed tables; values travel as arguments
    sql = f"SELECT {select + ', ' if select else ''}{_SUMS} FROM usage_rollups WHERE {where}"  # noqa: S608
    if names:
        sql += f" GROUP BY {', '.join(names)}"
    if order:
        sql += f" ORDER BY {', '.join(order)}"
    args += [limit, offset]
    sql += f" LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    return sql, args


def present(row: asyncpg.Record, names: list[str]) -> dict[str, Any]:
    """One output row: the group values, the sums, averages and percentiles."""
    out: dict[str, Any] = {name: row[name] for name in names}
    requests = int(row["requests"] or 0)
    prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
    out.update(
        requests=requests,
        errors=int(row["errors"] or 0),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_micros=int(row["cost_micros"] or 0),
        latency_ms_avg=round(row["latency_ms_sum"] / requests, 1) if requests else None,
    )
    out.update(latency_summary(row["latency_hist"] or []))
    return out


class PostgresSpendStore:
    def __init__(self, pg: PostgresPool) -> None:
        self._pg = pg

    async def grouped(self, query: UsageQuery, limit: int, offset: int) -> list[dict[str, Any]]:
        """Up to ``limit`` groups from ``offset``, in the query's order."""
        sql, args = build_grouped(query, limit, offset)
        names = [name for _, name in _group_columns(query)]
        rows = await self._fetch(sql, args)
        return [present(r, names) for r in rows]

    async def totals(self, query: UsageQuery) -> dict[str, Any]:
        where, args = build_where(query)
        sql = f"SELECT {_SUMS} FROM usage_rollups WHERE {where}"  # noqa: S608 (see build_grouped)
        rows = await self._fetch(sql, args)
        return present(rows[0], [])

    async def _fetch(self, sql: str, args: list[Any]) -> list[asyncpg.Record]:
        try:
            async with self._pg.pool.acquire(timeout=5) as conn:
                return list(await conn.fetch(sql, *args))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"usage store unavailable: {type(exc).__name__}") from exc
        except RuntimeError as exc:  # pool not connected yet
            raise StoreUnavailable(str(exc)) from exc
