"""The shipped processors: plain async functions, contract in, dependencies as parameters.

``app.py`` binds the dependencies and registers each one per event type:

- ``inference.requested`` → ``prepare_inference`` runs the chat through the data plane
  (no transaction open: a long answer holds no PostgreSQL connection), then
  ``run_inference`` stores the result (``inference_jobs``) and emits
  ``inference.completed`` in the same transaction as the ``processed_events`` claim;
- ``inference.completed`` → ``complete_inference``: queues the requester's webhook;
- ``webhook.deliver`` → ``deliver_webhook`` (before the transaction): a signed POST
  (HMAC-SHA256 over ``<timestamp>.<body>``); 4xx is permanent except 408/429, the
  rest is retried; ``record_delivery`` then records the event id;
- ``audit.record`` → ``record_audit``: one ``audit_log`` row;
- ``quota.alert`` → ``fan_out_quota_alert``: one ``webhook.deliver`` job per configured
  URL and the alert on each configured subject.

Derived events get ids derived from their parent's id, so a retried handler emits
the same event again and the dedupe window / ``processed_events`` drop the copy.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from hyperinfer.contracts import Envelope, Priority, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.event_pipeline.errors import PermanentJobError, TransientJobError
from hyperinfer.event_pipeline.ports import ChatRunner, WebhookSender
from hyperinfer.event_pipeline.publisher import Published, derived_id
from hyperinfer.event_pipeline.worker import JobContext
from pydantic import BaseModel

SIGNATURE_HEADER = "X-HyperInfer-Signature"
TIMESTAMP_HEADER = "X-HyperInfer-Timestamp"
EVENT_ID_HEADER = "X-HyperInfer-Event-Id"
CorePublish = Callable[[str, bytes], Awaitable[None]]


class Emit(Protocol):
    async def __call__(
        self,
        type_: str,
        data: BaseModel,
        *,
        event_id: str,
        priority: Priority = Priority.NORMAL,
        tenant: str | None = None,
    ) -> Published: ...


# --- audit.record --------------------------------------------------------------------
async def record_audit(env: Envelope[Any], ctx: JobContext) -> None:
    data: jobs_v1.AuditRecord = env.data
    await ctx.conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, team_id, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        data.at,
        data.actor,
        data.action,
        data.target_type,
        data.target_id,
        env.tenant,
        _json_or_none(data.before),
        _json_or_none(data.after),
    )


# --- inference.requested / inference.completed ------------------------------------------
@dataclass(frozen=True)
class ChatOutcome:
    status: Literal["ok", "error"]
    response: dict[str, Any] | None
    error: str | None


async def prepare_inference(
    env: Envelope[Any], ctx: JobContext, *, chat: ChatRunner | None
) -> ChatOutcome:
    """The upstream call, outside any transaction."""
    data: jobs_v1.InferenceRequested = env.data
    if chat is None:
        raise PermanentJobError("no data plane is configured for async chat jobs")
    try:
        response = await chat.run_chat(
            data.request, team_id=data.team_id, api_key_id=data.api_key_id
        )
    except PermanentJobError as exc:  # the request itself is refused: a final answer
        return ChatOutcome("error", None, str(exc))
    return ChatOutcome("ok", response, None)


async def run_inference(env: Envelope[Any], ctx: JobContext, *, emit: Emit) -> None:
    """Store the prepared answer and announce it, in the job's transaction."""
    data: jobs_v1.InferenceRequested = env.data
    outcome: ChatOutcome = ctx.prepared
    await _store_result(ctx, env, data, outcome.status, outcome.response, outcome.error)
    completed = jobs_v1.InferenceCompleted(
        job_id=data.job_id,
        team_id=data.team_id,
        status=outcome.status,
        response=outcome.response,
        error=outcome.error,
        completed_at=utc_now(),
        webhook_url=data.webhook_url,
    )
    await emit(
        jobs_v1.TYPE_INFERENCE_COMPLETED,
        completed,
        event_id=derived_id(env.id, "completed"),
        priority=env.priority,
        tenant=env.tenant,
    )


