"""Backend contracts v1: engine state scraped from vLLM, Triton and friends."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EVENT_STATE = "backend.state"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BackendStateReported(_Model):
    backend_id: str
    engine: Literal["vllm", "triton", "openai_compatible", "unknown"] = "unknown"
    node: str | None = None
    observed_at: AwareDatetime
    healthy: bool
    detail: str | None = None
    ready_models: list[str] = Field(default_factory=list)
    running_requests: float | None = None
    waiting_requests: float | None = None
    kv_cache_usage: float | None = Field(default=None, description="0..1")
    requests_success_total: float | None = None
    throughput_tokens_per_s: float | None = None
    latency_ms_avg: float | None = None
    queue_time_us_total: float | None = None
    inference_count_total: float | None = None
    pending_requests: float | None = None
