"""Usage contracts v1: one event per request, and the rollups telemetry publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_RECORDED = "usage.recorded"
EVENT_ROLLUP = "usage.rollup"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UsageRecorded(_Model):
    """What one request consumed. Idempotent by ``request_id``."""

    request_id: str = Field(min_length=1, max_length=128)
    team_id: str
    key_id: str
    user_id: str | None = None
    alias: str
    model: str = Field(description="the upstream model that answered")
    backend_id: str
    provider: str
    api: Literal["chat", "embeddings", "messages"] = "chat"
    stream: bool = False
    status: Literal["ok", "error", "cancelled"] = "ok"
    http_status: int = 200
    error_type: str | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    tokens_estimated: bool = False
    cost_micros: int = Field(default=0, ge=0)
    price_version: str = "0"
    reserved_tokens: int = Field(default=0, ge=0)
    reserved_cost_micros: int = Field(default=0, ge=0)
    latency_ms: float = Field(default=0.0, ge=0)
    ttft_ms: float | None = Field(default=None, ge=0)
    attempts: int = Field(default=1, ge=1)
    fallback_used: bool = False
    cache_hit: bool = False
    origin: Literal["ingress", "client", "pipeline"] = "ingress"
    started_at: AwareDatetime
    finished_at: AwareDatetime


class UsageRollup(_Model):
    """A per-minute summary by team, key, model and backend."""

    window_start: AwareDatetime
    window: Literal["minute", "hour", "day"] = "minute"
    team_id: str
    key_id: str
    model: str
    backend_id: str
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_micros: int = Field(ge=0)
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
