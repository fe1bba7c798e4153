"""Job contracts v1: payloads of the event pipeline, by job type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

TYPE_INFERENCE_REQUESTED = "inference.requested"
TYPE_INFERENCE_COMPLETED = "inference.completed"
TYPE_WEBHOOK_DELIVER = "webhook.deliver"
TYPE_AUDIT_RECORD = "audit.record"
TYPE_QUOTA_ALERT = "quota.alert"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InferenceRequested(_Model):
    """An asynchronous chat job, run through the data plane with the caller's key."""

    job_id: str = Field(min_length=1, max_length=128)
    api_key_id: str
    team_id: str
    request: dict[str, Any] = Field(description="an OpenAI chat completion request body")
    webhook_url: str | None = None


class InferenceCompleted(_Model):
    job_id: str
    team_id: str
    status: Literal["ok", "error"]
    response: dict[str, Any] | None = None
    error: str | None = None
    completed_at: AwareDatetime
    webhook_url: str | None = Field(
        default=None, description="where the requester asked to be called back, if anywhere"
    )


class WebhookDeliver(_Model):
    url: str = Field(min_length=1, max_length=2048)
    payload: dict[str, Any]
    team_id: str | None = None
    event_type: str = "webhook"


class AuditRecord(_Model):
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    at: AwareDatetime


class QuotaAlert(_Model):
    team_id: str
    kind: Literal["threshold_crossed", "exhausted"]
    threshold_pct: int | None = None
    spent_micros: int = Field(ge=0)
    limit_micros: int = Field(ge=0)
