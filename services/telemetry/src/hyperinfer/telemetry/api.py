"""The spend and usage API (admin-authenticated, team-scoped); errors as RFC 9457 problem+json.

``GET /v1/usage``         usage and cost grouped by team/key/model/backend and/or
                          minute/hour/day/month over a period, paginated, with totals
``GET /v1/usage/top``     top consumers (teams, keys, models or backends) by a metric
``GET /v1/usage/export``  the same groups as ``/v1/usage``, every row, as CSV
``GET /v1/usage/dead-letters``, ``POST /v1/usage/dead-letters/replay``  refused usage
                          entries and their reasons; replay after a fix (master key only)

Periods are UTC whole minutes ``[start, end)``; without them, this month so far. Errors
are translated once by the runtime's problem handlers from ``errors.TelemetryError`` (and
request validation, unknown routes, unexpected errors).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Response
from hyperinfer.contracts import utc_now
from hyperinfer.contracts.config.v1 import ConfigSnapshot
from hyperinfer.runtime.problems import install_problem_handlers
from hyperinfer.telemetry import handlers
from hyperinfer.telemetry.domain import RollupHorizons
from hyperinfer.telemetry.errors import TelemetryError
from hyperinfer.telemetry.handlers import DeadLetterStore, Principal, QueryParams, SpendStore
from pydantic import BaseModel, Field

Clock = Callable[[], datetime]


class ReplayRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000, description="dead-letter ids")


class SnapshotSource(Protocol):
    @property
    def snapshot(self) -> ConfigSnapshot: ...


def mount(
    app: FastAPI,
    *,
    admin_key: str,
    config: SnapshotSource,
    team_admin_scope: str,
    store: SpendStore,
    dlq: DeadLetterStore,
    export_max_rows: int,
    horizons: RollupHorizons | None = None,
    clock: Clock = utc_now,
) -> None:
    """Add the usage routes and the problem+json translation to ``app``."""
    kept = horizons or RollupHorizons()

    def principal(
        authorization: str | None = Header(default=None),
        x_api_key: str | None = Header(default=None),
    ) -> Principal:
        token = handlers.bearer_token(authorization, x_api_key)
        return handlers.authenticate(token, admin_key, config.snapshot, team_admin_scope, clock())

    def params(
        start: datetime | None = Query(None, description="UTC, inclusive (floored to the minute)"),
        end: datetime | None = Query(None, description="UTC, exclusive (rounded up to the minute)"),
        group_by: str = Query("team", description="team,key,model,backend,minute,hour,day,month"),
        team_id: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        backend_id: str | None = None,
        limit: int = Query(100, ge=1, le=handlers.MAX_PAGE),
        cursor: str | None = None,
    ) -> QueryParams:
        return QueryParams(start, end, group_by, team_id, key_id, model, backend_id, limit, cursor)

    router = APIRouter(prefix="/v1/usage", tags=["usage"])

    @router.get("")
    async def usage(
        who: Principal = Depends(principal), p: QueryParams = Depends(params)
    ) -> dict[str, Any]:
        return await handlers.usage_page(
            store, handlers.build_query(who, p, clock(), horizons=kept)
        )

    @router.get("/top")
    async def top(
        who: Principal = Depends(principal),
        by: Literal["team", "key", "model", "backend"] = "team",
        metric: Literal["cost", "tokens", "requests", "errors"] = "cost",
        start: datetime | None = None,
        end: datetime | None = None,
        team_id: str | None = None,
        model: str | None = None,
        backend_id: str | None = None,
        limit: int = Query(10, ge=1, le=handlers.MAX_PAGE),
    ) -> dict[str, Any]:
        p = QueryParams(start, end, by, team_id, None, model, backend_id, limit)
        query = handlers.build_query(who, p, clock(), order_by=metric, horizons=kept)
        return await handlers.top_consumers(store, query)

    @router.get("/export", response_class=Response)
    async def export(
        who: Principal = Depends(principal), p: QueryParams = Depends(params)
    ) -> Response:
        query = handlers.build_query(who, p, clock(), horizons=kept)
        body = await handlers.export_csv(store, query, export_max_rows)
        name = f"usage-{query.start:%Y%m%dT%H%M}-{query.end:%Y%m%dT%H%M}.csv"
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @router.get("/dead-letters")
    async def dead_letters(
        who: Principal = Depends(principal),
        limit: int = Query(50, ge=1, le=handlers.MAX_PAGE),
        after: str | None = Query(None, description="the next_after of the previous page"),
    ) -> dict[str, Any]:
        handlers.require_master(who)
        return await handlers.list_dead_letters(dlq, limit, after)

    @router.post("/dead-letters/replay")
    async def replay(body: ReplayRequest, who: Principal = Depends(principal)) -> dict[str, Any]:
        handlers.require_master(who)
        return await handlers.replay_dead_letters(dlq, body.ids)

    app.include_router(router)
    install_problem_handlers(app, TelemetryError)
