"""Publish jobs to the event pipeline from a library: ``publish_job()`` and ``JobPublisher``.

Jobs go through the pipeline's ``POST /internal/events`` (so admission control and
validation are the service's, whichever queue backend it runs), authenticated with
the internal key::

    async with JobPublisher("http://127.0.0.1:8105", internal_key) as jobs:
        receipt = await jobs.publish(jobs_v1.TYPE_AUDIT_RECORD, record, priority=Priority.LOW)

A refused job raises ``QueueFull`` (a ``RateLimited``: ``retry_after_s`` says when to
try again); an invalid one ``JobRejected``; an unreachable pipeline ``PipelineUnavailable``.
Anyone may also publish an envelope straight onto ``hyperinfer.jobs.v1.<priority>.<type>``
with any NATS client (see docs/event-pipeline.md); that path meets only the hard cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson
from hyperinfer.client.errors import HyperInferError, InvalidRequest, RateLimited
from hyperinfer.contracts import Envelope, Priority
from pydantic import BaseModel

DEFAULT_URL = "http://127.0.0.1:8105"


class QueueFull(RateLimited):
    """The pipeline refused this priority for now (admission control or the hard cap)."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, retry_after_ms=retry_after_s * 1000, code=self.code)
        self.retry_after_s = retry_after_s


class JobRejected(InvalidRequest):
    """The envelope is invalid or not a job type (the pipeline answered 4xx)."""

    code = "job_rejected"


class PipelineUnavailable(HyperInferError):
    status = 503
    error_type = "service_unavailable"
    code = "pipeline_unavailable"


@dataclass(frozen=True)
class JobReceipt:
    id: str
    subject: str
    priority: Priority
    duplicate: bool


class JobPublisher:
    """A pooled HTTP client for ``POST /internal/events``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        internal_key: str = "",
        *,
        source: str = "client",
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.source = source
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"x-internal-key": internal_key, "content-type": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    async def publish(
        self,
        job_type: str,
        data: BaseModel | dict[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        tenant: str | None = None,
        event_id: str | None = None,
    ) -> JobReceipt:
        """Publish one job; the same ``event_id`` within the dedupe window is stored once."""
        fields: dict[str, Any] = {"type": job_type, "source": self.source, "priority": priority}
        if event_id:
            fields["id"] = event_id
        env = Envelope[Any](tenant=tenant, data=data, **fields)
        return await self.publish_envelope(env)

    async def publish_envelope(self, env: Envelope[Any]) -> JobReceipt:
        body = orjson.dumps(env.model_dump(mode="json"))
        try:
            response = await self._http.post("/internal/events", content=body)
        except httpx.HTTPError as exc:
            raise PipelineUnavailable(f"cannot reach the event pipeline: {exc}") from None
        return _receipt(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> JobPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def publish_job(
    job_type: str,
    data: BaseModel | dict[str, Any],
    *,
    url: str = DEFAULT_URL,
    internal_key: str = "",
    priority: Priority = Priority.NORMAL,
    tenant: str | None = None,
    event_id: str | None = None,
) -> JobReceipt:
    """Publish one job (opens and closes a connection; use ``JobPublisher`` for many)."""
    async with JobPublisher(url, internal_key) as publisher:
        return await publisher.publish(
            job_type, data, priority=priority, tenant=tenant, event_id=event_id
        )


def _receipt(response: httpx.Response) -> JobReceipt:
    if response.status_code == 202:
        body = response.json()
        return JobReceipt(
            body["id"], body["subject"], Priority(body["priority"]), body["duplicate"]
        )
    detail = _detail(response)
    if response.status_code == 429:
        retry_after = int(response.headers.get("retry-after", "1") or 1)
        raise QueueFull(detail, retry_after_s=max(1, retry_after))
    if response.status_code in (400, 401, 403, 404, 422):
        raise JobRejected(f"HTTP {response.status_code}: {detail}")
    raise PipelineUnavailable(f"HTTP {response.status_code}: {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return (
        str(body.get("detail") or body.get("title") or body)
        if isinstance(body, dict)
        else str(body)
    )