async def _store_result(
    ctx: JobContext,
    env: Envelope[Any],
    data: jobs_v1.InferenceRequested,
    status: Literal["ok", "error"],
    response: dict[str, Any] | None,
    error: str | None,
) -> None:
    await ctx.conn.execute(
        "INSERT INTO inference_jobs"
        " (job_id, event_id, team_id, api_key_id, status, response, error, webhook_url, attempts)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)"
        " ON CONFLICT (job_id) DO UPDATE SET status = EXCLUDED.status,"
        " response = EXCLUDED.response, error = EXCLUDED.error, attempts = EXCLUDED.attempts,"
        " completed_at = now()",
        data.job_id,
        env.id,
        data.team_id,
        data.api_key_id,
        status,
        _json_or_none(response),
        error,
        data.webhook_url,
        ctx.attempt,
    )


async def complete_inference(env: Envelope[Any], ctx: JobContext, *, emit: Emit) -> None:
    data: jobs_v1.InferenceCompleted = env.data
    if not data.webhook_url:
        return
    hook = jobs_v1.WebhookDeliver(
        url=data.webhook_url,
        payload=data.model_dump(mode="json", exclude={"webhook_url"}),
        team_id=data.team_id,
        event_type=jobs_v1.TYPE_INFERENCE_COMPLETED,
    )
    await emit(
        jobs_v1.TYPE_WEBHOOK_DELIVER,
        hook,
        event_id=derived_id(env.id, "webhook"),
        priority=env.priority,
        tenant=env.tenant,
    )


# --- webhook.deliver -----------------------------------------------------------------
def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(
    secret: bytes, timestamp: int, body: bytes, signature: str, tolerance_s: int = 300
) -> bool:
    """What a receiver does: constant-time compare, and a bounded clock skew."""
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


async def deliver_webhook(
    env: Envelope[Any], ctx: JobContext, *, sender: WebhookSender, secret: bytes
) -> None:
    """The outbound call, before the transaction that records the event as done."""
    data: jobs_v1.WebhookDeliver = env.data
    body = orjson.dumps({"id": env.id, "type": data.event_type, "data": data.payload})
    stamp = int(time.time())
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(secret, stamp, body),
        TIMESTAMP_HEADER: str(stamp),
        EVENT_ID_HEADER: env.id,
    }
    status, retry_after = await sender.post(data.url, body, headers)
    classify_status(status, retry_after)


async def record_delivery(env: Envelope[Any], ctx: JobContext) -> None:
    """Nothing to write besides the event id: delivered once, not again."""


def classify_status(status: int, retry_after_s: float | None) -> None:
    """2xx/3xx pass; 408, 429 and 5xx are transient; any other 4xx is permanent."""
    if status < 400:
        return
    if status in (408, 429) or status >= 500:
        raise TransientJobError(f"webhook answered {status}", retry_after_s)
    raise PermanentJobError(f"webhook answered {status}")


# --- quota.alert ---------------------------------------------------------------------
async def fan_out_quota_alert(
    env: Envelope[Any],
    ctx: JobContext,
    *,
    webhooks: Sequence[str],
    subjects: Sequence[str],
    emit: Emit,
    core_publish: CorePublish | None,
) -> None:
    data: jobs_v1.QuotaAlert = env.data
    for index, url in enumerate(webhooks):
        hook = jobs_v1.WebhookDeliver(
            url=url,
            payload=data.model_dump(mode="json"),
            team_id=data.team_id,
            event_type=jobs_v1.TYPE_QUOTA_ALERT,
        )
        await emit(
            jobs_v1.TYPE_WEBHOOK_DELIVER,
            hook,
            event_id=derived_id(env.id, f"webhook:{index}:{url}"),
            priority=env.priority,
            tenant=env.tenant,
        )
    if core_publish is not None:
        raw = orjson.dumps(env.model_dump(mode="json"))
        for subject in subjects:
            await core_publish(subject, raw)


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()
