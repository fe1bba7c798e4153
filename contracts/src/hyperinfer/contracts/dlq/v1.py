"""Dead-letter contracts v1: a message that could not be processed, with why."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_DEAD_LETTERED = "dlq.dead_lettered"


class DeadLettered(BaseModel):
    """The original message (verbatim, as text) plus the reason it was dead-lettered."""

    model_config = ConfigDict(extra="ignore")

    original_subject: str
    original_id: str | None = None
    original_payload: str = Field(description="the message body as received (UTF-8, lossy)")
    original_headers: dict[str, str] = Field(default_factory=dict)
    reason: str = Field(description="short code: invalid_payload, max_attempts, permanent, ...")
    error_class: str | None = None
    detail: str = ""
    attempts: int = Field(default=0, ge=0)
    source: str = Field(description="the component that dead-lettered it")
    failed_at: AwareDatetime
