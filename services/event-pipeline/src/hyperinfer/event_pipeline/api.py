"""Internal HTTP API: publish events, metrics, and the DLQ (list/inspect/replay/purge).

Every route needs ``X-Internal-Key`` (compared in constant time). Errors are RFC 9457
problem+json, translated once by the runtime's problem handlers from
``errors.PipelineError`` (and request validation, unknown routes, unexpected errors).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from hyperinfer.event_pipeline.dlq import DlqService
from hyperinfer.event_pipeline.errors import PipelineError, Unauthorized
from hyperinfer.event_pipeline.publisher import EventPublisher
from hyperinfer.runtime.problems import install_problem_handlers
from pydantic import BaseModel, Field

MetricsView = Callable[[], Awaitable[dict[str, Any]]]


class ReplayRequest(BaseModel):
    ids: list[str] | None = Field(default=None, description="dead letter ids; omit for the oldest")
    limit: int = Field(default=100, ge=1, le=10_000)


def internal_key_guard(expected: str) -> Callable[[Request], None]:
    secret = expected.encode()

    def guard(request: Request) -> None:
        given = request.headers.get("x-internal-key", "").encode()
        if not given or not hmac.compare_digest(given, secret):
            raise Unauthorized("missing or wrong X-Internal-Key")

    return guard


def mount(
    app: FastAPI,
    *,
    internal_key: str,
    publisher: Callable[[], EventPublisher],
    dlq: Callable[[], DlqService],
    metrics_view: MetricsView,
) -> None:
    """Add the internal routes and the problem+json translation to ``app``.

    ``publisher`` and ``dlq`` are getters: routes exist before start-up builds them.
    """
    router = APIRouter(prefix="/internal", dependencies=[Depends(internal_key_guard(internal_key))])

    @router.post("/events", status_code=202)
    async def publish_event(request: Request) -> dict[str, Any]:
        published = await publisher().submit(await request.body())
        return {
            "id": published.id,
            "subject": published.subject,
            "priority": published.priority.value,
            "duplicate": published.duplicate,
        }

    @router.get("/events/metrics")
    async def events_metrics() -> dict[str, Any]:
        return await metrics_view()

    @router.get("/dlq")
    async def list_dlq(
        limit: int = Query(50, ge=1, le=1000), after: str | None = None
    ) -> dict[str, Any]:
        entries = await dlq().list(limit, after)
        return {"items": [e.summary() for e in entries], "depth": await dlq().depth()}

    @router.get("/dlq/{entry_id}")
    async def inspect_dlq(entry_id: str) -> dict[str, Any]:
        view = await dlq().inspect(entry_id)
        return {"id": view.id, "stored_at": view.stored_at, "entry": view.entry}

    @router.post("/dlq/{entry_id}/replay")
    async def replay_one(entry_id: str) -> dict[str, Any]:
        return await dlq().replay(entry_id)

    @router.post("/dlq/replay")
    async def replay_many(body: ReplayRequest) -> dict[str, Any]:
        return await dlq().replay_many(body.ids, body.limit)

    @router.delete("/dlq/{entry_id}", status_code=204)
    async def delete_dlq(entry_id: str) -> None:
        await dlq().delete(entry_id)

    @router.post("/dlq/purge")
    async def purge_dlq() -> dict[str, int]:
        return {"purged": await dlq().purge()}

    app.include_router(router)
    install_problem_handlers(app, PipelineError)
