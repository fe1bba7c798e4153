"""HTTP routes of the router: explain a decision, show the current table.

Both need the master admin key (``Authorization: Bearer``) or ``X-Internal-Key``. Errors
are RFC 9457 problem+json, translated once by the runtime's problem handlers from
``errors.RouterError`` (and request validation, unknown routes, unexpected errors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query
from hyperinfer.router import handlers
from hyperinfer.router.errors import RouterError
from hyperinfer.router.publisher import TablePublisher
from hyperinfer.runtime.problems import install_problem_handlers


def key_guard(admin_key: str, internal_key: str) -> Callable[..., None]:
    def guard(
        authorization: str | None = Header(default=None),
        x_internal_key: str | None = Header(default=None),
    ) -> None:
        handlers.authorize(authorization, x_internal_key, admin_key, internal_key)

    return guard


def mount(
    app: FastAPI,
    *,
    publisher: TablePublisher,
    config_version: Callable[[], int],
    admin_key: str,
    internal_key: str,
) -> None:
    router = APIRouter(
        prefix="/v1/routing", dependencies=[Depends(key_guard(admin_key, internal_key))]
    )

    @router.get("/explain")
    async def explain(
        alias: str = Query(..., min_length=1, max_length=256),
        team_id: str | None = Query(default=None, max_length=128),
    ) -> dict[str, Any]:
        """Why each candidate of ``alias`` gets its weight (decided just now)."""
        decisions = publisher.decide()
        decision = handlers.find_decision(decisions, alias, team_id)
        return handlers.explain(decision, publisher.table, config_version(), publisher.leader)

    @router.get("/table")
    async def table() -> dict[str, Any]:
        """The table this replica holds (published, or computed when it does not publish)."""
        return publisher.table.model_dump(mode="json")

    app.include_router(router)
    install_problem_handlers(app, RouterError)
